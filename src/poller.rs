//! The schedule: for each app, which (report, period) is due, fetching it, and what to do when
//! WeChat says no.
//!
//! Every app has its own task and its own jobs, one per (report, period kind) of the report
//! registry. A job aims at the latest completed period of its kind (Beijing time) and is done
//! once it holds that period; it is not fetched again. When WeChat has not published the
//! period yet (an answer that holds nothing, or 61503), the job asks again after
//! `polling.not_ready_retry` and the previous period stays exported. The report that gates
//! its kind (the visit trend) goes first: while it finds its period unpublished, the other
//! reports of that kind do not ask for it either, since WeChat publishes them together (and
//! an answer that holds nothing, such as "no JS error", must not pass for data). At
//! start-up, a job whose latest period is not out yet fetches the one before, so a new
//! exporter shows what a long-running one would; a report WeChat keeps no past of (the
//! portrait) waits. A report fetched while its period lasts (the quota) refreshes on its own
//! interval.
//!
//! Errors are per job and per app, never global; what follows an error is the shared
//! [`policy`](crate::policy). A report that needs several calls keeps the answers it got when
//! a later call fails, and asks only for the rest next time.
//!
//! The poller knows nothing of the store: it hands held periods and statuses to a [`Sink`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;

use crate::clock::{after, Clock};
use crate::config::{Polling, Reports};
use crate::period::{beijing_date, Period, PeriodKind};
use crate::policy::{react, Reaction};
use crate::publication::Habits;
use crate::report::{Held, Piece, Publication, Report, SnapshotData};
use crate::sink::{Answers, AppSlot, JobStatus, Resume, Sink};
use crate::wechat::client::{AppConnection, Client};
use crate::wechat::{ErrorClass, WeChatError};

/// What the poller needs of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Retry and backoff delays.
    pub polling: Polling,
    /// What is kept of the reports.
    pub reports: Reports,
}

/// The answers of a period fetched so far, by call number, read and as sent: `None` for an
/// answer that held nothing.
type Pieces = BTreeMap<usize, Option<(Piece, Option<Box<RawValue>>)>>;

/// One (report, period kind) of one app.
#[derive(Debug)]
struct Job {
    report: Report,
    kind: PeriodKind,
    /// For a report fetched again while its period lasts (the quota): how often.
    refresh: Option<Duration>,
    held: Option<Period>,
    last_success: Option<DateTime<Utc>>,
    next_attempt: DateTime<Utc>,
    failures: u32,
    last_error: Option<String>,
    /// The job has found its period unpublished once, and asked for the one before where
    /// WeChat keeps it.
    tried_previous: bool,
    /// The answers already fetched for a period whose other calls failed.
    partial: Option<(Period, Pieces)>,
    /// The last attempt that found the target period unpublished, and the target.
    missed: Option<(Period, DateTime<Utc>)>,
}

impl Job {
    /// A job holding what `resume` says it held (fetched before a restart or a reload).
    fn new(report: Report, kind: PeriodKind, reports: &Reports, resume: &Resume) -> Job {
        let held = resume.held.get(&(report, kind)).copied();
        Job {
            report,
            kind,
            refresh: report.refresh(reports),
            held: held.map(|(period, _)| period),
            last_success: held.map(|(_, fetched_at)| fetched_at),
            next_attempt: DateTime::<Utc>::MIN_UTC,
            failures: 0,
            last_error: None,
            tried_previous: false,
            partial: None,
            missed: None,
        }
    }

    /// The period the job aims at: the latest completed one, or the current one for a job
    /// that refreshes.
    fn target(&self, now: DateTime<Utc>) -> Period {
        match self.refresh {
            None => Period::latest_completed(self.kind, now),
            Some(_) => Period::containing(self.kind, beijing_date(now)),
        }
    }

    /// When what the job holds goes stale: the end of the period after it (a new one is
    /// then complete), or the next refresh.
    fn stale_at(&self, held: Period) -> DateTime<Utc> {
        let refresh = self.refresh.zip(self.last_success);
        match refresh {
            None => held.next().end_instant(),
            Some((every, last)) => after(last, every).min(held.end_instant()),
        }
    }

