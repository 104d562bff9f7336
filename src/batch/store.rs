//! Per-sample results as JSON lines, appended and fsynced one sample at a time, so a run killed at any
//! moment (kill -9, a cluster's time limit) loses no finished sample and, resumed, duplicates none.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::SweepRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
}

/// Wall-clock seconds of each stage (left out when results are compared).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub prepare_s: f64,
    pub trace_s: f64,
    pub sweep_s: f64,
}

/// One sample's line in `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// 0-based index in the manifest (outputs are ordered by it).
    pub index: usize,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default)]
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_token_id: Option<u32>,
    /// The baseline's predicted token at `last` and its probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_prob: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_prob: Option<f32>,
    /// Predicted token == answer token (None without an answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    #[serde(default)]
    pub seq_len: usize,
    /// Positions per group.
    #[serde(default)]
    pub tokens: BTreeMap<String, usize>,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub timings: Timings,
    /// The sweep scored on the predicted token.
    #[serde(default)]
    pub records: Vec<SweepRecord>,
    /// The same sweep scored on the answer token, when there is one and it differs from the prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_records: Vec<SweepRecord>,
    /// With `--answer`/`--options`: each window's scores of the typed answer and the options, in the
    /// order of `records`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_scores: Vec<crate::session::AnswerScores>,
}

impl SampleRecord {
    /// A failed sample: recorded so that it is skipped (not retried) on resume and counted in reports.
    pub fn failed(index: usize, id: &str, task: Option<String>, error: String) -> Self {
        Self {
            index,
            id: id.to_string(),
            status: Status::Error,
            error: Some(error),
            task,
            question: String::new(),
            answer: None,
            answer_token_id: None,
            top1_id: None,
            top1_text: None,
            base_prob: None,
            answer_prob: None,
            correct: None,
            seq_len: 0,
            tokens: BTreeMap::new(),
            notes: vec![],
            timings: Timings::default(),
            records: vec![],
            answer_records: vec![],
            answer_scores: vec![],
        }
    }

    /// The record without wall-clock timings: what must be identical between runs.
    pub fn without_timings(&self) -> Self {
        Self {
            timings: Timings::default(),
            ..self.clone()
        }
    }
}

/// An open results file: appends one fsynced line per sample.
pub struct ResultsFile {
    path: PathBuf,
    file: File,
    done: HashSet<String>,
}

impl ResultsFile {
    /// Opens `path` for appending. Without `resume` an existing non-empty file is an error (never
    /// silently overwrite or mix runs). With `resume` the finished records are returned and a torn last
    /// line (a kill in the middle of a write) is cut off.
    pub fn open(path: &Path, resume: bool) -> Result<(Self, Vec<SampleRecord>)> {
        let ctx = |what: &str| format!("{what} {}", path.display());
        let existing = path.exists() && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > 0;
        if existing && !resume {
            return Err(Error::Prompt(format!(
                "{} already holds results: pass --resume to continue that run, or choose another --out",
                path.display()
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(ctx("opening the results file"), e))?;
        let mut records = Vec::new();
        if existing {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::io(ctx("reading"), e))?;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let r: SampleRecord = serde_json::from_slice(line).map_err(|e| {
                    Error::Other(format!(
                        "{}:{}: not a results record ({e}); move the file aside and rerun, or fix that line",
                        path.display(),
                        n + 1
                    ))
                })?;
                records.push(r);
            }
            if complete < bytes.len() {
                // The tail after the last newline is a write that a kill interrupted.
                file.set_len(complete as u64)
                    .map_err(|e| Error::io(ctx("cutting a torn last line of"), e))?;
                file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
            }
            file.seek(SeekFrom::End(0))
                .map_err(|e| Error::io(ctx("seeking"), e))?;
        } else if let Some(dir) = path.parent() {
            // Make the new file's name durable too.
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        let done = records.iter().map(|r| r.id.clone()).collect();
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                done,
            },
            records,
        ))
    }

    pub fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Appends one record as one line and waits until it is on disk.
    pub fn append(&mut self, r: &SampleRecord) -> Result<()> {
        let mut line = serde_json::to_vec(r)
            .map_err(|e| Error::Other(format!("serialising sample {}: {e}", r.id)))?;
        line.push(b'\n');
        let ctx = || format!("appending to {}", self.path.display());
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(ctx(), e))?;
        self.file.sync_data().map_err(|e| Error::io(ctx(), e))?;
        self.done.insert(r.id.clone());
        Ok(())
    }
}

/// Every record of the `results*.jsonl` files in `dir` (shards included); a torn last line is ignored.
pub fn read_dir_results(dir: &Path) -> Result<Vec<SampleRecord>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading the results folder {}", dir.display()), e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("results") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Other(format!(
            "{} holds no results*.jsonl: give the --out folder of `avflow sweep --manifest`",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        for (n, line) in text[..complete].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            out.push(serde_json::from_str(line).map_err(|e| {
                Error::Other(format!(
                    "{}:{}: not a results record ({e})",
                    f.display(),
                    n + 1
                ))
            })?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_resume_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("results.jsonl");
        let (mut f, old) = ResultsFile::open(&p, false).unwrap();
        assert!(old.is_empty());
        f.append(&SampleRecord::failed(0, "a", None, "bad file".into()))
            .unwrap();
        f.append(&SampleRecord::failed(1, "b", Some("t".into()), "x".into()))
            .unwrap();
        drop(f);
        // A kill in the middle of the third write.
        let mut raw = OpenOptions::new().append(true).open(&p).unwrap();
        raw.write_all(br#"{"index":2,"id":"c","sta"#).unwrap();
        drop(raw);
        assert!(ResultsFile::open(&p, false).is_err(), "needs --resume");
        let (mut f, old) = ResultsFile::open(&p, true).unwrap();
        assert_eq!(old.len(), 2);
        assert!(f.is_done("b") && !f.is_done("c"));
        f.append(&SampleRecord::failed(2, "c", None, "y".into()))
            .unwrap();
        drop(f);
        let all = read_dir_results(dir.path()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // A corrupt complete line is an error that names the line.
        std::fs::write(&p, "{\"index\":0}\nnot json\n").unwrap();
        let e = ResultsFile::open(&p, true).err().unwrap().to_string();
        assert!(e.contains("results.jsonl:1"), "{e}");
    }
}
