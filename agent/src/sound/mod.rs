//! The sound role (in progress).
#![allow(dead_code)]
pub mod schedule;
