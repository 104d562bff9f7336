//! Colour maps for the heatmap, as 256-entry sRGB tables shared by the GPU shader (uploaded once as a
//! lookup texture) and the CPU (colour bar, tests), so both draw exactly the same colours.
//!
//! Both maps are built in OKLab (Ottosson 2020), where equal distances look about equally different:
//! - [`Colormap::Viridis`] runs through viridis's eight anchor colours (matplotlib's default sequential
//!   map, van der Walt & Smith) and is re-spaced to constant OKLab speed, so equal value steps give equal
//!   perceived steps and lightness rises monotonically (readable in grey and by colour-blind readers).
//! - [`Colormap::Diverging`] goes blue → light neutral → red along straight OKLab lines with the same
//!   lightness at both ends, for signed values centred on zero.

use std::sync::OnceLock;

/// Entries per table.
pub const LUT_SIZE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colormap {
    /// Sequential, for probabilities and attention.
    Viridis,
    /// Diverging around zero, for signed changes (percentage points, knockout effects in %).
    Diverging,
}

impl Colormap {
    pub const ALL: [Colormap; 2] = [Colormap::Viridis, Colormap::Diverging];

    /// Row of this map in the lookup texture.
    pub fn index(self) -> u32 {
        match self {
            Colormap::Viridis => 0,
            Colormap::Diverging => 1,
        }
    }

    /// The sRGB table.
    pub fn lut(self) -> &'static [[u8; 3]; LUT_SIZE] {
        static VIRIDIS: OnceLock<[[u8; 3]; LUT_SIZE]> = OnceLock::new();
        static DIVERGING: OnceLock<[[u8; 3]; LUT_SIZE]> = OnceLock::new();
        match self {
            Colormap::Viridis => VIRIDIS.get_or_init(|| to_srgb8(&viridis_lab())),
            Colormap::Diverging => DIVERGING.get_or_init(|| to_srgb8(&diverging_lab())),
        }
    }

    /// Colour of `t` in `[0, 1]` (clamped; NaN gives the first entry): the entry the shader picks,
    /// `round(t · 255)`.
    pub fn color(self, t: f32) -> [u8; 3] {
        self.lut()[lut_index(t)]
    }
}

/// The table entry for `t`, as the shader computes it.
pub fn lut_index(t: f32) -> usize {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    (t * (LUT_SIZE - 1) as f32).round() as usize
}

/// Every map's table, one row of `LUT_SIZE` RGBA texels per map in [`Colormap::index`] order: the lookup
/// texture's contents.
pub fn lut_texture_rgba() -> Vec<u8> {
    let mut out = Vec::with_capacity(Colormap::ALL.len() * LUT_SIZE * 4);
    for m in Colormap::ALL {
        for [r, g, b] in m.lut() {
            out.extend_from_slice(&[*r, *g, *b, 255]);
        }
    }
    out
}

/// Viridis sampled at 0, 1/7, …, 1 (sRGB).
const VIRIDIS_ANCHORS: [[u8; 3]; 8] = [
    [68, 1, 84],
    [70, 50, 127],
    [54, 92, 141],
    [39, 127, 143],
    [31, 162, 136],
    [74, 194, 110],
    [160, 219, 57],
    [254, 232, 37],
];

type Lab = [f64; 3];

fn viridis_lab() -> Vec<Lab> {
    let anchors: Vec<Lab> = VIRIDIS_ANCHORS
        .iter()
        .map(|&c| linear_to_oklab(srgb8_to_linear(c)))
        .collect();
    resample_by_arc_length(&anchors, LUT_SIZE)
}

