//! The cache of prepared inputs: media + question + options → one `prepared-<hash>.safetensors` file, the
//! newest [`CACHE_KEEP`] kept. The app names the file, the worker writes it and prunes the folder.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::media::prepare::{Item, PrepareOptions};

/// File name of a prompt's prepared inputs: the same items, question and options give the same name (a
/// re-ask overwrites its file instead of adding one), anything else another.
pub fn cache_file_name(items: &[Item], question: &str, opts: &PrepareOptions) -> String {
    let mut h = Sha256::new();
    for it in items {
        h.update(it.kind().as_bytes());
        h.update([0]);
        h.update(it.path().as_os_str().as_encoded_bytes());
        h.update([0]);
    }
    h.update(question.as_bytes());
    h.update([0]);
    h.update(format!("{opts:?}").as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CACHE_PREFIX}{hex}.safetensors")
}

/// Prepared inputs in the cache start with this (pruning touches nothing else).
pub const CACHE_PREFIX: &str = "prepared-";
/// Prepared inputs kept in the cache: a 1-minute 1080p clip is ~0.8 GB, so only the last few.
pub const CACHE_KEEP: usize = 8;

/// A name [`cache_file_name`] makes (`prepared-` + 16 hex digits): pruning never touches anything else,
/// even in a folder shared with the user's own files.
pub fn is_cache_name(name: &str) -> bool {
    name.strip_prefix(CACHE_PREFIX)
        .and_then(|r| r.strip_suffix(".safetensors"))
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The files to delete so that only the `keep` newest remain.
pub fn oldest_beyond(mut entries: Vec<(PathBuf, SystemTime)>, keep: usize) -> Vec<PathBuf> {
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    entries.into_iter().skip(keep).map(|(p, _)| p).collect()
}

/// Deletes all but the [`CACHE_KEEP`] newest prepared inputs in `dir` (other files are left alone).
/// Best effort: a file that cannot be listed or removed stays.
pub fn prune_cache(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let entries: Vec<(PathBuf, SystemTime)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| is_cache_name(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect();
    for p in oldest_beyond(entries, keep) {
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::debug!("could not prune {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cache_names_follow_the_prompt() {
        let v = vec![Item::Video("v.mp4".into())];
        let o = PrepareOptions::default();
        let n = cache_file_name(&v, "q", &o);
        assert!(is_cache_name(&n), "{n}");
        assert_eq!(n, cache_file_name(&v, "q", &o));
        assert_ne!(n, cache_file_name(&v, "q2", &o));
        assert_ne!(n, cache_file_name(&[Item::Audio("v.mp4".into())], "q", &o));
        let mut o2 = o.clone();
        o2.use_audio_in_video = false;
        assert_ne!(n, cache_file_name(&v, "q", &o2));
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let e = vec![
            (PathBuf::from("a"), t(3)),
            (PathBuf::from("b"), t(1)),
            (PathBuf::from("c"), t(2)),
            (PathBuf::from("d"), t(4)),
        ];
        assert_eq!(
            oldest_beyond(e.clone(), 2),
            vec![PathBuf::from("c"), PathBuf::from("b")]
        );
        assert!(oldest_beyond(e, 4).is_empty());

        let d = tempfile::tempdir().expect("tempdir");
        for n in [
            "prepared-0123456789abcdef.safetensors",
            "prepared-fedcba9876543210.safetensors",
            "prepared-mine.safetensors",
            "mine.safetensors",
        ] {
            std::fs::write(d.path().join(n), b"x").expect("write");
        }
        prune_cache(d.path(), 1);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .expect("read")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        left.sort();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"mine.safetensors".to_string()));
        assert!(left.contains(&"prepared-mine.safetensors".to_string()));
    }
}
