//! Sizes and resampling filters of the Qwen2.5-Omni vision path.
//!
//! * [`smart_resize`] is qwen-omni-utils' (`v2_5/vision_process.py`), which transformers' Qwen2-VL processors
//!   copy: multiples of 28 within `[min_pixels, max_pixels]`, aspect kept.
//! * Two bicubic filters, both Keys a = -0.5 with antialias (support widened by the downscale factor,
//!   weights normalised), but with different arithmetic, because the two reference paths differ:
//!
//! Video frames: qwen-omni-utils `transforms.functional.resize(uint8 TCHW, BICUBIC, antialias=True)`, which
//! torchvision runs as `torch.nn.functional.interpolate(float32, mode="bicubic", antialias=True)` (ATen
//! `_upsample_bicubic2d_aa`, whose aa cubic uses a = -0.5 like PIL) with a float32 intermediate, then clamps
//! and rounds (half to even) back to uint8 ([`Filter::TorchBicubicAa`]).
//!
//! Images: qwen-omni-utils `PIL.Image.resize` (default BICUBIC), Pillow's fixed-point 8-bit path with a
//! rounded uint8 intermediate after the horizontal pass ([`Filter::PillowBicubic`]).
//!
//! The transformers processor then resizes to the size it already has, which is the identity.
//!
//! video-SALMONN 2+: transformers' fast Qwen2-VL processor resizes the decoded uint8 frames (and images)
//! with torchvision v2, which keeps uint8 through ATen's native kernels ([`Filter::TorchBicubicAaU8`]).

use super::RgbFrame;

/// qwen-omni-utils `MAX_RATIO`.
pub const MAX_RATIO: f64 = 200.0;

/// qwen-omni-utils `smart_resize(height, width, factor, min_pixels, max_pixels)` → `(h, w)`.
/// Errors (instead of Python's assert / PIL's "height and width must be > 0") where the reference fails.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: f64,
    max_pixels: f64,
) -> Result<(usize, usize), String> {
    if height == 0 || width == 0 {
        return Err(format!("frame size {width}x{height} is empty"));
    }
    if max_pixels < min_pixels {
        return Err(format!(
            "max_pixels {max_pixels} must be >= min_pixels {min_pixels}"
        ));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_RATIO {
        return Err(format!(
            "absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio}"
        ));
    }
    // Python's round() is round-half-to-even.
    let mut h_bar = f.max((h / f).round_ties_even() * f);
    let mut w_bar = f.max((w / f).round_ties_even() * f);
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels).sqrt();
        h_bar = (h / beta / f).floor() * f;
        w_bar = (w / beta / f).floor() * f;
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    if h_bar < 1.0 || w_bar < 1.0 {
        return Err(format!(
            "{width}x{height} resized within max_pixels {max_pixels} rounds to {w_bar}x{h_bar} (zero size); \
             raise max_pixels"
        ));
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// Which reference implementation of bicubic+antialias to reproduce (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// torch `interpolate(float, bicubic, antialias=True)` then round to uint8 (video frames).
    TorchBicubicAa,
    /// Pillow `Image.resize(BICUBIC)` on 8-bit RGB (images).
    PillowBicubic,
    /// torchvision v2 `F.resize(uint8 tensor, BICUBIC, antialias=True)`, which ATen runs natively on uint8
    /// (`_upsample_bicubic2d_aa`'s uint8 kernels): int16 fixed-point weights, a uint8 intermediate. The fast
    /// Qwen2-VL image processor resizes so (video-SALMONN 2+'s frames and images). Up to ~20 levels from
    /// [`Filter::TorchBicubicAa`] on sharp edges, where the intermediate clips the overshoot.
    TorchBicubicAaU8,
}

/// Keys cubic with a = -0.5, as Pillow's `bicubic_filter` and ATen's `HelperInterpCubic::aa_filter`.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index and normalised weights (Pillow `precompute_coeffs` ≡ ATen
/// `_compute_index_ranges_weights` for the aa kernels: same centre, support and truncation).
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f64>>,
}

fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero; negative values are clamped to 0 right after anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|x| cubic((x as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        start.push(xmin);
        weights.push(w);
    }
    Taps { start, weights }
}

