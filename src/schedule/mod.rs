//! The schedule of one app, as a pure function of the clocks and of what is held: which
//! (report, period) is due, what an attempt asks for, when to wake up, and what each outcome
//! changes. No IO: the poller asks it, makes the calls, and tells it what they found.
//!
//! Every app has one job per (report, period kind) of the registry. A job aims at the latest
//! completed period of its kind (Beijing time) and is done once it holds that period; it is
//! not fetched again. When WeChat has not published the period yet, the job asks again after
//! `polling.not_ready_retry` and the previous period stays exported. The report that gates its
//! kind (the visit trend) goes first: the other reports of the kind ask for a period only once
//! the gate holds it (an answer that holds nothing, such as "no JS error", must not pass for
//! data). Before that, a job that holds nothing shows the period before if the gate holds it,
//! and the others wait for the gate. At start-up a job whose latest period is not out yet
//! fetches the one before, so a new exporter shows what a long-running one would; a report
//! WeChat keeps no past of (the portrait) waits. A report fetched while its period lasts (the
//! quota) refreshes on its own interval.
//!
//! Delays (a retry of an unpublished period, backoffs, pauses) are [`Deadline::Moment`]s of the
//! monotonic clock; which period is the latest, and when a new one may be out, follow the
//! calendar. A job never aims at a period older than the one it holds.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::{after, Deadline, Moment};
use crate::domain::Polling;
use crate::period::{Period, PeriodKind};
use crate::policy::Reaction;
use crate::publication::Habits;
use crate::report::Settings as ReportSettings;
use crate::report::{Report, State};
use crate::sink::{JobStatus, Resume};
use crate::wechat::ErrorClass;

/// One (report, period kind) of one app.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The report.
    pub report: Report,
    /// The period kind.
    pub kind: PeriodKind,
    /// For a report fetched again while its period lasts (the quota): how often.
    pub refresh: Option<Duration>,
    /// The period held.
    pub held: Option<Period>,
    /// When WeChat last answered it.
    pub last_success: Option<DateTime<Utc>>,
    /// For a job that refreshes: when the held period is to be fetched again.
    pub refresh_due: Option<Deadline>,
    /// When it may ask next.
    pub next_attempt: Deadline,
    /// Failures in a row.
    pub failures: u32,
    /// The last error, with its fix.
    pub last_error: Option<String>,
    /// The job has found its period unpublished once, and asked for the one before where
    /// WeChat keeps it.
    pub tried_previous: bool,
    /// The last attempt that found the target period unpublished, and when.
    pub missed: Option<(Period, DateTime<Utc>)>,
    /// The last error was WeChat refusing the report's API to this app.
    pub unauthorized: bool,
}

impl Job {
    /// A job holding what `resume` says it held (fetched before a restart or a reload).
    pub fn new(report: Report, kind: PeriodKind, reports: &ReportSettings, resume: &Resume) -> Job {
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
            missed: None,
            unauthorized: false,
        }
    }

    /// How the job stands at `now`.
    pub fn state(&self, now: DateTime<Utc>, moment: Moment) -> State {
        match (&self.last_error, self.unauthorized) {
            (Some(_), true) => State::Unauthorized,
            (Some(_), false) => State::Failing,
            (None, _) if self.is_done(now, moment) => State::Ok,
            (None, _) => State::Waiting,
        }
    }

    /// The period the job aims at: the newest its report may hold, never older than the one
    /// it holds (the wall clock may have been set back).
    pub fn target(&self, now: DateTime<Utc>) -> Period {
        let latest = crate::report::newest(self.kind, now, self.refresh.is_some());
        latest.max(self.held.unwrap_or(latest))
    }

    /// When what the job holds goes stale: the end of the period after it (a new one is
    /// then complete), or the next refresh.
    pub fn stale_at(&self, held: Period, now: DateTime<Utc>, moment: Moment) -> Deadline {
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
    pub fn is_done(&self, now: DateTime<Utc>, moment: Moment) -> bool {
        self.held.is_some_and(|held| {
            held >= self.target(now) && !self.stale_at(held, now, moment).reached(now, moment)
        })
    }

    /// When the job may next ask: its next attempt, and for a newly ended period not before
    /// the app expects it published (`habits`); a job that holds nothing yet asks at once,
    /// so that a new exporter shows what it can.
    pub fn earliest(
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
    pub fn due(
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

/// What a due job does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask for the target period (and the one before if it is not out yet and nothing is
    /// held).
    Ask,
    /// Not the target, which its gate does not hold yet: only the period before, if the gate
    /// holds that (`true`), since nothing is held.
    PreviousOnly(bool),
    /// Wait for the gate.
    WaitForGate,
}

/// What an attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The period, held now.
    Fetched,
    /// Not published yet.
    NotReady,
    /// An error of this class.
    Failed(crate::wechat::ErrorClass),
}

/// The schedule of one app: its jobs, whether the whole app is paused, what each gate found
/// unpublished, and the app's publication habits.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The jobs, in the registry's order (a gate before the reports it holds back).
    pub jobs: Vec<Job>,
    /// The whole app waits until then (a quota).
    pub blocked_until: Option<Deadline>,
    /// Per kind, the period its gate last found unpublished, and when the gate asks again.
    pub unpublished: BTreeMap<PeriodKind, (Period, Deadline)>,
    /// When WeChat published the app's recent periods.
    pub habits: Habits,
    /// The app's access token could not be had at the last attempt.
    pub token_failed: bool,
    polling: Polling,
}

