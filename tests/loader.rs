//! Loading checkpoints in the real layout, from folders and from a hub cache, and rejecting bad ones with
//! a message that names the file and the fix.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use avflow::model::loader::{resolve, resolve_dir, ModelSource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn load_err(dir: &Path) -> String {
    match resolve_dir(ModelSource::Local(dir.to_path_buf()), dir)
        .and_then(|r| avflow::model::load(&r, DType::F32, &Device::Cpu))
    {
        Ok(_) => panic!("{} loaded but should have been rejected", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loads_single_file_and_sharded_checkpoints() {
    for (name, sharded) in [("omni-tiny-a", false), ("omni-tiny-b", true)] {
        let dir = fixture(name);
        let r = resolve(&ModelSource::parse(dir.to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(r.weight_files.len() > 1, sharded, "{name}");
        // Talker / token2wav tensors exist in the files but are never part of the Thinker.
        assert!(r.tensors.keys().all(|k| k.starts_with("thinker.")));
        avflow::model::load(&r, DType::F32, &Device::Cpu).unwrap();
        avflow::model::load(&r, DType::BF16, &Device::Cpu).unwrap();
    }
}

#[test]
fn rejects_a_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("omni-tiny-b"), tmp.path());
    let shard = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-00002-of-"))
        .unwrap();
    std::fs::remove_file(&shard).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("missing") && e.contains(shard.file_name().unwrap().to_str().unwrap()),
        "{e}"
    );
    assert!(e.contains("Fix:"), "{e}");
}

#[test]
fn rejects_a_truncated_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("omni-tiny-a"), tmp.path());
    let f = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len / 2).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn rejects_wrong_shape_and_wrong_dtype() {
    // Shape: the config promises a wider MLP than the weights have.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("omni-tiny-a"), tmp.path());
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let inter = cfg["thinker_config"]["text_config"]["intermediate_size"]
        .as_u64()
        .unwrap();
    cfg["thinker_config"]["text_config"]["intermediate_size"] = serde_json::json!(inter + 8);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains("shape"),
        "{e}"
    );

    // Dtype: integer weights are not a checkpoint we can run.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("omni-tiny-a"), tmp.path());
    let f = tmp.path().join("model.safetensors");
    let mut map = candle_core::safetensors::load(&f, &Device::Cpu).unwrap();
    let key = "thinker.model.norm.weight".to_string();
    let t = map[&key].to_dtype(DType::I64).unwrap();
    map.insert(key, t);
    candle_core::safetensors::save(&map, &f).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("I64") && e.contains("thinker.model.norm.weight"),
        "{e}"
    );
}

#[test]
fn rejects_unknown_model_type_and_non_model_folders() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("omni-tiny-a"), tmp.path());
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = serde_json::json!("llava");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("unknown model_type") && e.contains("llava"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = load_err(empty.path());
    assert!(e.contains("config.json") && e.contains("Fix:"), "{e}");
}

/// The hub path: a hub id resolves through the standard cache layout
/// (`models--org--name/{refs/main, snapshots/<rev>/…}`) with HF_HUB_OFFLINE=1, as after a download.
#[test]
fn resolves_hub_ids_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--avflow-test--omni-tiny-b");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(&fixture("omni-tiny-b"), &repo.join("snapshots").join(rev));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let r = resolve(&ModelSource::parse("avflow-test/omni-tiny-b").unwrap()).unwrap();
    assert!(r.dir.ends_with(rev), "{}", r.dir.display());
    avflow::model::load(&r, DType::F32, &Device::Cpu).unwrap();
    let r2 =
        resolve(&ModelSource::parse(&format!("avflow-test/omni-tiny-b@{rev}")).unwrap()).unwrap();
    assert_eq!(r2.dir, r.dir);
    // A model that is not in the cache: the error says so and how to fix it.
    let e = resolve(&ModelSource::parse("avflow-test/absent").unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("Fix:"), "{e}");
}

/// `--dtype auto` (the default) loads a checkpoint in its own `torch_dtype`, as transformers does; an
/// explicit dtype wins; a config naming none falls back to the given one. The command line reports the
/// dtype that ran.
#[test]
fn auto_dtype_follows_the_checkpoint() {
    use avflow::model::{checkpoint_dtype, LoadOptions};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bf16");
    copy_dir(&fixture("omni-tiny-a"), &dir);
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"torch_dtype\": \"float32\""));
    assert_eq!(checkpoint_dtype(&dir), Some(DType::F32));
    std::fs::write(&cfg, text.replace("\"float32\"", "\"bfloat16\"")).unwrap();
    assert_eq!(checkpoint_dtype(&dir), Some(DType::BF16));
    let auto = LoadOptions {
        auto_dtype: true,
        ..LoadOptions::new(DType::F32, &Device::Cpu)
    };
    let m = avflow::session::Model::open_with(dir.to_str().unwrap(), &auto).unwrap();
    assert_eq!(m.dtype, DType::BF16);
    let fixed = LoadOptions::new(DType::F32, &Device::Cpu);
    let m = avflow::session::Model::open_with(dir.to_str().unwrap(), &fixed).unwrap();
    assert_eq!(m.dtype, DType::F32);
    // No torch_dtype anywhere: the given dtype.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strip = |mut v: serde_json::Value| {
        fn walk(v: &mut serde_json::Value) {
            if let Some(o) = v.as_object_mut() {
                o.remove("torch_dtype");
                o.values_mut().for_each(walk);
            }
        }
        walk(&mut v);
        v
    };
    std::fs::write(&cfg, strip(v).to_string()).unwrap();
    assert_eq!(checkpoint_dtype(&dir), None);
    assert_eq!(auto.dtype_for(&dir), DType::F32);
    assert!(avflow::device::parse_dtype_choice("AUTO").unwrap().1);
    assert_eq!(
        avflow::device::parse_dtype_choice("bf16").unwrap(),
        (DType::BF16, false)
    );
    assert!(avflow::device::parse_dtype_choice("f8")
        .unwrap_err()
        .to_string()
        .contains("use auto, f32, bf16 or f16"));
}
