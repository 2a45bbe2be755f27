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
//! A report the gate holds back asks for a period only once the gate holds that period (or
//! newer): before `polling.first_attempt`, say, the gate has not asked yet, and a job that
//! holds nothing then shows the period before if the gate holds it, never the newest one,
//! whose answer may hold nothing (no JS error, a zero) only because it is not published.
//!
//! Delays (a retry of an unpublished period, backoffs, pauses) run on the monotonic clock;
//! which period is the latest, and when a new one may be out, follow the calendar. A job never
//! aims at a period older than the one it holds: a wall clock set back does not make it fetch
//! (and export, and store) an older period over a newer one.
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

use crate::clock::{after, Clock, Deadline, Moment};
use crate::domain::Polling;
use crate::period::{beijing_date, Period, PeriodKind};
use crate::policy::{react, Reaction};
use crate::publication::Habits;
use crate::report::Settings as ReportSettings;
use crate::report::{Held, Pieces, Publication, Report, Snapshot};
use crate::sink::{Answers, AppSlot, JobStatus, Resume, Sink};
use crate::wechat::client::{AppConnection, Client};
use crate::wechat::{ErrorClass, WeChatError};

/// What the poller needs of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Retry and backoff delays.
    pub polling: Polling,
    /// What is kept of the reports.
    pub reports: ReportSettings,
}

/// The answers of a period fetched so far, by call number, read and as sent: `None` for an
/// answer that held nothing.
/// The calls of a period answered so far: the report's pieces, and each call's answer as
/// compact JSON (`None`: it held nothing), by call number.
#[derive(Debug)]
struct Partial {
    period: Period,
    pieces: Pieces,
    answers: BTreeMap<usize, Option<Box<RawValue>>>,
}

/// One (report, period kind) of one app.
#[derive(Debug)]
struct Job {
    report: Report,
    kind: PeriodKind,
    /// For a report fetched again while its period lasts (the quota): how often.
    refresh: Option<Duration>,
    held: Option<Period>,
    last_success: Option<DateTime<Utc>>,
    /// For a job that refreshes: when the held period is to be fetched again.
    refresh_due: Option<Deadline>,
    next_attempt: Deadline,
    failures: u32,
    last_error: Option<String>,
    /// The job has found its period unpublished once, and asked for the one before where
    /// WeChat keeps it.
    tried_previous: bool,
    /// The answers already fetched for a period whose other calls failed.
    partial: Option<Partial>,
    /// The last attempt that found the target period unpublished, and the target.
    missed: Option<(Period, DateTime<Utc>)>,
}

impl Job {
    /// A job holding what `resume` says it held (fetched before a restart or a reload).
    fn new(report: Report, kind: PeriodKind, reports: &ReportSettings, resume: &Resume) -> Job {
        let held = resume.held.get(&(report, kind)).copied();
        let refresh = report.refresh(reports);
        Job {
            report,
            kind,
            refresh,
            held: held.map(|(period, _)| period),
            last_success: held.map(|(_, fetched_at)| fetched_at),
            refresh_due: refresh
                .zip(held)
                .map(|(every, (_, fetched_at))| Deadline::Wall(after(fetched_at, every))),
            next_attempt: Deadline::NOW,
            failures: 0,
            last_error: None,
            tried_previous: false,
            partial: None,
            missed: None,
        }
    }

    /// The period the job aims at: the latest completed one, or the current one for a job
    /// that refreshes; never older than the one it holds (the wall clock may have been set
    /// back).
    fn target(&self, now: DateTime<Utc>) -> Period {
        let latest = match self.refresh {
            None => Period::latest_completed(self.kind, now),
            Some(_) => Period::containing(self.kind, beijing_date(now)),
        };
        latest.max(self.held.unwrap_or(latest))
    }

    /// When what the job holds goes stale: the end of the period after it (a new one is
    /// then complete), or the next refresh.
    fn stale_at(&self, held: Period, now: DateTime<Utc>, moment: Moment) -> Deadline {
        let end = match self.refresh {
            None => Deadline::Wall(held.next().end_instant()),
            Some(_) => Deadline::Wall(held.end_instant()),
        };
        match self.refresh_due {
            Some(due) if due.moment(now, moment) < end.moment(now, moment) => due,
            _ => end,
        }
    }

