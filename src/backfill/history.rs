//! What a backfill fetched: replayed in time into OpenMetrics, and summarised.
//!
//! The replay plays each app's periods in the order they would have appeared on `/metrics`,
//! assembles each from its calls' answers as the agent does ([`Pieces::assemble`](crate::report::Pieces::assemble)) and renders
//! the app's state between one change and the next with the agent's own
//! [`crate::metrics::render_data`].

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::fetch::{Calls, Fetched};
use super::openmetrics::{Families, Written};
use super::plan::{Plan, Unit};
use crate::metrics::render_data;
use crate::period::{Period, PeriodKind};
use crate::report::{AppData, Held, Pieces, Report, Snapshot};

/// A call given up on.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The app's name.
    pub app: String,
    /// The report.
    pub report: Report,
    /// The period the call asked for.
    pub period: Period,
    /// The last error, with its remedy when there is one.
    pub error: String,
    /// Attempts made (0 when the app had already been stopped by an earlier error).
    pub attempts: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} (ref_date {}): {}",
            self.app,
            self.report,
            self.period,
            self.period.ref_date(),
            self.error
        )?;
        match self.attempts {
            0 => write!(f, " (not attempted: the app was stopped)"),
            1 => Ok(()),
            n => write!(f, " (after {n} attempts)"),
        }
    }
}

/// The counts a backfill ends with.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Calls WeChat answered with data.
    pub fetched: usize,
    /// Calls WeChat has no data for (before the app existed, or not published): not written.
    pub skipped: usize,
    /// Calls given up on, oldest first.
    pub failed: Vec<Failure>,
    /// Periods of the range published less than 3 hours before the run (or not yet), left
    /// to the running exporter.
    pub late: usize,
    /// Datacube calls made, retries included.
    pub datacube_calls: u64,
    /// Calls to the other report APIs (performance, JS errors), retries included.
    pub other_calls: u64,
    /// Token calls made.
    pub token_calls: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} periods fetched, {} skipped (no data at WeChat), {} failed; {} API calls ({} datacube, {} other, {} token)",
            self.fetched,
            self.skipped,
            self.failed.len(),
            self.datacube_calls + self.other_calls + self.token_calls,
            self.datacube_calls,
            self.other_calls,
            self.token_calls
        )?;
        if self.late > 0 {
            write!(
                f,
                "; {} periods too recent (published less than 3 hours ago, or not yet) left to the running exporter",
                self.late
            )?;
        }
        Ok(())
    }
}

/// What a backfill fetched, ready to be written.
pub struct History {
    plan: Plan,
    results: HashMap<Unit, Fetched>,
    /// What each report read of the answers, by app.
    pieces: HashMap<Report, Pieces>,
    calls: Arc<Calls>,
}

impl History {
    pub(super) fn new(
        plan: Plan,
        results: HashMap<Unit, Fetched>,
        pieces: HashMap<Report, Pieces>,
        calls: Arc<Calls>,
    ) -> History {
        History {
            plan,
            results,
            pieces,
            calls,
        }
    }

    /// The counts of the run.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            fetched: 0,
            skipped: 0,
            failed: Vec::new(),
            late: self.plan.late,
            datacube_calls: self.calls.datacube.load(Ordering::Relaxed),
            other_calls: self.calls.other.load(Ordering::Relaxed),
            token_calls: self.calls.token.load(Ordering::Relaxed),
        };
        for unit in &self.plan.units {
            match self.results.get(unit) {
                Some(Fetched::Data) => summary.fetched += 1,
                Some(Fetched::Empty) => summary.skipped += 1,
                Some(Fetched::Failed(error, attempts)) => {
                    summary.failed.push(self.failure(unit, error, *attempts));
                }
                None => {}
            }
        }
        summary
    }

    fn failure(&self, unit: &Unit, error: &crate::wechat::WeChatError, attempts: u32) -> Failure {
        let app = &self.plan.apps[unit.app].name;
        let error = match error.remedy(app, unit.report.name()) {
            Some(fix) => format!("{error}; fix: {fix}"),
            None => error.to_string(),
        };
        Failure {
            app: app.clone(),
            report: unit.report,
            period: unit.call.asks,
            error,
            attempts,
        }
    }

    /// Writes the history as OpenMetrics text, ending with `# EOF`.
    pub fn write_openmetrics(&self, out: &mut dyn Write) -> io::Result<Written> {
        let mut families = Families::default();
        for app in 0..self.plan.apps.len() {
            self.replay(app, &mut families);
        }
        families.write(out, self.plan.step.as_secs() as i64)
    }

    /// What the agent would have held of `report` for `period`: its calls' answers,
    /// assembled; nothing of a period that the report gating the kind found unpublished (the
    /// agent does not ask for it: an answer that holds nothing could pass for zeros).
    fn snapshot(&self, app: usize, report: Report, period: Period) -> Option<Arc<dyn Snapshot>> {
        let reports = &self.plan.reports[app];
        let gate = Report::all().find(|gate| {
            gate.gates() && gate.kinds().contains(&period.kind()) && gate.is_backfilled(reports)
        });
        if let Some(gate) = gate.filter(|gate| *gate != report) {
            let first = gate.calls(period, reports).into_iter().next()?;
            let unit = Unit {
                app,
                report: gate,
                call: first,
            };
            if let Some(Fetched::Empty) = self.results.get(&unit) {
                return None;
            }
        }
        self.pieces.get(&report)?.assemble(app, period, reports)
    }

    /// Plays the periods of `app` in the order they would have appeared, rendering what
    /// `/metrics` showed between one change and the next.
    fn replay(&self, app: usize, families: &mut Families) {
        let events = self.events(app);
        let config = &self.plan.apps[app];
        let mut state = AppData {
            name: config.name.clone(),
            appid: config.appid.to_string(),
            up: true,
            ..Default::default()
        };
        let mut index = 0;
        while index < events.len() {
            let at = events[index].0;
            if at >= self.plan.end {
                break;
            }
            while index < events.len() && events[index].0 == at {
                let (_, report, kind, period) = events[index];
                match self.snapshot(app, report, period) {
                    Some(snapshot) => {
                        let held = Held {
                            period,
                            fetched_at: at,
                            snapshot,
                        };
                        state.held.insert((report, kind), held);
                    }
                    // Filling gaps: the period after one is the running exporter's.
                    None if self.plan.gaps_only => {
                        state.held.remove(&(report, kind));
                    }
                    None => {}
                }
                index += 1;
            }
            // Unchanged values join the span before (see `Families`).
            if state.held.is_empty() {
                continue;
            }
            let until = events.get(index).map_or(self.plan.end, |next| next.0);
            let until = until.min(self.plan.end);
            let span = families.during(at.timestamp(), until.timestamp());
            render_data(&[&state], &self.plan.calendar, span);
        }
    }

    /// Every (report, kind, period) the replay of `app` shows, at the instant it appears,
    /// in time order.
    fn events(&self, app: usize) -> Vec<(DateTime<Utc>, Report, PeriodKind, Period)> {
        let mut events = Vec::new();
        for (&(report, kind), periods) in &self.plan.shown[app] {
            for &period in periods {
                events.push((self.plan.visible(period), report, kind, period));
            }
        }
        events.sort();
        events
    }
}
