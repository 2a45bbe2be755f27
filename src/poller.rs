//! Polling one app: the IO around its [`Schedule`]. Each round asks the schedule what is
//! due, makes the calls through the client, and tells the schedule (and the [`Sink`]) what
//! they found; then it sleeps until the schedule's next wake-up.
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
use tokio::sync::watch;

use crate::clock::{after, Clock, Moment};
use crate::domain::Polling;
use crate::period::Period;
use crate::policy::{react, Reaction};
use crate::report::Settings as ReportSettings;
use crate::report::{Held, Pieces, Publication, Report, Snapshot};
use crate::schedule::{Outcome, Schedule, Step};
use crate::sink::{Answers, AppSlot, Resume, Sink};
use crate::wechat::client::{AppConnection, Client};
use crate::wechat::wire::Answer;
use crate::wechat::{ErrorClass, WeChatError};

/// What the poller needs of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Retry and backoff delays.
    pub polling: Polling,
    /// What is kept of the reports.
    pub reports: ReportSettings,
}

/// The calls of a period answered so far: the report's pieces, and each call's answer as
/// compact JSON (`None`: it held nothing), by call number.
#[derive(Debug)]
struct Partial {
    period: Period,
    pieces: Pieces,
    answers: BTreeMap<usize, Option<Box<RawValue>>>,
}

/// What a fetch found: a snapshot and the answers it came from, or nothing published.
type Found = Result<Option<(Arc<dyn Snapshot>, Answers)>, WeChatError>;

/// What a poller works with: the app (its slot in the sink and its connection), the client,
/// where results go, the settings and the clock.
pub struct Context {
    /// The app's slot, for the sink.
    pub app: AppSlot,
    /// The app and its token.
    pub connection: AppConnection,
    /// The client every app shares.
    pub client: Arc<Client>,
    /// Where held periods, statuses and habits go.
    pub sink: Arc<dyn Sink>,
    /// The polling and report settings.
    pub settings: Arc<Settings>,
    /// The clock.
    pub clock: Clock,
}

/// Polls one app, forever or one round at a time.
pub struct AppPoller {
    context: Context,
    schedule: Schedule,
    /// Per job, the answers already fetched for a period whose other calls failed.
    partial: Vec<Option<Partial>>,
}

impl AppPoller {
    /// A poller in `context`, starting from what the app held (`resume`).
    pub fn new(context: Context, resume: Resume) -> AppPoller {
        let settings = &context.settings;
        let schedule = Schedule::new(&settings.polling, &settings.reports, resume);
        let partial = schedule.jobs.iter().map(|_| None).collect();
        AppPoller {
            context,
            schedule,
            partial,
        }
    }