/// ATen's float32 weights for the aa kernels (`_compute_indices_min_size_weights_aa<float>` with
/// `HelperInterpCubic::aa_filter<float>`), reproducing its float32/float64 promotions and the FMA
/// contractions GCC makes in the AVX2/AVX512 builds of UpSampleKernel.cpp. Bit-exact against torch 2.15 on
/// x86-64 for the fixtures; a build without FMA would differ in the last float bit (±1 level after
/// rounding in rare ties).
fn taps_torch(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<Vec<f32>>) {
    const A: f32 = -0.5;
    let filter = |x: f32| -> f32 {
        let x = x.abs();
        if x < 1.0 {
            // ((A + 2) * x - (A + 3)) * x * x + 1
            let t = (A + 2.0).mul_add(x, -(A + 3.0));
            (t * x).mul_add(x, 1.0)
        } else if x < 2.0 {
            // ((A * x - 5A) * x + 8A) * x - 4A
            A.mul_add(x, -(5.0 * A))
                .mul_add(x, 8.0 * A)
                .mul_add(x, -(4.0 * A))
        } else {
            0.0
        }
    };
    let scale = in_size as f32 / out_size as f32;
    let support: f32 = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale: f32 = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for i in 0..out_size {
        let center = (scale as f64 * (i as f64 + 0.5)) as f32;
        let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
        let xmax = (((center + support) as f64 + 0.5) as i64).min(in_size as i64);
        let mut w: Vec<f32> = (xmin..xmax.max(xmin))
            .map(|j| filter((((j as f32 - center) as f64 + 0.5) * invscale as f64) as f32))
            .collect();
        let mut total = 0f32;
        for &v in &w {
            total += v;
        }
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        starts.push(xmin as usize);
        weights.push(w);
    }
    (starts, weights)
}

/// Resizes an RGB frame to `out_w`×`out_h`. Separable: horizontal pass first, then vertical (both Pillow's
/// and ATen's order); a pass whose size does not change is skipped (both skip it; it would be the identity).
pub fn resize(src: &RgbFrame, out_h: usize, out_w: usize, filter: Filter) -> RgbFrame {
    if src.height == out_h && src.width == out_w {
        return src.clone();
    }
    match filter {
        Filter::TorchBicubicAa => resize_torch(src, out_h, out_w),
        Filter::PillowBicubic => resize_pillow(src, out_h, out_w),
        Filter::TorchBicubicAaU8 => resize_torch_u8(src, out_h, out_w),
    }
}

