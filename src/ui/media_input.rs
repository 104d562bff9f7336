//! Getting media into the app: what a dropped, typed or recent path is (by extension; a folder with a
//! `config.json` is a model), the prompt's media list, and the list of recent files. Where prepared inputs
//! are cached is the library's [`crate::media::cache`].

use std::path::{Path, PathBuf};

use crate::media::prepare::Item;

/// Extensions the media pipeline reads through FFmpeg (containers, then codecs decide; an unreadable file
/// still fails in prepare, with a message naming it).
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "webm", "mov", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "3gp", "ogv",
];
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "aif", "aiff",
];
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// What a path opens as.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    Media(Item),
    /// Prepared processor inputs (`.safetensors`).
    Inputs(PathBuf),
    /// A model folder (holds `config.json`).
    Model(PathBuf),
    Unknown {
        path: PathBuf,
        reason: String,
    },
}

/// Pure classification: by extension (case-insensitive) for files, by `config.json` for folders.
pub fn classify_name(path: &Path, is_dir: bool, dir_has_config: bool) -> Opened {
    if is_dir {
        return if dir_has_config {
            Opened::Model(path.to_path_buf())
        } else {
            Opened::Unknown {
                path: path.to_path_buf(),
                reason: "is a folder without config.json (not a model folder)".into(),
            }
        };
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let p = path.to_path_buf();
    if ext == "safetensors" {
        Opened::Inputs(p)
    } else if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
        Opened::Media(Item::Video(p))
    } else if AUDIO_EXTENSIONS.contains(&ext.as_str()) {
        Opened::Media(Item::Audio(p))
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Opened::Media(Item::Image(p))
    } else {
        Opened::Unknown {
            path: p,
            reason: if ext.is_empty() {
                "has no extension, so avflow cannot tell what it is".into()
            } else {
                format!("has an extension avflow does not open (.{ext})")
            },
        }
    }
}

/// [`classify_name`] on a real path.
pub fn classify(path: &Path) -> Opened {
    let is_dir = path.is_dir();
    classify_name(path, is_dir, is_dir && path.join("config.json").is_file())
}

/// The fix for an [`Opened::Unknown`].
pub fn supported_text() -> String {
    format!(
        "open a video ({}), an audio file ({}), an image ({}), prepared inputs (.safetensors) or a model folder \
         (with config.json)",
        VIDEO_EXTENSIONS[..4].join(", "),
        AUDIO_EXTENSIONS[..4].join(", "),
        IMAGE_EXTENSIONS[..3].join(", ")
    )
}

/// Dropped paths in the order they can be opened: a model first (inputs are read onto it), then inputs,
/// then media; within each kind the drop order.
pub fn open_order(mut v: Vec<Opened>) -> Vec<Opened> {
    let rank = |o: &Opened| match o {
        Opened::Model(_) => 0,
        Opened::Inputs(_) => 1,
        Opened::Media(_) => 2,
        Opened::Unknown { .. } => 3,
    };
    v.sort_by_key(rank);
    v
}

/// `video basic.mkv`.
pub fn item_label(item: &Item) -> String {
    format!("{} {}", item.kind(), item.file_name())
}

/// The media list after opening `new`: appended, except that once the list has been asked about (it equals
/// `asked`) a new file starts a new prompt — opening the next clip should not silently make a two-clip
/// prompt. The same file twice is kept once.
pub fn add_media(list: &[Item], asked: Option<&[Item]>, new: Item) -> Vec<Item> {
    if asked == Some(list) {
        return vec![new];
    }
    let mut out = list.to_vec();
    if !out.contains(&new) {
        out.push(new);
    }
    out
}

/// Why the prompt cannot be asked yet, with the fix; `None` when it can.
pub fn ask_problem(items: &[Item], question: &str) -> Option<(String, String)> {
    if items.is_empty() {
        return Some((
            "no media to ask about".into(),
            "press Open video…, Open audio… or Open image… (or drop a file on the window), then Ask".into(),
        ));
    }
    if question.trim().is_empty() {
        return Some((
            "the question is empty".into(),
            "type a question in the Question field, then press Ask (or Enter)".into(),
        ));
    }
    None
}

/// `AVFLOW_CACHE_DIR`, else `prepared/` in eframe's storage folder (beside the remembered settings, so
/// the remembered inputs survive a reboot), else the temp folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AVFLOW_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    eframe::storage_dir("avflow")
        .map(|d| d.join("prepared"))
        .unwrap_or_else(|| std::env::temp_dir().join("avflow-prepared"))
}

