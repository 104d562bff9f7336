//! Bounded mutation fuzzing of every reader a user's files reach, on stable Rust and in CI: the model
//! `config.json` (both Qwen2.5-Omni spellings and video-SALMONN 2+'s), safetensors headers and the shard index,
//! the inputs file, the dataset manifest, the selector grammar, figure specs and their data, and the media front
//! end (probe and decode of mutated clips, sounds and images).
//!
//! Each target starts from its seeds (`tests/fuzz/corpus/<target>/` and fixture files), replays the inputs that
//! once broke it (`tests/fuzz/regressions/<target>/`), then runs `AVFLOW_FUZZ_ITERS` (default 150) seeded
//! mutations per seed: bit flips, interesting bytes and numbers, cuts, repeats, splices. Every input must give
//! `Ok` or an error that names the file; a panic, a case slower than 20 s or an allocation beyond the process's
//! 6 GB data limit fails the run, and the input is kept in `target/fuzz-failures/` to be committed as a
//! regression. `AVFLOW_FUZZ_SEED` changes the mutations (the CI run is fixed: seed 0).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn iters() -> usize {
    std::env::var("AVFLOW_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn base_seed() -> u64 {
    std::env::var("AVFLOW_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Caps the process's data segment (heap and private mappings): a reader that trusts a size in the file
/// and allocates it fails the run instead of the machine.
fn limit_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cap = 6u64 << 30;
        let lim = libc::rlimit {
            rlim_cur: cap,
            rlim_max: cap,
        };
        // SAFETY: setrlimit with a valid struct; lowering a limit is always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) };
    });
}

/// xorshift64*: reproducible mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_BYTES: [u8; 8] = [0, 1, 0x7F, 0x80, 0xFF, b'"', b'{', b'9'];
const INTERESTING_TEXT: [&str; 12] = [
    "-1",
    "0",
    "1e308",
    "18446744073709551616",
    "4294967296",
    "NaN",
    "null",
    "[]",
    "{}",
    "\"\"",
    "\u{0}",
    "99999999999",
];

/// One mutation of `data`, confined to `window` (a byte range worth hitting, e.g. a header) when given.
fn mutate(data: &[u8], rng: &mut Rng, window: Option<std::ops::Range<usize>>) -> Vec<u8> {
    let mut d = data.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let w = window
            .clone()
            .filter(|w| w.end <= d.len() && w.start < w.end)
            .unwrap_or(0..d.len().max(1));
        let at = w.start + rng.below(w.end - w.start);
        match rng.below(8) {
            0 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            2 => d.truncate(at.min(d.len())),
            3 if !d.is_empty() => {
                // Replace a run of digits (or any short run) by an interesting number.
                let i = at.min(d.len() - 1);
                let mut j = i;
                while j < d.len() && d[j].is_ascii_digit() && j - i < 20 {
                    j += 1;
                }
                let t = INTERESTING_TEXT[rng.below(INTERESTING_TEXT.len())].as_bytes();
                d.splice(i..j.max(i + 1).min(d.len()), t.iter().copied());
            }
            4 if !d.is_empty() => {
                // Repeat a chunk.
                let i = at.min(d.len() - 1);
                let n = 1 + rng.below(64.min(d.len() - i));
                let chunk = d[i..i + n].to_vec();
                d.splice(i..i, chunk);
            }
            5 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                let n = 1 + rng.below(32.min(d.len() - i));
                d.drain(i..i + n);
            }
            6 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let i = at.min(d.len());
                d.splice(i..i, bytes);
            }
            _ if d.len() >= 8 => {
                // Overwrite 8 bytes with an extreme little-endian integer (sizes, offsets, grids).
                let i = at.min(d.len() - 8);
                let v: u64 = [u64::MAX, 1 << 40, 1 << 31, 0, 3][rng.below(5)];
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    d
}

/// The header of a safetensors file: `8..8 + n`, where mutations matter most.
fn safetensors_header(data: &[u8]) -> Option<std::ops::Range<usize>> {
    let n = u64::from_le_bytes(data.get(..8)?.try_into().ok()?) as usize;
    (8 + n <= data.len()).then_some(0..8 + n)
}

/// A reader under test: gets the mutated bytes written to `path` (inside a fresh folder) and returns the
/// error text, if any.
type Check<'a> = dyn Fn(&Path) -> Option<String> + Sync + 'a;

