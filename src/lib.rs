//! wechat-miniprogram-exporter: WeChat Mini Program analytics as Prometheus metrics.
//!
//! # Map
//!
//! Data flows one way; a module imports only modules to its left:
//!
//! ```text
//! config -> wechat (tokens + API client) -> poller (schedule, retries) -> metrics -> store -> server
//! ```
//!
//! - [`config`]: TOML and environment, validated once into typed values.
//! - [`period`]: the Beijing-time calendar (days, natural weeks and months).
//! - [`wechat`]: the datacube client, tokens, and the domain types of the reports.
//! - [`poller`]: per app, what is due and when; hands snapshots to a sink.
//! - [`metrics`]: pure rendering of snapshots into the text format; every metric name.
//! - [`store`]: the snapshots, rendered once per change into cached bytes.
//! - [`server`]: `/metrics`, `/`, `/healthz`, `/readyz` over the store.
//! - [`backfill`]: the other way out of `metrics`: past periods fetched once each through the
//!   same client and written as timestamped OpenMetrics for `promtool`.
//! - [`app`]: wiring for `main` and the tests. [`clock`]: injectable time.
//!   [`simulation`]: a faithful simulated WeChat API for the demo and the tests.
//!
//! # Invariants
//!
//! - No scrape ever calls WeChat: `/metrics` reads the store only.
//! - A period is fetched once it is published, then never again.
//! - Nothing is exported as 0 because data was missing: a period not yet published, a field
//!   left out, a retention key too young to be known, all are absent, never zero.
//! - One failing app never delays another; at most `polling.concurrency` requests are in
//!   flight.
//! - No secret and no access token appears in a log line, an error or a label.

#![forbid(unsafe_code)]

pub mod app;
pub mod backfill;
pub mod clock;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod period;
pub mod poller;
pub mod server;
pub mod simulation;
pub mod store;
pub mod wechat;
