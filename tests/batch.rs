//! Batch sweeps over a manifest (`avflow sweep --manifest`): per-sample records, failures recorded and
//! skipped, kill -9 + `--resume` equal to an uninterrupted run, shards merged equal to one run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avflow::batch::store::{read_dir_results, SampleRecord, Status};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A manifest over the fixture clips: multiple choice with and without audio, an image+audio pair with
/// a free answer, a broken file, repeated with new ids so that a run lasts long enough to be killed.
fn write_manifest(dir: &Path, copies: usize) -> PathBuf {
    let f = fixtures();
    let v = f.join("media/video");
    let a = f.join("media/audio");
    let mut lines = Vec::new();
    for c in 0..copies {
        lines.push(serde_json::json!({"id": format!("basic-{c}"), "video": v.join("basic.mkv"),
            "question": "What do you hear?", "options": ["a tone", "speech"], "answer": "A", "task": "hearing"}));
        lines.push(serde_json::json!({"id": format!("noaudio-{c}"), "video": v.join("noaudio.mkv"),
            "question": "What moves?", "options": ["a square", "a circle"], "answer": "a circle", "task": "seeing"}));
        lines.push(serde_json::json!({"id": format!("pair-{c}"),
            "media": [{"image": v.join("still.png")}, {"audio": a.join("mono16k.wav")}],
            "question": "Does the sound match the picture?", "answer": "yes"}));
        lines.push(
            serde_json::json!({"id": format!("broken-{c}"), "video": v.join("notmedia.mp4"),
            "question": "Anything?", "task": "seeing"}),
        );
    }
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let p = dir.join("items.jsonl");
    std::fs::write(&p, body).unwrap();
    p
}

fn sweep_cmd(manifest: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_avflow"));
    c.args(["sweep", "--manifest"])
        .arg(manifest)
        .arg("--model")
        .arg(fixtures().join("omni-tiny-a"))
        .arg("--out")
        .arg(out)
        .args(["--window", "2", "--subset", "all"])
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> serde_json::Value {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Records by manifest order, without wall-clock timings.
fn records(dir: &Path) -> Vec<SampleRecord> {
    let mut r: Vec<SampleRecord> = read_dir_results(dir)
        .unwrap()
        .iter()
        .map(SampleRecord::without_timings)
        .collect();
    r.sort_by_key(|r| r.index);
    r
}

#[test]
fn manifest_sweep_records_samples_and_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 1);
    let out = tmp.path().join("run");
    let rep = run_ok(sweep_cmd(&m, &out, &[]));
    assert_eq!(rep["ran"], 4);
    assert_eq!(rep["failed"], 1);
    let recs = records(&out);
    assert_eq!(recs.len(), 4);
    let basic = &recs[0];
    assert_eq!(basic.status, Status::Ok);
    assert!(basic.question.ends_with("(A) a tone\n(B) speech"));
    // 3 layers, pairs audio/video → last/question + question → last.
    assert_eq!(basic.records.len(), 5 * 3);
    assert!(basic.tokens["audio"] > 0 && basic.tokens["video"] > 0);
    assert_eq!(basic.correct, Some(basic.top1_id == basic.answer_token_id));
    // No audio track: falls back to video only and says so; pairs follow the prompt.
    let noaudio = &recs[1];
    assert_eq!(noaudio.tokens["audio"], 0);
    assert!(noaudio.notes.iter().any(|n| n.contains("no audio track")));
    assert_eq!(noaudio.answer.as_deref(), Some("B"));
    assert!(noaudio.records.iter().all(|r| r.source != "audio"));
    let pair = &recs[2];
    assert!(pair.tokens["image"] > 0 && pair.tokens["audio"] > 0);
    let broken = &recs[3];
    assert_eq!(broken.status, Status::Error);
    assert!(
        broken.error.as_deref().unwrap().contains("notmedia.mp4"),
        "{:?}",
        broken.error
    );
    // Aggregates over the three good samples (subset all).
    let agg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("aggregate.json")).unwrap()).unwrap();
    let row = agg["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "all" && r["source"] == "question" && r["layer"] == 1)
        .unwrap();
    assert_eq!(row["n"], 3);
    // The dataset figure: mean curves with CI bands, its data and spec beside it.
    for f in ["svg", "pdf", "png", "csv", "json", "spec.json"] {
        assert!(
            out.join(format!("figure-sweep.{f}")).exists(),
            "figure-sweep.{f}"
        );
    }
    let svg = std::fs::read_to_string(out.join("figure-sweep.svg")).unwrap();
    assert!(svg.contains("audio → last") && svg.contains("n = 3"));
    let tasks = std::fs::read_to_string(out.join("tasks.csv")).unwrap();
    assert!(
        tasks.lines().any(|l| l.starts_with("seeing,2,1,1,")),
        "{tasks}"
    );
    // Without --resume an existing run is never overwritten; other settings are refused on resume.
    let o = sweep_cmd(&m, &out, &[]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let o = sweep_cmd(&m, &out, &["--resume", "--align", "start"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("align"));
    // A finished run resumed does nothing.
    let rep = run_ok(sweep_cmd(&m, &out, &["--resume"]));
    assert_eq!(
        (rep["ran"].as_u64(), rep["skipped"].as_u64()),
        (Some(0), Some(4))
    );
}

/// `--answer`/`--options` in a dataset run: every sample's windows carry the scores, recorded in
/// run.json so a resume scores the same.
#[test]
fn manifest_sweep_scores_a_typed_answer_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 1);
    let out = tmp.path().join("run");
    run_ok(sweep_cmd(
        &m,
        &out,
        &["--answer", "a tone", "--options", "A,B"],
    ));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["answers"]["answer"], "a tone", "{run}");
    // The dataset figure's spec names them too.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("figure-sweep.spec.json")).unwrap())
            .unwrap();
    assert_eq!(
        spec["provenance"]["settings"]["answers"],
        serde_json::json!({"answer": "a tone", "options": ["A", "B"]}),
        "{spec}"
    );
    let recs = records(&out);
    let ok: Vec<&SampleRecord> = recs.iter().filter(|r| r.status == Status::Ok).collect();
    assert!(!ok.is_empty());
    for r in ok {
        assert_eq!(r.answer_scores.len(), r.records.len(), "{}", r.id);
        for s in &r.answer_scores {
            let a = s.answer.as_ref().unwrap();
            assert!(a.ids.len() >= 2 && a.logprob < 0.0 && a.base_logprob < 0.0);
            assert_eq!(s.options.len(), 2);
        }
    }
}

