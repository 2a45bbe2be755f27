//! What the poller hands on, and to whom: held periods (with the answers behind them) and
//! job statuses through [`Sink`]; and what it is given back when it starts again ([`Resume`]).
//!
//! The poller writes, the store implements the trait; neither knows the other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::period::{Period, PeriodKind};
use crate::publication::Habits;
use crate::report::{Held, Report, State};
use crate::wechat::Call;

/// An app of the running exporter: stable while the app runs, whatever other apps are added
/// or removed around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppSlot(pub u64);

impl std::fmt::Display for AppSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

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
    /// How the job stands.
    pub state: State,
}

/// The answers WeChat gave for a held period, call by call (`None`: an answer that held
/// nothing), as compact JSON: what is kept on disk, so that a restart reads them again
/// through the report's own parsing and assembly.
pub type Answers = Vec<(Call, Option<Box<RawValue>>)>;

/// What an app's poller starts from: the periods it holds already (fetched before a restart
/// or a reload) and what it learned of publication hours.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// The period held per (report, kind), and when it was fetched.
    pub held: BTreeMap<(Report, PeriodKind), (Period, DateTime<Utc>)>,
    /// When WeChat published the app's recent periods.
    pub habits: Habits,
}

/// Where the poller hands its results: the store, in the running exporter.
pub trait Sink: Send + Sync {
    /// A job fetched a new period, from these answers.
    fn held(&self, app: AppSlot, report: Report, kind: PeriodKind, held: Held, answers: Answers);
    /// A job's status changed.
    fn status(&self, app: AppSlot, report: Report, kind: PeriodKind, status: JobStatus);
    /// Whether the app's access token can be had and its visit trend (the gate of its
    /// periods) does not fail (`true`); a failing or unauthorized report alone leaves it up.
    fn up(&self, app: AppSlot, up: bool);
    /// The app finished its first round.
    fn first_round_done(&self, app: AppSlot);
    /// The app's poller failed unexpectedly (a panic) with `message`, and restarts: the app
    /// is down until a report succeeds again.
    fn crashed(&self, app: AppSlot, message: &str);
    /// The app learned something of when WeChat publishes its periods.
    fn learned(&self, app: AppSlot, habits: &Habits);
}
