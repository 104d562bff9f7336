//! Selectors: the one way every part of avflow names prompt positions — the CLI's `--source`/`--target`/
//! `--groups`, the worker's requests, the app's panels and the dataset runner's pairs.
//!
//! A selector is a comma-separated union of terms:
//! - a group or span name: `audio`, `question`, `last`, or a `--spans` name;
//! - a group within seconds: `audio@1-3` (media positions of that group overlapping `[1, 3)` s);
//! - seconds over both modalities: `@1-3`;
//! - a media item: `item:0` (its media positions);
//! - prompt positions: `pos:10-20` (half-open like layer ranges), `pos:7` (one position).
//!
//! [`Selector`] parses (`FromStr`) and prints (`Display`) this grammar, so a value written by one part is
//! read back identically by another, and [`Selector::resolve`] turns it into positions with a prompt's
//! [`TokenMap`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::prompt::TokenMap;

/// One term of a selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A group or span by name.
    Group(String),
    /// Media positions overlapping `[start, end)` seconds, of one group (`Some`) or of any (`None`).
    Time {
        group: Option<String>,
        start: f64,
        end: f64,
    },
    /// The media positions of the `k`-th media item (prompt order).
    Item(usize),
    /// Positions `start..end` (half-open).
    Positions { start: usize, end: usize },
}

/// A union of [`Term`]s; never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Vec<Term>);

impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_string().hash(state);
    }
}

impl Selector {
    /// One group by name.
    pub fn group(name: &str) -> Self {
        Selector(vec![Term::Group(name.to_string())])
    }

    /// The union of groups by name (`audio,video`).
    pub fn groups(names: &[&str]) -> Self {
        Selector(names.iter().map(|n| Term::Group(n.to_string())).collect())
    }

    /// Positions `start..end` (half-open): what a drag on the token strip selects.
    pub fn positions(start: usize, end: usize) -> Self {
        Selector(vec![Term::Positions { start, end }])
    }

    /// Seconds `start..end` of one group (`Some("audio")`) or of both modalities (`None`).
    pub fn time(group: Option<&str>, start: f64, end: f64) -> Self {
        Selector(vec![Term::Time {
            group: group.map(str::to_string),
            start,
            end,
        }])
    }

    pub fn terms(&self) -> &[Term] {
        &self.0
    }

    /// Only group or span names: the form a sweep pair or a dropdown offers (its errors list the groups).
    pub fn is_groups(&self) -> bool {
        self.0.iter().all(|t| matches!(t, Term::Group(_)))
    }