    /// Whether the job holds what it wants at `now`.
    fn is_done(&self, now: DateTime<Utc>) -> bool {
        self.held
            .is_some_and(|held| held == self.target(now) && now < self.stale_at(held))
    }

    /// When the job may next ask: its next attempt, and for a newly ended period not before
    /// the app expects it published (`habits`); a job that holds nothing yet asks at once,
    /// so that a new exporter shows what it can.
    fn earliest(&self, now: DateTime<Utc>, habits: &Habits, polling: &Polling) -> DateTime<Utc> {
        if self.refresh.is_some() || (self.held.is_none() && !self.tried_previous) {
            return self.next_attempt;
        }
        let margin = polling.not_ready_retry;
        let expected = habits.probe_from(self.target(now), polling.first_attempt, margin);
        self.next_attempt.max(expected)
    }

    /// The period the job wants at `now`, if it does not hold it and may ask now.
    fn due(&self, now: DateTime<Utc>, habits: &Habits, polling: &Polling) -> Option<Period> {
        (!self.is_done(now) && now >= self.earliest(now, habits, polling)).then(|| self.target(now))
    }
}

enum Outcome {
    Fetched,
    NotReady,
    Failed(ErrorClass),
}

/// What an attempt asks for.
enum Ask {
    /// The job's target period (and the one before if the target is not out yet).
    Target,
    /// Not the target, which the gate found unpublished; the period before if the gate holds
    /// it (`true`).
    PreviousOnly(bool),
}

/// What a fetch found: a snapshot and the answers it came from, or nothing published.
type Found = Result<Option<(Arc<dyn SnapshotData>, Answers)>, WeChatError>;

/// Polls one app, forever or one round at a time.
pub struct AppPoller {
    /// The app's slot, for the sink.
    app: AppSlot,
    connection: AppConnection,
    client: Arc<Client>,
    sink: Arc<dyn Sink>,
    settings: Arc<Settings>,
    clock: Clock,
    jobs: Vec<Job>,
    blocked_until: Option<DateTime<Utc>>,
    /// Per kind, the period its gate last found unpublished, and when the gate asks again.
    unpublished: BTreeMap<PeriodKind, (Period, DateTime<Utc>)>,
    /// When WeChat published the app's recent periods.
    habits: Habits,
}

impl AppPoller {
    /// A poller for the app in `app`, starting from what it held (`resume`).
    pub fn new(
        app: AppSlot,
        connection: AppConnection,
        client: Arc<Client>,
        sink: Arc<dyn Sink>,
        settings: Arc<Settings>,
        clock: Clock,
        resume: Resume,
    ) -> AppPoller {
        let reports = &settings.reports;
        let jobs = Report::all()
            .filter(|report| report.is_enabled(reports))
            .flat_map(|report| {
                let kinds = report.kinds().iter();
                let resume = &resume;
                kinds.map(move |kind| Job::new(report, *kind, reports, resume))
            })
            .collect();
        AppPoller {
            app,
            connection,
            client,
            sink,
            settings,
            clock,
            jobs,
            blocked_until: None,
            unpublished: BTreeMap::new(),
            habits: resume.habits,
        }
    }

    /// The period job `job` wants now, if it may ask now.
    fn due(&self, job: usize, now: DateTime<Utc>) -> Option<Period> {
        self.jobs[job].due(now, &self.habits, &self.settings.polling)
    }