impl Schedule {
    /// The jobs of every report `reports` enables, from what `resume` holds.
    pub fn new(polling: &Polling, reports: &ReportSettings, resume: Resume) -> Schedule {
        let jobs = Report::all()
            .filter(|report| report.is_enabled(reports))
            .flat_map(|report| {
                let resume = &resume;
                let kinds = report.kinds().iter();
                kinds.map(move |kind| Job::new(report, *kind, reports, resume))
            })
            .collect();
        Schedule {
            jobs,
            blocked_until: None,
            unpublished: BTreeMap::new(),
            habits: resume.habits,
            token_failed: false,
            polling: polling.clone(),
        }
    }

    /// Whether the whole app waits at these clocks (and, if it no longer does, forgets the
    /// pause).
    pub fn is_blocked(&mut self, now: DateTime<Utc>, moment: Moment) -> bool {
        if self
            .blocked_until
            .is_some_and(|until| !until.reached(now, moment))
        {
            return true;
        }
        self.blocked_until = None;
        false
    }

    /// The period job `job` wants, if it may ask now.
    pub fn due(&self, job: usize, now: DateTime<Utc>, moment: Moment) -> Option<Period> {
        self.jobs[job].due(now, moment, &self.habits, &self.polling)
    }

    /// Every due job and its target.
    pub fn all_due(&self, now: DateTime<Utc>, moment: Moment) -> Vec<(usize, Period)> {
        (0..self.jobs.len())
            .filter_map(|job| Some((job, self.due(job, now, moment)?)))
            .collect()
    }

    /// What due job `job` does about `target`.
    pub fn step(&self, job: usize, target: Period) -> Step {
        let Job {
            report,
            kind,
            refresh,
            held,
            tried_previous,
            ..
        } = self.jobs[job];
        let gated = !report.gates() && refresh.is_none() && self.gate(kind).is_some();
        if !gated || self.gate_holds(kind, target) {
            Step::Ask
        } else if held.is_none() && !tried_previous {
            Step::PreviousOnly(self.gate_holds(kind, target.prev()))
        } else {
            Step::WaitForGate
        }
    }

    /// Job `job` waits for its gate.
    pub fn wait_for_gate(&mut self, job: usize, now: DateTime<Utc>, moment: Moment) {
        self.jobs[job].next_attempt = self.gate_retry(self.jobs[job].kind, now, moment);
    }