/// ATen's int16 weights for the uint8 aa kernels (`_compute_index_ranges_int16_weights`): float64 weights as
/// for the float kernels, then scaled by `2^precision` (the largest precision at which the largest weight of
/// the dimension still fits in int16) and rounded half away from zero.
fn taps_torch_u8(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<Vec<i32>>, u32) {
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let max_taps = support.ceil() as usize * 2 + 1;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    let mut wt_max = 0f64;
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xsize = (((center + support + 0.5) as i64).min(in_size as i64) - xmin)
            .clamp(0, max_taps as i64);
        let mut w: Vec<f64> = (0..xsize)
            .map(|j| cubic(((j + xmin) as f64 - center + 0.5) * invscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            for v in &mut w {
                *v /= total;
                wt_max = wt_max.max(*v);
            }
        }
        starts.push(xmin as usize);
        weights.push(w);
    }
    let mut precision = 0u32;
    while precision < 22 {
        if (0.5 + wt_max * (1u64 << (precision + 1)) as f64) as i64 >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let scale_i = (1u64 << precision) as f64;
    let ints = weights
        .iter()
        .map(|w| {
            w.iter()
                .map(|&v| {
                    let v = v * scale_i;
                    if v < 0.0 {
                        (-0.5 + v) as i32
                    } else {
                        (0.5 + v) as i32
                    }
                })
                .collect()
        })
        .collect();
    (starts, ints, precision)
}

/// One fixed-point tap sum: rounding bias, integer products, arithmetic shift, saturation to uint8.
#[inline]
fn fixed_tap(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

fn resize_torch_u8(src: &RgbFrame, out_h: usize, out_w: usize) -> RgbFrame {
    let (in_h, in_w) = (src.height, src.width);
    let mut cur = src.data.clone();
    let mut cur_w = in_w;
    if out_w != in_w {
        let (starts, wi, prec) = taps_torch_u8(in_w, out_w);
        let bias = 1i32 << (prec.max(1) - 1);
        let mut out = vec![0u8; in_h * out_w * 3];
        for (row, out_row) in cur
            .chunks_exact(in_w * 3)
            .zip(out.chunks_exact_mut(out_w * 3))
        {
            for ((o, &s), w) in out_row.chunks_exact_mut(3).zip(&starts).zip(&wi) {
                let px = &row[s * 3..(s + w.len()) * 3];
                let mut acc = [bias; 3];
                for (p, &wk) in px.chunks_exact(3).zip(w) {
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * wk;
                    }
                }
                for c in 0..3 {
                    o[c] = fixed_tap(acc[c], prec);
                }
            }
        }
        cur = out;
        cur_w = out_w;
    }
    if out_h != in_h {
        let (starts, wi, prec) = taps_torch_u8(in_h, out_h);
        let bias = 1i32 << (prec.max(1) - 1);
        let stride = cur_w * 3;
        let mut out = vec![0u8; out_h * stride];
        let mut acc = vec![0i32; stride];
        for y in 0..out_h {
            acc.iter_mut().for_each(|a| *a = bias);
            for (k, &wk) in wi[y].iter().enumerate() {
                let srow = &cur[(starts[y] + k) * stride..(starts[y] + k + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(srow) {
                    *a += v as i32 * wk;
                }
            }
            for (d, &a) in out[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
                *d = fixed_tap(a, prec);
            }
        }
        cur = out;
    }
    RgbFrame {
        width: out_w,
        height: out_h,
        data: cur,
    }
}

fn resize_torch(src: &RgbFrame, out_h: usize, out_w: usize) -> RgbFrame {
    // `f32::mul_add` is a libm call unless the FMA instruction is enabled at compile time: dispatch at run
    // time to a copy compiled with it (≈30× faster on 4K frames; same results).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA (checked just above).
        return unsafe { resize_torch_fma(src, out_h, out_w) };
    }
    resize_torch_impl(src, out_h, out_w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn resize_torch_fma(src: &RgbFrame, out_h: usize, out_w: usize) -> RgbFrame {
    resize_torch_impl(src, out_h, out_w)
}

#[inline(always)]
fn resize_torch_impl(src: &RgbFrame, out_h: usize, out_w: usize) -> RgbFrame {
    let (in_h, in_w) = (src.height, src.width);
    // Float intermediate (ATen keeps the input dtype, float32, between passes).
    let mut cur: Vec<f32>;
    let mut cur_w = in_w;
    if out_w != in_w {
        let (starts, wf) = taps_torch(in_w, out_w);
        cur = vec![0f32; in_h * out_w * 3];
        for (row, out_row) in src
            .data
            .chunks_exact(in_w * 3)
            .zip(cur.chunks_exact_mut(out_w * 3))
        {
            for ((o, &s), w) in out_row.chunks_exact_mut(3).zip(&starts).zip(&wf) {
                let px = &row[s * 3..(s + w.len()) * 3];
                // ATen `interpolate_aa_single_dim`: t0*w0, then fused multiply-adds in tap order.
                let (mut a0, mut a1, mut a2) = (
                    px[0] as f32 * w[0],
                    px[1] as f32 * w[0],
                    px[2] as f32 * w[0],
                );
                for (p, &wk) in px.chunks_exact(3).zip(w).skip(1) {
                    a0 = (p[0] as f32).mul_add(wk, a0);
                    a1 = (p[1] as f32).mul_add(wk, a1);
                    a2 = (p[2] as f32).mul_add(wk, a2);
                }
                o[0] = a0;
                o[1] = a1;
                o[2] = a2;
            }
        }
        cur_w = out_w;
    } else {
        cur = src.data.iter().map(|&v| v as f32).collect();
    }
    if out_h != in_h {
        let (starts, wf) = taps_torch(in_h, out_h);
        let stride = cur_w * 3;
        let mut out = vec![0f32; out_h * stride];
        for y in 0..out_h {
            let (s, w) = (starts[y], &wf[y]);
            let dst = &mut out[y * stride..(y + 1) * stride];
            let first = &cur[s * stride..(s + 1) * stride];
            for (d, &v) in dst.iter_mut().zip(first) {
                *d = v * w[0];
            }
            for (k, &wk) in w.iter().enumerate().skip(1) {
                let srow = &cur[(s + k) * stride..(s + k + 1) * stride];
                for (d, &v) in dst.iter_mut().zip(srow) {
                    *d = v.mul_add(wk, *d);
                }
            }
        }
        cur = out;
    }
    // torchvision: clamp(0, 255) for bicubic, then round (half to even) and cast back to uint8.
    let data = cur
        .iter()
        .map(|&v| v.clamp(0.0, 255.0).round_ties_even() as u8)
        .collect();
    RgbFrame {
        width: out_w,
        height: out_h,
        data,
    }
}

/// Pillow `PRECISION_BITS` (32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

fn fixed_point(w: &[f64]) -> Vec<i64> {
    // Pillow `normalize_coeffs_8bpc`: round half away from zero.
    w.iter()
        .map(|&v| {
            let s = v * (1u64 << PRECISION_BITS) as f64;
            if v < 0.0 {
                (s - 0.5) as i64
            } else {
                (s + 0.5) as i64
            }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resize_pillow(src: &RgbFrame, out_h: usize, out_w: usize) -> RgbFrame {
    let (in_h, in_w) = (src.height, src.width);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut cur = src.data.clone();
    let mut cur_w = in_w;
    if out_w != in_w {
        let t = taps(in_w, out_w);
        let kk: Vec<Vec<i64>> = t.weights.iter().map(|w| fixed_point(w)).collect();
        let mut out = vec![0u8; in_h * out_w * 3];
        for y in 0..in_h {
            let row = &cur[y * in_w * 3..(y + 1) * in_w * 3];
            for x in 0..out_w {
                for c in 0..3 {
                    let mut acc = half;
                    for (k, &wk) in kk[x].iter().enumerate() {
                        acc += row[(t.start[x] + k) * 3 + c] as i64 * wk;
                    }
                    out[(y * out_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = out;
        cur_w = out_w;
    }
    if out_h != in_h {
        let t = taps(in_h, out_h);
        let kk: Vec<Vec<i64>> = t.weights.iter().map(|w| fixed_point(w)).collect();
        let stride = cur_w * 3;
        let mut out = vec![0u8; out_h * stride];
        let mut acc = vec![0i64; stride];
        for y in 0..out_h {
            acc.iter_mut().for_each(|a| *a = half);
            for (k, &wk) in kk[y].iter().enumerate() {
                let srow = &cur[(t.start[y] + k) * stride..(t.start[y] + k + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(srow) {
                    *a += v as i64 * wk;
                }
            }
            for (d, &a) in out[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
                *d = clip8(a);
            }
        }
        cur = out;
    }
    RgbFrame {
        width: out_w,
        height: out_h,
        data: cur,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_reference_cases() {
        // Values from qwen-omni-utils (see tests/fixtures/media/video/*.golden.json).
        assert_eq!(smart_resize(48, 64, 28, 3136.0, 602112.0), Ok((56, 56)));
        assert_eq!(smart_resize(48, 64, 28, 100352.0, 602112.0), Ok((280, 392)));
        assert_eq!(smart_resize(96, 48, 28, 3136.0, 602112.0), Ok((84, 56)));
        assert_eq!(smart_resize(48, 64, 28, 784.0, 1100.0), Ok((28, 28)));
        assert_eq!(smart_resize(45, 90, 28, 784.0, 1568.0), Ok((28, 56)));
        // qwen-omni-utils returns (0, 392) here and PIL then fails; we refuse with a clear error.
        assert!(smart_resize(10, 1000, 28, 784.0, 1568.0).is_err());
        assert!(smart_resize(1, 500, 28, 784.0, 1568.0).is_err());
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let f = RgbFrame {
            width: 5,
            height: 3,
            data: (0..45).map(|v| v as u8).collect(),
        };
        assert_eq!(resize(&f, 3, 5, Filter::TorchBicubicAa), f);
        let c = RgbFrame {
            width: 7,
            height: 9,
            data: vec![77; 7 * 9 * 3],
        };
        for filter in [Filter::TorchBicubicAa, Filter::PillowBicubic] {
            let r = resize(&c, 4, 13, filter);
            assert!(r.data.iter().all(|&v| v == 77), "{filter:?}");
        }
    }
}
