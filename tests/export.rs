//! Figures: the SVG has what it should (curves, labels, legend), the PDF renders (poppler) with its font
//! embedded and the spec in its info, the PNG has the preset's size at 300 dpi, and a spec redraws its
//! figure byte for byte — in another process too. Also checks the example figures in screenshots/.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use avflow::export::{
    self, pair_series, palette, CurveData, CurveSeries, FigureData, FigureKind, FigureSpec,
    HeatmapData, LineStyle, Preset, Provenance,
};
use avflow::flow::Trace;
use avflow::model::loader::{resolve_dir, ModelSource};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// Three solid curves (one with a band) and a dashed one, 12 layers.
fn curves() -> FigureData {
    let x: Vec<f64> = (0..12).map(f64::from).collect();
    let wave = |a: f64, c: f64| {
        x.iter()
            .map(|&l| a * (-(l - c).powi(2) / 8.0).exp())
            .collect()
    };
    let mut audio = pair_series(
        "audio",
        "last",
        &x.iter()
            .zip(wave(-40.0, 5.0) as Vec<f64>)
            .map(|(&l, y)| (l, y, Some((y - 5.0, y + 5.0))))
            .collect::<Vec<_>>(),
    );
    audio.label = "audio → last".into();
    let plain = |label: &str, key: &str, style, y: Vec<f64>| CurveSeries {
        label: label.into(),
        group_key: key.into(),
        style,
        x: x.clone(),
        y,
        band: None,
    };
    FigureData::Curves(CurveData {
        series: vec![
            audio,
            plain("video → last", "video", LineStyle::Solid, wave(-25.0, 7.0)),
            plain(
                "question → last",
                "question",
                LineStyle::Solid,
                wave(10.0, 3.0),
            ),
            plain(
                "audio → question",
                "audio",
                LineStyle::Dashed,
                wave(-10.0, 2.0),
            ),
        ],
        reference_y: Some(0.0),
        reference_label: None,
        y_range: None,
    })
}

fn spec(kind: FigureKind, preset: Preset) -> FigureSpec {
    let prov = Provenance::default()
        .with_model("Qwen/Qwen2.5-Omni-3B@main")
        .with_setting("window", 9)
        .with_setting("align", "center");
    FigureSpec {
        title: Some("Knockout sweep".into()),
        ..FigureSpec::new(kind, preset, prov)
    }
}

fn find(files: &[PathBuf], ext: &str) -> PathBuf {
    files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(ext))
        .unwrap_or_else(|| panic!("no {ext} in {files:?}"))
        .clone()
}

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, a: &str) -> &'a str {
    n.attribute(a).unwrap_or("")
}