    /// After an attempt of job `job` at `target`: a gate remembers what it found unpublished.
    pub fn gate_found(&mut self, job: usize, target: Period, outcome: Outcome) {
        let Job {
            report,
            kind,
            next_attempt,
            ..
        } = self.jobs[job];
        if !report.gates() {
            return;
        }
        match outcome {
            Outcome::NotReady => {
                self.unpublished.insert(kind, (target, next_attempt));
            }
            Outcome::Fetched | Outcome::Failed(_) => {
                self.unpublished.remove(&kind);
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
    fn gate_retry(&self, kind: PeriodKind, now: DateTime<Utc>, moment: Moment) -> Deadline {
        let soon = Deadline::Moment(moment.after(Duration::from_secs(60)));
        let Some(gate) = self.gate(kind) else {
            return soon;
        };
        let planned = self.jobs[gate].earliest(now, moment, &self.habits, &self.polling);
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

    /// The period before `target` that job `job` fetches after finding `target` unpublished
    /// (or not asking for it, as `step` says), if this is the job's first attempt and WeChat
    /// keeps that period; the job will not try it again.
    pub fn previous_to_try(&mut self, job: usize, target: Period, step: Step) -> Option<Period> {
        let state = &mut self.jobs[job];
        if state.held.is_some() || state.tried_previous {
            return None;
        }
        state.tried_previous = true;
        let has_past = state.refresh.is_none()
            && state.report.has_history()
            && step != Step::PreviousOnly(false);
        has_past.then(|| target.prev())
    }

    /// Job `job` found `target` unpublished at `now`: it asks again at `retry`.
    pub fn not_ready(&mut self, job: usize, target: Period, now: DateTime<Utc>, retry: Deadline) {
        let state = &mut self.jobs[job];
        state.next_attempt = retry;
        state.failures = 0;
        state.last_error = None;
        state.unauthorized = false;
        state.missed = Some((target, now));
    }

    /// Job `job` failed with `error` (its fix appended) of `class`, and retries as
    /// `reaction` says, at `retry`; a pause holds back every job.
    pub fn failed(
        &mut self,
        job: usize,
        (error, class): (String, ErrorClass),
        reaction: Reaction,
        retry: Deadline,
    ) {
        if reaction.pause_app {
            self.blocked_until = Some(retry);
        }
        let state = &mut self.jobs[job];
        state.failures = state.failures.saturating_add(1);
        state.next_attempt = retry;
        state.last_error = Some(error);
        state.unauthorized = class == ErrorClass::Unauthorized;
    }

    /// Every report WeChat refused to the app asks again now (a reload: a person may have
    /// granted the permission); `true` if there is one.
    pub fn ask_unauthorized_again(&mut self) -> bool {
        let mut any = false;
        for job in self.jobs.iter_mut().filter(|job| job.unauthorized) {
            job.next_attempt = Deadline::NOW;
            any = true;
        }
        any
    }

    /// Whether the app is up: its access token can be had and no gate of its periods (the
    /// visit trend) failed at its last attempt. A failing or unauthorized report alone
    /// leaves it up.
    pub fn up(&self) -> bool {
        !self.token_failed
            && !self
                .jobs
                .iter()
                .any(|job| job.report.gates() && job.last_error.is_some())
    }

    /// Every job waits for the app's pause, if there is one; whether there is.
    pub fn hold_back(&mut self, now: DateTime<Utc>, moment: Moment) -> bool {
        let Some(until) = self.blocked_until else {
            return false;
        };
        for state in &mut self.jobs {
            state.next_attempt = state.next_attempt.later(until, now, moment);
        }
        true
    }

    /// Job `job` fetched `period` at `now` (a refreshing one is due again at `refresh`):
    /// `false`, and nothing changes, if it holds a newer period.
    pub fn held(
        &mut self,
        job: usize,
        period: Period,
        now: DateTime<Utc>,
        refresh: Option<Deadline>,
    ) -> bool {
        let state = &mut self.jobs[job];
        if state.held.is_some_and(|held| held > period) {
            return false;
        }
        state.held = Some(period);
        state.last_success = Some(now);
        state.refresh_due = refresh;
        state.failures = 0;
        state.last_error = None;
        state.unauthorized = false;
        state.missed = None;
        true
    }

    /// The gate of a kind found its newly ended period at `now`: what that says of the app's
    /// publication hour is kept. `true` if the habits changed.
    pub fn learn(&mut self, job: usize, target: Period, now: DateTime<Utc>) -> bool {
        let state = &self.jobs[job];
        if !state.report.gates() || state.refresh.is_some() {
            return false;
        }
        let polling = &self.polling;
        let before = state.missed.filter(|(missed, _)| *missed == target);
        let scheduled =
            self.habits
                .probe_from(target, polling.first_attempt, polling.not_ready_retry);
        let on_schedule = (state.held.is_some() || state.tried_previous)
            && now < after(scheduled, polling.not_ready_retry);
        self.habits
            .observe(target, before.map(|(_, at)| at), now, on_schedule)
    }

    /// When the next round has something to do, on the monotonic clock: at most a minute
    /// away, so that a step of the wall clock is noticed.
    pub fn next_wake(&self, now: DateTime<Utc>, moment: Moment) -> Moment {
        let wake = self
            .jobs
            .iter()
            .map(|job| match job.held {
                Some(held) if job.is_done(now, moment) => job.stale_at(held, now, moment),
                _ => job.earliest(now, moment, &self.habits, &self.polling),
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

    /// What the pages show of job `job`.
    pub fn status(&self, job: usize, now: DateTime<Utc>, moment: Moment) -> JobStatus {
        let state = &self.jobs[job];
        let next = match state.held {
            Some(held) if state.is_done(now, moment) => {
                state.refresh.map(|_| state.stale_at(held, now, moment))
            }
            _ => Some(state.earliest(now, moment, &self.habits, &self.polling)),
        };
        JobStatus {
            held: state.held,
            last_success: state.last_success,
            next_attempt: next.map(|deadline| deadline.wall(now, moment)),
            last_error: state.last_error.clone(),
            state: state.state(now, moment),
        }
    }

    /// Whether the last attempt of any job failed with an error.
    pub fn has_errors(&self) -> bool {
        self.jobs.iter().any(|job| job.last_error.is_some())
    }
}

#[cfg(test)]
mod tests;