    /// Polls until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if first {
                self.sink.first_round_done(self.app);
                first = false;
            }
            // A period may have ended since the last attempt: the pages show what is next.
            for job in 0..self.jobs.len() {
                self.publish_status(job);
            }
            let wake = self.next_wake(self.clock.now());
            tokio::select! {
                _ = self.clock.sleep_until(wake) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Whether the last attempt of any job failed with an error.
    pub fn has_errors(&self) -> bool {
        self.jobs.iter().any(|job| job.last_error.is_some())
    }

    /// Attempts every job that is due now, in order.
    pub async fn round(&mut self) {
        let now = self.clock.now();
        if self.blocked_until.is_some_and(|until| now < until) {
            return;
        }
        self.blocked_until = None;
        let due: Vec<(usize, Period)> = (0..self.jobs.len())
            .filter_map(|job| Some((job, self.due(job, now)?)))
            .collect();
        if due.is_empty() {
            return;
        }
        // Without a token every call would fail the same way: ask for it once per round, and
        // on failure record the error on every due job without calling WeChat again.
        if let Err(error) = self.client.ensure_token(&self.connection).await {
            for (n, (job, target)) in due.into_iter().enumerate() {
                self.conclude(job, target, Err(error.clone()), now, n == 0);
            }
            return;
        }
        self.attempt_due(now).await;
    }

    /// Attempts the due jobs in order. The report that gates a kind goes first; while it
    /// finds its period unpublished, the other reports of the kind do not ask for that period
    /// (an answer that holds nothing could pass for zeros): a job that holds nothing yet shows
    /// the period before, where WeChat keeps it, and the others wait for the gate's retry.
    async fn attempt_due(&mut self, now: DateTime<Utc>) {
        for job in 0..self.jobs.len() {
            let Some(target) = self.due(job, now) else {
                continue;
            };
            let Job {
                report,
                kind,
                refresh,
                held,
                tried_previous,
                ..
            } = self.jobs[job];
            let gated = !report.gates() && refresh.is_none();
            let waiting = self.unpublished.get(&kind).copied();
            let outcome = match waiting.filter(|(period, _)| gated && *period == target) {
                Some((_, retry)) if held.is_some() || tried_previous => {
                    self.jobs[job].next_attempt = retry;
                    self.publish_status(job);
                    continue;
                }
                Some(_) => {
                    let gate_has_previous = self.gate_holds(kind, target.prev());
                    let ask = Ask::PreviousOnly(gate_has_previous);
                    self.attempt(job, target, ask).await
                }
                None => self.attempt(job, target, Ask::Target).await,
            };
            if report.gates() {
                match outcome {
                    Outcome::NotReady => {
                        let retry = self.jobs[job].next_attempt;
                        self.unpublished.insert(kind, (target, retry));
                    }
                    Outcome::Fetched | Outcome::Failed(_) => {
                        self.unpublished.remove(&kind);
                    }
                }
            }
            if let Outcome::Failed(ErrorClass::DailyQuota | ErrorClass::MinuteQuota) = outcome {
                break;
            }
        }
    }

    /// Whether the report that gates `kind` holds `period`.
    fn gate_holds(&self, kind: PeriodKind, period: Period) -> bool {
        self.jobs
            .iter()
            .any(|job| job.kind == kind && job.report.gates() && job.held == Some(period))
    }

    /// When the next round has something to do.
    fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let wake = self
            .jobs
            .iter()
            .map(|job| match job.held {
                Some(held) if job.is_done(now) => job.stale_at(held),
                _ => job
                    .earliest(now, &self.habits, &self.settings.polling)
                    .max(now),
            })
            .min()
            .unwrap_or(now);
        match self.blocked_until {
            Some(until) => wake.max(until),
            None => wake,
        }
    }

    async fn attempt(&mut self, job: usize, target: Period, ask: Ask) -> Outcome {
        let mut found = match ask {
            Ask::Target => self.fetch_period(job, target).await,
            Ask::PreviousOnly(_) => Ok(None),
        };
        let now = self.clock.now();

        // A new exporter whose latest period is not out yet shows the one before, as a
        // long-running exporter would at this hour; WeChat keeps no past period of a report
        // without history (the portrait).
        let state = &mut self.jobs[job];
        let first_time = state.held.is_none() && !state.tried_previous;
        let has_past = state.refresh.is_none()
            && state.report.has_history()
            && !matches!(ask, Ask::PreviousOnly(false));
        if matches!(found, Ok(None)) && first_time {
            state.tried_previous = true;
            if has_past {
                let previous = target.prev();
                match self.fetch_period(job, previous).await {
                    Ok(Some(fetched)) => self.hold(job, previous, fetched, now),
                    Ok(None) => {}
                    Err(error) => found = Err(error),
                }
            }
        }

        self.conclude(job, target, found, now, true)
    }

    /// Records what an attempt at `target` found: holds the data, schedules the retry of an
    /// unpublished period, or reacts to the error (logged if `log`).
    fn conclude(
        &mut self,
        job: usize,
        target: Period,
        found: Found,
        now: DateTime<Utc>,
        log: bool,
    ) -> Outcome {
        let outcome = match found {
            Ok(Some(fetched)) => {
                self.learn(job, target, now);
                self.hold(job, target, fetched, now);
                Outcome::Fetched
            }
            Ok(None) => {
                let state = &mut self.jobs[job];
                tracing::debug!(app = %self.connection.app.name, report = %state.report, period = %target, "not published yet");
                state.next_attempt = after(now, self.settings.polling.not_ready_retry);
                state.failures = 0;
                state.last_error = None;
                state.missed = Some((target, now));
                Outcome::NotReady
            }
            Err(error) => Outcome::Failed(self.react(job, target, &error, now, log)),
        };
        if let Some(until) = self.blocked_until {
            for state in &mut self.jobs {
                state.next_attempt = state.next_attempt.max(until);
            }
            for job in 0..self.jobs.len() {
                self.publish_status(job);
            }
        } else {
            self.publish_status(job);
        }
        self.sink.up(self.app, !self.has_errors());
        outcome
    }

    /// Applies the error policy to a failed attempt and logs it.
    fn react(
        &mut self,
        job: usize,
        target: Period,
        error: &WeChatError,
        now: DateTime<Utc>,
        log: bool,
    ) -> ErrorClass {
        let class = error.class();
        let app = self.connection.app.name.as_str();
        let state = &mut self.jobs[job];
        let reaction = react(
            class,
            state.failures,
            now,
            &self.settings.polling,
            fastrand::f64(),
        );
        let remedy = error.remedy(app, state.report.name());
        if log || reaction.pause_app {
            let attempt = Attempt {
                app,
                report: state.report,
                target,
            };
            attempt.log_error(error, remedy.as_deref(), reaction, now);
        }
        if reaction.pause_app {
            self.blocked_until = Some(reaction.retry_at);
        }
        state.failures = state.failures.saturating_add(1);
        state.next_attempt = reaction.retry_at;
        state.last_error = Some(match &remedy {
            Some(fix) => format!("{error}; fix: {fix}"),
            None => error.to_string(),
        });
        class
    }

    /// The gate of a kind found its newly ended period at `now`: what that says of the
    /// app's publication hour is kept.
    fn learn(&mut self, job: usize, target: Period, now: DateTime<Utc>) {
        let state = &self.jobs[job];
        if !state.report.gates() || state.refresh.is_some() {
            return;
        }
        let polling = &self.settings.polling;
        let before = state.missed.filter(|(missed, _)| *missed == target);
        let scheduled =
            self.habits
                .probe_from(target, polling.first_attempt, polling.not_ready_retry);
        let on_schedule = (state.held.is_some() || state.tried_previous)
            && now < after(scheduled, polling.not_ready_retry);
        if self
            .habits
            .observe(target, before.map(|(_, at)| at), now, on_schedule)
        {
            self.sink.learned(self.app, &self.habits);
        }
    }

    fn hold(
        &mut self,
        job: usize,
        period: Period,
        (snapshot, answers): (Arc<dyn SnapshotData>, Answers),
        now: DateTime<Utc>,
    ) {
        let state = &mut self.jobs[job];
        tracing::info!(app = %self.connection.app.name, report = %state.report, period = %period, "fetched");
        state.held = Some(period);
        state.last_success = Some(now);
        state.failures = 0;
        state.last_error = None;
        state.partial = None;
        let held = Held {
            period,
            fetched_at: now,
            snapshot,
        };
        state.missed = None;
        self.sink
            .held(self.app, state.report, state.kind, held, answers);
    }

    fn publish_status(&self, job: usize) {
        let state = &self.jobs[job];
        let now = self.clock.now();
        let next_attempt = match state.held {
            Some(held) if state.is_done(now) => state.refresh.map(|_| state.stale_at(held)),
            _ => Some(state.earliest(now, &self.habits, &self.settings.polling)),
        };
        let status = JobStatus {
            held: state.held,
            last_success: state.last_success,
            next_attempt,
            last_error: state.last_error.clone(),
        };
        self.sink.status(self.app, state.report, state.kind, status);
    }

    /// Fetches one period of a job: its calls in order, then the snapshot (`Ok(None)` when
    /// WeChat has not published the period). Answers already fetched for the period are kept
    /// when a call fails.
    async fn fetch_period(&mut self, job: usize, period: Period) -> Found {
        let report = self.jobs[job].report;
        let reports = &self.settings.reports;
        let mut pieces = match self.jobs[job].partial.take() {
            Some((partial, pieces)) if partial == period => pieces,
            _ => Pieces::new(),
        };
        let calls = report.calls(period, reports);
        for (number, call) in calls.iter().enumerate() {
            if pieces.contains_key(&number) {
                continue;
            }
            // The answer is kept as compact JSON, not as a `Value` (several times larger),
            // until the period is whole and handed on.
            let parse = |answer: Value| {
                let raw = serde_json::value::to_raw_value(&answer).ok();
                let piece = report.parse(call, answer)?;
                Ok(piece.map(|piece| (piece, raw)))
            };
            match self.client.fetch(&self.connection, call, parse).await {
                // Without the first answer the period is not published.
                Ok(None) if number == 0 && report.publication() == Publication::First => {
                    return Ok(None)
                }
                Ok(piece) => {
                    pieces.insert(number, piece);
                }
                Err(error) => {
                    self.jobs[job].partial = Some((period, pieces));
                    return Err(error);
                }
            }
        }
        let read: Vec<Option<&Piece>> = pieces
            .values()
            .map(|piece| piece.as_ref().map(|(piece, _)| piece))
            .collect();
        let Some(snapshot) = report.assemble(period, &read, reports) else {
            return Ok(None);
        };
        let answers = calls
            .into_iter()
            .zip(pieces.into_values())
            .map(|(call, piece)| (call, piece.and_then(|(_, answer)| answer)))
            .collect();
        Ok(Some((snapshot, answers)))
    }
}