#[test]
fn svg_has_the_curves_labels_legend_and_spec() {
    let dir = tempfile::tempdir().unwrap();
    let data = curves();
    let files = export::write_figure(
        &spec(FigureKind::SweepCurves, Preset::Single),
        &data,
        &dir.path().join("sweep"),
    )
    .unwrap();
    let text = std::fs::read_to_string(find(&files, ".svg")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let svg = doc.root_element();
    assert_eq!(attr(&svg, "width"), "3.25in");
    assert_eq!(attr(&svg, "viewBox"), "0 0 975 720");
    // Each solid curve: one polyline in the plot and one legend sample, in its group's colour.
    let strokes = |c: palette::Rgb| {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| attr(n, "stroke").eq_ignore_ascii_case(&palette::hex(c)))
            .count()
    };
    assert_eq!(strokes(palette::VIDEO), 2);
    assert_eq!(strokes(palette::QUESTION), 2);
    // audio: a solid curve + sample, and the dashed audio → question in many dashes.
    assert!(strokes(palette::AUDIO) > 6, "{}", strokes(palette::AUDIO));
    // The band: one translucent polygon.
    let bands = doc
        .descendants()
        .filter(|n| n.has_tag_name("polygon"))
        .filter(|n| attr(n, "fill").eq_ignore_ascii_case(&palette::hex(palette::AUDIO)))
        .count();
    assert_eq!(bands, 1);
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for want in [
        "Knockout sweep",
        "layer (window centre)",
        "change in p(answer) (%)",
        "audio → last",
        "video → last",
        "question → last",
        "audio → question",
        "\u{2212}40",
    ] {
        assert!(texts.iter().any(|t| t == want), "no {want:?} in {texts:?}");
    }
    assert!(doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .all(|n| attr(&n, "font-family") == "Liberation Sans"));
    // The spec rides along in <metadata>.
    let meta = doc
        .descendants()
        .find(|n| n.has_tag_name("metadata"))
        .and_then(|n| n.text())
        .unwrap();
    let embedded: FigureSpec = serde_json::from_str(meta).unwrap();
    let written: FigureSpec =
        serde_json::from_str(&std::fs::read_to_string(find(&files, ".spec.json")).unwrap())
            .unwrap();
    assert_eq!(embedded, written);
    assert_eq!(written.data, "sweep.json");
    assert_eq!(written.provenance.avflow_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(written.provenance.revision.as_deref(), Some("main"));
    // The data file reads back as the data.
    let back: FigureData =
        serde_json::from_str(&std::fs::read_to_string(find(&files, "sweep.json")).unwrap())
            .unwrap();
    assert_eq!(back, data);
    let csv = std::fs::read_to_string(find(&files, ".csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 12);
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (poppler-utils: bash scripts/setup.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// RGB(A) pixels of a PNG and its size.
fn decode_png(path: &Path) -> (u32, u32, Option<png::PixelDimensions>, Vec<u8>, usize) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let dims = r.info().pixel_dims;
    let channels = info.color_type.samples();
    buf.truncate(info.buffer_size());
    (info.width, info.height, dims, buf, channels)
}

fn non_white(pixels: &[u8], channels: usize) -> usize {
    pixels
        .chunks(channels)
        .filter(|p| p[..3].iter().any(|&v| v < 240))
        .count()
}

#[test]
fn pdf_renders_with_the_font_embedded_and_the_spec_inside() {
    let dir = tempfile::tempdir().unwrap();
    let files = export::write_figure(
        &spec(FigureKind::SweepCurves, Preset::Double),
        &curves(),
        &dir.path().join("fig"),
    )
    .unwrap();
    let pdf = find(&files, ".pdf");
    let info = String::from_utf8(run(Command::new("pdfinfo").arg(&pdf)).stdout).unwrap();
    // 6.75 in × 2.6 in = 486 × 187.2 pt.
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {info}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("Page size:"), "486 x 187.2 pts");
    assert_eq!(
        field("Creator:"),
        concat!("avflow ", env!("CARGO_PKG_VERSION"))
    );
    let spec: FigureSpec = serde_json::from_str(&field("Subject:")).unwrap();
    assert_eq!(spec.kind, FigureKind::SweepCurves);
    let fonts = String::from_utf8(run(Command::new("pdffonts").arg(&pdf)).stdout).unwrap();
    let line = fonts
        .lines()
        .find(|l| l.contains("LiberationSans"))
        .unwrap_or_else(|| panic!("{fonts}"));
    // name, type, encoding, emb, sub, uni: embedded (subset), with a ToUnicode map (text stays text).
    assert!(line.contains(" yes yes yes "), "{fonts}");
    let text = String::from_utf8(run(Command::new("pdftotext").arg(&pdf).arg("-")).stdout).unwrap();
    assert!(text.contains("audio → last"), "{text}");
    let prefix = dir.path().join("page");
    run(Command::new("pdftoppm")
        .args(["-r", "100", "-png", "-singlefile"])
        .arg(&pdf)
        .arg(&prefix));
    let (w, h, _, px, ch) = decode_png(&prefix.with_extension("png"));
    assert_eq!((w, h), (675, 260));
    let ink = non_white(&px, ch);
    assert!(
        ink > 3000 && ink < (w * h / 2) as usize,
        "{ink} inked pixels"
    );
}

#[test]
fn png_has_the_preset_size_at_300_dpi() {
    let dir = tempfile::tempdir().unwrap();
    for (preset, w, h) in [(Preset::Single, 975, 720), (Preset::Double, 2025, 780)] {
        let files = export::write_figure(
            &spec(FigureKind::SweepCurves, preset),
            &curves(),
            &dir.path().join(format!("{preset:?}")),
        )
        .unwrap();
        let (pw, ph, dims, px, ch) = decode_png(&find(&files, ".png"));
        assert_eq!((pw, ph), (w, h));
        assert_eq!(dims.map(|d| d.xppu), Some(11811)); // 300 dpi
        assert!(non_white(&px, ch) > 5000);
    }
}

fn heatmap() -> FigureData {
    // 6 layers × 1 500 tokens: more columns than the drawing keeps.
    let (rows, cols) = (6, 1500);
    let groups: Vec<String> = (0..cols)
        .map(|c| match c {
            0..=19 => "system",
            20..=819 => "video",
            820..=1479 => "audio",
            1480..=1498 => "question",
            _ => "last",
        })
        .map(String::from)
        .collect();
    let values = (0..rows * cols)
        .map(|i| ((i % cols) as f64 / 97.0).sin() * (i / cols) as f64 / 6.0)
        .collect();
    FigureData::Heatmap(HeatmapData {
        rows,
        cols,
        values,
        token_groups: groups,
        value_label: "change (%)".into(),
        colormap: None,
    })
}

#[test]
fn spec_redraws_byte_identical_files_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut written = Vec::new();
    for (name, kind, data) in [
        ("curves", FigureKind::SweepCurves, curves()),
        ("heat", FigureKind::Heatmap, heatmap()),
    ] {
        written.extend(
            export::write_figure(&spec(kind, Preset::Single), &data, &a.join(name)).unwrap(),
        );
    }
    let heat_spec: FigureSpec =
        serde_json::from_str(&std::fs::read_to_string(a.join("heat.spec.json")).unwrap()).unwrap();
    assert!(
        heat_spec.notes[0].contains("averaged in bins of 2"),
        "{:?}",
        heat_spec.notes
    );
    for name in ["curves", "heat"] {
        let b = dir.path().join("b");
        let out = run(Command::new(env!("CARGO_BIN_EXE_avflow"))
            .arg("figure")
            .arg(a.join(format!("{name}.spec.json")))
            .arg("--out-dir")
            .arg(&b));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["files"].as_array().unwrap().len(), 6);
    }
    // In-process too, beside the spec (overwriting).
    export::regenerate(&a.join("curves.spec.json"), None).unwrap();
    assert_eq!(written.len(), 12);
    for f in &written {
        let again = dir.path().join("b").join(f.file_name().unwrap());
        assert!(
            std::fs::read(f).unwrap() == std::fs::read(&again).unwrap(),
            "{} differs when redrawn",
            f.display()
        );
    }
    // A spec whose data is missing says which file.
    std::fs::remove_file(a.join("heat.json")).unwrap();
    let err = export::regenerate(&a.join("heat.spec.json"), None).unwrap_err();
    assert!(err.to_string().contains("heat.json"), "{err}");
}

#[test]
fn figures_from_command_outputs_and_bad_data() {
    let dir = tempfile::tempdir().unwrap();
    let drops = dir.path().join("drops.jsonl");
    std::fs::write(
        &drops,
        (0..4)
            .map(|l| {
                format!(
                "{{\"groups\":\"audio,video\",\"from_layer\":{l},\"prob\":{},\"base_prob\":0.5}}\n",
                0.1 * l as f64
            )
            })
            .collect::<String>(),
    )
    .unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_avflow"))
        .args(["figure", "--kind", "drop-curve", "--from"])
        .arg(&drops)
        .arg("--out")
        .arg(dir.path().join("drop")));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"].as_array().unwrap().len(), 6);
    let spec: FigureSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("drop.spec.json")).unwrap())
            .unwrap();
    assert_eq!(spec.provenance.media[0].sha256.len(), 64);

    // NaN and kind/data mismatches are refused with the reason.
    let mut bad = curves();
    if let FigureData::Curves(c) = &mut bad {
        c.series[1].y[3] = f64::NAN;
    }
    let e = export::write_figure(&spec, &bad, &dir.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("video → last"), "{e}");
    let e = export::write_figure(&spec, &heatmap(), &dir.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("heatmap"), "{e}");
}

