//! The metric vocabulary every role shares: a builder for families, and the regex pattern
//! type that include/exclude filters in config use.

mod family;
mod pattern;

pub use family::{FamilyBuilder, HistogramBuilder};
pub use pattern::Pattern;
