//! The `sojourn` host: loading object packages, running resident objects on their own
//! schedules, and the demo. The binary (`src/main.rs`) is a thin CLI over this library.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod demo;
pub mod demo_migration;
pub mod evidence;
pub mod package;
pub mod runner;
