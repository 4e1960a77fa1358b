//! cx-stream's compiled core: the per-event work of the worker, reached from Python a few calls
//! per batch (`python.rs`). Modules follow the data, as `stream/` does: records are decoded and
//! validated (`decode`), applied to their ticket or survey state (`tickets`, `state`), timed
//! in business hours (`business`), told to their accounts (`experience`) and folded into the
//! windows (`windows`, `tally`). Their totals cross to the merging stage as partials
//! (`partials`), which sums them (`merge`) and writes /metrics and the snapshots (`export`,
//! `stats`). The accounts are evaluated here at each instant (`accounts`), with their health
//! then (`account_health`), from the states Python's batches store. Python keeps Faust, the
//! tables, the accounts' events, configuration and the CLI.

pub mod account_health;
pub mod accounts;
pub mod business;
pub mod decode;
pub mod experience;
pub mod export;
pub mod merge;
pub mod partials;
pub mod state;
pub mod stats;
pub mod tally;
pub mod tickets;
pub mod windows;

#[cfg(feature = "python")]
mod python;
