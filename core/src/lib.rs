//! cx-stream's compiled core: the per-event work of the worker, reached from Python once per
//! batch (`python.rs`). Modules follow the data, as `stream/` does: records are decoded and
//! validated here (`decode`); Python keeps Faust, the tables, configuration and the CLI.

pub mod business;
pub mod decode;
pub mod tally;
pub mod windows;

#[cfg(feature = "python")]
mod python;