/// The attempt that failed, for its log line.
struct Attempt<'a> {
    app: &'a str,
    report: Report,
    target: Period,
}

impl Attempt<'_> {
    /// One log line: a warning for what is retried soon, an error for what a person must fix
    /// or for the daily quota.
    fn log_error(
        &self,
        error: &WeChatError,
        remedy: Option<&str>,
        reaction: Reaction,
        now: DateTime<Utc>,
    ) {
        let Attempt {
            app,
            report,
            target,
        } = self;
        let errcode = error.label();
        let delay = (reaction.retry_at - now).to_std().unwrap_or_default();
        match error.class() {
            ErrorClass::Transient => {
                tracing::warn!(app, report = %report, period = %target, errcode, error = %error, retry_in = %humantime::format_duration(round_seconds(delay)), "fetch failed");
            }
            ErrorClass::Config => {
                tracing::error!(app, report = %report, period = %target, errcode, error = %error,
                    fix = remedy.unwrap_or("check this app's configuration"),
                    retry_in = %humantime::format_duration(delay), "configuration error");
            }
            ErrorClass::MinuteQuota => {
                tracing::warn!(
                    app,
                    errcode,
                    "per-minute API quota reached; pausing this app until the next minute"
                );
            }
            ErrorClass::DailyQuota => {
                tracing::error!(app, errcode, until = %reaction.retry_at, "daily API quota reached; no more calls for this app until the next Beijing day");
            }
        }
    }
}

fn round_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}