/// Mean and 95 % CI (Student's t) of samples.
fn mean_ci(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let t = 2.069; // t(0.975, 23)
    (m, m - t * sd / n.sqrt(), m + t * sd / n.sqrt())
}

/// The README's example figures: a sweep with 95 % bands (synthetic, 24 clips × 36 layers, shaped like
/// published audio-visual sweeps), and from the tiny fixture model, a real attention map and drop curve.
/// Written to a temporary folder, and their data files must equal the committed ones in
/// `screenshots/figures` (so those stay what the code draws); `AVFLOW_SCREENSHOTS=screenshots` writes them
/// there on purpose instead.
#[test]
fn example_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let refresh = std::env::var_os("AVFLOW_SCREENSHOTS").filter(|d| !d.is_empty());
    let out = match &refresh {
        Some(d) => root().join(d).join("figures"),
        None => tmp.path().to_path_buf(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let noise = Normal::new(0.0, 9.0).unwrap();
    let shape = |l: f64, a: f64, c: f64, w: f64| a * (-(l - c).powi(2) / (2.0 * w * w)).exp();
    let pairs: [(&str, &str, f64, f64, f64); 4] = [
        ("audio", "last", -45.0, 14.0, 4.0),
        ("video", "last", -30.0, 17.0, 5.0),
        ("audio", "question", -18.0, 6.0, 3.0),
        ("video", "question", -12.0, 8.0, 3.5),
    ];
    let series = pairs
        .iter()
        .map(|&(s, t, a, c, w)| {
            let pts: Vec<export::CurvePoint> = (0..36)
                .map(|l| {
                    let l = l as f64;
                    let clips: Vec<f64> = (0..24)
                        .map(|_| {
                            shape(l, a, c, w) + noise.sample(&mut rng) * (0.3 + a.abs() / 60.0)
                        })
                        .collect();
                    let (m, lo, hi) = mean_ci(&clips);
                    (l, m, Some((lo, hi)))
                })
                .collect();
            pair_series(s, t, &pts)
        })
        .collect();
    let mut sweep = FigureSpec::new(
        FigureKind::SweepCurves,
        Preset::Single,
        Provenance::default()
            .with_setting("data", "synthetic: 24 clips, seed 6")
            .with_setting("window", 9)
            .with_setting("align", "center"),
    );
    sweep.title = Some("Synthetic sweep, 24 clips (mean, 95 % CI)".into());
    sweep.x_label = "layer (centre of 9-layer window)".into();
    export::write_figure(
        &sweep,
        &FigureData::Curves(CurveData {
            series,
            reference_y: Some(0.0),
            reference_label: None,
            y_range: None,
        }),
        &out.join("sweep-ci"),
    )
    .unwrap();

    // The tiny fixture model on its audio-visual prompt: attention of the last position, per layer.
    let model_dir = fixtures().join("omni-tiny-a");
    let inputs = fixtures().join("goldens/av_a/inputs.safetensors");
    let resolved = resolve_dir(ModelSource::Local(model_dir.clone()), &model_dir).unwrap();
    let model = avflow::model::load(&resolved, DType::F32, &Device::Cpu).unwrap();
    let prompt = resolved.arch.read_prompt(&inputs).unwrap();
    let e = model.embed(&prompt).unwrap();
    let trace = Trace::run(model.decoder(), &e.embeds, &e.position_ids).unwrap();
    let groups = prompt.map.groups.clone();
    let last = groups.select("last").unwrap();
    let maps =
        avflow::flow::attention::attention_rows(model.decoder(), &trace, &last, false).unwrap();
    let map: Vec<Vec<f64>> = maps
        .iter()
        .map(|t| {
            t.mean(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect();
    let token_groups = export::token_groups_from_spans(trace.seq_len, &groups.spans);
    let prov = Provenance::default()
        .with_model("tests/fixtures/omni-tiny-a")
        .with_setting("rows", "last")
        .with_setting("inputs", "tests/fixtures/goldens/av_a/inputs.safetensors");
    let mut heat = FigureSpec::new(FigureKind::AttentionMap, Preset::Double, prov.clone());
    heat.title = Some("Attention of the last position (tiny random-weight fixture model)".into());
    export::write_figure(
        &heat,
        &export::attention_heatmap(&map, token_groups).unwrap(),
        &out.join("attention-map"),
    )
    .unwrap();

    // Drop curve: answer probability when audio and video leave from each layer on.
    let mut points = Vec::new();
    for set in ["audio,video", "audio", "video"] {
        let dropped = groups.select(set).unwrap();
        for from in 0..=model.decoder().num_layers() {
            let c = avflow::flow::generate::prefill(
                model.decoder(),
                &e.embeds,
                &e.position_ids,
                Some((&dropped, from)),
            )
            .unwrap();
            let r = avflow::flow::knockout::score_logits(&c.last_logits, &trace, None).unwrap();
            points.push(export::DropPoint {
                groups: set.into(),
                from_layer: from,
                prob: f64::from(r.prob),
                base_prob: f64::from(r.base_prob),
            });
        }
    }
    let mut drop = FigureSpec::new(FigureKind::DropCurve, Preset::Single, prov);
    drop.title = Some("Dropping media tokens (tiny fixture model)".into());
    drop.height_in = Some(2.2);
    let files =
        export::write_figure(&drop, &export::drop_curves(&points), &out.join("drop")).unwrap();
    assert!(files.iter().all(|f| f.exists()));
    if refresh.is_none() {
        // The data must be the committed figures' to within f32 rounding (1e-5 relative: the products' last bits
        // differ between CPUs and product kernels).
        let committed = root().join("screenshots/figures");
        for stem in ["sweep-ci", "attention-map", "drop"] {
            let name = format!("{stem}.csv");
            let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
            let (ours, theirs) = (read(out.join(&name)), read(committed.join(&name)));
            let (ours, theirs): (Vec<&str>, Vec<&str>) =
                (ours.lines().collect(), theirs.lines().collect());
            assert_eq!(ours.len(), theirs.len(), "{name}: rows");
            for (a, b) in ours.iter().zip(&theirs) {
                for (x, y) in a.split(',').zip(b.split(',')) {
                    let same = match (x.parse::<f64>(), y.parse::<f64>()) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-5 * y.abs().max(1e-3),
                        _ => x == y,
                    };
                    assert!(
                        same,
                        "{name}: {a:?} vs the committed {b:?}; refresh with AVFLOW_SCREENSHOTS=screenshots cargo test --test export"
                    );
                }
            }
        }
    }
}
