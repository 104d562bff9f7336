//! Library error type. The library reports with `thiserror`; binaries wrap with `anyhow` at the edge.

use std::path::PathBuf;

/// Every error names what the user gave us (a file, a model id) and, where we know it, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model folder {path}: {reason}. Fix: {fix}")]
    Model {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    #[error("weights file {path}: {reason}. Fix: {fix}")]
    Weights {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("inputs {path}: {reason}")]
    Inputs { path: PathBuf, reason: String },
    #[error("invalid prompt: {0}")]
    Prompt(String),
    /// The media would make more tokens than allowed (estimated before anything is decoded).
    #[error(
        "invalid prompt: the media would need about {estimate} tokens, over the budget of {budget} \
         (analyse a part of the clip with --start/--end, lower --fps or --max-pixels, or raise --max-tokens)"
    )]
    TooManyTokens { estimate: usize, budget: usize },
    /// A request that does not fit this prompt or model (a selector that picks nothing, a layer range
    /// outside the model), with what would fit.
    #[error("{reason}. Fix: {fix}")]
    Request { reason: String, fix: String },
    /// The user stopped the work (between stages, or between a long computation's steps).
    #[error("cancelled")]
    Cancelled,
    #[error("hub: could not resolve {id}: {reason}. Fix: {fix}")]
    Hub {
        id: String,
        reason: String,
        fix: String,
    },
    #[error("{context}: {source}{}", io_fix(source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("figure: {reason}. Fix: {fix}")]
    Figure { reason: String, fix: String },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The way out of a write that the disk refused (full, over a size limit, read-only, not ours), for the
/// message of [`Error::Io`]; nothing for other failures.
fn io_fix(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        // ENOSPC, EDQUOT, EFBIG
        Some(28) | Some(122) | Some(27) => {
            ". Fix: free space on that disk (or give another folder), then run the same command again \
             (with --resume for a dataset run: what is written is kept)"
        }
        // EROFS, EACCES, EPERM
        Some(30) | Some(13) | Some(1) => {
            ". Fix: write somewhere this user can (another --out folder), or change the folder's permissions"
        }
        _ => "",
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
