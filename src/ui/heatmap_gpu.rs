//! The heatmap on the GPU: `shaders/heatmap.wgsl` drawn through an `egui_wgpu` paint callback, so a
//! 40 × 5 000 matrix costs the UI thread one callback per frame instead of 200 000 rectangles.
//!
//! The matrix is uploaded once per result (an R32Float texture, wrapped into several texture rows per
//! layer when it is wider than a texture row may be) — when [`HeatmapCallback::generation`] changes, not
//! every frame. Each frame only writes 64 bytes of uniforms (rectangle, colour range, visible positions).
//! Colour maps come from [`super::colormap`] as a small lookup texture, the same table the colour bar
//! draws with. The pipeline is made once per renderer by [`install`] (it needs the target format, which
//! only the app's `eframe::Frame` knows); without it (glow renderer, headless tests without wgpu) the
//! callback draws nothing and the panel says so.

use std::sync::Arc;

use eframe::egui_wgpu::{self, wgpu};

use crate::flow::heatmap::Heatmap;

use super::colormap::{lut_texture_rgba, Colormap, LUT_SIZE};
use super::heatmap::ColorScale;

pub const SHADER: &str = include_str!("../../shaders/heatmap.wgsl");

/// Texture rows are at most this wide (and no wider than the device allows): 8192 is what lavapipe and
/// most GPUs guarantee, so the wrapping below is exercised the same way everywhere.
pub const MAX_TEXTURE_WIDTH: u32 = 8192;

/// Cells that have no value (not finite, or padding after the last position) hold this; the shader
/// skips them and paints grey where a pixel has nothing else. Must equal `MISSING` in the shader.
pub const MISSING: f32 = -3.0e38;

/// Where `(layer, position)` lives in the texture: `width` texels per texture row, `chunks` texture rows
/// per layer (`ceil(positions / width)`), value at `(pos % width, layer * chunks + pos / width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TexLayout {
    pub width: u32,
    pub chunks: u32,
    pub height: u32,
}

impl TexLayout {
    /// `None` when the matrix is empty or needs more than `max_dim` texture rows.
    pub fn new(layers: usize, positions: usize, max_dim: u32) -> Option<Self> {
        Self::with_width(layers, positions, max_dim.min(MAX_TEXTURE_WIDTH), max_dim)
    }

    /// Rows of at most `max_width` texels.
    pub fn with_width(
        layers: usize,
        positions: usize,
        max_width: u32,
        max_dim: u32,
    ) -> Option<Self> {
        if layers == 0 || positions == 0 || max_width == 0 {
            return None;
        }
        let width = (positions as u64).min(u64::from(max_width.min(max_dim)));
        let chunks = (positions as u64).div_ceil(width);
        let height = layers as u64 * chunks;
        (height <= u64::from(max_dim)).then_some(Self {
            width: width as u32,
            chunks: chunks as u32,
            height: height as u32,
        })
    }

    pub fn texel(&self, layer: usize, position: usize) -> (u32, u32) {
        let w = self.width as usize;
        (
            (position % w) as u32,
            (layer * self.chunks as usize + position / w) as u32,
        )
    }
}

/// The texture's contents, row-major: the matrix rewrapped by `layout`, non-finite values as [`MISSING`].
pub fn pack(m: &Heatmap, layout: &TexLayout) -> Vec<f32> {
    let (w, chunks) = (layout.width as usize, layout.chunks as usize);
    let mut out = vec![MISSING; w * layout.height as usize];
    for l in 0..m.layers {
        for (p, &v) in m.row(l).iter().enumerate() {
            let i = (l * chunks + p / w) * w + p % w;
            out[i] = if v.is_finite() { v } else { MISSING };
        }
    }
    out
}

/// The shader's `Uniforms`, as 16 words (four `vec4`s; see `shaders/heatmap.wgsl`).
pub fn uniform_words(
    rect_px: [f32; 4],
    scale: &ColorScale,
    window: (f32, f32),
    dims: (usize, usize),
    layout: &TexLayout,
    linear_output: bool,
) -> [u32; 16] {
    let f = f32::to_bits;
    [
        f(rect_px[0]),
        f(rect_px[1]),
        f(rect_px[2]),
        f(rect_px[3]),
        f(scale.lo),
        f(scale.hi),
        f(window.0),
        f(window.1),
        dims.0 as u32,
        dims.1 as u32,
        layout.width,
        layout.chunks,
        scale.map.index(),
        u32::from(linear_output),
        u32::from(scale.log),
        0,
    ]
}

