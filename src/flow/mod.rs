//! The information-flow engine: traced runs, attention knockouts, layer sweeps, drops, lenses and
//! attention maps. Everything here works on a [`crate::model::Decoder`], a traced sequence and positions
//! (or [`crate::prompt::Groups`] of them), never on a model family or a selector.

pub mod answer;
pub mod attention;
pub mod generate;
pub mod heatmap;
pub mod knockout;
pub mod sweep;
pub mod trace;

pub use knockout::{Knockout, KnockoutResult, KnockoutSet};
pub use sweep::{sweep, Align, Pair, SweepRecord};
pub use trace::Trace;