#[test]
fn killed_run_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 6);
    let whole = tmp.path().join("whole");
    run_ok(sweep_cmd(&m, &whole, &[]));
    let expected = records(&whole);
    assert_eq!(expected.len(), 24);

    let cut = tmp.path().join("cut");
    let results = cut.join("results.jsonl");
    kill_after_records(&m, &cut, 2);
    let before = std::fs::read_to_string(&results).unwrap().lines().count();
    assert!(
        (2..24).contains(&before),
        "the kill should land mid-run ({before} records)"
    );
    // And a write torn by the kill: half a line at the end.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&results)
        .unwrap()
        .write_all(br#"{"index":9,"id":"pair-2","status":"o"#)
        .unwrap();
    let rep = run_ok(sweep_cmd(&m, &cut, &["--resume"]));
    assert_eq!(rep["skipped"].as_u64().unwrap() as usize, before);
    assert_eq!(
        records(&cut),
        expected,
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        std::fs::read_to_string(cut.join("aggregate.csv")).unwrap(),
        std::fs::read_to_string(whole.join("aggregate.csv")).unwrap()
    );
}

/// kill -9 at twenty seeded random moments (before the model is loaded, between samples, in the middle of a
/// write), each time resumed: the finished run equals an uninterrupted one, with every sample once.
#[test]
fn twenty_kills_at_random_moments_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 6);
    let whole = tmp.path().join("whole");
    let t0 = Instant::now();
    run_ok(sweep_cmd(&m, &whole, &[]));
    let full = t0.elapsed();
    let expected = records(&whole);
    let cut = tmp.path().join("cut");
    let results = cut.join("results.jsonl");
    // Seeded delays between 0 and the uninterrupted run's length.
    let mut state = 0x5EED_u64;
    let mut delay = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Duration::from_micros(state % (full.as_micros() as u64).max(1))
    };
    let (mut kills, mut rounds) = (0, 0);
    let mut seen_counts = Vec::new();
    while kills < 20 {
        rounds += 1;
        assert!(
            rounds < 200,
            "the run keeps finishing before the kill ({kills} kills)"
        );
        let resume: &[&str] = if results.exists() { &["--resume"] } else { &[] };
        let mut child = sweep_cmd(&m, &cut, resume)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay());
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        seen_counts.push(
            std::fs::read_to_string(&results)
                .map(|s| s.lines().count())
                .unwrap_or(0),
        );
        if records_done(&results) == expected.len() {
            // Finished before the kill: start over so every kill lands in a run.
            std::fs::remove_dir_all(&cut).unwrap();
        }
    }
    run_ok(sweep_cmd(
        &m,
        &cut,
        if results.exists() { &["--resume"] } else { &[] },
    ));
    eprintln!("{kills} kills in {rounds} rounds; records on disk after each: {seen_counts:?}");
    let lines: Vec<String> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (lines.len(), ids.len()),
        (expected.len(), expected.len()),
        "a sample lost or doubled"
    );
    assert_eq!(
        records(&cut),
        expected,
        "the resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        std::fs::read_to_string(cut.join("aggregate.csv")).unwrap(),
        std::fs::read_to_string(whole.join("aggregate.csv")).unwrap()
    );
}

