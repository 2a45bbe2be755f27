//! `backfill`: the history WeChat keeps, as timestamped OpenMetrics for
//! `promtool tsdb create-blocks-from openmetrics`.
//!
//! A Prometheus server only holds what it scraped. A backfill fetches every call of every
//! (app, report, period) of a range once, through the agent's client (tokens, the retry on a
//! refused token, the `polling.concurrency` limit) and with the agent's error policy, then
//! replays the periods in time. A period appears at the moment `serve` would have started
//! exporting it (its publication: `published_at`, Beijing time, on the day after it ends) and
//! stays until the next one replaces it, in the same families and labels as `/metrics` (the
//! health families aside), assembled and rendered by the same code.
//!
//! Prometheus sees a sample for 5 minutes after it, while the exporter is scraped all day. So
//! each value is written when it appears and repeated every `step` while it is current: with
//! the default of one day, queries over a one-day window (`last_over_time(...[1d])`, as the
//! bundled dashboards and rules are written) read history and live data alike; with a step of
//! 5 minutes plain selectors do too, for a file 288 times larger.
//!
//! Samples stop 3 hours before the run ([`HEAD_BLOCK`]): that range belongs to the head block
//! of the running Prometheus, and the running exporter covers it.
//!
//! The steps, one file each: [`plan`] (check the flags, list the calls), [`fetch`] (make
//! them), [`history`] (replay what was fetched, summarise), [`openmetrics`] (the timestamped
//! writer), [`progress`] (for whoever draws it), and [`run`], the command from start to end.

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};

pub mod fetch;
pub mod history;
pub mod openmetrics;
pub mod plan;
pub mod progress;
mod run;

pub use run::{run, Outcome};

/// How long before the run the history stops: Prometheus's head block, which backfilled
/// blocks must not overlap.
pub const HEAD_BLOCK: Duration = Duration::from_secs(3 * 3600);

/// What to backfill, as given on the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// The first day (needed unless `missing`).
    pub from: Option<NaiveDate>,
    /// The last day; the latest completed day if `None`.
    pub to: Option<NaiveDate>,
    /// The apps by name; every configured app if empty.
    pub apps: Vec<String>,
    /// How often a current value is repeated.
    pub step: Duration,
    /// The Beijing time of day at which WeChat publishes the previous period.
    pub published_at: NaiveTime,
    /// `--missing`: only the periods no running exporter held, as the state under the
    /// configuration's storage path (`--storage.path`) records them.
    pub missing: bool,
    /// `--dry-run`: print the calls it would make, and make none.
    pub dry_run: bool,
}

/// The default `published_at`: WeChat publishes yesterday's data at about 10:00 Beijing time.
pub fn default_published_at() -> NaiveTime {
    NaiveTime::from_hms_opt(10, 0, 0).expect("10:00 exists")
}
