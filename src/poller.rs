//! The schedule: for each app, which (report, period) is due, fetching it, and what to do when
//! WeChat says no.
//!
//! Every app has its own task and its own jobs, one per (report, period kind). A job aims at
//! the latest completed period of its kind (Beijing time) and is done once it holds that
//! period; it is not fetched again. When WeChat has not published the period yet (an empty
//! answer or 61503), the job asks again after `polling.not_ready_retry` and the previous
//! period stays exported. The daily (weekly, monthly) visit trend goes first: while it is not
//! published, the other reports of that kind are not asked either, since WeChat publishes
//! them together. At start-up, a job whose latest period is not out yet fetches the one
//! before, so a new exporter shows what a long-running one would.
//!
//! Errors are per job and per app, never global: transient ones back off exponentially with
//! jitter, configuration errors are logged with their remedy and retried at the longest
//! backoff, 45011 pauses the app until the next minute and 45009 until the next Beijing day.
//!
//! The poller knows nothing of the store: it hands snapshots and statuses to a [`Sink`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, Timelike, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Polling;
use crate::period::{beijing_date, beijing_midnight, Period, PeriodKind};
use crate::wechat::client::{AppConnection, Client};
use crate::wechat::{
    retention_lags, Answer, Data, Distribution, ErrorClass, Page, Report, Retention, Trend,
    WeChatError,
};

/// What one job holds for export.
#[derive(Clone, Debug, PartialEq)]
pub enum Snapshot {
    /// A visit trend.
    Trend(Trend),
    /// One entry per lag, each from the newest cohort old enough to have it.
    Retention(Vec<RetentionLag>),
    /// A visit distribution.
    Distribution(Distribution),
    /// The top pages by visits, at most `reports.pages_top`.
    Pages(Vec<Page>),
}

/// The retention of one lag: from cohort `cohort`, its size (key 0) and how many came back
/// `lag` periods later (key `lag`), for new and for active users.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionLag {
    /// Periods after the cohort.
    pub lag: u32,
    /// The cohort the values come from: the period `lag` periods before the one held.
    pub cohort: Period,
    /// Key 0 and key `lag` of `visit_uv_new`.
    pub new: (Option<f64>, Option<f64>),
    /// Key 0 and key `lag` of `visit_uv`.
    pub active: (Option<f64>, Option<f64>),
}

/// A period a job holds, and when it was fetched.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// The period the values belong to.
    pub period: Period,
    /// When WeChat answered it.
    pub fetched_at: DateTime<Utc>,
    /// The values.
    pub snapshot: Snapshot,
}

/// How a job stands, for the landing page.
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

/// Where the poller hands its results: the store, in the running exporter.
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
}

/// What the poller needs of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Retry and backoff delays.
    pub polling: Polling,
    /// Pages kept per app.
    pub pages_top: usize,
}

/// One (report, period kind) of one app.
#[derive(Debug)]
struct Job {
    report: Report,
    kind: PeriodKind,
    held: Option<Period>,
    last_success: Option<DateTime<Utc>>,
    next_attempt: DateTime<Utc>,
    failures: u32,
    last_error: Option<String>,
    tried_previous: bool,
    /// Retention cohorts already fetched for a period whose other cohorts failed.
    partial: Option<(Period, BTreeMap<u32, Option<Retention>>)>,
}

enum Outcome {
    Fetched,
    NotReady,
    Failed(ErrorClass),
}

/// Polls one app, forever or one round at a time.
pub struct AppPoller {
    index: usize,
    connection: AppConnection,
    client: Arc<Client>,
    sink: Arc<dyn Sink>,
    settings: Arc<Settings>,
    clock: Clock,
    jobs: Vec<Job>,
    blocked_until: Option<DateTime<Utc>>,
}

