//! The sound role (in progress).
#![allow(dead_code)]
pub mod player;
pub mod queue;
pub mod schedule;
pub mod source;
