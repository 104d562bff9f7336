//! f32 → bf16 rounding, the conversion every bf16 pass builds on (the vectorised loops in
//! [`simd`](super::simd) apply it per element). Its own module, depending on nothing else in
//! `kernels`, so that the element-wise passes and the products need not import each other for it (they
//! did: a cycle).

/// Round-to-nearest-even f32 → bf16 bits, as `half::bf16::from_f32` but branch-free so it vectorises
/// (NaN payloads are not preserved; activations are finite).
#[inline(always)]
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    let round = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(round) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        for f in [
            0.0f32, -0.0, 1.0, -1.5, 2.71, 1e-20, 65504.0, 1.0039062, 1.0117188, -7.777e7,
        ] {
            assert_eq!(
                f32_to_bf16_bits(f),
                half::bf16::from_f32(f).to_bits(),
                "{f}"
            );
        }
    }
}
