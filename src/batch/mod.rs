//! Experiments over whole datasets: a manifest of samples, one sweep per sample with one loaded model,
//! results appended per sample (resumable, shardable), merged and aggregated with confidence intervals.

pub mod aggregate;
pub mod manifest;
pub mod run;
pub mod store;

pub use aggregate::{aggregate, Aggregate, AggregateRow, Metric, Subset};
pub use manifest::{Manifest, Sample, Shard};
pub use run::{merge, run_manifest, write_aggregate, BatchEvent, BatchSummary, RunSettings};
pub use store::{ResultsFile, SampleRecord, Status};
