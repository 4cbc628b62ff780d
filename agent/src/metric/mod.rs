//! The metric vocabulary every role shares: builders for families (one at a time, or a set
//! gathered by name), and the regex pattern type that include/exclude filters in config use.

mod family;
mod pattern;
mod set;

pub use family::{FamilyBuilder, HistogramBuilder};
pub use pattern::Pattern;
pub use set::FamilySet;