fn words_to_bytes(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Key in egui's memory under which [`install`] leaves the device's largest texture dimension.
fn installed_id() -> egui::Id {
    egui::Id::unique("avflow.heatmap_gpu")
}

/// The device's largest texture dimension once [`install`] ran for this context; `None` before (or
/// without a wgpu renderer): the panel then explains instead of drawing.
pub fn installed(ctx: &egui::Context) -> Option<u32> {
    ctx.data(|d| d.get_temp::<u32>(installed_id()))
}

/// Builds the pipeline and the colour-map texture into the renderer's callback resources.
pub fn install(ctx: &egui::Context, rs: &egui_wgpu::RenderState) {
    let res = Resources::new(&rs.device, &rs.queue, rs.target_format);
    let max_dim = res.max_dim;
    rs.renderer.write().callback_resources.insert(res);
    ctx.data_mut(|d| d.insert_temp(installed_id(), max_dim));
}

struct Uploaded {
    generation: u64,
    layout: TexLayout,
    bind_group: wgpu::BindGroup,
    /// Kept alive for the bind group.
    _texture: wgpu::Texture,
}

struct Resources {
    pipeline: wgpu::RenderPipeline,
    bind_group_layout: wgpu::BindGroupLayout,
    uniforms: wgpu::Buffer,
    lut: wgpu::TextureView,
    /// The target is an sRGB format: the shader must write linear colour.
    linear_output: bool,
    max_dim: u32,
    data: Option<Uploaded>,
}

impl Resources {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("avflow_heatmap"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                multisampled: false,
                // textureLoad only: R32Float need not be filterable.
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
            },
            count: None,
        };
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("avflow_heatmap"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(64),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
            ],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("avflow_heatmap"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("avflow_heatmap"),
            layout: Some(&layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            // eframe's defaults (and kittest's): no depth buffer, no multisampling. Change both here
            // if `NativeOptions` ever asks for them, or the pipeline will not match the render pass.
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("avflow_heatmap_uniforms"),
            size: 64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let lut_size = wgpu::Extent3d {
            width: LUT_SIZE as u32,
            height: Colormap::ALL.len() as u32,
            depth_or_array_layers: 1,
        };
        // Plain Rgba8Unorm: the shader reads the sRGB bytes as they are and converts only for sRGB
        // targets, as egui's own shader does.
        let lut = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("avflow_heatmap_lut"),
            size: lut_size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &lut,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            &lut_texture_rgba(),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(4 * LUT_SIZE as u32),
                rows_per_image: Some(lut_size.height),
            },
            lut_size,
        );
        Self {
            pipeline,
            bind_group_layout,
            uniforms,
            lut: lut.create_view(&wgpu::TextureViewDescriptor::default()),
            linear_output: format.is_srgb(),
            max_dim: device.limits().max_texture_dimension_2d,
            data: None,
        }
    }

    fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, m: &Heatmap, generation: u64) {
        self.data = None;
        let Some(layout) = TexLayout::new(m.layers, m.positions, self.max_dim) else {
            return;
        };
        let size = wgpu::Extent3d {
            width: layout.width,
            height: layout.height,
            depth_or_array_layers: 1,
        };
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("avflow_heatmap_values"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::R32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            &floats_to_bytes(&pack(m, &layout)),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(4 * layout.width),
                rows_per_image: Some(layout.height),
            },
            size,
        );
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("avflow_heatmap"),
            layout: &self.bind_group_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&self.lut),
                },
            ],
        });
        self.data = Some(Uploaded {
            generation,
            layout,
            bind_group,
            _texture: texture,
        });
    }
}

/// One frame's heatmap. Only one heatmap is drawn per frame (the uniforms are shared).
pub struct HeatmapCallback {
    pub matrix: Arc<Heatmap>,
    /// Identifies `matrix`: a new value uploads it, the same value re-uses the texture.
    pub generation: u64,
    /// Where the heatmap goes, in points (the paint callback's rectangle).
    pub rect: egui::Rect,
    pub scale: ColorScale,
    /// First visible position and the number of positions across the rectangle.
    pub window: (f32, f32),
}

