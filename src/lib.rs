//! wechat-miniprogram-exporter: WeChat Mini Program analytics as Prometheus metrics.
//!
//! # Map
//!
//! Data flows one way; a module imports only modules above it in this list (the `pub mod`
//! order below; a test, `tidy`, fails on an import that points down the list):
//!
//! ```text
//! domain -> wechat (tokens + API client) -> report (one module per report) -> schedule ->
//! poller -> metrics -> state -> store -> config -> fleet (pollers per app, reload,
//! discovery) -> server -> startup -> backfill -> simulation -> cli
//! ```
//!
//! - [`clock`]: injectable time. [`domain`]: what the core knows of an app (its name, an
//!   [`domain::AppId`] parsed once, its token source, its secret that redacts itself), the
//!   shard and the polling settings (with the backoff). [`period`]: the Beijing-time
//!   calendar (days, natural weeks and months). [`calendar`]: China's working calendar
//!   (public holidays, make-up workdays), built in and extended by `calendar.file`.
//!   [`shared`]: label values many apps send alike (portrait names), held once.
//!   [`heap`]: free heap pages given back to the system after large transient allocations
//!   (the other `unsafe`: one call to glibc's `malloc_trim`).
//! - [`wechat`]: the API client, tokens, errors and what every answer shares on the wire.
//! - [`exposition`]: the small interface every family writes its samples through.
//!   [`sealed`]: large bytes in a sealed memory file, sent to a socket without a copy (an
//!   `unsafe`: mapping a file that its seals make immutable). [`gzip`]: the cached
//!   exposition compressed once, with a per-scrape tail appended.
//! - [`simulated`]: the simulated apps and their numbers, a leaf the reports answer from.
//! - [`report`]: the reports, one module each, listed once in a registry: their calls, how an
//!   answer is read, what is kept, the families they are exported as, and their simulated
//!   answers; [`report::Settings`] says which are enabled. Typed pieces stay inside the
//!   generic code: answers go in, a snapshot that renders itself comes out.
//! - [`policy`]: what to do after an error, for the agent and `backfill` alike.
//!   [`publication`]: when each app's data is usually published, and so from when to ask.
//! - [`sink`]: what the poller hands on (held periods with their answers, job statuses) and
//!   what it starts from ([`sink::Resume`]).
//! - [`schedule`]: pure decisions of the poller: given now and what is held, what is due, what
//!   an attempt asks for, when to wake, what an outcome changes.
//! - [`poller`]: per app, the IO around the schedule. [`supervise`]: keeps each app's poller
//!   alive; a panic is that app's error, shown and retried, never a silence.
//! - [`metrics`]: the whole exposition: every report, the data's age, health, self-metrics.
//! - [`state`]: the answers behind each held period and the learned hours, on disk under
//!   `--storage.path`, read back through each report's own parsing.
//! - [`store`]: the held data, one entry per app, rendered once per change into cached bytes
//!   (compressed as it is rendered; the text only while scrapers ask for it).
//! - [`config`]: TOML and environment, validated once into typed values, each problem named
//!   with its fix; only the wiring below imports it.
//! - [`cost`]: what a configuration costs before it runs: WeChat calls a day and series,
//!   per app, from the registry and each app's settings (`check-config --cost`).
//! - [`discovery`]: apps listed by files (file_sd globs) and a URL, merged with the
//!   configured ones. [`fleet`]: one supervised poller per app, kept in step with a
//!   configuration: only what changed changes; the pollers run on a thread of their own.
//!   [`reload`]: SIGHUP, `POST /-/reload` and discovery applied to the fleet.
//! - [`server`]: `/metrics`, `/`, `/apps/NAME`, `/healthz`, `/readyz`, `POST /-/reload`; the
//!   exporter-toolkit web configuration (TLS, basic auth, headers) and an accept loop that
//!   bounds connections, request heads and the drain.
//! - [`startup`]: the one start-up path, for `main` and the tests: a configuration becomes
//!   the running exporter, and a handle stops it.
//! - [`backfill`]: the other way out of `report` and `metrics`: past periods fetched once each
//!   through the same client and written as timestamped OpenMetrics for `promtool`.
//! - [`simulation`]: a faithful simulated WeChat API for the demo and the tests, answering
//!   each report through the registry.
//! - [`logging`]: logfmt or JSON lines. [`cli`]: the command line, mapped by `main` to calls.
//!
//! # Invariants
//!
//! - No scrape ever calls WeChat: `/metrics` reads the store only.
//! - A period is fetched once it is published, then never again, not even after a restart.
//! - Nothing is exported as 0 because data was missing: a period not yet published, a field
//!   left out, a retention key too young to be known, all are absent, never zero.
//! - One failing app never delays another; at most `polling.concurrency` requests are in
//!   flight.
//! - No secret and no access token appears in a log line, an error, a page or a label.
//! - Whatever WeChat, a token service or a configuration says, memory stays bounded, nothing
//!   panics, and no value that cannot be true is exported (it is dropped and counted).
//!
//! # Adding a report
//!
//! Write one module, `src/report/<name>.rs`, implementing
//! [`report::ReportSpec`]: its calls, its wire types and parsing, its snapshot, its families
//! and its simulated answer, with tests that parse WeChat's documented examples. Then add one
//! line to the registry in [`report`] (and its `pub mod` line). The poller, `backfill`, the
//! metrics, the landing page and the simulated API pick it up from the registry.

#![deny(unsafe_code)]

// In flow order (each group is kept as written).
pub mod calendar;
pub mod clock;
pub mod domain;
pub mod heap;
pub mod period;
pub mod shared;

pub mod wechat;

pub mod sealed;

pub mod exposition;
pub mod gzip;

pub mod simulated;

pub mod report;

pub mod policy;
pub mod publication;

pub mod sink;

pub mod schedule;

pub mod poller;
pub mod supervise;

pub mod metrics;

pub mod state;
pub mod store;

pub mod config;
pub mod cost;

pub mod discovery;
pub mod fleet;
pub mod reload;

pub mod server;
pub mod startup;

pub mod backfill;

pub mod simulation;

pub mod logging;

pub mod cli;

#[cfg(test)]
mod tidy;