    /// The sorted, de-duplicated positions this selector picks in the prompt of `map`. A term that picks
    /// nothing is an error naming it (with the prompt's group sizes); so is an unknown group.
    pub fn resolve(&self, map: &TokenMap) -> Result<Vec<usize>> {
        let groups = &map.groups;
        let mut out = Vec::new();
        for term in &self.0 {
            let picked: Vec<usize> = match term {
                Term::Group(name) => groups.select(name)?,
                Term::Positions { start, end } => {
                    let seq = map.seq_len().max(groups.seq_len);
                    if *end > seq {
                        return Err(Error::Prompt(format!(
                            "bad position range in {:?}: positions {start}..{end} are not a non-empty range \
                             inside the prompt's 0..{seq} (half-open: pos:A-B takes A up to B−1, pos:A one \
                             position)",
                            term.to_string()
                        )));
                    }
                    (*start..*end).collect()
                }
                Term::Item(k) => map.item_positions(*k),
                Term::Time { group, start, end } => {
                    let in_time = map.time_span(*start, *end, None);
                    match group {
                        None => in_time,
                        Some(g) => {
                            let g = groups.select(g)?;
                            in_time
                                .into_iter()
                                .filter(|p| g.binary_search(p).is_ok())
                                .collect()
                        }
                    }
                }
            };
            if picked.is_empty() {
                return Err(Error::Prompt(format!(
                    "selector {:?} selects no position in this prompt (groups: {})",
                    term.to_string(),
                    groups.summary()
                )));
            }
            out.extend(picked);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Group(name) => f.write_str(name),
            Term::Time { group, start, end } => {
                write!(f, "{}@{start}-{end}", group.as_deref().unwrap_or(""))
            }
            Term::Item(k) => write!(f, "item:{k}"),
            Term::Positions { start, end } if *end == start + 1 => write!(f, "pos:{start}"),
            Term::Positions { start, end } => write!(f, "pos:{start}-{end}"),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

fn parse_term(term: &str) -> Result<Term> {
    let bad =
        |what: &str, detail: String| Error::Prompt(format!("bad {what} in {term:?}: {detail}"));
    if let Some(range) = term.strip_prefix("pos:") {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| bad("position range", format!("{e} (write pos:A-B or pos:A)")))
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(range)?;
                (a, a + 1)
            }
        };
        if start >= end {
            return Err(bad(
                "position range",
                format!(
                    "positions {start}..{end} are not a non-empty range (half-open: pos:A-B takes A up \
                     to B−1, pos:A one position)"
                ),
            ));
        }
        return Ok(Term::Positions { start, end });
    }
    if let Some(k) = term.strip_prefix("item:") {
        let k = k
            .trim()
            .parse()
            .map_err(|e| bad("item index", format!("{e}")))?;
        return Ok(Term::Item(k));
    }
    if let Some((group, range)) = term.split_once('@') {
        let (a, b) = range.split_once('-').ok_or_else(|| {
            bad(
                "time range",
                "write GROUP@START-END in seconds, e.g. audio@1-3".into(),
            )
        })?;
        let secs = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    bad(
                        "time range",
                        format!("{s:?} is not a number of seconds (e.g. audio@1-3)"),
                    )
                })
        };
        let group = group.trim();
        return Ok(Term::Time {
            group: (!group.is_empty()).then(|| group.to_string()),
            start: secs(a)?,
            end: secs(b)?,
        });
    }
    Ok(Term::Group(term.to_string()))
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let terms = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(parse_term)
            .collect::<Result<Vec<_>>>()?;
        if terms.is_empty() {
            return Err(Error::Prompt(
                "no positions selected: give a group such as audio, video, question or last".into(),
            ));
        }
        Ok(Selector(terms))
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{Groups, TokenInfo};

    /// 10 positions: system 0..3, audio 3..7 (seconds 0..4, item 0), question 7..9, last 9.
    fn prompt() -> TokenMap {
        let mut groups = Groups {
            seq_len: 10,
            ..Groups::default()
        };
        for (name, span) in [
            ("system", 0..3),
            ("audio", 3..7),
            ("question", 7..9),
            ("last", 9..10),
        ] {
            groups.spans.insert(name.into(), span.collect());
        }
        let tokens = (0..10)
            .map(|p| TokenInfo {
                position: p,
                id: p as u32,
                group: String::new(),
                item: (3..7).contains(&p).then_some(0),
                time: (3..7)
                    .contains(&p)
                    .then(|| [(p - 3) as f64, (p - 2) as f64]),
                grid: None,
                chunk: None,
                marker: false,
                text: String::new(),
            })
            .collect();
        TokenMap {
            tokens,
            groups,
            seconds_per_chunk: 2.0,
        }
    }

    fn sel(m: &TokenMap, e: &str) -> std::result::Result<Vec<usize>, String> {
        e.parse::<Selector>()
            .and_then(|s| s.resolve(m))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn position_ranges_are_half_open_and_join_other_terms() {
        let m = prompt();
        assert_eq!(sel(&m, "pos:2-5"), Ok(vec![2, 3, 4]));
        assert_eq!(sel(&m, "pos:4"), Ok(vec![4]));
        assert_eq!(sel(&m, " pos: 8 - 10 "), Ok(vec![8, 9]));
        assert_eq!(sel(&m, "pos:0-2,last"), Ok(vec![0, 1, 9]));
        assert_eq!(sel(&m, "pos:3-5,audio"), Ok(vec![3, 4, 5, 6]));
        for bad in [
            "pos:5-5", "pos:6-2", "pos:9-11", "pos:10", "pos:x", "pos:1-",
        ] {
            let e = sel(&m, bad).expect_err(bad);
            assert!(e.contains("bad position range"), "{bad}: {e}");
        }
        assert!(sel(&m, "pos:9-11").unwrap_err().contains("0..10"));
    }

    #[test]
    fn times_items_and_groups_resolve_with_the_token_map() {
        let m = prompt();
        assert_eq!(sel(&m, "@1-3"), Ok(vec![4, 5]));
        assert_eq!(sel(&m, "audio@0.5-1.5"), Ok(vec![3, 4]));
        assert_eq!(sel(&m, "item:0"), Ok(vec![3, 4, 5, 6]));
        assert_eq!(sel(&m, "question,last"), Ok(vec![7, 8, 9]));
        let e = sel(&m, "@9-10").unwrap_err();
        assert!(
            e.contains("selects no position") && e.contains("audio=4"),
            "{e}"
        );
        assert!(sel(&m, "vidoe").unwrap_err().contains("unknown group"));
        assert!(sel(&m, "audio@1").unwrap_err().contains("bad time range"));
        assert!(sel(&m, "item:x").unwrap_err().contains("bad item index"));
        assert!(sel(&m, " , ")
            .unwrap_err()
            .contains("no positions selected"));
    }

    #[test]
    fn every_form_prints_as_it_parses() {
        for s in [
            "audio",
            "@1-3",
            "audio@0.5-2",
            "video@1.25-3.5",
            "item:2",
            "pos:56-66",
            "pos:7",
            "audio,video",
            "question,pos:3-5,@0-0.04",
        ] {
            let parsed: Selector = s.parse().expect(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.to_string().parse::<Selector>().expect(s), parsed);
        }
        assert_eq!(
            " audio , pos:7-8 ".parse::<Selector>().unwrap().to_string(),
            "audio,pos:7"
        );
        assert_eq!(Selector::positions(4, 13).to_string(), "pos:4-13");
        assert_eq!(Selector::time(None, 1.0, 3.0).to_string(), "@1-3");
        assert_eq!(
            Selector::time(Some("audio"), 0.5, 2.0).to_string(),
            "audio@0.5-2"
        );
        assert!(Selector::group("audio").is_groups());
        assert_eq!(
            Selector::groups(&["audio", "video"]).to_string(),
            "audio,video"
        );
        assert!(!"audio,@1-2".parse::<Selector>().unwrap().is_groups());
        let json = serde_json::to_string(&Selector::positions(1, 3)).unwrap();
        assert_eq!(json, "\"pos:1-3\"");
        assert_eq!(
            serde_json::from_str::<Selector>(&json).unwrap(),
            Selector::positions(1, 3)
        );
    }
}
