//! Token groups of a prompt, the units knockouts and dropping are stated in.
//!
//! `system`: every position before the user turn; `video`, `image`, `audio`: the placeholder positions;
//! `question`: the user's text after the media, up to (not including) the user turn's `<|im_end|>`;
//! `last`: the final prompt position. Custom spans (explicit positions) can be added by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::prompt::SpecialTokens;

/// Named position sets over one prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    pub seq_len: usize,
    pub spans: BTreeMap<String, Vec<usize>>,
}

pub const BUILTIN: [&str; 6] = ["system", "video", "image", "audio", "question", "last"];

impl Groups {
    /// Classifies the positions of `ids` with the model's special tokens.
    pub fn from_ids(ids: &[u32], tk: &SpecialTokens) -> Self {
        let n = ids.len();
        let im_start = tk.im_start;
        let im_end = tk.im_end;
        // The user turn opens at `<|im_start|>` followed by `user` (or, without that id, the second
        // `<|im_start|>`); a prompt without turns is all user text.
        let starts: Vec<usize> = match im_start {
            Some(s) => ids
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == s)
                .map(|(i, _)| i)
                .collect(),
            None => vec![],
        };
        let user_start = starts
            .iter()
            .copied()
            .find(|&i| tk.user.is_some() && ids.get(i + 1).copied() == tk.user)
            .or_else(|| starts.get(1).copied())
            .unwrap_or(0);
        let user_end = im_end
            .and_then(|e| {
                ids.iter()
                    .skip(user_start)
                    .position(|&t| t == e)
                    .map(|p| p + user_start)
            })
            .unwrap_or(n);
        let is_media_marker = |t: u32| tk.is_media(t);
        let pick =
            |tok: Option<u32>| -> Vec<usize> { (0..n).filter(|&i| Some(ids[i]) == tok).collect() };
        let last_media = (user_start..user_end)
            .rev()
            .find(|&i| is_media_marker(ids[i]));
        // Without media, the question starts after `<|im_start|>user`.
        let q_start = match last_media {
            Some(i) => i + 1,
            None if im_start.is_some() && user_start < n => (user_start + 2).min(user_end),
            None => 0,
        };
        let mut spans = BTreeMap::new();
        spans.insert("system".to_string(), (0..user_start).collect());
        spans.insert("video".to_string(), pick(tk.video));
        spans.insert("image".to_string(), pick(tk.image));
        spans.insert("audio".to_string(), pick(tk.audio));
        spans.insert("question".to_string(), (q_start..user_end).collect());
        spans.insert("last".to_string(), if n > 0 { vec![n - 1] } else { vec![] });
        Groups { seq_len: n, spans }
    }

    /// Adds or replaces named spans from a JSON file `{"name": [positions...], ...}` (or `{"spans": {...}}`).
    pub fn merge_file(&mut self, path: &std::path::Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Inputs {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        // A plain `{"name": [...]}`, `{"spans": {...}}`, or the token map `avflow prepare --spans` writes.
        let obj = v
            .get("groups")
            .and_then(|g| g.get("spans"))
            .or_else(|| v.get("spans"))
            .unwrap_or(&v)
            .as_object()
            .ok_or_else(|| Error::Inputs {
                path: path.to_path_buf(),
                reason: "expected an object mapping span names to lists of positions".into(),
            })?;
        for (name, list) in obj {
            let pos: Vec<usize> =
                serde_json::from_value(list.clone()).map_err(|_| Error::Inputs {
                    path: path.to_path_buf(),
                    reason: format!("span {name:?} must be a list of positions"),
                })?;
            if let Some(&bad) = pos.iter().find(|&&p| p >= self.seq_len) {
                return Err(Error::Inputs {
                    path: path.to_path_buf(),
                    reason: format!(
                        "span {name:?} names position {bad} but the prompt has {}",
                        self.seq_len
                    ),
                });
            }
            self.spans.insert(name.clone(), pos);
        }
        Ok(())
    }

    /// The union of the named groups (`"audio,video"`), sorted; an unknown or empty group is an error
    /// that names it and lists what exists.
    pub fn select(&self, names: &str) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for name in names.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match self.spans.get(name) {
                Some(p) if !p.is_empty() => out.extend_from_slice(p),
                Some(_) => {
                    return Err(Error::Prompt(format!(
                        "group {name:?} is empty in this prompt (counts: {})",
                        self.summary()
                    )))
                }
                None => {
                    return Err(Error::Prompt(format!(
                        "unknown group {name:?}: use one of {}",
                        self.spans.keys().cloned().collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        }
        if out.is_empty() {
            return Err(Error::Prompt("no group given".into()));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `name=count` for every group, for messages.
    pub fn summary(&self) -> String {
        self.spans
            .iter()
            .map(|(k, v)| format!("{k}={}", v.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A size-matched random control for a knockout's sources: as many positions as `sources`, drawn without
/// replacement (seeded, reproducible) from the positions before the last target that are neither sources
/// nor targets — the "random blocking at the same ratio" control of the research protocol.
pub fn random_control(sources: &[usize], targets: &[usize], seed: u64) -> Result<Vec<usize>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let limit = targets.iter().copied().max().unwrap_or(0);
    let mut pool: Vec<usize> = (0..limit)
        .filter(|p| !sources.contains(p) && !targets.contains(p))
        .collect();
    if pool.len() < sources.len() {
        return Err(Error::Prompt(format!(
            "a random control needs {} positions outside the sources and targets before the target, only {} exist",
            sources.len(),
            pool.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    pool.shuffle(&mut rng);
    let mut out = pool[..sources.len()].to_vec();
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tk() -> SpecialTokens {
        SpecialTokens {
            audio: Some(10),
            image: Some(11),
            video: Some(12),
            markers: vec![13, 14, 15, 16],
            user: Some(5),
            im_start: Some(1),
            im_end: Some(2),
            stop: vec![],
        }
    }

    #[test]
    fn classifies_an_av_prompt() {
        // <s> sys sys </s> \n <s> user \n VB AB V V A A AE VE q q </s> \n <s> asst \n
        let ids = [
            1, 7, 7, 2, 9, 1, 5, 9, 15, 13, 12, 12, 10, 10, 14, 16, 8, 8, 2, 9, 1, 6, 9,
        ];
        let g = Groups::from_ids(&ids, &tk());
        assert_eq!(g.spans["system"], vec![0, 1, 2, 3, 4]);
        assert_eq!(g.spans["video"], vec![10, 11]);
        assert_eq!(g.spans["audio"], vec![12, 13]);
        assert_eq!(g.spans["question"], vec![16, 17]);
        assert_eq!(g.spans["last"], vec![22]);
        assert_eq!(g.select("audio,video").unwrap(), vec![10, 11, 12, 13]);
        let e = g.select("image").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = g.select("vidoe").unwrap_err().to_string();
        assert!(e.contains("unknown group") && e.contains("video"), "{e}");
        let src = g.select("audio").unwrap();
        let ctl = random_control(&src, &[22], 3).unwrap();
        assert_eq!(ctl.len(), src.len());
        assert!(ctl.iter().all(|p| !src.contains(p) && *p < 22));
        assert_eq!(ctl, random_control(&src, &[22], 3).unwrap(), "seeded");
    }
}
