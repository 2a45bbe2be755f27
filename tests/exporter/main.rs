//! The exporter's behaviour, end to end: one test binary, a module per area, each starting
//! the simulated WeChat API and exporters (in process or the binary) through [`common`].
//!
//! - [`agent`]: what the agent exports, when it calls, how it reacts to WeChat's errors.
//! - [`reports`]: every report's values against the simulation.
//! - [`conformance`]: the corpus of real answers (`tests/conformance/`) through each report.
//! - [`cost`]: `check-config --cost` against the calls of a simulated week.
//! - [`durable`]: restarts on kept state, broken state files, publication hours over days.
//! - [`fleet`]: reloads, discovery, apps added and removed.
//! - [`sharding`]: sharded exporters splitting a fleet.
//! - [`web`]: TLS, mTLS and basic auth with real `curl`, `openssl` and `htpasswd`.
//! - [`backfill`] and [`cli`]: the binary's commands.
//! - [`hostile`] and [`hardening`]: one regression test per finding of the security and
//!   reliability reviews.
//! - [`fuzz`]: every answer parser on generated answers (`FUZZ_CASES`, `FUZZ_SEED`).

mod common;

mod agent;
mod backfill;
mod cli;
mod conformance;
mod cost;
mod durable;
mod fleet;
mod fuzz;
mod hardening;
mod hostile;
mod reports;
mod sharding;
mod web;
