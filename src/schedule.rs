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
use crate::report::Report;
use crate::report::Settings as ReportSettings;
use crate::sink::{JobStatus, Resume};

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
        state.missed = Some((target, now));
    }

    /// Job `job` failed with `error` (its fix appended), and retries as `reaction` says,
    /// at `retry`; a pause holds back every job.
    pub fn failed(&mut self, job: usize, error: String, reaction: Reaction, retry: Deadline) {
        if reaction.pause_app {
            self.blocked_until = Some(retry);
        }
        let state = &mut self.jobs[job];
        state.failures = state.failures.saturating_add(1);
        state.next_attempt = retry;
        state.last_error = Some(error);
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
        }
    }

    /// Whether the last attempt of any job failed with an error.
    pub fn has_errors(&self) -> bool {
        self.jobs.iter().any(|job| job.last_error.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    /// 2024-06-DD HH:MM in Beijing.
    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        crate::period::beijing()
            .with_ymd_and_hms(2024, 6, day, hour, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn day(day: u32) -> Period {
        Period::containing(
            PeriodKind::Daily,
            chrono::NaiveDate::from_ymd_opt(2024, 6, day).unwrap(),
        )
    }

    fn report(name: &str) -> Report {
        Report::by_name(name).unwrap()
    }

    /// The daily job of `name` in a schedule of every default report where the trend (the
    /// gate) holds `trend` and the report `name` holds `held`.
    fn schedule(trend: Option<u32>, name: &str, held: Option<u32>) -> (Schedule, usize) {
        let mut resume = Resume::default();
        let fetched = at(1, 12);
        for (holder, period) in [("visit_trend", trend), (name, held)] {
            if let Some(period) = period {
                resume
                    .held
                    .insert((report(holder), PeriodKind::Daily), (day(period), fetched));
            }
        }
        let schedule = Schedule::new(&Polling::default(), &ReportSettings::default(), resume);
        let job = schedule
            .jobs
            .iter()
            .position(|job| job.report == report(name) && job.kind == PeriodKind::Daily)
            .unwrap();
        (schedule, job)
    }

    #[test]
    fn each_job_asks_for_its_period_once_its_gate_holds_it_and_never_for_an_older_one() {
        // (report, gate holds, report holds, Beijing 2024-06-DD HH:00, due, step)
        let table = [
            // A new exporter at noon asks for yesterday at once, the gate and the others.
            ("visit_trend", None, None, (5, 12), Some(4), Some(Step::Ask)),
            (
                "js_errors",
                Some(4),
                None,
                (5, 12),
                Some(4),
                Some(Step::Ask),
            ),
            // Before polling.first_attempt (06:00) the gate holds the day before: a report
            // that holds nothing shows that day, never yesterday's answer (maybe "no error").
            ("visit_trend", Some(3), None, (5, 3), None, None),
            (
                "js_errors",
                Some(3),
                None,
                (5, 3),
                Some(4),
                Some(Step::PreviousOnly(true)),
            ),
            (
                "js_errors",
                Some(2),
                None,
                (5, 3),
                Some(4),
                Some(Step::PreviousOnly(false)),
            ),
            (
                "js_errors",
                None,
                None,
                (5, 3),
                Some(4),
                Some(Step::PreviousOnly(false)),
            ),
            // Holding the day before, a report waits for the hour the app publishes at.
            ("js_errors", Some(3), Some(3), (5, 3), None, None),
            // At noon it is due, but waits until the gate holds yesterday.
            (
                "js_errors",
                Some(3),
                Some(3),
                (5, 12),
                Some(4),
                Some(Step::WaitForGate),
            ),
            (
                "js_errors",
                Some(4),
                Some(3),
                (5, 12),
                Some(4),
                Some(Step::Ask),
            ),
            // Done: nothing is asked.
            ("js_errors", Some(4), Some(4), (5, 23), None, None),
            // The wall clock set back three days: nothing older than what is held.
            ("visit_trend", Some(4), None, (2, 12), None, None),
            ("js_errors", Some(4), Some(4), (2, 12), None, None),
        ];
        for (name, gate, held, (date, hour), due, step) in table {
            let (schedule, job) = schedule(gate, name, held);
            let now = at(date, hour);
            let found = schedule.due(job, now, Moment::default());
            assert_eq!(
                found,
                due.map(day),
                "{name}, gate {gate:?}, holds {held:?}, at {date} {hour}:00"
            );
            if let Some(target) = found {
                assert_eq!(
                    Some(schedule.step(job, target)),
                    step,
                    "{name} at {date} {hour}:00"
                );
            }
        }
    }

    #[test]
    fn a_first_attempt_falls_back_to_the_day_before_where_wechat_keeps_it() {
        // (report, step, falls back)
        let table = [
            ("visit_trend", Step::Ask, true),
            ("js_errors", Step::PreviousOnly(true), true),
            ("js_errors", Step::PreviousOnly(false), false),
            // WeChat keeps no past of the portrait.
            ("user_portrait", Step::Ask, false),
        ];
        for (name, step, falls_back) in table {
            let (mut schedule, job) = schedule(None, name, None);
            let expected = falls_back.then(|| day(3));
            assert_eq!(
                schedule.previous_to_try(job, day(4), step),
                expected,
                "{name}"
            );
            assert_eq!(
                schedule.previous_to_try(job, day(4), step),
                None,
                "{name}: only once"
            );
        }
    }

    #[test]
    fn outcomes_move_the_next_attempt_and_a_pause_holds_back_the_whole_app() {
        let (mut schedule, job) = schedule(Some(4), "js_errors", Some(3));
        let now = at(5, 12);
        let moment = Moment::from_start(Duration::from_secs(1000));
        let retry = Deadline::Moment(moment.after(Duration::from_secs(1800)));
        schedule.not_ready(job, day(4), now, retry);
        assert_eq!(schedule.due(job, now, moment), None, "not before the retry");
        assert_eq!(
            schedule.due(job, now, moment.after(Duration::from_secs(1800))),
            Some(day(4))
        );
        // A newer period held is never replaced by an older one.
        assert!(schedule.held(job, day(4), now, None));
        assert!(!schedule.held(job, day(3), now, None));
        assert_eq!(schedule.jobs[job].held, Some(day(4)));
        // The per-minute quota pauses every job of the app.
        let reaction = Reaction {
            retry: crate::policy::Retry::After(Duration::from_secs(60)),
            pause_app: true,
        };
        let until = Deadline::Moment(moment.after(Duration::from_secs(60)));
        schedule.failed(0, "45011".into(), reaction, until);
        assert!(schedule.is_blocked(now, moment));
        assert!(schedule.hold_back(now, moment));
        assert!(schedule.has_errors());
        assert!(!schedule.is_blocked(now, moment.after(Duration::from_secs(60))));
    }

    #[test]
    fn the_poller_wakes_at_the_earliest_deadline_and_at_least_every_minute() {
        let now = at(5, 12);
        let moment = Moment::from_start(Duration::from_secs(5000));
        // Every job holds its latest period: a minute later, to notice a step of the clock.
        let mut resume = Resume::default();
        for report in ReportSettings::default().enabled.iter() {
            for &kind in report.kinds() {
                let latest = Period::latest_completed(kind, now);
                resume.held.insert((report, kind), (latest, now));
            }
        }
        let held = Schedule::new(&Polling::default(), &ReportSettings::default(), resume);
        assert_eq!(
            held.next_wake(now, moment),
            moment.after(Duration::from_secs(60))
        );
        // A job not yet asked: at once.
        let (fresh, _) = schedule(None, "js_errors", None);
        assert_eq!(fresh.next_wake(now, moment), moment);
    }
}
