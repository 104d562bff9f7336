//! The desktop app (eframe + wgpu).
//!
//! Layout after the rerun viewer: every panel is a pure "prepare view data" function, unit-tested, plus a
//! draw function behind the small [`panel::Panel`] trait; [`panel::registry`] lists the panels, which
//! [`workspace`] arranges as dockable panes. The model
//! lives in the background [`crate::worker`]; the UI thread only submits requests and drains events.

pub mod answer;
pub mod app;
pub mod colormap;
pub mod compare;
pub mod demo;
pub mod dialog;
pub mod drop;
pub mod figure;
pub mod heads;
pub mod heatmap;
pub mod heatmap_gpu;
pub mod heatmap_pick;
pub mod history;
pub mod knockout;
pub mod media;
pub mod media_input;
pub mod panel;
pub mod strip;
pub mod sweep;
pub mod tokens;
pub mod workspace;

use std::path::PathBuf;

use candle_core::{DType, Device};

/// What `avflow` (no subcommand) was started with.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Model folder or hub id; `None`: last time's, else the bundled demo.
    pub model: Option<String>,
    /// Prepared inputs (safetensors of processor outputs).
    pub inputs: Option<PathBuf>,
    /// A video to ask about at start-up (with `question`); alone it is put in the prompt.
    pub video: Option<PathBuf>,
    /// The question to ask (with `video`); alone it pre-fills the Question field.
    pub question: Option<String>,
    pub device: Device,
    /// Why `--device auto` left a GPU unused (shown as a note).
    pub device_note: Option<String>,
    pub dtype: DType,
    /// Load models in their checkpoint's own dtype (`dtype` where it names none).
    pub auto_dtype: bool,
    /// The position numbering models are loaded with (families with two: video-SALMONN 2+).
    pub positions: crate::model::Positions,
    /// With no model, inputs or history: ask the bundled demo clip (`assets/demo/clip.mkv`) instead of
    /// reading the demo's prepared inputs (the rendered tests keep the fixed prepared prompt).
    pub demo_clip: bool,
}

/// Opens the window and blocks until it is closed.
pub fn run(opts: AppOptions) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("avflow")
            .with_app_id("avflow")
            .with_inner_size([1200.0, 760.0])
            .with_min_inner_size([640.0, 400.0]),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "avflow",
        native,
        Box::new(move |cc| {
            Ok(Box::new(app::AvflowApp::new(
                &cc.egui_ctx,
                cc.storage,
                opts,
            )))
        }),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "could not open the window: {e}. Fix: on Linux install a Vulkan driver and the windowing \
             libraries (`bash scripts/setup.sh`, which installs mesa-vulkan-drivers); without a display (SSH, \
             CI) use the headless commands, e.g. `avflow forward`, or run under `xvfb-run`"
        )
    })
}