/// A disk that fills in the middle of a run (the process may write only so many bytes: RLIMIT_FSIZE, with
/// SIGXFSZ ignored so the write fails as on a full disk): a clear error that names the file and says what
/// to do, the records written before it intact, and `--resume` with room again finishes the run as if
/// nothing had happened.
#[test]
fn a_full_disk_stops_the_run_with_nothing_lost() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 3);
    let whole = tmp.path().join("whole");
    run_ok(sweep_cmd(&m, &whole, &[]));
    let expected = records(&whole);
    let full = std::fs::read_to_string(whole.join("results.jsonl")).unwrap();
    // Room for about half of the results.
    let room = (full.len() / 2) as u64;
    let cut = tmp.path().join("cut");
    let mut c = sweep_cmd(&m, &cut, &[]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: room,
                rlim_max: room,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run should stop: {err}");
    for n in ["results.jsonl", "Fix:", "--resume"] {
        assert!(err.contains(n), "lacks {n:?}: {err}");
    }
    let kept = records_done(&cut.join("results.jsonl"));
    assert!(kept >= 1 && kept < expected.len(), "{kept} records kept");
    // With room again: resumed to the uninterrupted result.
    run_ok(sweep_cmd(&m, &cut, &["--resume"]));
    assert_eq!(records(&cut), expected);
}

