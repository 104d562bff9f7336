//! The batch manifest: one JSON object per line naming a sample's media, question and (optionally) its
//! options and answer. Paths are relative to the manifest's folder, so a dataset folder can move.
//!
//! ```json
//! {"id": "avqa-17", "video": "clips/17.mp4", "question": "Which instrument plays first?",
//!  "options": ["guitar", "piano", "drum", "violin"], "answer": "B", "task": "counting"}
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::media::prepare::{Item, TimeRange};

/// One path or several (`"video": "a.mp4"` or `"video": ["a.mp4", "b.mp4"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Paths {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Paths {
    fn list(&self) -> Vec<&str> {
        match self {
            Paths::None => vec![],
            Paths::One(p) => vec![p.as_str()],
            Paths::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One entry of an explicit, ordered `media` list: `{"video": "a.mp4"}`, `{"image": …}`, `{"audio": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEntry {
    Video(String),
    Audio(String),
    Image(String),
}

/// A manifest line as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLine {
    /// Unique per manifest (default: `line-N`, 1-based): the key that makes resuming and merging exact.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub video: Paths,
    #[serde(default)]
    pub image: Paths,
    #[serde(default)]
    pub audio: Paths,
    /// Media in an explicit order (instead of video, image, audio keys), for interleaved items.
    #[serde(default)]
    pub media: Vec<MediaEntry>,
    pub question: String,
    /// Multiple-choice options; the prompt lists them as `(A) …` lines and the answer is a letter.
    #[serde(default)]
    pub options: Vec<String>,
    /// The correct answer: an option letter, an option's text, or free text (its first token is scored).
    #[serde(default)]
    pub answer: Option<String>,
    /// Groups samples in the per-task tables.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    /// Seconds of the clip the question is about (the datasets' annotated segments): `start`..`end` of
    /// every video and audio item, as `avflow prepare --start/--end`.
    #[serde(default)]
    pub start: Option<f64>,
    #[serde(default)]
    pub end: Option<f64>,
}

/// A manifest line resolved: absolute media paths in prompt order, the prompt text, the answer letter.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// 0-based line index among the manifest's non-empty lines (stable order for outputs and shards).
    pub index: usize,
    pub id: String,
    pub items: Vec<Item>,
    /// The question as the model sees it (options appended).
    pub prompt: String,
    /// The answer as it should be scored (a letter for multiple choice).
    pub answer: Option<String>,
    pub task: Option<String>,
    pub system: Option<String>,
    pub range: Option<TimeRange>,
}

/// Option letters: A, B, C, …
pub fn letter(i: usize) -> String {
    char::from(b'A' + (i % 26) as u8).to_string()
}

impl ManifestLine {
    fn resolve(self, index: usize, base: &Path) -> Result<Sample> {
        let abs = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut items: Vec<Item> = self
            .media
            .iter()
            .map(|m| match m {
                MediaEntry::Video(p) => Item::Video(abs(p)),
                MediaEntry::Audio(p) => Item::Audio(abs(p)),
                MediaEntry::Image(p) => Item::Image(abs(p)),
            })
            .collect();
        items.extend(self.video.list().into_iter().map(|p| Item::Video(abs(p))));
        items.extend(self.image.list().into_iter().map(|p| Item::Image(abs(p))));
        items.extend(self.audio.list().into_iter().map(|p| Item::Audio(abs(p))));
        let id = self.id.unwrap_or_else(|| format!("line-{}", index + 1));
        if self.question.trim().is_empty() {
            return Err(Error::Prompt(format!("sample {id}: the question is empty")));
        }
        let range = TimeRange::new(self.start, self.end)
            .map_err(|e| Error::Prompt(format!("sample {id}: {e}")))?;
        let mut prompt = self.question.trim_end().to_string();
        let answer = if self.options.is_empty() {
            self.answer
        } else {
            for (i, o) in self.options.iter().enumerate() {
                prompt.push_str(&format!("\n({}) {}", letter(i), o.trim()));
            }
            match self.answer {
                None => None,
                Some(a) => Some(answer_letter(&a, &self.options).ok_or_else(|| {
                    Error::Prompt(format!(
                        "sample {id}: answer {a:?} is neither an option letter (A–{}) nor one of the options",
                        letter(self.options.len() - 1)
                    ))
                })?),
            }
        };
        Ok(Sample {
            index,
            id,
            items,
            prompt,
            answer,
            task: self.task,
            system: self.system,
            range,
        })
    }
}

/// `B`, `(B)`, `b` or the option's own text → `B`.
fn answer_letter(a: &str, options: &[String]) -> Option<String> {
    let t = a
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    if t.len() == 1 {
        let c = t.chars().next()?.to_ascii_uppercase();
        let i = (c as u8).checked_sub(b'A')? as usize;
        if c.is_ascii_uppercase() && i < options.len() {
            return Some(letter(i));
        }
    }
    options
        .iter()
        .position(|o| o.trim().eq_ignore_ascii_case(a.trim()))
        .map(letter)
}

/// A parsed manifest: the samples, or per-line errors (a bad line is a sample that fails, not a fatal
/// error, so one typo does not stop a night's run).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub entries: Vec<std::result::Result<Sample, (usize, String, String)>>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::io(
                format!(
                    "reading the manifest {} (one JSON object per line)",
                    path.display()
                ),
                e,
            )
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"));
        for (index, (lineno, line)) in lines.enumerate() {
            let parsed = serde_json::from_str::<ManifestLine>(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), lineno + 1))
                .and_then(|m| {
                    m.resolve(index, &base)
                        .map_err(|e| format!("{}:{}: {e}", path.display(), lineno + 1))
                });
            let entry = match parsed {
                Ok(s) => {
                    if !seen.insert(s.id.clone()) {
                        return Err(Error::Prompt(format!(
                            "{}:{}: id {:?} appears twice; ids must be unique so runs can resume and merge",
                            path.display(),
                            lineno + 1,
                            s.id
                        )));
                    }
                    Ok(s)
                }
                Err(msg) => {
                    let id = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("id").and_then(|x| x.as_str()).map(String::from))
                        .unwrap_or_else(|| format!("line-{}", index + 1));
                    Err((index, id, msg))
                }
            };
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(Error::Prompt(format!(
                "the manifest {} has no samples (write one JSON object per line)",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }
}

/// `--shard i/n`: this process takes the samples whose index ≡ i (mod n). `i` may be `$SLURM_ARRAY_TASK_ID`
/// (0-based, as `--array=0-{n-1}`); `auto/N` reads that variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Prompt(format!(
                "bad shard {s:?}: write I/N with 0 ≤ I < N, e.g. --shard 0/8 or --shard $SLURM_ARRAY_TASK_ID/8"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = if i.trim() == "auto" {
            std::env::var("SLURM_ARRAY_TASK_ID").map_err(|_| {
                Error::Prompt(
                    "--shard auto/N needs $SLURM_ARRAY_TASK_ID (run inside a Slurm job array)"
                        .into(),
                )
            })?
        } else {
            i.to_string()
        };
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    pub fn takes(&self, sample_index: usize) -> bool {
        sample_index % self.count == self.index
    }

    /// The results file name of this shard: `results.jsonl`, or `results.shard-3-of-8.jsonl`.
    pub fn file_name(&self) -> String {
        if self.count == 1 {
            "results.jsonl".into()
        } else {
            format!("results.shard-{}-of-{}.jsonl", self.index, self.count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_resolve_paths_options_and_answers() {
        let text = r#"
{"id": "a", "video": "clips/a.mp4", "question": "Which?", "options": ["guitar", "piano"], "answer": "piano", "task": "t1"}
{"media": [{"image": "x.png"}, {"audio": "/abs/y.wav"}], "question": "Q", "answer": "yes"}
{"video": ["1.mp4", "2.mp4"], "question": "two", "options": ["a", "b"], "answer": "(b)"}
{"question": "", "video": "z.mp4"}
not json
"#;
        let m = Manifest::parse(text, Path::new("/data/set/items.jsonl")).unwrap();
        assert_eq!(m.entries.len(), 5);
        let a = m.entries[0].as_ref().unwrap();
        assert_eq!(a.items, vec![Item::Video("/data/set/clips/a.mp4".into())]);
        assert_eq!(a.prompt, "Which?\n(A) guitar\n(B) piano");
        assert_eq!(a.answer.as_deref(), Some("B"));
        let b = m.entries[1].as_ref().unwrap();
        assert_eq!(b.id, "line-2");
        assert_eq!(
            b.items,
            vec![
                Item::Image("/data/set/x.png".into()),
                Item::Audio("/abs/y.wav".into())
            ]
        );
        assert_eq!(b.answer.as_deref(), Some("yes"));
        let c = m.entries[2].as_ref().unwrap();
        assert_eq!(c.items.len(), 2);
        assert_eq!(c.answer.as_deref(), Some("B"));
        let (i, id, msg) = m.entries[3].as_ref().unwrap_err();
        assert_eq!((*i, id.as_str()), (3, "line-4"));
        assert!(msg.contains("empty"), "{msg}");
        let (_, _, msg) = m.entries[4].as_ref().unwrap_err();
        assert!(msg.contains("items.jsonl:6"), "{msg}");
        assert!(Manifest::parse(
            "{\"id\":\"x\",\"question\":\"q\"}\n{\"id\":\"x\",\"question\":\"q\"}",
            Path::new("m.jsonl")
        )
        .is_err());
        let bad = Manifest::parse(
            "{\"question\":\"q\",\"options\":[\"a\"],\"answer\":\"C\"}",
            Path::new("m.jsonl"),
        )
        .unwrap();
        assert!(bad.entries[0].is_err());
    }

    /// `start`/`end` (an annotated segment) become the sample's time range; an empty one fails that line.
    #[test]
    fn lines_carry_their_time_range() {
        let text = r#"
{"id": "a", "video": "a.mp4", "question": "Q", "start": 12.5, "end": 20}
{"id": "b", "video": "b.mp4", "question": "Q", "start": 3}
{"id": "c", "video": "c.mp4", "question": "Q"}
{"id": "d", "video": "d.mp4", "question": "Q", "start": 9, "end": 4}
"#;
        let m = Manifest::parse(text, Path::new("/data/m.jsonl")).unwrap();
        let range = |k: usize| m.entries[k].as_ref().unwrap().range;
        assert_eq!(range(0), TimeRange::new(Some(12.5), Some(20.0)).unwrap());
        assert_eq!(range(1).unwrap().end, None);
        assert_eq!(range(2), None);
        let (_, id, msg) = m.entries[3].as_ref().unwrap_err();
        assert_eq!(id, "d");
        assert!(msg.contains("9..4"), "{msg}");
    }

    #[test]
    fn shards_partition_the_samples() {
        let s = Shard::parse("1/3").unwrap();
        assert!(s.takes(1) && s.takes(4) && !s.takes(0));
        assert_eq!(s.file_name(), "results.shard-1-of-3.jsonl");
        assert_eq!(Shard::ALL.file_name(), "results.jsonl");
        for bad in ["3/3", "1", "x/2", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let all: Vec<usize> = (0..10)
            .filter(|&k| (0..3).any(|i| Shard { index: i, count: 3 }.takes(k)))
            .collect();
        assert_eq!(all.len(), 10);
    }
}