/// Ends at lightness 0.5, chroma 0.14 (hue 255° blue, 25° red); the middle is a light neutral grey so
/// zero reads as "no change" on both themes.
fn diverging_lab() -> Vec<Lab> {
    let lch = |l: f64, c: f64, h_deg: f64| {
        let h = h_deg.to_radians();
        [l, c * h.cos(), c * h.sin()]
    };
    let blue = lch(0.5, 0.14, 255.0);
    let mid = lch(0.95, 0.0, 0.0);
    let red = lch(0.5, 0.14, 25.0);
    let half = LUT_SIZE / 2;
    let mut out = resample_by_arc_length(&[blue, mid], half);
    // The second half starts one step past the middle so the table stays symmetric around 127.5.
    let right = resample_by_arc_length(&[mid, red], half);
    out.extend(right);
    out
}

/// `n` points along the polyline through `pts`, equally spaced in OKLab distance (first and last kept).
fn resample_by_arc_length(pts: &[Lab], n: usize) -> Vec<Lab> {
    let dist = |a: &Lab, b: &Lab| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    let mut cum = vec![0.0];
    for w in pts.windows(2) {
        let last = cum.last().copied().unwrap_or(0.0);
        cum.push(last + dist(&w[0], &w[1]));
    }
    let total = cum.last().copied().unwrap_or(0.0);
    (0..n)
        .map(|i| {
            let s = if n <= 1 {
                0.0
            } else {
                total * i as f64 / (n - 1) as f64
            };
            let seg = cum
                .windows(2)
                .position(|w| s <= w[1])
                .unwrap_or(pts.len().saturating_sub(2));
            let (a, b) = (pts[seg], pts[(seg + 1).min(pts.len() - 1)]);
            let len = cum[seg + 1] - cum[seg];
            let f = if len > 0.0 { (s - cum[seg]) / len } else { 0.0 };
            [
                a[0] + (b[0] - a[0]) * f,
                a[1] + (b[1] - a[1]) * f,
                a[2] + (b[2] - a[2]) * f,
            ]
        })
        .collect()
}

fn to_srgb8(lab: &[Lab]) -> [[u8; 3]; LUT_SIZE] {
    let mut out = [[0u8; 3]; LUT_SIZE];
    for (o, c) in out.iter_mut().zip(lab) {
        *o = linear_to_srgb8(oklab_to_linear(*c));
    }
    out
}

pub fn srgb_to_linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