impl AppPoller {
    /// A poller for app number `index` that has fetched nothing yet.
    pub fn new(
        index: usize,
        connection: AppConnection,
        client: Arc<Client>,
        sink: Arc<dyn Sink>,
        settings: Arc<Settings>,
        clock: Clock,
    ) -> AppPoller {
        let jobs = Report::ALL
            .iter()
            .flat_map(|report| report.kinds().iter().map(move |kind| (*report, *kind)))
            .map(|(report, kind)| Job {
                report,
                kind,
                held: None,
                last_success: None,
                next_attempt: DateTime::<Utc>::MIN_UTC,
                failures: 0,
                last_error: None,
                tried_previous: false,
                partial: None,
            })
            .collect();
        AppPoller {
            index,
            connection,
            client,
            sink,
            settings,
            clock,
            jobs,
            blocked_until: None,
        }
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
                self.sink.first_round_done(self.index);
                first = false;
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
            .filter_map(|index| {
                let job = &self.jobs[index];
                let target = Period::latest_completed(job.kind, now);
                (job.held != Some(target) && now >= job.next_attempt).then_some((index, target))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        // Without a token every call would fail the same way: ask for it once per round, and
        // on failure record the error on every due job without calling WeChat again.
        if let Err(error) = self.client.ensure_token(&self.connection).await {
            for (n, (index, target)) in due.into_iter().enumerate() {
                self.conclude(index, target, Err(error.clone()), now, n == 0);
            }
            return;
        }
        // Kinds whose visit trend is not published yet: their other reports wait for it.
        let mut unpublished: BTreeMap<PeriodKind, DateTime<Utc>> = BTreeMap::new();
        for index in 0..self.jobs.len() {
            let job = &self.jobs[index];
            let target = Period::latest_completed(job.kind, now);
            if job.held == Some(target) || now < job.next_attempt {
                continue;
            }
            // A job that has never asked still does, to fall back to the previous period.
            let gated =
                job.report != Report::VisitTrend && (job.held.is_some() || job.tried_previous);
            if let Some(retry) = unpublished.get(&job.kind).filter(|_| gated) {
                self.jobs[index].next_attempt = *retry;
                self.publish_status(index);
                continue;
            }
            match self.attempt(index, target).await {
                Outcome::Fetched => {}
                Outcome::NotReady => {
                    let job = &self.jobs[index];
                    if job.report == Report::VisitTrend {
                        unpublished.insert(job.kind, job.next_attempt);
                    }
                }
                Outcome::Failed(ErrorClass::DailyQuota | ErrorClass::MinuteQuota) => break,
                Outcome::Failed(_) => {}
            }
        }
    }

    /// When the next round has something to do.
    fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let wake = self
            .jobs
            .iter()
            .map(|job| {
                let target = Period::latest_completed(job.kind, now);
                if job.held == Some(target) {
                    target.next().end_instant()
                } else {
                    job.next_attempt.max(now)
                }
            })
            .min()
            .unwrap_or(now);
        match self.blocked_until {
            Some(until) => wake.max(until),
            None => wake,
        }
    }

    async fn attempt(&mut self, index: usize, target: Period) -> Outcome {
        let mut result = self.fetch_period(index, target).await;
        let now = self.clock.now();

        // A new exporter whose latest period is not out yet shows the one before, as a
        // long-running exporter would at this hour.
        let job = &mut self.jobs[index];
        if matches!(result, Ok(None)) && job.held.is_none() && !job.tried_previous {
            job.tried_previous = true;
            let previous = target.prev();
            match self.fetch_period(index, previous).await {
                Ok(Some(snapshot)) => self.hold(index, previous, snapshot, now),
                Ok(None) => {}
                Err(error) => result = Err(error),
            }
        }

        self.conclude(index, target, result, now, true)
    }

    /// Records the result of an attempt at `target`: holds the data, schedules the retry of an
    /// unpublished period, or backs off after an error (logged if `log`).
    fn conclude(
        &mut self,
        index: usize,
        target: Period,
        result: Result<Option<Snapshot>, WeChatError>,
        now: DateTime<Utc>,
        log: bool,
    ) -> Outcome {
        let app = self.connection.app.name.clone();
        let report = self.jobs[index].report;
        let polling = &self.settings.polling;
        let job = &mut self.jobs[index];
        let outcome = match result {
            Ok(Some(snapshot)) => {
                self.hold(index, target, snapshot, now);
                Outcome::Fetched
            }
            Ok(None) => {
                tracing::debug!(app, report = %report, period = %target, "not published yet");
                job.next_attempt = now + polling.not_ready_retry;
                job.failures = 0;
                job.last_error = None;
                Outcome::NotReady
            }
            Err(error) => {
                let class = error.class();
                let remedy = error.remedy().map(|fix| fix.replace("<name>", &app));
                let errcode = error.label();
                let delay = match class {
                    ErrorClass::Transient => {
                        let delay = backoff(polling, job.failures);
                        if log {
                            tracing::warn!(app, report = %report, period = %target, errcode, error = %error, retry_in = %humantime::format_duration(round_seconds(delay)), "fetch failed");
                        }
                        delay
                    }
                    ErrorClass::Config => {
                        if log {
                            tracing::error!(app, report = %report, period = %target, errcode, error = %error,
                            fix = remedy.as_deref().unwrap_or("check this app's configuration"),
                            retry_in = %humantime::format_duration(polling.error_backoff_max), "configuration error");
                        }
                        polling.error_backoff_max
                    }
                    ErrorClass::MinuteQuota => {
                        let until = next_minute(now);
                        tracing::warn!(
                            app,
                            errcode,
                            "per-minute API quota reached; pausing this app until the next minute"
                        );
                        self.blocked_until = Some(until);
                        (until - now).to_std().unwrap_or_default()
                    }
                    ErrorClass::DailyQuota => {
                        let until = beijing_midnight(beijing_date(now) + Days::new(1));
                        tracing::error!(app, errcode, until = %until, "daily API quota reached; no more calls for this app until the next Beijing day");
                        self.blocked_until = Some(until);
                        (until - now).to_std().unwrap_or_default()
                    }
                };
                job.failures = job.failures.saturating_add(1);
                job.next_attempt = now + delay;
                job.last_error = Some(match &remedy {
                    Some(fix) => format!("{error}; fix: {fix}"),
                    None => error.to_string(),
                });
                Outcome::Failed(class)
            }
        };
        if let Some(until) = self.blocked_until {
            for job in &mut self.jobs {
                job.next_attempt = job.next_attempt.max(until);
            }
            for index in 0..self.jobs.len() {
                self.publish_status(index);
            }
        } else {
            self.publish_status(index);
        }
        self.sink.up(self.index, !self.has_errors());
        outcome
    }

    fn hold(&mut self, index: usize, period: Period, snapshot: Snapshot, now: DateTime<Utc>) {
        let job = &mut self.jobs[index];
        tracing::info!(app = %self.connection.app.name, report = %job.report, period = %period, "fetched");
        job.held = Some(period);
        job.last_success = Some(now);
        job.failures = 0;
        job.last_error = None;
        job.partial = None;
        self.sink.held(
            self.index,
            job.report,
            job.kind,
            Held {
                period,
                fetched_at: now,
                snapshot,
            },
        );
    }

    fn publish_status(&self, index: usize) {
        let job = &self.jobs[index];
        let target = Period::latest_completed(job.kind, self.clock.now());
        let status = JobStatus {
            held: job.held,
            last_success: job.last_success,
            next_attempt: (job.held != Some(target)).then_some(job.next_attempt),
            last_error: job.last_error.clone(),
        };
        self.sink.status(self.index, job.report, job.kind, status);
    }

    /// Fetches one period of a job: `Ok(None)` when WeChat has not published it.
    async fn fetch_period(
        &mut self,
        index: usize,
        period: Period,
    ) -> Result<Option<Snapshot>, WeChatError> {
        let job = &self.jobs[index];
        let report = job.report;
        if report != Report::Retention {
            return Ok(
                match self.client.fetch(&self.connection, report, period).await? {
                    Answer::NotReady => None,
                    Answer::Ready(data) => Some(self.snapshot(data)),
                },
            );
        }

        // Retention: lag k comes from the cohort k periods back, the newest that has key k.
        let mut cohorts = match self.jobs[index].partial.take() {
            Some((held_for, cohorts)) if held_for == period => cohorts,
            _ => BTreeMap::new(),
        };
        for &lag in retention_lags(period.kind()) {
            if cohorts.contains_key(&lag) {
                continue;
            }
            let answer = self
                .client
                .fetch(&self.connection, report, period.back(lag))
                .await;
            match answer {
                Ok(Answer::Ready(Data::Retention(retention))) => {
                    cohorts.insert(lag, Some(retention));
                }
                // Without the newest cohort the period is not published.
                Ok(Answer::NotReady) if lag == 0 => return Ok(None),
                // An older cohort with no data (the app is younger than it): that lag is absent.
                Ok(_) => {
                    cohorts.insert(lag, None);
                }
                Err(error) => {
                    self.jobs[index].partial = Some((period, cohorts));
                    return Err(error);
                }
            }
        }
        Ok(Some(Snapshot::Retention(retention_view(period, &cohorts))))
    }

    fn snapshot(&self, data: Data) -> Snapshot {
        match data {
            Data::Trend(trend) => Snapshot::Trend(trend),
            Data::Retention(retention) => {
                unreachable!("retention is assembled per lag, got {retention:?}")
            }
            Data::Distribution(distribution) => Snapshot::Distribution(distribution),
            Data::Pages(pages) => Snapshot::Pages(top_pages(pages, self.settings.pages_top)),
        }
    }
}

/// Builds the per-lag retention of the period `held` from the cohorts fetched for each lag.
///
/// Lag k takes key k (and key 0, the cohort size) of the cohort k periods before `held`, and
/// nothing else: a cohort too young to have a key never contributes it, even as a 0.
pub fn retention_view(
    held: Period,
    cohorts: &BTreeMap<u32, Option<Retention>>,
) -> Vec<RetentionLag> {
    cohorts
        .iter()
        .filter_map(|(&lag, retention)| {
            let retention = retention.as_ref()?;
            let pair = |keys: &BTreeMap<u32, f64>| (keys.get(&0).copied(), keys.get(&lag).copied());
            let lag_view = RetentionLag {
                lag,
                cohort: held.back(lag),
                new: pair(&retention.new),
                active: pair(&retention.active),
            };
            (lag_view.new.1.is_some() || lag_view.active.1.is_some()).then_some(lag_view)
        })
        .collect()
}

/// The `n` pages with the most visits, most first.
pub fn top_pages(mut pages: Vec<Page>, n: usize) -> Vec<Page> {
    pages.sort_by(|a, b| {
        let visits = |page: &Page| page.visit_pv.unwrap_or(f64::NEG_INFINITY);
        visits(b)
            .total_cmp(&visits(a))
            .then_with(|| a.path.cmp(&b.path))
    });
    // WeChat may list a path twice (e.g. with different query strings stripped); keep the first.
    let mut seen = std::collections::HashSet::new();
    pages.retain(|page| seen.insert(page.path.clone()));
    pages.truncate(n);
    pages
}

/// The delay after `failures` consecutive failures: doubling from the initial backoff, capped
/// at the maximum, with jitter that spreads retries over the upper half of the window.
pub fn backoff(polling: &Polling, failures: u32) -> Duration {
    let base = polling
        .error_backoff_initial
        .saturating_mul(1u32 << failures.min(20))
        .min(polling.error_backoff_max);
    base.mul_f64(0.5 + 0.5 * fastrand::f64())
        .clamp(polling.error_backoff_initial, polling.error_backoff_max)
}

fn round_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

/// The start of the next wall-clock minute, plus a second of slack.
fn next_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    let minute = now
        .with_second(0)
        .and_then(|time| time.with_nanosecond(0))
        .expect("second 0 exists");
    minute + chrono::Duration::seconds(61)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::PeriodKind;

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    fn retention(new: &[(u32, f64)], active: &[(u32, f64)]) -> Option<Retention> {
        Some(Retention {
            new: new.iter().copied().collect(),
            active: active.iter().copied().collect(),
        })
    }