/// Recent files: `path` moves to the front, without duplicates, at most `max`.
pub fn remember(list: &mut Vec<PathBuf>, path: &Path, max: usize) {
    list.retain(|p| p != path);
    list.insert(0, path.to_path_buf());
    list.truncate(max);
}

/// How many recent files the app keeps.
pub const RECENT_MAX: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_classified_by_extension() {
        let c = |p: &str| classify_name(Path::new(p), false, false);
        assert_eq!(
            c("/a/clip.MP4"),
            Opened::Media(Item::Video("/a/clip.MP4".into()))
        );
        assert_eq!(c("x.mkv"), Opened::Media(Item::Video("x.mkv".into())));
        assert_eq!(c("x.wav"), Opened::Media(Item::Audio("x.wav".into())));
        assert_eq!(c("x.flac"), Opened::Media(Item::Audio("x.flac".into())));
        assert_eq!(c("x.jpeg"), Opened::Media(Item::Image("x.jpeg".into())));
        assert_eq!(c("in.safetensors"), Opened::Inputs("in.safetensors".into()));
        assert!(
            matches!(c("notes.txt"), Opened::Unknown { reason, .. } if reason.contains(".txt"))
        );
        assert!(
            matches!(c("Makefile"), Opened::Unknown { reason, .. } if reason.contains("no extension"))
        );
        assert_eq!(
            classify_name(Path::new("/m/omni"), true, true),
            Opened::Model("/m/omni".into())
        );
        assert!(matches!(
            classify_name(Path::new("/m/photos"), true, false),
            Opened::Unknown { reason, .. } if reason.contains("config.json")
        ));
    }

    #[test]
    fn classify_looks_at_the_file_system() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(matches!(classify(d.path()), Opened::Unknown { .. }));
        std::fs::write(d.path().join("config.json"), "{}").expect("write");
        assert_eq!(classify(d.path()), Opened::Model(d.path().to_path_buf()));
        // A folder named like a video is still a folder.
        let v = d.path().join("clip.mp4");
        std::fs::create_dir(&v).expect("mkdir");
        assert!(matches!(classify(&v), Opened::Unknown { .. }));
    }

    #[test]
    fn a_model_opens_before_inputs_and_media() {
        let got = open_order(vec![
            Opened::Media(Item::Audio("a.wav".into())),
            Opened::Inputs("i.safetensors".into()),
            Opened::Unknown {
                path: "x".into(),
                reason: String::new(),
            },
            Opened::Model("m".into()),
            Opened::Media(Item::Video("v.mp4".into())),
        ]);
        let kinds: Vec<u8> = got
            .iter()
            .map(|o| match o {
                Opened::Model(_) => 0,
                Opened::Inputs(_) => 1,
                Opened::Media(_) => 2,
                Opened::Unknown { .. } => 3,
            })
            .collect();
        assert_eq!(kinds, vec![0, 1, 2, 2, 3]);
        // Media keep their order (the prompt's order).
        assert_eq!(got[2], Opened::Media(Item::Audio("a.wav".into())));
    }

    #[test]
    fn media_list_appends_until_asked() {
        let a = Item::Image("a.png".into());
        let b = Item::Audio("b.wav".into());
        let c = Item::Video("c.mp4".into());
        let l = add_media(&[], None, a.clone());
        let l = add_media(&l, None, b.clone());
        assert_eq!(l, vec![a.clone(), b.clone()]);
        assert_eq!(add_media(&l, None, b.clone()), l);
        // After asking about [a, b], the next file starts over.
        assert_eq!(add_media(&l, Some(&l), c.clone()), vec![c.clone()]);
        // Changed since the ask: append again.
        assert_eq!(
            add_media(&l, Some(std::slice::from_ref(&a)), c.clone()),
            vec![a, b, c]
        );
        assert_eq!(
            item_label(&Item::Video("/x/basic.mkv".into())),
            "video basic.mkv"
        );
    }

    #[test]
    fn asking_needs_media_and_a_question() {
        let v = vec![Item::Video("v.mp4".into())];
        assert!(ask_problem(&[], "why?").is_some_and(|(m, _)| m.contains("no media")));
        assert!(ask_problem(&v, "  ")
            .is_some_and(|(m, f)| m.contains("empty") && f.contains("Question")));
        assert_eq!(ask_problem(&v, "why?"), None);
    }

    #[test]
    fn recent_files_move_to_the_front() {
        let mut l = Vec::new();
        for p in ["a", "b", "c", "a"] {
            remember(&mut l, Path::new(p), 3);
        }
        assert_eq!(
            l,
            vec![PathBuf::from("a"), PathBuf::from("c"), PathBuf::from("b")]
        );
        remember(&mut l, Path::new("d"), 3);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0], PathBuf::from("d"));
    }
}