struct Target<'a> {
    name: &'static str,
    /// (seed bytes, the file name the bytes are written under)
    seeds: Vec<(Vec<u8>, String)>,
    /// Where mutations land: the whole file, or mostly a window of it.
    window: fn(&[u8]) -> Option<std::ops::Range<usize>>,
    /// Files the reader needs beside the mutated one (name, bytes).
    beside: Vec<(String, Vec<u8>)>,
    check: &'a Check<'a>,
    /// Whether an error must name the file (readers of files; not the selector grammar).
    names_file: bool,
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = root().join(p);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", p.display()))
}

/// Seeds committed under `tests/fuzz/corpus/<name>/` and regressions under `tests/fuzz/regressions/<name>/`.
fn committed(dir: &str, name: &str, file_name: &str) -> Vec<(Vec<u8>, String)> {
    let d = root().join("tests/fuzz").join(dir).join(name);
    let mut out: Vec<(Vec<u8>, String)> = std::fs::read_dir(&d)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| (std::fs::read(e.path()).unwrap(), file_name.to_string()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs one target: regressions as they are, then mutations of each seed. Returns the cases run.
fn run(t: Target<'_>) -> usize {
    limit_memory();
    let work = tempfile::tempdir().unwrap();
    for (name, bytes) in &t.beside {
        std::fs::write(work.path().join(name), bytes).unwrap();
    }
    let failures = root().join("target/fuzz-failures");
    let regressions = committed("regressions", t.name, &t.seeds[0].1);
    let mut rng = Rng::new(
        base_seed()
            ^ t.name
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    // Made one at a time (a seed of megabytes times thousands of cases would not fit).
    let n_regressions = regressions.len();
    let per_seed = iters() + 1;
    let n = n_regressions + t.seeds.len() * per_seed;
    let mut case = |i: usize| -> (Vec<u8>, String, bool) {
        if i < n_regressions {
            let (b, f) = &regressions[i];
            return (b.clone(), f.clone(), true);
        }
        let k = i - n_regressions;
        let (seed, file) = &t.seeds[k / per_seed];
        if k % per_seed == 0 {
            (seed.clone(), file.clone(), false)
        } else {
            (
                mutate(seed, &mut rng, (t.window)(seed)),
                file.clone(),
                false,
            )
        }
    };
    // A watchdog: a case that takes more than 20 s is a hang.
    let current = Arc::new(AtomicU64::new(0));
    let started = Arc::new(std::sync::Mutex::new(Instant::now()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (current, started, done, name) =
            (current.clone(), started.clone(), done.clone(), t.name);
        let failures = failures.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if started.lock().unwrap().elapsed() > Duration::from_secs(20) {
                    eprintln!(
                        "fuzz {name}: case {} has run for over 20 s (a hang); its input is in {}",
                        current.load(Ordering::Relaxed),
                        failures.display()
                    );
                    std::process::abort();
                }
            }
        })
    };
    for i in 0..n {
        let (bytes, file, is_regression) = case(i);
        let path = work.path().join(&file);
        std::fs::write(&path, &bytes).unwrap();
        // Kept until the case passes, so a hang or an abort leaves it behind.
        let keep = failures.join(format!("{}-{i}-{file}", t.name));
        let _ = std::fs::create_dir_all(&failures);
        let _ = std::fs::write(&keep, &bytes);
        current.store(i as u64, Ordering::Relaxed);
        *started.lock().unwrap() = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.check)(&path)));
        match outcome {
            Err(_) => {
                done.store(true, Ordering::Relaxed);
                panic!(
                    "fuzz {}: case {i} panicked{}; its input is {} (commit it to tests/fuzz/regressions/{}/ \
                     once fixed)",
                    t.name,
                    if is_regression { " (a regression)" } else { "" },
                    keep.display(),
                    t.name
                );
            }
            Ok(Some(err)) if t.names_file && !err.contains(&file) => {
                done.store(true, Ordering::Relaxed);
                panic!(
                    "fuzz {}: case {i}: the error does not name the file {file}: {err} (input: {})",
                    t.name,
                    keep.display()
                );
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&keep);
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    eprintln!(
        "fuzz {}: {n} cases, no panic, hang or unbounded allocation",
        t.name
    );
    n
}

fn whole(_: &[u8]) -> Option<std::ops::Range<usize>> {
    None
}

