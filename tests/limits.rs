//! Resource limits: inputs far beyond what a machine can analyse are refused early, or handled in bounded
//! memory — a 4-hour clip, a 16 000 × 16 000 image, a 10 GB inputs file, a manifest of a million lines. Each
//! runs `avflow` as a child process whose peak resident memory (`wait4`'s rusage) and time are checked.

mod common;

use common::{ffmpeg, fixtures};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to the end: (success, stderr, peak RSS in MB, wall time).
// The child is reaped by `wait4` (for its own rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: Command) -> (bool, String, f64, Duration) {
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; `pid` is our own child, waited for once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let err = reader.join().unwrap();
    (ok, err, usage.ru_maxrss as f64 / 1024.0, t0.elapsed())
}

fn prepare(item: &str, path: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_avflow"));
    c.args(["prepare", "--model"])
        .arg(fixtures().join("omni-tiny-a"))
        .arg(item)
        .arg(path)
        .args(["--question", "What happens?", "--out"])
        .arg(out);
    c
}

/// A 4-hour clip (tiny frames, silent sound) is refused from its header with the token count, before a
/// frame or a sample is decoded.
#[test]
fn a_four_hour_clip_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("four-hours.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=32x32:r=1:d=14400",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=8000:cl=mono",
        "-t",
        "14400",
        "-c:v",
        "ffv1",
        "-c:a",
        "flac",
        "-shortest",
        clip.to_str().unwrap(),
    ]);
    let out = dir.path().join("x.safetensors");
    let (ok, err, mb, t) = run_measured(prepare("--video", &clip, &out));
    eprintln!(
        "4-h clip: refused in {:.2} s, peak {mb:.0} MB: {err}",
        t.as_secs_f64()
    );
    assert!(!ok);
    assert!(
        err.contains("tokens") && err.contains("max-tokens"),
        "{err}"
    );
    assert!(t < Duration::from_secs(20), "took {t:?}");
    assert!(mb < 1024.0, "peak {mb} MB");
    assert!(!out.exists());
}

/// A 16 000 × 16 000 picture (FFmpeg decodes up to about 16 250 on a side) is decoded and resized to the processor's pixel budget in bounded memory.
#[test]
fn a_huge_image_is_handled_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=teal:s=16000x16000",
        "-frames:v",
        "1",
        img.to_str().unwrap(),
    ]);
    let out = dir.path().join("x.safetensors");
    let (ok, err, mb, t) = run_measured(prepare("--image", &img, &out));
    eprintln!(
        "16000 x 16000 image: {:.1} s, peak {mb:.0} MB",
        t.as_secs_f64()
    );
    assert!(ok, "{err}");
    // The RGB picture is 768 MB; its resized copy and patches are far smaller.
    assert!(mb < 4096.0, "peak {mb} MB");
}

/// A 10 GB file given as inputs (sparse: it takes no disk) is refused by its size, without reading it.
#[test]
fn a_ten_gigabyte_inputs_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("inputs.safetensors");
    let header =
        br#"{"input_ids":{"dtype":"I64","shape":[1250000000],"data_offsets":[0,10000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&big, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(bytes.len() as u64 + 10_000_000_000).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_avflow"));
    c.args(["knockout", "--model"])
        .arg(fixtures().join("omni-tiny-a"))
        .arg("--inputs")
        .arg(&big)
        .args(["--source", "audio", "--target", "last", "--layers", "0..1"]);
    let (ok, err, mb, t) = run_measured(c);
    eprintln!(
        "10 GB inputs: refused in {:.2} s, peak {mb:.0} MB: {err}",
        t.as_secs_f64()
    );
    assert!(!ok);
    assert!(
        err.contains("inputs.safetensors") && err.contains("10.0 GB"),
        "{err}"
    );
    assert!(mb < 1024.0, "peak {mb} MB");
}

/// A manifest of a million lines is read, sharded and run (one sample here) in memory proportional to it.
#[test]
fn a_million_line_manifest_is_read_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("million.jsonl");
    let clip = fixtures().join("media/video/basic.mkv");
    let mut text = String::with_capacity(1_000_000 * 130);
    for i in 0..1_000_000 {
        text.push_str(&format!(
            "{{\"id\": \"s{i}\", \"video\": {:?}, \"question\": \"What do you hear?\", \"options\": [\"a tone\", \"speech\"], \"answer\": \"A\"}}\n",
            clip.to_str().unwrap()
        ));
    }
    std::fs::write(&manifest, &text).unwrap();
    let size_mb = text.len() as f64 / 1e6;
    drop(text);
    let out = dir.path().join("run");
    let mut c = Command::new(env!("CARGO_BIN_EXE_avflow"));
    c.args(["sweep", "--manifest"])
        .arg(&manifest)
        .arg("--model")
        .arg(fixtures().join("omni-tiny-a"))
        .arg("--out")
        .arg(&out)
        .args(["--window", "2", "--shard", "0/1000000"]);
    let (ok, err, mb, t) = run_measured(c);
    eprintln!(
        "1 M-line manifest ({size_mb:.0} MB): {:.1} s, peak {mb:.0} MB",
        t.as_secs_f64()
    );
    assert!(ok, "{err}");
    let lines = std::fs::read_to_string(out.join("results.shard-0-of-1000000.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1);
    assert!(mb < 2048.0, "peak {mb} MB for a {size_mb:.0} MB manifest");
}
