//! A model folder's tokenizer: its `tokenizer.json` when it ships one, else the one transformers' slow
//! `Qwen2Tokenizer` builds from `vocab.json` + `merges.txt` and the added tokens of `tokenizer_config.json`
//! / `added_tokens.json`. video-SALMONN 2+ checkpoints are of the second kind: the authors saved a slow
//! tokenizer (`use_fast=False`, then `add_tokens(["<|audio_pad|>"])`), which writes no `tokenizer.json`.
//!
//! The slow tokenizer and its fast conversion (`convert_slow_tokenizer.Qwen2Converter`) give the same ids:
//! NFC, the Qwen2 split regex, byte-level BPE without prefix space; added tokens are matched whole before
//! any of that. We build that fast form as a `tokenizer.json` document, so each added token keeps its id.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Qwen2's pre-tokenisation regex (`tokenization_qwen2.PRETOKENIZE_REGEX`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Whether the folder has the files [`load_tokenizer`] reads.
pub fn has_tokenizer(model_dir: &Path) -> bool {
    model_dir.join("tokenizer.json").exists()
        || (model_dir.join("vocab.json").exists() && model_dir.join("merges.txt").exists())
}

fn model_err(path: PathBuf, reason: String) -> Error {
    Error::Model {
        path,
        reason,
        fix: "download the checkpoint's tokenizer files too (tokenizer.json, or vocab.json + merges.txt + \
              tokenizer_config.json)"
            .into(),
    }
}

/// The folder's tokenizer, with the file and the fix in the error.
pub fn load_tokenizer(model_dir: &Path) -> Result<tokenizers::Tokenizer> {
    let fast = model_dir.join("tokenizer.json");
    if fast.exists() {
        return tokenizers::Tokenizer::from_file(&fast)
            .map_err(|e| model_err(fast.clone(), format!("cannot read the tokenizer: {e}")));
    }
    let (vocab, merges) = (model_dir.join("vocab.json"), model_dir.join("merges.txt"));
    if !vocab.exists() || !merges.exists() {
        return Err(model_err(
            model_dir.to_path_buf(),
            "has no tokenizer (neither tokenizer.json nor vocab.json + merges.txt)".into(),
        ));
    }
    let doc = slow_qwen2_document(model_dir)?;
    doc.parse::<tokenizers::Tokenizer>().map_err(|e| {
        model_err(
            vocab,
            format!("the tokenizer built from vocab.json and merges.txt does not load: {e}"),
        )
    })
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| model_err(path.to_path_buf(), format!("is not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(model_err(
            path.to_path_buf(),
            format!("cannot be read: {e}"),
        )),
    }
}

/// One added token as `tokenizer.json` lists it.
fn added(id: u64, content: &str, flags: Option<&Value>) -> Value {
    let flag = |k: &str, default: bool| {
        flags
            .and_then(|f| f.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let special = flag("special", false);
    json!({
        "id": id,
        "content": content,
        "single_word": flag("single_word", false),
        "lstrip": flag("lstrip", false),
        "rstrip": flag("rstrip", false),
        "normalized": flag("normalized", !special),
        "special": special,
    })
}

/// The `tokenizer.json` document of a slow Qwen2 tokenizer folder.
fn slow_qwen2_document(dir: &Path) -> Result<String> {
    let vocab_path = dir.join("vocab.json");
    let vocab = read_json(&vocab_path)?
        .filter(Value::is_object)
        .ok_or_else(|| {
            model_err(
                vocab_path.clone(),
                "is not a JSON object of token → id".into(),
            )
        })?;
    let merges_path = dir.join("merges.txt");
    let merges: Vec<Value> = std::fs::read_to_string(&merges_path)
        .map_err(|e| model_err(merges_path.clone(), format!("cannot be read: {e}")))?
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect();
    // Added tokens: tokenizer_config.json's `added_tokens_decoder` (with flags), then added_tokens.json.
    let mut tokens: Map<String, Value> = Map::new();
    if let Some(cfg) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(dec) = cfg.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, t) in dec {
                let (Ok(id), Some(content)) =
                    (id.parse::<u64>(), t.get("content").and_then(Value::as_str))
                else {
                    continue;
                };
                tokens.insert(content.to_string(), added(id, content, Some(t)));
            }
        }
    }
    if let Some(extra) = read_json(&dir.join("added_tokens.json"))? {
        for (content, id) in extra.as_object().into_iter().flatten() {
            if let (false, Some(id)) = (tokens.contains_key(content), id.as_u64()) {
                tokens.insert(content.clone(), added(id, content, None));
            }
        }
    }
    let mut added_tokens: Vec<Value> = tokens.into_values().collect();
    added_tokens.sort_by_key(|t| t["id"].as_u64());
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// The Omni fixture ships both forms: the one built from vocab.json + merges.txt + the added tokens must
    /// give tokenizer.json's ids on text with specials, newlines, digits and non-ASCII.
    #[test]
    fn slow_files_give_the_fast_tokenizers_ids() {
        let dir = fixtures().join("omni-tiny-a");
        let fast = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let slow: tokenizers::Tokenizer = slow_qwen2_document(&dir).unwrap().parse().unwrap();
        for text in [
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
            "<|vision_bos|><|VIDEO|><|AUDIO|><|vision_eos|>\nWhat's in 2 clips?  Café — naïve!\n\n",
            "Best option:(",
        ] {
            let a = fast.encode(text, false).unwrap();
            let b = slow.encode(text, false).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        }
    }

    #[test]
    fn a_folder_without_tokenizer_files_names_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_tokenizer(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("vocab.json") && e.contains("tokenizer.json"),
            "{e}"
        );
    }
}