pub fn linear_to_srgb(c: f64) -> f64 {
    if c <= 0.003_130_8 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

fn srgb8_to_linear(c: [u8; 3]) -> [f64; 3] {
    c.map(|v| srgb_to_linear(f64::from(v) / 255.0))
}

fn linear_to_srgb8(c: [f64; 3]) -> [u8; 3] {
    c.map(|v| (linear_to_srgb(v.clamp(0.0, 1.0)) * 255.0).round() as u8)
}

/// Linear sRGB → OKLab (Ottosson's matrices).
pub fn linear_to_oklab([r, g, b]: [f64; 3]) -> Lab {
    let l = 0.412_221_470_8 * r + 0.536_332_536_3 * g + 0.051_445_992_9 * b;
    let m = 0.211_903_498_2 * r + 0.680_699_545_1 * g + 0.107_396_956_6 * b;
    let s = 0.088_302_461_9 * r + 0.281_718_837_6 * g + 0.629_978_700_5 * b;
    let (l, m, s) = (l.cbrt(), m.cbrt(), s.cbrt());
    [
        0.210_454_255_3 * l + 0.793_617_785_0 * m - 0.004_072_046_8 * s,
        1.977_998_495_1 * l - 2.428_592_205_0 * m + 0.450_593_709_9 * s,
        0.025_904_037_1 * l + 0.782_771_766_2 * m - 0.808_675_766_0 * s,
    ]
}

/// OKLab → linear sRGB (may leave `[0, 1]` for out-of-gamut colours; callers clamp).
pub fn oklab_to_linear([l, a, b]: Lab) -> [f64; 3] {
    let l_ = l + 0.396_337_777_4 * a + 0.215_803_757_3 * b;
    let m_ = l - 0.105_561_345_8 * a - 0.063_854_172_8 * b;
    let s_ = l - 0.089_484_177_5 * a - 1.291_485_548_0 * b;
    let (l, m, s) = (l_.powi(3), m_.powi(3), s_.powi(3));
    [
        4.076_741_662_1 * l - 3.307_711_591_3 * m + 0.230_969_929_2 * s,
        -1.268_438_004_6 * l + 2.609_757_401_1 * m - 0.341_319_396_5 * s,
        -0.004_196_086_3 * l - 0.703_418_614_7 * m + 1.707_614_701_0 * s,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab8(c: [u8; 3]) -> Lab {
        linear_to_oklab(srgb8_to_linear(c))
    }

    #[test]
    fn oklab_round_trips() {
        for c in [
            [0u8, 0, 0],
            [255, 255, 255],
            [68, 1, 84],
            [254, 232, 37],
            [12, 200, 99],
        ] {
            assert_eq!(linear_to_srgb8(oklab_to_linear(lab8(c))), c);
        }
        // White is L = 1 with no chroma.
        let w = lab8([255, 255, 255]);
        assert!((w[0] - 1.0).abs() < 1e-4 && w[1].abs() < 1e-4 && w[2].abs() < 1e-4);
    }

    #[test]
    fn viridis_keeps_its_ends_and_rises_in_lightness_at_an_even_pace() {
        let lut = Colormap::Viridis.lut();
        assert_eq!(lut[0], VIRIDIS_ANCHORS[0]);
        assert_eq!(lut[LUT_SIZE - 1], VIRIDIS_ANCHORS[7]);
        let lab = viridis_lab();
        assert!(lab.windows(2).all(|w| w[1][0] > w[0][0]), "lightness rises");
        let steps: Vec<f64> = lab
            .windows(2)
            .map(|w| {
                ((w[1][0] - w[0][0]).powi(2)
                    + (w[1][1] - w[0][1]).powi(2)
                    + (w[1][2] - w[0][2]).powi(2))
                .sqrt()
            })
            .collect();
        let (lo, hi) = steps
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        // Equal arc length along the path; a step across an anchor's corner is a slightly shorter chord.
        assert!(hi / lo < 1.05, "uneven steps {lo}..{hi}");
    }

    #[test]
    fn diverging_is_symmetric_around_a_neutral_middle() {
        let lab = diverging_lab();
        assert_eq!(lab.len(), LUT_SIZE);
        for i in 0..LUT_SIZE / 2 {
            let (a, b) = (lab[i], lab[LUT_SIZE - 1 - i]);
            assert!((a[0] - b[0]).abs() < 1e-9, "lightness differs at {i}");
        }
        let mid = Colormap::Diverging.color(0.5);
        let spread =
            mid.iter().max().copied().unwrap_or(0) - mid.iter().min().copied().unwrap_or(0);
        assert!(spread <= 2, "{mid:?} is not neutral");
        let [r0, _, b0] = Colormap::Diverging.color(0.0);
        let [r1, _, b1] = Colormap::Diverging.color(1.0);
        assert!(b0 > r0 && r1 > b1, "blue for low, red for high");
    }

    #[test]
    fn lookup_clamps_and_rounds_like_the_shader() {
        assert_eq!(lut_index(0.0), 0);
        assert_eq!(lut_index(1.0), 255);
        assert_eq!(lut_index(-3.0), 0);
        assert_eq!(lut_index(7.0), 255);
        assert_eq!(lut_index(f32::NAN), 0);
        assert_eq!(lut_index(0.5), 128);
        assert_eq!(lut_index(0.498), 127);
        let tex = lut_texture_rgba();
        assert_eq!(tex.len(), 2 * LUT_SIZE * 4);
        assert_eq!(
            &tex[LUT_SIZE * 4..LUT_SIZE * 4 + 3],
            &Colormap::Diverging.lut()[0][..]
        );
    }
}
