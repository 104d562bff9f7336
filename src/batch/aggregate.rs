//! Dataset-level numbers from per-sample sweeps: mean relative change per (pair, window) with a 95%
//! confidence interval (Student's t), over correctly answered samples (the research protocol) or all,
//! overall and per task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::batch::store::{SampleRecord, Status};

/// Which samples enter the averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    /// `correct` when any sample has an answer, else `all`.
    Auto,
    /// Only samples whose predicted token is the answer (Geva et al., Zhang et al., Kim et al.).
    Correct,
    All,
}

/// Which token's probability the relative change is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// The baseline's predicted (top-1) token.
    Predicted,
    /// The ground-truth answer token (samples without an answer are left out).
    Answer,
}

/// One (task, pair, layer) cell of the aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// `all`, or a task name from the manifest.
    pub task: String,
    pub source: String,
    pub target: String,
    pub layer: usize,
    pub start: usize,
    pub end: usize,
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Per-task counts: how many samples ran, failed, were answered correctly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub task: String,
    pub samples: usize,
    pub failed: usize,
    pub with_answer: usize,
    pub correct: usize,
    /// correct / with_answer (None without answers).
    pub accuracy: Option<f64>,
    /// Samples that entered the averages.
    pub used: usize,
}

/// The aggregate of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub subset: Subset,
    pub metric: Metric,
    pub rows: Vec<AggregateRow>,
    pub tasks: Vec<TaskRow>,
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
pub fn t_critical_95(df: usize) -> f64 {
    // Exact table for small samples (where it matters), Cornish–Fisher expansion above.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => {
            let z = 1.959_963_984_540_054_f64;
            let v = df as f64;
            z + (z.powi(3) + z) / (4.0 * v)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        }
    }
}

/// Mean, sample standard deviation and 95% CI of `xs` (the CI collapses to the mean for one sample).
pub fn mean_ci(xs: &[f64]) -> (f64, f64, f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0, mean, mean);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = t_critical_95(n - 1) * sd / (n as f64).sqrt();
    (mean, sd, mean - half, mean + half)
}

impl Subset {
    fn resolve(self, records: &[SampleRecord]) -> Subset {
        match self {
            Subset::Auto if records.iter().any(|r| r.correct.is_some()) => Subset::Correct,
            Subset::Auto => Subset::All,
            s => s,
        }
    }
}

/// Averages the sweeps of the successful samples, overall (`task = "all"`) and per task.
pub fn aggregate(records: &[SampleRecord], subset: Subset, metric: Metric) -> Aggregate {
    let subset = subset.resolve(records);
    let used = |r: &SampleRecord| {
        r.status == Status::Ok
            && match subset {
                Subset::Correct => r.correct == Some(true),
                _ => true,
            }
            && (metric == Metric::Predicted || r.answer_token_id.is_some())
    };
    // (task, source, target, layer) → (start, end, values); BTreeMap keeps the output order stable.
    type Key = (String, String, String, usize);
    let mut cells: BTreeMap<Key, (usize, usize, Vec<f64>)> = BTreeMap::new();
    let mut tasks: BTreeMap<String, TaskRow> = BTreeMap::new();
    let mut ordered: Vec<&SampleRecord> = records.iter().collect();
    ordered.sort_by_key(|r| r.index);
    for r in ordered {
        let names: Vec<String> = std::iter::once("all".to_string())
            .chain(r.task.clone().filter(|t| t != "all"))
            .collect();
        for t in &names {
            let row = tasks.entry(t.clone()).or_insert_with(|| TaskRow {
                task: t.clone(),
                samples: 0,
                failed: 0,
                with_answer: 0,
                correct: 0,
                accuracy: None,
                used: 0,
            });
            row.samples += 1;
            row.failed += usize::from(r.status == Status::Error);
            row.with_answer += usize::from(r.correct.is_some());
            row.correct += usize::from(r.correct == Some(true));
            row.used += usize::from(used(r));
        }
        if !used(r) {
            continue;
        }
        let recs = match metric {
            Metric::Answer if !r.answer_records.is_empty() => &r.answer_records,
            _ => &r.records,
        };
        for t in &names {
            for x in recs {
                let key = (t.clone(), x.source.clone(), x.target.clone(), x.layer);
                cells
                    .entry(key)
                    .or_insert_with(|| (x.start, x.end, Vec::new()))
                    .2
                    .push(x.rel_change as f64);
            }
        }
    }
    let rows = cells
        .into_iter()
        .map(|((task, source, target, layer), (start, end, xs))| {
            let (mean, sd, ci_low, ci_high) = mean_ci(&xs);
            AggregateRow {
                task,
                source,
                target,
                layer,
                start,
                end,
                n: xs.len(),
                mean,
                sd,
                ci_low,
                ci_high,
            }
        })
        .collect();
    let tasks = tasks
        .into_values()
        .map(|mut t| {
            t.accuracy = (t.with_answer > 0).then(|| t.correct as f64 / t.with_answer as f64);
            t
        })
        .collect();
    Aggregate {
        subset,
        metric,
        rows,
        tasks,
    }
}

