//! The token map: for every prompt position its group, media item, time range, vision grid cell, chunk
//! and text — built once per prompt by the model family (which knows how its processor lays media out),
//! read by every selector, view and figure.

use serde::{Deserialize, Serialize};

use crate::prompt::{Groups, SpecialTokens};

/// One position of the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub position: usize,
    pub id: u32,
    /// system, video, image, audio, question, last, or template (special/markers/other text).
    pub group: String,
    /// Index of the media item (in prompt order) for media tokens and their markers.
    pub item: Option<usize>,
    /// Seconds `[start, end)` covered by a media token.
    pub time: Option<[f64; 2]>,
    /// Vision grid cell (t, h, w) in merged units.
    pub grid: Option<[usize; 3]>,
    /// `seconds_per_chunk` chunk of the token's start time.
    pub chunk: Option<usize>,
    /// A bracket around a media item (`<|vision_bos|>`, …): drawn apart from text.
    #[serde(skip)]
    pub marker: bool,
    /// Decoded text, where the model has a tokenizer (empty otherwise).
    #[serde(skip)]
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenMap {
    pub tokens: Vec<TokenInfo>,
    pub groups: Groups,
    /// Audio and video are interleaved in chunks of this many seconds (0 when the family does not chunk).
    #[serde(skip)]
    pub seconds_per_chunk: f64,
}

impl TokenMap {
    /// The classification every family shares: each position's group (`last` wins over `question` and
    /// the template; media placeholders are exclusive) and whether it is a media marker. Items, seconds,
    /// grid cells and chunks are the family's to fill in.
    pub fn classify(ids: &[u32], tk: &SpecialTokens) -> Self {
        let groups = Groups::from_ids(ids, tk);
        let mut group_of = vec!["template".to_string(); ids.len()];
        for (name, pos) in &groups.spans {
            for &p in pos {
                if group_of[p] == "template" || name == "last" {
                    group_of[p] = name.clone();
                }
            }
        }
        let tokens = ids
            .iter()
            .zip(group_of)
            .enumerate()
            .map(|(position, (&id, group))| TokenInfo {
                position,
                id,
                group,
                item: None,
                time: None,
                grid: None,
                chunk: None,
                marker: tk.markers.contains(&id),
                text: String::new(),
            })
            .collect();
        TokenMap {
            tokens,
            groups,
            seconds_per_chunk: 0.0,
        }
    }

    pub fn seq_len(&self) -> usize {
        self.tokens.len()
    }

    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    /// Media positions whose time range overlaps `[start, end)` seconds (both modalities), optionally of
    /// one item: the "time range" spans of knockouts.
    pub fn time_span(&self, start: f64, end: f64, item: Option<usize>) -> Vec<usize> {
        self.tokens
            .iter()
            .filter(|t| item.is_none() || t.item == item)
            .filter(|t| t.time.is_some_and(|[s, e]| s < end && e > start))
            .map(|t| t.position)
            .collect()
    }

    /// Media positions (placeholders with a time or a grid cell) of item `k`.
    pub fn item_positions(&self, k: usize) -> Vec<usize> {
        self.tokens
            .iter()
            .filter(|t| t.item == Some(k) && (t.time.is_some() || t.grid.is_some()))
            .map(|t| t.position)
            .collect()
    }

    /// `(name, size)` of every group, in [`Groups`] order: what knockouts and sweeps can name.
    pub fn group_sizes(&self) -> Vec<(String, usize)> {
        self.groups
            .spans
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
}

#[cfg(test)]
impl TokenMap {
    /// A map whose position `i` is in group `groups[i]` (id `i`, no text, media or times), each group's
    /// span its positions: the panels' tests build their prompts from it.
    pub(crate) fn of_groups(groups: &[&str]) -> Self {
        let mut spans: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (i, g) in groups.iter().enumerate() {
            spans.entry(g.to_string()).or_default().push(i);
        }
        TokenMap {
            tokens: groups
                .iter()
                .enumerate()
                .map(|(i, g)| TokenInfo {
                    position: i,
                    id: i as u32,
                    group: g.to_string(),
                    item: None,
                    time: None,
                    grid: None,
                    chunk: None,
                    marker: false,
                    text: String::new(),
                })
                .collect(),
            groups: Groups {
                seq_len: groups.len(),
                spans,
            },
            seconds_per_chunk: 2.0,
        }
    }
}
