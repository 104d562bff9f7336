//! The information-flow engine: token groups, traced runs, attention knockouts and layer sweeps.
//! Everything here works on a [`crate::model::Decoder`] and an embedded sequence, never on a model family.

pub mod attention;
pub mod generate;
pub mod groups;
pub mod heatmap;
pub mod knockout;
pub mod sweep;
pub mod trace;

pub use groups::Groups;
pub use knockout::{Knockout, KnockoutResult, KnockoutSet};
pub use sweep::{sweep, Align, SweepRecord};
pub use trace::Trace;