/// Restricts the calling process (and its children) so that it may write only beneath `writable` (Linux
/// Landlock, which binds root too: CI runs as root, for whom a folder's mode does not stop a write). Called
/// between fork and exec: only syscalls, on file descriptors opened before the fork.
fn landlock_writes_only_beneath(writable: &[libc::c_int]) -> std::io::Result<()> {
    const CREATE_RULESET: libc::c_long = 444;
    const ADD_RULE: libc::c_long = 445;
    const RESTRICT_SELF: libc::c_long = 446;
    const RULE_PATH_BENEATH: libc::c_long = 1;
    // WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK,
    // MAKE_SYM: every write of Landlock's first version.
    const WRITES: u64 = 0x1FF2;
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let attr = RulesetAttr {
        handled_access_fs: WRITES,
    };
    // SAFETY: plain syscalls with pointers to live, correctly laid out structs.
    unsafe {
        let ruleset = libc::syscall(
            CREATE_RULESET,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        );
        if ruleset < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for &fd in writable {
            let rule = PathBeneath {
                allowed_access: WRITES,
                parent_fd: fd,
            };
            if libc::syscall(
                ADD_RULE,
                ruleset,
                RULE_PATH_BENEATH,
                &rule as *const PathBeneath,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || libc::syscall(RESTRICT_SELF, ruleset, 0) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Every file of a folder with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    out
}

/// An output folder that became read-only (its mode, and for root a Landlock rule) half-way through a run:
/// `--resume` stops with an error that names the file and says what to do, every byte already written stays
/// as it was, and once the folder is writable again `--resume` finishes as an uninterrupted run.
#[test]
fn a_read_only_folder_stops_the_run_with_nothing_lost() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 3);
    let whole = tmp.path().join("whole");
    run_ok(sweep_cmd(&m, &whole, &[]));
    let expected = records(&whole);

    // A run stopped after its first records.
    let cut = tmp.path().join("cut");
    let results = cut.join("results.jsonl");
    kill_after_records(&m, &cut, 2);
    let kept = records_done(&results);
    assert!((2..expected.len()).contains(&kept), "{kept} records kept");

    // The folder goes read-only.
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let before = snapshot(&cut);
    for (f, _) in &before {
        mode(f, 0o444);
    }
    mode(&cut, 0o555);
    // Scratch space the run may still write (its home, cache and temp folders), and /dev for /dev/null.
    let scratch = tempfile::tempdir().unwrap();
    let allowed: Vec<std::fs::File> = [scratch.path(), Path::new("/dev")]
        .iter()
        .map(|p| std::fs::File::open(p).unwrap())
        .collect();
    let fds: Vec<libc::c_int> = allowed.iter().map(|f| f.as_raw_fd()).collect();
    let mut c = sweep_cmd(&m, &cut, &["--resume"]);
    c.env("HOME", scratch.path())
        .env("XDG_CACHE_HOME", scratch.path())
        .env("TMPDIR", scratch.path());
    // SAFETY: only syscalls between fork and exec (the descriptors were opened before).
    unsafe {
        c.pre_exec(move || landlock_writes_only_beneath(&fds));
    }
    let out = c
        .output()
        .expect("Landlock (Linux 5.13+) makes the folder read-only for root too");
    drop(allowed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run should stop: {err}");
    assert!(
        err.contains(&cut.display().to_string()),
        "names no file in the folder: {err}"
    );
    for n in ["Fix:", "write somewhere this user can"] {
        assert!(err.contains(n), "lacks {n:?}: {err}");
    }
    assert_eq!(snapshot(&cut), before, "a read-only folder's files changed");

    // Writable again: resumed to the uninterrupted result.
    mode(&cut, 0o755);
    for (f, _) in &before {
        mode(f, 0o644);
    }
    run_ok(sweep_cmd(&m, &cut, &["--resume"]));
    assert_eq!(records(&cut), expected);
}

/// Starts a run of `manifest` into `out` and kills it (SIGKILL) as soon as `n` whole records are on disk (or
/// after two minutes).
fn kill_after_records(manifest: &Path, out: &Path, n: usize) {
    let results = out.join("results.jsonl");
    let mut child = sweep_cmd(manifest, out, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while records_done(&results) < n && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Whole records in a results file (a torn last line does not count).
fn records_done(results: &Path) -> usize {
    std::fs::read_to_string(results)
        .map(|s| {
            s.lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn shards_merged_equal_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_manifest(tmp.path(), 2);
    let whole = tmp.path().join("whole");
    run_ok(sweep_cmd(&m, &whole, &[]));
    let (s0, s1) = (tmp.path().join("s0"), tmp.path().join("s1"));
    let r0 = run_ok(sweep_cmd(&m, &s0, &["--shard", "0/2"]));
    assert_eq!(r0["ran"], 4);
    assert!(s0.join("results.shard-0-of-2.jsonl").exists());
    // Slurm job arrays: auto/N reads $SLURM_ARRAY_TASK_ID.
    let mut c = sweep_cmd(&m, &s1, &["--shard", "auto/2"]);
    c.env("SLURM_ARRAY_TASK_ID", "1");
    assert_eq!(run_ok(c)["ran"], 4);
    let merged = tmp.path().join("merged");
    let o = Command::new(env!("CARGO_BIN_EXE_avflow"))
        .arg("merge")
        .args([&s0, &s1])
        .arg("--out")
        .arg(&merged)
        .args(["--subset", "all"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records(&merged), records(&whole));
    for f in [
        "aggregate.csv",
        "tasks.csv",
        "figure-sweep.svg",
        "figure-sweep.spec.json",
    ] {
        assert_eq!(
            std::fs::read_to_string(merged.join(f)).unwrap(),
            std::fs::read_to_string(whole.join(f)).unwrap(),
            "{f}"
        );
    }
    // Shards of different runs do not merge.
    let other = tmp.path().join("other");
    run_ok(sweep_cmd(
        &m,
        &other,
        &["--shard", "1/2", "--align", "start"],
    ));
    let o = Command::new(env!("CARGO_BIN_EXE_avflow"))
        .arg("merge")
        .args([&s0, &other])
        .arg("--out")
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("different settings"));
}

#[test]
fn answer_prefix_starts_the_assistant_turn() {
    use avflow::media::prepare::{Item, PrepareOptions};
    let model = fixtures().join("omni-tiny-a");
    let arch = avflow::model::read_architecture(&model.join("config.json")).unwrap();
    let prepare = |items: &[Item], q: &str, o: &PrepareOptions, d: &candle_core::Device| {
        arch.prepare(&model, items, q, o, d)
    };
    let items = [Item::Image(fixtures().join("media/video/still.png"))];
    let dev = candle_core::Device::Cpu;
    let plain = prepare(
        &items,
        "Which?\n(A) x\n(B) y",
        &PrepareOptions::default(),
        &dev,
    )
    .unwrap();
    let opts = PrepareOptions {
        answer_prefix: Some(avflow::batch::run::OPTION_PREFIX.into()),
        ..Default::default()
    };
    let with = prepare(&items, "Which?\n(A) x\n(B) y", &opts, &dev).unwrap();
    let tk = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let prefix = tk.encode(avflow::batch::run::OPTION_PREFIX, false).unwrap();
    assert_eq!(with.input_ids[..plain.input_ids.len()], plain.input_ids[..]);
    assert_eq!(with.input_ids[plain.input_ids.len()..], *prefix.get_ids());
}