    #[test]
    fn each_lag_comes_from_the_cohort_that_many_periods_back() {
        let held = day("20240310");
        let cohorts = BTreeMap::from([
            (0, retention(&[(0, 100.0)], &[(0, 1000.0)])),
            // WeChat sends keys 2..7 as zeros for a cohort only one day old: ignored.
            (
                1,
                retention(
                    &[(0, 90.0), (1, 30.0), (2, 0.0), (7, 0.0)],
                    &[(0, 900.0), (1, 300.0)],
                ),
            ),
            (
                7,
                retention(&[(0, 80.0), (7, 8.0)], &[(0, 800.0), (7, 40.0)]),
            ),
        ]);
        let view = retention_view(held, &cohorts);
        assert_eq!(view.len(), 3);
        assert_eq!(
            view[1],
            RetentionLag {
                lag: 1,
                cohort: day("20240309"),
                new: (Some(90.0), Some(30.0)),
                active: (Some(900.0), Some(300.0)),
            }
        );
        assert_eq!(view[2].cohort, day("20240303"));
        assert_eq!(view[2].new, (Some(80.0), Some(8.0)));
        assert!(view.iter().all(|lag| lag.lag != 2));
    }

    #[test]
    fn a_cohort_without_its_key_gives_no_lag() {
        let held = day("20240310");
        let cohorts = BTreeMap::from([
            (0, retention(&[(0, 100.0)], &[(0, 1000.0)])),
            (3, retention(&[(0, 90.0)], &[(0, 900.0)])),
            (4, None),
        ]);
        let view = retention_view(held, &cohorts);
        assert_eq!(view.iter().map(|lag| lag.lag).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn weekly_and_monthly_lags_step_back_by_weeks_and_months() {
        let week = Period::containing(
            PeriodKind::Weekly,
            chrono::NaiveDate::from_ymd_opt(2024, 3, 4).unwrap(),
        );
        let cohorts = BTreeMap::from([(4, retention(&[(4, 1.0)], &[]))]);
        assert_eq!(
            retention_view(week, &cohorts)[0].cohort.ref_date(),
            "20240205-20240211"
        );
        let month = day("202403");
        let cohorts = BTreeMap::from([(1, retention(&[], &[(1, 1.0)]))]);
        assert_eq!(
            retention_view(month, &cohorts)[0].cohort.ref_date(),
            "202402"
        );
    }

    #[test]
    fn top_pages_are_the_most_visited_without_duplicates() {
        let page = |path: &str, visits: Option<f64>| Page {
            path: path.into(),
            visit_pv: visits,
            ..Page::default()
        };
        let pages = top_pages(
            vec![
                page("a", Some(1.0)),
                page("b", Some(5.0)),
                page("c", None),
                page("b", Some(2.0)),
                page("d", Some(3.0)),
            ],
            3,
        );
        let paths: Vec<_> = pages.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["b", "d", "a"]);
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let polling = Polling {
            not_ready_retry: Duration::from_secs(1800),
            error_backoff_initial: Duration::from_secs(30),
            error_backoff_max: Duration::from_secs(1800),
            concurrency: 1,
            request_timeout: Duration::from_secs(30),
        };
        for _ in 0..100 {
            assert_eq!(backoff(&polling, 0), Duration::from_secs(30));
            let third = backoff(&polling, 2);
            assert!(
                (Duration::from_secs(60)..=Duration::from_secs(120)).contains(&third),
                "{third:?}"
            );
            let late = backoff(&polling, 40);
            assert!(
                (Duration::from_secs(900)..=Duration::from_secs(1800)).contains(&late),
                "{late:?}"
            );
        }
    }

    #[test]
    fn the_next_minute_starts_after_the_current_one() {
        let now = DateTime::parse_from_rfc3339("2024-03-10T10:15:42.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_minute(now).to_rfc3339(), "2024-03-10T10:16:01+00:00");
    }
}