#[test]
fn fuzz_model_config() {
    let seeds = [
        "tests/fixtures/omni-tiny-a/config.json",
        "tests/fixtures/omni-tiny-b/config.json",
        "tests/fixtures/salmonn-tiny-a/config.json",
    ]
    .iter()
    .map(|p| (read(p), "config.json".to_string()))
    .collect();
    let check = |p: &Path| {
        avflow::model::read_architecture(p)
            .err()
            .map(|e| e.to_string())
    };
    run(Target {
        name: "config",
        seeds,
        window: whole,
        beside: vec![],
        check: &check,
        names_file: true,
    });
}

#[test]
fn fuzz_safetensors_header_and_index() {
    // The weights' header reader, on the small inputs file of a golden (a real safetensors file).
    let seeds = vec![(
        read("tests/fixtures/goldens/av_a/inputs.safetensors"),
        "model.safetensors".to_string(),
    )];
    let check = |p: &Path| {
        avflow::model::loader::read_header(p)
            .err()
            .map(|e| e.to_string())
    };
    run(Target {
        name: "safetensors",
        seeds,
        window: safetensors_header,
        beside: vec![],
        check: &check,
        names_file: true,
    });
    // The shard index of a checkpoint folder (its config and its one shard beside it).
    let index = br#"{"metadata": {"total_size": 1000}, "weight_map": {"thinker.model.embed_tokens.weight": "model.safetensors", "thinker.lm_head.weight": "model.safetensors"}}"#;
    let mut seeds = committed("corpus", "index", "model.safetensors.index.json");
    seeds.push((index.to_vec(), "model.safetensors.index.json".into()));
    let check = |p: &Path| {
        let dir = p.parent().unwrap();
        avflow::model::loader::resolve_dir(
            avflow::model::loader::ModelSource::Local(dir.to_path_buf()),
            dir,
        )
        .err()
        .map(|e| e.to_string())
    };
    run(Target {
        name: "index",
        seeds,
        window: whole,
        beside: vec![
            (
                "config.json".into(),
                read("tests/fixtures/omni-tiny-a/config.json"),
            ),
            (
                "model.safetensors".into(),
                read("tests/fixtures/omni-tiny-a/model.safetensors"),
            ),
        ],
        check: &check,
        // A bad index is reported by the file it names or by the index itself.
        names_file: false,
    });
}

#[test]
fn fuzz_inputs_file() {
    let dir = root().join("tests/fixtures/omni-tiny-a");
    let resolved = avflow::model::loader::resolve_dir(
        avflow::model::loader::ModelSource::Local(dir.clone()),
        &dir,
    )
    .unwrap();
    let sdir = root().join("tests/fixtures/salmonn-tiny-a");
    let salmonn = avflow::model::loader::resolve_dir(
        avflow::model::loader::ModelSource::Local(sdir.clone()),
        &sdir,
    )
    .unwrap();
    let check = |p: &Path| resolved.arch.read_prompt(p).err().map(|e| e.to_string());
    run(Target {
        name: "inputs",
        seeds: vec![
            (
                read("tests/fixtures/goldens/av_a/inputs.safetensors"),
                "inputs.safetensors".into(),
            ),
            (
                read("tests/fixtures/goldens/image_audio_a/inputs.safetensors"),
                "inputs.safetensors".into(),
            ),
        ],
        window: safetensors_header,
        beside: vec![],
        check: &check,
        names_file: true,
    });
    let check = |p: &Path| salmonn.arch.read_prompt(p).err().map(|e| e.to_string());
    run(Target {
        name: "inputs-salmonn",
        seeds: vec![(
            read("tests/fixtures/goldens/salmonn_av/inputs.safetensors"),
            "inputs.safetensors".into(),
        )],
        window: safetensors_header,
        beside: vec![],
        check: &check,
        names_file: true,
    });
}

#[test]
fn fuzz_manifest() {
    let seeds = committed("corpus", "manifest", "items.jsonl");
    assert!(!seeds.is_empty(), "tests/fuzz/corpus/manifest is empty");
    let check = |p: &Path| {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        match avflow::batch::manifest::Manifest::parse(&text, p) {
            Err(e) => Some(e.to_string()),
            // Per-line errors name the manifest and its line.
            Ok(m) => m.entries.iter().find_map(|e| match e {
                Err((_, _, msg)) if !msg.contains("items.jsonl") => Some(msg.clone()),
                _ => None,
            }),
        }
    };
    run(Target {
        name: "manifest",
        seeds,
        window: whole,
        beside: vec![],
        check: &check,
        names_file: true,
    });
}

