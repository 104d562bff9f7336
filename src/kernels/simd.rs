//! The element-wise loops around the matrix products (activation rounding, the fused MLP gate, the
//! attention softmax), compiled twice: for the portable x86-64 baseline (SSE2) the crate is built for,
//! and for AVX-512, picked at run time. Why: these passes are a large share of a CPU forward once the
//! products run on AMX, and the wide build does them 16 lanes at a time. Both builds compute the same
//! bits: Rust never fuses `a * b + c`, and the operations are the same, only vectorised wider.

use crate::kernels::bf16::f32_to_bf16_bits;
use crate::kernels::parallel;

/// Whether this CPU runs the AVX-512 builds (checked once).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Defines `fn name(args)` whose body is compiled for the baseline and for AVX-512 and dispatched on
/// [`avx512`].
macro_rules! wide {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            unsafe fn wide($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if avx512() {
                // SAFETY: `avx512()` checked that this CPU has every feature `wide` is compiled for.
                return unsafe { wide($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

wide! {
    /// `dst[i] = bf16(src[i])` (round to nearest even, as [`f32_to_bf16_bits`]).
    pub fn round_bf16(dst: &mut [u16], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32_to_bf16_bits(s);
        }
    }
}

/// f32 → bf16 bits ([`f32_to_bf16_bits`]) over the CPU threads.
pub fn to_bf16_par(src: &[f32]) -> Vec<u16> {
    to_bf16_par_with(src, round_bf16)
}

/// [`to_bf16_par`] with an element-wise pass on the way: `pass(dst, src)` writes `bf16(f(src))` for one
/// threaded chunk (e.g. an activation fused into the next product's input).
pub fn to_bf16_par_with(src: &[f32], pass: impl Fn(&mut [u16], &[f32]) + Sync) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    parallel::par_chunks(&mut out, |first, dst| pass(dst, &src[first..]));
    out
}

wide! {
    /// The gated MLP's `dst[i] = bf16(silu(g[i]) · u[i])`, with `silu(g) = g / (1 + exp(−g))`.
    pub fn silu_mul_bf16(dst: &mut [u16], g: &[f32], u: &[f32]) {
        for ((d, &g), &u) in dst.iter_mut().zip(g).zip(u) {
            *d = f32_to_bf16_bits(g / (1.0 + fast_exp(-g)) * u);
        }
    }
}

wide! {
    /// `dst[i] = bf16(gelu(src[i]))`, the exact (erf) GELU `x/2 · (1 + erf(x/√2))` with [`fast_erf`]:
    /// the encoders' MLP activation written straight into the next product's bf16 input.
    pub fn gelu_erf_bf16(dst: &mut [u16], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = f32_to_bf16_bits(0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2)));
        }
    }
}

/// `erf(x)` without a libm call (so loops over it vectorise): Abramowitz & Stegun 7.1.26 (1.5e-7),
/// evaluated in f32: absolute error < 1e-6 (see the test), far below the bf16 rounding its only caller
/// applies next.
#[inline(always)]
pub fn fast_erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * fast_exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// `exp(x)` in f32 without a libm call, so that loops over it vectorise: Cody–Waite reduction
/// `x = n·ln2 + r` and Cephes' degree-6 polynomial for `exp(r)` (within 2 ulp of `f32::exp` on the
/// range that matters, see the test); 0 below −87.3 (where f32's normal range ends: masked scores), and
/// the argument is capped at 88 (the largest result stays finite).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer, whose value sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * C1 - n * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        e * scale
    }
}

/// Lanes of the reductions in [`softmax_row`] (independent accumulators let the loops vectorise).
const LANES: usize = 16;

wide! {
    /// One attention row whose scores come in two pieces `a` and `b` (past keys, own keys), in place:
    /// `score · scale + mask`, then an f32 softmax over both pieces (`mask` is `[a.len() + b.len()]`), as
    /// transformers' eager attention computes it.
    pub fn softmax_row(a: &mut [f32], b: &mut [f32], mask: &[f32], scale: f32) {
        let (mask_a, mask_b) = mask.split_at(a.len());
        let mut max = [f32::NEG_INFINITY; LANES];
        for (x, m) in [(&mut *a, mask_a), (&mut *b, mask_b)] {
            let mut xs = x.chunks_exact_mut(LANES);
            let mut ms = m.chunks_exact(LANES);
            for (x, m) in (&mut xs).zip(&mut ms) {
                for k in 0..LANES {
                    x[k] = x[k] * scale + m[k];
                    max[k] = if x[k] > max[k] { x[k] } else { max[k] };
                }
            }
            for (x, &m) in xs.into_remainder().iter_mut().zip(ms.remainder()) {
                *x = *x * scale + m;
                max[0] = max[0].max(*x);
            }
        }
        let max = max.into_iter().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = [0f32; LANES];
        for x in [&mut *a, &mut *b] {
            let mut xs = x.chunks_exact_mut(LANES);
            for x in &mut xs {
                for k in 0..LANES {
                    x[k] = fast_exp(x[k] - max);
                    sum[k] += x[k];
                }
            }
            for x in xs.into_remainder() {
                *x = fast_exp(*x - max);
                sum[0] += *x;
            }
        }
        let sum: f32 = sum.into_iter().sum();
        // Two plain loops (not a chain) so the divisions vectorise.
        for x in a.iter_mut() {
            *x /= sum;
        }
        for x in b.iter_mut() {
            *x /= sum;
        }
    }
}