    /// Whether the job holds what it wants at `now`.
    fn is_done(&self, now: DateTime<Utc>, moment: Moment) -> bool {
        self.held.is_some_and(|held| {
            held >= self.target(now) && !self.stale_at(held, now, moment).reached(now, moment)
        })
    }

    /// When the job may next ask: its next attempt, and for a newly ended period not before
    /// the app expects it published (`habits`); a job that holds nothing yet asks at once,
    /// so that a new exporter shows what it can.
    fn earliest(
        &self,
        now: DateTime<Utc>,
        moment: Moment,
        habits: &Habits,
        polling: &Polling,
    ) -> Deadline {
        if self.refresh.is_some() || (self.held.is_none() && !self.tried_previous) {
            return self.next_attempt;
        }
        let margin = polling.not_ready_retry;
        let expected = habits.probe_from(self.target(now), polling.first_attempt, margin);
        self.next_attempt
            .later(Deadline::Wall(expected), now, moment)
    }

    /// The period the job wants at `now`, if it does not hold it and may ask now.
    fn due(
        &self,
        now: DateTime<Utc>,
        moment: Moment,
        habits: &Habits,
        polling: &Polling,
    ) -> Option<Period> {
        let may_ask = self
            .earliest(now, moment, habits, polling)
            .reached(now, moment);
        (!self.is_done(now, moment) && may_ask).then(|| self.target(now))
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
type Found = Result<Option<(Arc<dyn Snapshot>, Answers)>, WeChatError>;

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
    blocked_until: Option<Deadline>,
    /// Per kind, the period its gate last found unpublished, and when the gate asks again.
    unpublished: BTreeMap<PeriodKind, (Period, Deadline)>,
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
        let moment = self.clock.moment();
        self.jobs[job].due(now, moment, &self.habits, &self.settings.polling)
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
            let wake = self.next_wake(self.clock.now(), self.clock.moment());
            tokio::select! {
                _ = self.clock.sleep_until_moment(wake) => {}
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
        let moment = self.clock.moment();
        if self
            .blocked_until
            .is_some_and(|until| !until.reached(now, moment))
        {
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

    /// Attempts the due jobs in order. The report that gates a kind goes first; the others of
    /// the kind ask for a period only once the gate holds it (an answer that holds nothing
    /// could pass for zeros). Meanwhile a job that holds nothing yet shows the period before,
    /// where the gate holds it, and the others wait for the gate.
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
            let gated = !report.gates() && refresh.is_none() && self.gate(kind).is_some();
            let outcome = if !gated || self.gate_holds(kind, target) {
                self.attempt(job, target, Ask::Target).await
            } else if held.is_none() && !tried_previous {
                let gate_has_previous = self.gate_holds(kind, target.prev());
                let outcome = self
                    .attempt(job, target, Ask::PreviousOnly(gate_has_previous))
                    .await;
                // The target itself waits for the gate.
                if matches!(outcome, Outcome::NotReady) {
                    self.jobs[job].next_attempt = self.gate_retry(kind, now);
                    self.publish_status(job);
                }
                outcome
            } else {
                self.jobs[job].next_attempt = self.gate_retry(kind, now);
                self.publish_status(job);
                continue;
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

    /// The job of the report that gates `kind`, if it is polled.
    fn gate(&self, kind: PeriodKind) -> Option<usize> {
        self.jobs
            .iter()
            .position(|job| job.kind == kind && job.report.gates() && job.refresh.is_none())
    }

    /// When the gate of `kind` asks again: what a job held back by it waits for (a minute
    /// from now, if the gate has nothing planned).
    fn gate_retry(&self, kind: PeriodKind, now: DateTime<Utc>) -> Deadline {
        let moment = self.clock.moment();
        let soon = Deadline::Moment(moment.after(Duration::from_secs(60)));
        let Some(gate) = self.gate(kind) else {
            return soon;
        };
        let polling = &self.settings.polling;
        let planned = self.jobs[gate].earliest(now, moment, &self.habits, polling);
        if planned.reached(now, moment) {
            soon
        } else {
            planned
        }
    }

    /// Whether the report that gates `kind` holds `period` (or a newer one).
    fn gate_holds(&self, kind: PeriodKind, period: Period) -> bool {
        self.gate(kind)
            .is_some_and(|gate| self.jobs[gate].held.is_some_and(|held| held >= period))
    }

    /// When the next round has something to do, on the monotonic clock: at most a minute
    /// away, so that a step of the wall clock is noticed.
    fn next_wake(&self, now: DateTime<Utc>, moment: Moment) -> Moment {
        let polling = &self.settings.polling;
        let wake = self
            .jobs
            .iter()
            .map(|job| match job.held {
                Some(held) if job.is_done(now, moment) => job.stale_at(held, now, moment),
                _ => job.earliest(now, moment, &self.habits, polling),
            })
            .map(|deadline| deadline.moment(now, moment))
            .min()
            .unwrap_or(moment);
        let wake = match self.blocked_until {
            Some(until) => wake.max(until.moment(now, moment)),
            None => wake,
        };
        wake.max(moment).min(moment.after(Duration::from_secs(60)))
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
                let retry = self
                    .clock
                    .deadline_in(self.settings.polling.not_ready_retry);
                let state = &mut self.jobs[job];
                tracing::debug!(app = %self.connection.app.name, report = %state.report, period = %target, "not published yet");
                state.next_attempt = retry;
                state.failures = 0;
                state.last_error = None;
                state.missed = Some((target, now));
                Outcome::NotReady
            }
            Err(error) => Outcome::Failed(self.react(job, target, &error, now, log)),
        };
        if let Some(until) = self.blocked_until {
            let moment = self.clock.moment();
            for state in &mut self.jobs {
                state.next_attempt = state.next_attempt.later(until, now, moment);
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
        let retry = reaction.retry.deadline(self.clock.moment());
        if reaction.pause_app {
            self.blocked_until = Some(retry);
        }
        state.failures = state.failures.saturating_add(1);
        state.next_attempt = retry;
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
        (snapshot, answers): (Arc<dyn Snapshot>, Answers),
        now: DateTime<Utc>,
    ) {
        let refresh = self.jobs[job]
            .refresh
            .map(|every| self.clock.deadline_in(every));
        let state = &mut self.jobs[job];
        if state.held.is_some_and(|held| held > period) {
            // Never an older period over a newer one.
            return;
        }
        tracing::info!(app = %self.connection.app.name, report = %state.report, period = %period, "fetched");
        state.held = Some(period);
        state.last_success = Some(now);
        state.refresh_due = refresh;
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
        let (now, moment) = (self.clock.now(), self.clock.moment());
        let next = match state.held {
            Some(held) if state.is_done(now, moment) => {
                state.refresh.map(|_| state.stale_at(held, now, moment))
            }
            _ => Some(state.earliest(now, moment, &self.habits, &self.settings.polling)),
        };
        let next_attempt = next.map(|deadline| deadline.wall(now, moment));
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
        let mut partial = match self.jobs[job].partial.take() {
            Some(partial) if partial.period == period => partial,
            _ => Partial {
                period,
                pieces: report.pieces(),
                answers: BTreeMap::new(),
            },
        };
        let calls = report.calls(period, reports);
        for (number, call) in calls.iter().enumerate() {
            if partial.answers.contains_key(&number) {
                continue;
            }
            // The answer is kept as compact JSON, not as a `Value` (several times larger),
            // until the period is whole and handed on.
            let pieces = &mut partial.pieces;
            let read = |answer: Value| {
                let raw = serde_json::value::to_raw_value(&answer).ok();
                let holds = pieces.read(0, call, answer)?;
                Ok(holds.then_some(raw).flatten())
            };
            match self.client.fetch(&self.connection, call, read).await {
                // Without the first answer the period is not published.
                Ok(None) if number == 0 && report.publication() == Publication::First => {
                    return Ok(None)
                }
                Ok(answer) => {
                    partial.answers.insert(number, answer);
                }
                Err(error) => {
                    self.jobs[job].partial = Some(partial);
                    return Err(error);
                }
            }
        }
        let Some(snapshot) = partial.pieces.assemble(0, period, reports) else {
            return Ok(None);
        };
        let answers = calls
            .into_iter()
            .zip(partial.answers.into_values())
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
        let delay = reaction.retry.delay(now);
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
                tracing::error!(app, errcode, until = %after(now, delay), "daily API quota reached; no more calls for this app until the next Beijing day");
            }
        }
    }
}

fn round_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}
