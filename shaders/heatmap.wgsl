// Layer × position heatmap (src/ui/heatmap_gpu.rs draws it through an egui_wgpu paint callback).
//
// The matrix lives in an R32Float texture, wrapped when it has more positions than a texture row holds:
// value (layer, pos) is texel (pos % tex_width, layer * chunks + pos / tex_width). Values are read with
// textureLoad (no sampler: R32Float is not filterable everywhere, and cells must stay exact). A pixel
// covering several positions shows the value of largest magnitude among them (up to MAX_SAMPLES spread
// evenly), so a single strong position is never averaged away; src/ui/heatmap.rs mirrors this for the
// hover card (`pixel_span`, `span_value`) and the colour bar (`ColorScale::t`). Keep them in step.

struct Uniforms {
    // Heatmap rectangle in framebuffer pixels: x, y, width, height.
    rect_px: vec4<f32>,
    // Colour range (log10 of the values when log scale is on), first visible position, positions shown.
    range: vec4<f32>,
    // layers, positions, texture width, chunks per layer.
    dims: vec4<u32>,
    // Colour map row in the lookup texture, 1 = the target is an sRGB (linear) framebuffer,
    // 1 = log scale, unused.
    opts: vec4<u32>,
};

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var values: texture_2d<f32>;
@group(0) @binding(2) var lut: texture_2d<f32>;

const MAX_SAMPLES: u32 = 64u;
// Missing cells (not finite, or padding of the last wrapped row) are stored as this.
const MISSING: f32 = -3.0e38;
const LUT_SIZE: f32 = 256.0;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
};

// One triangle covering the viewport (egui sets it to the callback's rectangle, clamped to the screen);
// the fragment shader maps framebuffer pixels itself, so clamping does not stretch the picture.
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    var corners = array<vec2<f32>, 3>(vec2<f32>(-1.0, -1.0), vec2<f32>(3.0, -1.0), vec2<f32>(-1.0, 3.0));
    var out: VsOut;
    out.pos = vec4<f32>(corners[i], 0.0, 1.0);
    return out;
}

fn load_value(layer: u32, pos: u32) -> f32 {
    let w = u.dims.z;
    let xy = vec2<u32>(pos % w, layer * u.dims.w + pos / w);
    return textureLoad(values, vec2<i32>(xy), 0).r;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let layers = u.dims.x;
    let positions = u.dims.y;
    let x = in.pos.x - u.rect_px.x;
    let y = in.pos.y - u.rect_px.y;
    let w = u.rect_px.z;
    let h = u.rect_px.w;
    if (x < 0.0 || y < 0.0 || x >= w || y >= h || layers == 0u || positions == 0u) {
        discard;
    }
    // Layer 0 at the bottom.
    let row = min(u32(floor(y / h * f32(layers))), layers - 1u);
    let layer = layers - 1u - row;

    let start = u.range.z;
    let count = u.range.w;
    let per_px = count / w;
    var a: f32;
    var b: f32;
    if (per_px <= 1.0) {
        a = floor(start + x * per_px);
        b = a + 1.0;
    } else {
        a = floor(start + (x - 0.5) * per_px);
        b = ceil(start + (x + 0.5) * per_px);
    }
    let last = f32(positions - 1u);
    a = clamp(a, 0.0, last);
    b = clamp(b, a + 1.0, last + 1.0);
    let first = u32(a);
    let n = u32(b) - first;

    var best = MISSING;
    var best_abs = -1.0;
    let samples = min(n, MAX_SAMPLES);
    for (var k = 0u; k < samples; k = k + 1u) {
        // Spread evenly over the span when it holds more positions than samples (k * n / samples).
        let pos = first + (k * n) / samples;
        let v = load_value(layer, pos);
        if (v > MISSING && abs(v) > best_abs) {
            best = v;
            best_abs = abs(v);
        }
    }

    var rgb: vec3<f32>;
    if (best_abs < 0.0) {
        // Nothing to show here: mid grey.
        rgb = vec3<f32>(0.5);
    } else {
        var v = best;
        if (u.opts.z == 1u) {
            v = log(max(v, 1e-30)) / log(10.0);
        }
        let lo = u.range.x;
        let hi = u.range.y;
        let t = clamp((v - lo) / max(hi - lo, 1e-30), 0.0, 1.0);
        let i = u32(round(t * (LUT_SIZE - 1.0)));
        rgb = textureLoad(lut, vec2<i32>(i32(i), i32(u.opts.x)), 0).rgb;
    }
    if (u.opts.y == 1u) {
        // The lookup table holds sRGB bytes; an sRGB framebuffer expects linear values.
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}