/// Softmax of each query row over its keys split in two buffers, in place: `sp` (`rows × p`, scores
/// against the shared past) and `so` (`rows × r`, against the run's own rows), as transformers' eager
/// attention computes it: `score · scale`, then the additive mask (row `ρ` uses `mask` row `ρ mod n`,
/// `[n, p + r]`), then an f32 softmax over the `p + r` values. Rows are split over the CPU threads.
pub fn softmax_past_own(
    sp: &mut [f32],
    p: usize,
    so: &mut [f32],
    r: usize,
    mask: &[f32],
    n: usize,
    scale: f32,
) {
    let rows = so.len() / r.max(1);
    // Below ~64 rows a thread costs more than it saves.
    let threads = parallel::threads().clamp(1, rows.div_ceil(64).max(1));
    let per = rows.div_ceil(threads).max(1);
    let run = |sp: &mut [f32], so: &mut [f32], first: usize| {
        for (i, (sp, so)) in sp
            .chunks_mut(p.max(1))
            .chain(std::iter::repeat_with(|| &mut [][..]))
            .zip(so.chunks_mut(r.max(1)))
            .enumerate()
        {
            let row = &mask[((first + i) % n) * (p + r)..][..p + r];
            softmax_row(sp, so, row, scale);
        }
    };
    if threads <= 1 {
        run(sp, so, 0);
        return;
    }
    /// One task's rows: its part of `sp`, of `so`, and the index of its first row.
    type Part<'a> = std::sync::Mutex<(&'a mut [f32], &'a mut [f32], usize)>;
    let mut parts: Vec<Part> = Vec::new();
    let (mut sp, mut so, mut first) = (sp, so, 0);
    while first < rows {
        let take = per.min(rows - first);
        let (sp_a, sp_b) = std::mem::take(&mut sp).split_at_mut(take * p);
        let (so_a, so_b) = std::mem::take(&mut so).split_at_mut(take * r);
        (sp, so) = (sp_b, so_b);
        parts.push(std::sync::Mutex::new((sp_a, so_a, first)));
        first += take;
    }
    parallel::parallel(parts.len(), &|i| {
        if let Ok(mut part) = parts[i].lock() {
            let (sp, so, first) = &mut *part;
            run(sp, so, *first);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_erf_and_gelu_match_libm() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            let e = (fast_erf(x) as f64 - libm::erf(x as f64)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 1e-6, "erf error {worst}");
        let xs: Vec<f32> = (-500..500).map(|i| i as f32 * 0.013).collect();
        let mut got = vec![0u16; xs.len()];
        gelu_erf_bf16(&mut got, &xs);
        for (&x, &g) in xs.iter().zip(&got) {
            let exact = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            let g = half::bf16::from_bits(g).to_f64();
            assert!(
                (g - exact).abs() <= exact.abs() / 128.0 + 1e-6,
                "gelu({x}) = {g}, want {exact}"
            );
        }
    }

    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (fast_exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs() as f32;
            worst = worst.max(ulp);
            x += 0.0137;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // Masked scores underflow to exactly zero; the top stays finite; NaN-free on the way.
        assert_eq!(fast_exp(f32::MIN), 0.0);
        assert_eq!(fast_exp(-100.0), 0.0);
        assert!(fast_exp(1e30).is_finite());
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn softmax_row_sums_to_one_and_masks_exactly() {
        let mut a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let mut b: Vec<f32> = (0..5).map(|i| i as f32 * 0.5).collect();
        let mut mask = vec![0f32; 42];
        mask[3] = f32::MIN;
        mask[40] = f32::MIN;
        let (a0, b0) = (a.clone(), b.clone());
        softmax_row(&mut a, &mut b, &mask, 0.5);
        let all: Vec<f32> = a.iter().chain(&b).copied().collect();
        assert_eq!(all[3], 0.0);
        assert_eq!(all[40], 0.0);
        let sum: f32 = all.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        // Against a plain f64 softmax.
        let raw: Vec<f64> = a0
            .iter()
            .chain(&b0)
            .zip(&mask)
            .map(|(&x, &m)| {
                if m < 0.0 {
                    f64::NEG_INFINITY
                } else {
                    x as f64 * 0.5
                }
            })
            .collect();
        let mx = raw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = raw.iter().map(|x| (x - mx).exp()).sum();
        for (got, x) in all.iter().zip(&raw) {
            assert!((*got as f64 - (x - mx).exp() / z).abs() < 1e-6);
        }
    }

    #[test]
    fn silu_mul_and_rounding_match_scalar_formulas() {
        let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.37).collect();
        let u: Vec<f32> = (0..100).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut got = vec![0u16; 100];
        silu_mul_bf16(&mut got, &g, &u);
        let mut r = vec![0u16; 100];
        round_bf16(&mut r, &u);
        for i in 0..100 {
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            let got_f = half::bf16::from_bits(got[i]).to_f32();
            assert!(
                (got_f - want).abs() <= want.abs() * 8e-3 + 1e-30,
                "{i}: {got_f} vs {want}"
            );
            assert_eq!(r[i], half::bf16::from_f32(u[i]).to_bits());
        }
    }
}