impl Aggregate {
    /// `aggregate.csv`: one row per (task, pair, layer).
    pub fn rows_csv(&self) -> String {
        let mut s = String::from("task,source,target,layer,start,end,n,mean,sd,ci_low,ci_high\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&r.task),
                csv_field(&r.source),
                csv_field(&r.target),
                r.layer,
                r.start,
                r.end,
                r.n,
                r.mean,
                r.sd,
                r.ci_low,
                r.ci_high
            ));
        }
        s
    }

    /// `tasks.csv`: per task the counts, the accuracy and, per pair, the window with the largest drop.
    pub fn tasks_csv(&self) -> String {
        let mut s = String::from(
            "task,samples,failed,with_answer,correct,accuracy,used,source,target,min_layer,min_mean,min_ci_low,min_ci_high\n",
        );
        for t in &self.tasks {
            let head = format!(
                "{},{},{},{},{},{},{}",
                csv_field(&t.task),
                t.samples,
                t.failed,
                t.with_answer,
                t.correct,
                t.accuracy.map(|a| a.to_string()).unwrap_or_default(),
                t.used
            );
            let mut pairs: BTreeMap<(&str, &str), &AggregateRow> = BTreeMap::new();
            for r in self.rows.iter().filter(|r| r.task == t.task) {
                let e = pairs
                    .entry((r.source.as_str(), r.target.as_str()))
                    .or_insert(r);
                if r.mean < e.mean {
                    *e = r;
                }
            }
            if pairs.is_empty() {
                s.push_str(&format!("{head},,,,,,\n"));
            }
            for ((src, tgt), r) in pairs {
                s.push_str(&format!(
                    "{head},{},{},{},{},{},{}\n",
                    csv_field(src),
                    csv_field(tgt),
                    r.layer,
                    r.mean,
                    r.ci_low,
                    r.ci_high
                ));
            }
        }
        s
    }
}

/// Quotes a CSV field when it needs it (task names are user text).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::SweepRecord;

    fn rec(index: usize, task: &str, correct: Option<bool>, changes: &[f32]) -> SampleRecord {
        let mut r = SampleRecord::failed(index, &format!("s{index}"), Some(task.into()), "".into());
        r.status = Status::Ok;
        r.error = None;
        r.correct = correct;
        r.answer_token_id = correct.map(|_| 7);
        r.records = changes
            .iter()
            .enumerate()
            .map(|(l, &c)| SweepRecord {
                source: "audio".into(),
                target: "last".into(),
                layer: l,
                start: l,
                end: l + 1,
                prob: 0.5,
                base_prob: 0.5,
                rel_change: c,
                top1_id: 7,
                token_id: 7,
            })
            .collect();
        r
    }

    #[test]
    fn t_values_and_intervals() {
        assert!((t_critical_95(1) - 12.706).abs() < 1e-9);
        // Known values: t(0.975, 40) = 2.0211, t(0.975, 120) = 1.9799.
        assert!((t_critical_95(40) - 2.0211).abs() < 2e-3);
        assert!((t_critical_95(120) - 1.9799).abs() < 1e-3);
        let (m, sd, lo, hi) = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert_eq!(sd, 1.0);
        assert!((hi - m - 4.303 / 3f64.sqrt()).abs() < 1e-9 && (m - lo - (hi - m)).abs() < 1e-12);
    }

    #[test]
    fn correct_subset_and_tasks() {
        let recs = vec![
            rec(0, "x", Some(true), &[-10.0, 0.0]),
            rec(1, "x", Some(false), &[-90.0, 0.0]),
            rec(2, "y", Some(true), &[-20.0, 4.0]),
            SampleRecord::failed(3, "bad", Some("y".into()), "corrupt".into()),
        ];
        let a = aggregate(&recs, Subset::Auto, Metric::Predicted);
        assert_eq!(a.subset, Subset::Correct);
        let all0 = a
            .rows
            .iter()
            .find(|r| r.task == "all" && r.layer == 0)
            .unwrap();
        assert_eq!((all0.n, all0.mean), (2, -15.0));
        let y = a.tasks.iter().find(|t| t.task == "y").unwrap();
        assert_eq!((y.samples, y.failed, y.correct, y.used), (2, 1, 1, 1));
        let every = aggregate(&recs, Subset::All, Metric::Predicted);
        let all0 = every
            .rows
            .iter()
            .find(|r| r.task == "all" && r.layer == 0)
            .unwrap();
        assert_eq!((all0.n, all0.mean), (3, -40.0));
        let csv = a.tasks_csv();
        assert!(csv.contains("x,2,0,2,1,0.5,1,audio,last,0,-10"), "{csv}");
        assert_eq!(a.rows_csv().lines().count(), 1 + 3 * 2);
    }
}