    /// Polls until `shutdown` turns true; each change of `reloads` (a reload of the
    /// configuration) asks the reports WeChat refused to the app again at once.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reloads: watch::Receiver<u64>,
    ) {
        let mut first = true;
        loop {
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if first {
                self.context.sink.first_round_done(self.context.app);
                first = false;
            }
            // A period may have ended since the last attempt: the pages show what is next.
            // The statuses and the wake are of one reading of the clock: if it moves on past
            // a deadline before the sleep begins, the sleep ends at once and they are
            // published again.
            let (now, moment) = self.context.clock.reading();
            for job in 0..self.schedule.jobs.len() {
                self.publish_status_at(job, now, moment);
            }
            let wake = self.schedule.next_wake(now, moment);
            let reloaded = async {
                if reloads.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = self.context.clock.sleep_until_moment(wake) => {}
                _ = reloaded => {
                    self.schedule.ask_unauthorized_again();
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Whether the last attempt of any job failed with an error.
    pub fn has_errors(&self) -> bool {
        self.schedule.has_errors()
    }

    /// Attempts every job that is due now, in order.
    pub async fn round(&mut self) {
        let clock = &self.context.clock;
        let (now, moment) = clock.reading();
        if self.schedule.is_blocked(now, moment) {
            return;
        }
        let due = self.schedule.all_due(now, moment);
        if due.is_empty() {
            return;
        }
        // Without a token every call would fail the same way: ask for it once per round, and
        // on failure record the error on every due job without calling WeChat again.
        let token = self.context.client.ensure_token(&self.context.connection);
        let token = token.await;
        self.schedule.token_failed = token.is_err();
        if let Err(error) = token {
            for (n, (job, target)) in due.into_iter().enumerate() {
                self.conclude(job, target, Err(error.clone()), now, n == 0);
            }
            return;
        }
        self.attempt_due(now).await;
    }

    /// Attempts the due jobs in order, each as the schedule says (a gate first, the others
    /// once it holds their period).
    async fn attempt_due(&mut self, now: DateTime<Utc>) {
        for job in 0..self.schedule.jobs.len() {
            let moment = self.context.clock.moment();
            let Some(target) = self.schedule.due(job, now, moment) else {
                continue;
            };
            let step = self.schedule.step(job, target);
            if step == Step::WaitForGate {
                self.schedule.wait_for_gate(job, now, moment);
                self.publish_status(job);
                continue;
            }
            let outcome = self.attempt(job, target, step).await;
            if matches!(step, Step::PreviousOnly(_)) && outcome == Outcome::NotReady {
                // The target itself waits for the gate.
                let moment = self.context.clock.moment();
                self.schedule.wait_for_gate(job, now, moment);
                self.publish_status(job);
            }
            self.schedule.gate_found(job, target, outcome);
            if let Outcome::Failed(ErrorClass::DailyQuota | ErrorClass::MinuteQuota) = outcome {
                break;
            }
        }
    }

    async fn attempt(&mut self, job: usize, target: Period, step: Step) -> Outcome {
        let mut found = match step {
            Step::Ask => self.fetch_period(job, target).await,
            _ => Ok(None),
        };
        let now = self.context.clock.now();
        // A new exporter whose latest period is not out yet shows the one before, as a
        // long-running exporter would at this hour.
        if matches!(found, Ok(None)) {
            if let Some(previous) = self.schedule.previous_to_try(job, target, step) {
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
                if self.schedule.learn(job, target, now) {
                    self.context
                        .sink
                        .learned(self.context.app, &self.schedule.habits);
                }
                self.hold(job, target, fetched, now);
                Outcome::Fetched
            }
            Ok(None) => {
                let context = &self.context;
                let retry = context
                    .clock
                    .deadline_in(context.settings.polling.not_ready_retry);
                let report = self.schedule.jobs[job].report;
                tracing::debug!(app = %context.connection.app.name, report = %report, period = %target, "not published yet");
                self.schedule.not_ready(job, target, now, retry);
                Outcome::NotReady
            }
            Err(error) => Outcome::Failed(self.react(job, target, &error, now, log)),
        };
        let moment = self.context.clock.moment();
        if self.schedule.hold_back(now, moment) {
            for job in 0..self.schedule.jobs.len() {
                self.publish_status(job);
            }
        } else {
            self.publish_status(job);
        }
        self.context.sink.up(self.context.app, self.schedule.up());
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
        let context = &self.context;
        let app = context.connection.app.name.as_str();
        let state = &self.schedule.jobs[job];
        let polling = &context.settings.polling;
        let reaction = react(class, state.failures, now, polling, fastrand::f64());
        let remedy = error.remedy(app, state.report.name());
        if log || reaction.pause_app {
            let attempt = Attempt {
                app,
                report: state.report,
                target,
            };
            attempt.log_error(error, remedy.as_deref(), reaction, now);
        }
        let retry = reaction.retry.deadline(context.clock.moment());
        let shown = match &remedy {
            Some(fix) => format!("{error}; fix: {fix}"),
            None => error.to_string(),
        };
        self.schedule.failed(job, (shown, class), reaction, retry);
        class
    }

    fn hold(
        &mut self,
        job: usize,
        period: Period,
        (snapshot, answers): (Arc<dyn Snapshot>, Answers),
        now: DateTime<Utc>,
    ) {
        let context = &self.context;
        let state = &self.schedule.jobs[job];
        let refresh = state.refresh.map(|every| context.clock.deadline_in(every));
        let (report, kind) = (state.report, state.kind);
        if !self.schedule.held(job, period, now, refresh) {
            // Never an older period over a newer one.
            return;
        }
        tracing::info!(app = %context.connection.app.name, report = %report, period = %period, "fetched");
        self.partial[job] = None;
        let held = Held {
            period,
            fetched_at: now,
            snapshot,
        };
        context.sink.held(context.app, report, kind, held, answers);
    }

    fn publish_status(&self, job: usize) {
        let (now, moment) = self.context.clock.reading();
        self.publish_status_at(job, now, moment);
    }

    /// Hands on the status of job `job` as of `now` and `moment`.
    fn publish_status_at(&self, job: usize, now: DateTime<Utc>, moment: Moment) {
        let status = self.schedule.status(job, now, moment);
        let state = &self.schedule.jobs[job];
        let sink = &self.context.sink;
        sink.status(self.context.app, state.report, state.kind, status);
    }

    /// Fetches one period of a job: its calls in order, then the snapshot (`Ok(None)` when
    /// WeChat has not published the period). Answers already fetched for the period are kept
    /// when a call fails.
    async fn fetch_period(&mut self, job: usize, period: Period) -> Found {
        let report = self.schedule.jobs[job].report;
        let client = Arc::clone(&self.context.client);
        let _turn = client.period().await;
        let reports = &self.context.settings.reports;
        let mut partial = match self.partial[job].take() {
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
            // The answer is read once, from the text received, which is what is kept of it
            // until the period is whole and handed on.
            let pieces = &mut partial.pieces;
            let read = |answer: Answer<'_>| {
                let holds = pieces.read(0, call, answer)?;
                Ok(holds.then(|| answer.kept()))
            };
            let context = &self.context;
            match context.client.fetch(&context.connection, call, read).await {
                // Without the first answer the period is not published.
                Ok(None) if number == 0 && report.publication() == Publication::First => {
                    return Ok(None)
                }
                Ok(answer) => {
                    partial.answers.insert(number, answer);
                }
                Err(error) => {
                    self.partial[job] = Some(partial);
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
            ErrorClass::Unauthorized => {
                tracing::warn!(app, report = %report, period = %target, errcode, error = %error,
                    fix = remedy.unwrap_or("grant this app the permission for the report"),
                    retry_at = %after(now, delay), "report not authorized; asked again tomorrow and at a reload");
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
