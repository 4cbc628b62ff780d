//! Kernel calls that rustix does not wrap, each behind one safe function.
//!
//! The rest of the workspace forbids `unsafe`. What cannot be done without it lives here, small
//! enough to read whole: today that is `adjtimex(2)` in read-only mode, for the host role's
//! `timex` collector (node_exporter reads the same call), and glibc's malloc tuning for the
//! agent's memory.

pub mod malloc;
#[cfg(target_os = "linux")]
mod timex;

#[cfg(target_os = "linux")]
pub use timex::{ClockState, read_clock_state};