impl egui_wgpu::CallbackTrait for HeatmapCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<Resources>() else {
            return Vec::new();
        };
        if res.data.as_ref().map(|d| d.generation) != Some(self.generation) {
            res.upload(device, queue, &self.matrix, self.generation);
        }
        if let Some(d) = &res.data {
            let ppp = screen.pixels_per_point;
            let r = self.rect;
            let rect_px = [
                r.min.x * ppp,
                r.min.y * ppp,
                r.width() * ppp,
                r.height() * ppp,
            ];
            let words = uniform_words(
                rect_px,
                &self.scale,
                self.window,
                (self.matrix.layers, self.matrix.positions),
                &d.layout,
                res.linear_output,
            );
            queue.write_buffer(&res.uniforms, 0, &words_to_bytes(&words));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<Resources>() else {
            return;
        };
        let Some(d) = res
            .data
            .as_ref()
            .filter(|d| d.generation == self.generation)
        else {
            return;
        };
        pass.set_pipeline(&res.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_matrices_take_one_texture_row_per_layer() {
        let l = TexLayout::new(3, 10, 8192).expect("fits");
        assert_eq!(
            l,
            TexLayout {
                width: 10,
                chunks: 1,
                height: 3
            }
        );
        assert_eq!(l.texel(2, 9), (9, 2));
        assert_eq!(TexLayout::new(0, 10, 8192), None);
        assert_eq!(TexLayout::new(3, 0, 8192), None);
    }

    #[test]
    fn wide_matrices_wrap_into_several_rows_per_layer() {
        // 45 000 positions (a 60 s 1080p clip) × 36 layers: 6 rows of 8192 per layer.
        let l = TexLayout::new(36, 45_000, 16_384).expect("fits");
        assert_eq!(
            l,
            TexLayout {
                width: 8192,
                chunks: 6,
                height: 216
            }
        );
        assert_eq!(l.texel(0, 8191), (8191, 0));
        assert_eq!(l.texel(0, 8192), (0, 1));
        assert_eq!(l.texel(1, 0), (0, 6));
        assert_eq!(l.texel(35, 44_999), (44_999 - 5 * 8192, 35 * 6 + 5));
        // A smaller device limit narrows the rows; too many rows is refused.
        assert_eq!(
            TexLayout::new(2, 5000, 2048).map(|l| (l.width, l.chunks)),
            Some((2048, 3))
        );
        assert_eq!(TexLayout::new(1000, 5000, 2048), None);
    }

    #[test]
    fn packing_wraps_and_marks_missing_cells() {
        let m = Heatmap::new(
            2,
            5,
            vec![0.0, 1.0, 2.0, f32::NAN, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        )
        .expect("shape");
        let l = TexLayout::with_width(2, 5, 2, 8192).expect("fits");
        assert_eq!(
            l,
            TexLayout {
                width: 2,
                chunks: 3,
                height: 6
            }
        );
        let t = pack(&m, &l);
        assert_eq!(t.len(), 12);
        for layer in 0..2 {
            for p in 0..5 {
                let (x, y) = l.texel(layer, p);
                let got = t[(y * l.width + x) as usize];
                match m.get(layer, p) {
                    Some(v) if v.is_finite() => assert_eq!(got, v),
                    _ => assert_eq!(got, MISSING),
                }
            }
        }
        // Padding after position 4 of each layer.
        assert_eq!(t[5], MISSING);
        assert_eq!(t[11], MISSING);
    }

    #[test]
    fn uniforms_follow_the_shader_layout() {
        let scale = ColorScale {
            map: Colormap::Diverging,
            lo: -2.0,
            hi: 2.0,
            log: false,
        };
        let l = TexLayout::new(4, 10, 8192).expect("fits");
        let w = uniform_words(
            [1.0, 2.0, 300.0, 40.0],
            &scale,
            (5.0, 10.0),
            (4, 10),
            &l,
            true,
        );
        assert_eq!(f32::from_bits(w[2]), 300.0);
        assert_eq!(f32::from_bits(w[4]), -2.0);
        assert_eq!(f32::from_bits(w[7]), 10.0);
        assert_eq!(&w[8..12], &[4, 10, 10, 1]);
        assert_eq!(&w[12..], &[1, 1, 0, 0]);
        assert_eq!(words_to_bytes(&w).len(), 64);
        assert!(SHADER.contains("const MISSING: f32 = -3.0e38;"));
        assert!(SHADER.contains("const MAX_SAMPLES: u32 = 64u;"));
        assert_eq!(super::super::heatmap::MAX_SAMPLES, 64);
    }

    /// The shader parses and validates (naga, as wgpu does at pipeline creation), without a GPU.
    #[test]
    fn shader_validates() {
        let module = wgpu::naga::front::wgsl::parse_str(SHADER).expect("WGSL parses");
        wgpu::naga::valid::Validator::new(
            wgpu::naga::valid::ValidationFlags::all(),
            wgpu::naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .expect("WGSL validates");
    }
}
