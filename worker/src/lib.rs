//! The wasm@home worker: what volunteers run.
//!
//! It registers with a coordinator once (keeping its token in the state
//! directory), then loops: ask for as many units as it has free slots, run
//! each in the [`sandbox`], write the result to disk, upload it. Results on
//! disk survive a crash or a lost network and are uploaded on the next
//! start; when the coordinator is away the worker backs off with jitter.
//!
//! Modules:
//! - `daemon`: [`run`], the main loop wiring the rest; the drain on stop.
//! - `queue`: the local lease queue (two leases per slot, results not yet
//!   answered counted, leases run out dropped unstarted).
//! - `runner`: one unit on a slot thread, paced by the governor.
//! - `uploader`: results to the coordinator, batched, retried.
//! - `heartbeat`: progress reports; units the coordinator no longer wants.
//! - `registration`: the worker's identity, registering on first start.
//! - `backoff`: waiting for an absent coordinator.
//! - [`config`]: [`Config`], and `Settings` from flags, environment, TOML.
//! - [`client`]: the HTTP protocol; errors carry the coordinator's code.
//! - [`cache`]: modules downloaded once (hash-checked) and compiled once.
//! - [`state`]: identity and pending results on disk.
//! - [`governor`]: pause, CPU ceiling and progress of running units.
//! - [`control`]: `worker pause`, `resume` and `status` over a local socket.
//! - [`idle`]: `--only-when-idle`, from the machine's CPU load.
//! - [`progress`]: progress bars or log lines.
//! - [`service`]: the systemd unit `worker install` prints.
//! - [`cli`]: the `worker` command.

mod backoff;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
mod daemon;
pub mod governor;
mod heartbeat;
pub mod idle;
pub mod progress;
mod queue;
mod registration;
mod runner;
pub mod service;
pub mod state;
mod uploader;

pub use config::Config;
pub use daemon::{Stats, run};
