//! What the poller hands on, and to whom: held periods and job statuses, through [`Sink`].
//!
//! The poller writes, the store implements the trait; neither knows the other.

use chrono::{DateTime, Utc};

use crate::period::{Period, PeriodKind};
use crate::report::{Held, Report};

/// How a job (one report and period kind of one app) stands, for the landing page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobStatus {
    /// The period held (exported), if any.
    pub held: Option<Period>,
    /// When the held period was fetched.
    pub last_success: Option<DateTime<Utc>>,
    /// When the job will next call WeChat, if it has anything left to fetch.
    pub next_attempt: Option<DateTime<Utc>>,
    /// The last error, until a later attempt succeeds or finds the period not ready.
    pub last_error: Option<String>,
}

/// Where the poller hands its results: the store, in the running exporter. Apps are numbered
/// in the order of the configuration.
pub trait Sink: Send + Sync {
    /// A job fetched a new period.
    fn held(&self, app: usize, report: Report, kind: PeriodKind, held: Held);
    /// A job's status changed.
    fn status(&self, app: usize, report: Report, kind: PeriodKind, status: JobStatus);
    /// Whether the last attempt of every report of the app succeeded or found the period not
    /// published (`true`), or some report's last attempt failed with an error (`false`).
    fn up(&self, app: usize, up: bool);
    /// The app finished its first round.
    fn first_round_done(&self, app: usize);
    /// The app's poller failed unexpectedly (a panic) with `message`, and restarts: the app
    /// is down until a report succeeds again.
    fn crashed(&self, app: usize, message: &str);
}