#[test]
fn fuzz_selector_grammar() {
    let seeds = committed("corpus", "selector", "selector.txt");
    assert!(!seeds.is_empty(), "tests/fuzz/corpus/selector is empty");
    // Parsed selectors print back to themselves.
    let check = |p: &Path| {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        match text.trim().parse::<avflow::prompt::selector::Selector>() {
            Err(e) => Some(e.to_string()),
            Ok(s) => {
                let again: avflow::prompt::selector::Selector = s
                    .to_string()
                    .parse()
                    .unwrap_or_else(|e| panic!("{s} does not parse back: {e}"));
                assert_eq!(again, s, "{text:?}");
                None
            }
        }
    };
    run(Target {
        name: "selector",
        seeds,
        window: whole,
        beside: vec![],
        check: &check,
        names_file: false,
    });
}

#[test]
fn fuzz_figure_spec_and_data() {
    let figures = root().join("screenshots/figures");
    let out = tempfile::tempdir().unwrap();
    let check = |p: &Path| {
        avflow::export::regenerate(p, Some(out.path()))
            .err()
            .map(|e| e.to_string())
    };
    for (stem, data) in [("sweep-ci", "sweep-ci.json"), ("drop", "drop.json")] {
        // The spec mutated, its data intact beside it ...
        run(Target {
            name: "figure-spec",
            seeds: vec![(
                std::fs::read(figures.join(format!("{stem}.spec.json"))).unwrap(),
                format!("{stem}.spec.json"),
            )],
            window: whole,
            beside: vec![(data.into(), std::fs::read(figures.join(data)).unwrap())],
            check: &check,
            names_file: true,
        });
    }
    // ... and the data mutated under an intact spec (the error names the data file).
    let spec_for = |p: &Path| {
        let spec = p.parent().unwrap().join("drop.spec.json");
        if !spec.exists() {
            std::fs::write(
                &spec,
                std::fs::read(figures.join("drop.spec.json")).unwrap(),
            )
            .unwrap();
        }
        avflow::export::regenerate(&spec, Some(out.path()))
            .err()
            .map(|e| e.to_string())
    };
    run(Target {
        name: "figure-data",
        seeds: vec![(
            std::fs::read(figures.join("drop.json")).unwrap(),
            "drop.json".into(),
        )],
        window: whole,
        beside: vec![],
        check: &spec_for,
        names_file: true,
    });
}

#[test]
fn fuzz_media_front_end() {
    use avflow::media::{audio, video};
    let probe_and_decode = |p: &Path| -> Option<String> {
        let e = match video::FrameIndex::read(p) {
            Ok(stream) => {
                let n = stream.total_frames.min(4);
                let idx: Vec<usize> = (0..n).collect();
                stream
                    .decode(&idx, &|h, w| Ok((h, w)), video::Filter::TorchBicubicAa)
                    .err()
            }
            Err(e) => Some(e),
        };
        let a = audio::decode_audio(p).err();
        // Either reader's error names the file; both may fail (a video-only or a broken file).
        e.or(a).map(|e| e.to_string())
    };
    run(Target {
        name: "media-video",
        seeds: vec![(
            read("tests/fixtures/media/video/basic.mkv"),
            "clip.mkv".into(),
        )],
        window: |d| Some(0..d.len().min(4096)),
        beside: vec![],
        check: &probe_and_decode,
        names_file: true,
    });
    let decode = |p: &Path| audio::decode_audio(p).err().map(|e| e.to_string());
    run(Target {
        name: "media-audio",
        seeds: vec![(
            read("tests/fixtures/media/audio/mono16k.wav"),
            "sound.wav".into(),
        )],
        window: |d| Some(0..d.len().min(512)),
        beside: vec![],
        check: &decode,
        names_file: true,
    });
    let image = |p: &Path| video::load_image(p).err().map(|e| e.to_string());
    run(Target {
        name: "media-image",
        seeds: vec![(
            read("tests/fixtures/media/video/still.png"),
            "still.png".into(),
        )],
        window: whole,
        beside: vec![],
        check: &image,
        names_file: true,
    });
}
