//! `backfill`: the history WeChat keeps, as timestamped OpenMetrics for
//! `promtool tsdb create-blocks-from openmetrics`.
//!
//! A Prometheus server only holds what it scraped. This module fetches every (app, report,
//! period) of a range once, through the agent's client (tokens, the retry on a refused
//! token, the `polling.concurrency` limit) and with the agent's backoff, then replays the
//! periods in time. A period appears at the moment `serve` would have started exporting it
//! (its publication: `published_at`, Beijing time, on the day after it ends) and stays until
//! the next one replaces it, in the same families and labels as `/metrics` (the health
//! families aside), rendered by the same code. Retention follows the agent's lag rule.
//!
//! Prometheus sees a sample for 5 minutes after it, while the exporter is scraped all day. So
//! each value is written when it appears and repeated every `step` while it is current: with
//! the default of one day, queries over a one-day window (`last_over_time(...[1d])`, as the
//! bundled dashboards and rules are written) read history and live data alike; with a step of
//! 5 minutes plain selectors do too, for a file 288 times larger.
//!
//! Samples stop 3 hours before the run ([`HEAD_BLOCK`]): that range belongs to the head block
//! of the running Prometheus, and the running exporter covers it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::{App, Config, Polling};
use crate::metrics::{format_value, render_data, AppData};
use crate::period::{beijing_date, beijing_midnight, Period, PeriodKind};
use crate::poller::{backoff, retention_view, top_pages, Held, Snapshot};
use crate::wechat::client::{AppConnection, Client, Observer};
use crate::wechat::{retention_lags, Answer, Data, ErrorClass, Report, WeChatError};

/// How long before the run the history stops: Prometheus's head block, which backfilled
/// blocks must not overlap.
pub const HEAD_BLOCK: Duration = Duration::from_secs(3 * 3600);

/// Attempts at one period before it is reported as failed (transient errors only; a
/// configuration error or the daily quota stops the app at once).
pub const ATTEMPTS: u32 = 5;

/// Waits for the per-minute quota (45011) before a period is given up.
const MINUTE_QUOTA_WAITS: u32 = 10;

/// What to backfill, as given on the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// The first day.
    pub from: NaiveDate,
    /// The last day; the latest completed day if `None`.
    pub to: Option<NaiveDate>,
    /// The apps by name; every configured app if empty.
    pub apps: Vec<String>,
    /// How often a current value is repeated.
    pub step: Duration,
    /// The Beijing time of day at which WeChat publishes the previous period.
    pub published_at: NaiveTime,
}

/// The default `published_at`: WeChat publishes yesterday's data at about 10:00 Beijing time.
pub fn default_published_at() -> NaiveTime {
    NaiveTime::from_hms_opt(10, 0, 0).expect("10:00 exists")
}

/// One datacube call to make: a report of an app for a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Unit {
    app: usize,
    report: Report,
    period: Period,
}

/// What a backfill will fetch and write, checked before any call.
#[derive(Debug)]
pub struct Plan {
    apps: Vec<App>,
    from: NaiveDate,
    to: NaiveDate,
    step: Duration,
    published_at: NaiveTime,
    pages_top: usize,
    /// Per kind, the periods that end in the range and are published before the cutoff.
    periods: BTreeMap<PeriodKind, Vec<Period>>,
    /// Every call, each once; retention also needs the cohorts its lags come from.
    units: Vec<Unit>,
    /// (app, report, period)s of the range published after the cutoff.
    late: usize,
    /// Where the history stops: 3 hours before the run, or when the period after `to` would
    /// have replaced the last one.
    end: DateTime<Utc>,
}

impl Plan {
    /// The datacube calls to make (each (app, report, period) once).
    pub fn fetches(&self) -> usize {
        self.units.len()
    }

    /// The range, first and last day.
    pub fn range(&self) -> (NaiveDate, NaiveDate) {
        (self.from, self.to)
    }

    /// The names of the apps backfilled.
    pub fn app_names(&self) -> Vec<&str> {
        self.apps.iter().map(|app| app.name.as_str()).collect()
    }

    /// When the period would have appeared on `/metrics`.
    fn visible(&self, period: Period) -> DateTime<Utc> {
        visible(period, self.published_at)
    }
}

/// When `serve` starts exporting `period`: when WeChat publishes it, `published_at` Beijing
/// time on the day after it ends.
fn visible(period: Period, published_at: NaiveTime) -> DateTime<Utc> {
    beijing_midnight(period.end() + Days::new(1)) + (published_at - NaiveTime::MIN)
}

/// Checks `options` against the configuration and the present, and lists the calls to make.
/// The error says which flag is wrong and how to fix it.
pub fn plan(config: &Config, options: &Options, now: DateTime<Utc>) -> Result<Plan, String> {
    let yesterday = beijing_date(now) - Days::new(1);
    let to = options.to.unwrap_or(yesterday);
    if to > yesterday {
        return Err(format!(
            "--to {to}: that day has not ended in Beijing time; the latest day WeChat can answer is {yesterday}"
        ));
    }
    let from = options.from;
    if from > to {
        return Err(format!("--from {from} is after --to {to}"));
    }
    let first = NaiveDate::from_ymd_opt(2017, 1, 1).expect("a valid date");
    if from < first {
        return Err(format!(
            "--from {from}: Mini Programs, and their analytics, start in January 2017; use {first} or later"
        ));
    }
    let step = options.step;
    if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&step)
        || step.subsec_nanos() != 0
    {
        return Err(format!(
            "--step {}: use whole seconds from 1m to 1d; 1d (the default) suits queries over [1d] windows, 5m makes history visible to plain selectors",
            humantime::format_duration(step)
        ));
    }

    let apps: Vec<App> = if options.apps.is_empty() {
        config.apps.clone()
    } else {
        let mut chosen = Vec::new();
        for name in &options.apps {
            let Some(app) = config.apps.iter().find(|app| &app.name == name) else {
                let known: Vec<&str> = config.apps.iter().map(|app| app.name.as_str()).collect();
                return Err(format!(
                    "--app {name}: no such app in the configuration; configured: {}",
                    known.join(", ")
                ));
            };
            if !chosen.iter().any(|other: &App| other.name == app.name) {
                chosen.push(app.clone());
            }
        }
        chosen
    };

    let cutoff = now - chrono::Duration::from_std(HEAD_BLOCK).expect("3 hours fit");
    let mut periods = BTreeMap::new();
    let mut late = 0;
    for kind in PeriodKind::ALL {
        let (ready, after): (Vec<Period>, Vec<Period>) = Period::ending_within(kind, from, to)
            .into_iter()
            .partition(|period| visible(*period, options.published_at) < cutoff);
        let reports = Report::ALL
            .iter()
            .filter(|report| report.kinds().contains(&kind))
            .count();
        late += after.len() * reports * apps.len();
        periods.insert(kind, ready);
    }

    let mut units = BTreeSet::new();
    for app in 0..apps.len() {
        for report in Report::ALL {
            for kind in report.kinds() {
                for &period in &periods[kind] {
                    if report == Report::Retention {
                        for &lag in retention_lags(*kind) {
                            units.insert(Unit {
                                app,
                                report,
                                period: period.back(lag),
                            });
                        }
                    } else {
                        units.insert(Unit {
                            app,
                            report,
                            period,
                        });
                    }
                }
            }
        }
    }
    // Oldest first, the apps side by side: progress is even and a late failure costs little.
    let mut units: Vec<Unit> = units.into_iter().collect();
    units.sort_by_key(|unit| {
        (
            unit.period.start(),
            unit.period.kind(),
            unit.app,
            unit.report,
        )
    });

    let last_day = Period::containing(PeriodKind::Daily, to);
    let end = cutoff.min(visible(last_day.next(), options.published_at));
    Ok(Plan {
        apps,
        from,
        to,
        step,
        published_at: options.published_at,
        pages_top: config.reports.pages_top,
        periods,
        units,
        late,
        end,
    })
}

/// How a backfill is getting on, shared with whoever draws it.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
}

impl Progress {
    /// Progress of `total` fetches, none done.
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// Fetches finished (fetched, skipped or failed).
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Fetches to make in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// One line of progress: a bar `width` wide (none if 0), periods done / total, failures
    /// and the estimated time left.
    pub fn line(&self, width: usize) -> String {
        let done = self.done();
        let total = self.total.max(1);
        let elapsed = self.started.elapsed();
        let mut line = String::new();
        if width > 0 {
            let filled = width * done / total;
            line.push('[');
            line.extend(std::iter::repeat_n('#', filled));
            line.extend(std::iter::repeat_n('-', width - filled));
            line.push_str("] ");
        }
        line.push_str(&format!(
            "{done}/{} periods ({}%)",
            self.total,
            100 * done / total
        ));
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        if done > 0 && done < self.total {
            let left = elapsed.mul_f64((self.total - done) as f64 / done as f64);
            line.push_str(&format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ));
        } else if done == self.total {
            line.push_str(&format!(
                ", took {}",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            ));
        }
        line
    }
}

/// Counts the calls the client makes.
#[derive(Debug, Default)]
struct Calls {
    datacube: AtomicU64,
    token: AtomicU64,
}

impl Observer for Calls {
    fn request(&self, _: &App, endpoint: &str, _: Duration, _: Option<&WeChatError>) {
        let counter = if endpoint.contains("token") {
            &self.token
        } else {
            &self.datacube
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn token_fetch(&self, _: &App, _: bool) {}
}

/// The end of one fetch.
#[derive(Debug)]
enum Fetched {
    Data(Data),
    /// WeChat has nothing for the period (an empty answer or 61503).
    Empty,
    /// Given up, after this many attempts (0: not attempted, the app was stopped).
    Failed(WeChatError, u32),
}

/// A period given up on.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The app's name.
    pub app: String,
    /// The report.
    pub report: Report,
    /// The period.
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
    /// Periods WeChat answered with data.
    pub fetched: usize,
    /// Periods WeChat has no data for (before the app existed, or not published): not written.
    pub skipped: usize,
    /// Periods given up on, oldest first.
    pub failed: Vec<Failure>,
    /// Periods of the range published less than 3 hours before the run (or not yet), left
    /// to the running exporter.
    pub late: usize,
    /// Datacube calls made, retries included.
    pub datacube_calls: u64,
    /// Token calls made.
    pub token_calls: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} periods fetched, {} skipped (no data at WeChat), {} failed; {} API calls ({} datacube, {} token)",
            self.fetched,
            self.skipped,
            self.failed.len(),
            self.datacube_calls + self.token_calls,
            self.datacube_calls,
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
    calls: Arc<Calls>,
}

/// Fetches every call of `plan`, at most `polling.concurrency` at a time, counting each
/// finished one in `progress`.
pub async fn fetch(
    config: &Config,
    plan: Plan,
    clock: Clock,
    progress: Arc<Progress>,
) -> Result<History, reqwest::Error> {
    let calls = Arc::new(Calls::default());
    let client = Arc::new(Client::new(
        &config.api_base_url,
        &config.polling,
        clock.clone(),
        calls.clone(),
    )?);
    let shared = Arc::new(Shared {
        client,
        polling: config.polling.clone(),
        clock,
        connections: plan
            .apps
            .iter()
            .map(|app| AppConnection::new(app.clone()))
            .collect(),
        stopped: Mutex::new(vec![None; plan.apps.len()]),
        queue: Mutex::new(plan.units.iter().copied().collect()),
        results: Mutex::new(HashMap::new()),
        progress,
    });
    let mut workers = JoinSet::new();
    for _ in 0..config.polling.concurrency.min(plan.units.len()).max(1) {
        workers.spawn(work(shared.clone()));
    }
    while workers.join_next().await.is_some() {}
    let results = std::mem::take(&mut *shared.results.lock().expect("not poisoned"));
    Ok(History {
        plan,
        results,
        calls,
    })
}

/// What the workers share.
struct Shared {
    client: Arc<Client>,
    polling: Polling,
    clock: Clock,
    connections: Vec<AppConnection>,
    /// Per app, the error that stopped it (a configuration error or the daily quota).
    stopped: Mutex<Vec<Option<WeChatError>>>,
    queue: Mutex<VecDeque<Unit>>,
    results: Mutex<HashMap<Unit, Fetched>>,
    progress: Arc<Progress>,
}

async fn work(shared: Arc<Shared>) {
    loop {
        let next = shared.queue.lock().expect("not poisoned").pop_front();
        let Some(unit) = next else { return };
        let fetched = fetch_unit(&shared, unit).await;
        if let Fetched::Failed(error, attempts) = &fetched {
            tracing::debug!(app = %shared.connections[unit.app].app.name, report = %unit.report, period = %unit.period, attempts, error = %error, "period failed");
            shared.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .results
            .lock()
            .expect("not poisoned")
            .insert(unit, fetched);
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One call with the agent's reactions: back off on transient errors, wait out the minute
/// quota, and stop the app on a configuration error or the daily quota.
async fn fetch_unit(shared: &Shared, unit: Unit) -> Fetched {
    let connection = &shared.connections[unit.app];
    let mut attempts = 0;
    let mut minute_waits = 0;
    loop {
        if let Some(error) = shared.stopped.lock().expect("not poisoned")[unit.app].clone() {
            return Fetched::Failed(error, 0);
        }
        attempts += 1;
        let error = match shared
            .client
            .fetch(connection, unit.report, unit.period)
            .await
        {
            Ok(Answer::Ready(data)) => return Fetched::Data(data),
            Ok(Answer::NotReady) => return Fetched::Empty,
            Err(error) => error,
        };
        let now = shared.clock.now();
        let wait = match error.class() {
            ErrorClass::Transient if attempts < ATTEMPTS => backoff(&shared.polling, attempts - 1),
            ErrorClass::MinuteQuota if minute_waits < MINUTE_QUOTA_WAITS => {
                minute_waits += 1;
                attempts -= 1;
                Duration::from_secs(61)
            }
            ErrorClass::Config | ErrorClass::DailyQuota => {
                shared.stopped.lock().expect("not poisoned")[unit.app] = Some(error.clone());
                return Fetched::Failed(error, attempts);
            }
            _ => return Fetched::Failed(error, attempts),
        };
        tracing::debug!(app = %connection.app.name, report = %unit.report, period = %unit.period, error = %error, "retrying");
        shared
            .clock
            .sleep_until(now + chrono::Duration::from_std(wait).unwrap_or_default())
            .await;
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Series (distinct label sets).
    pub series: usize,
    /// Samples.
    pub samples: usize,
}

impl History {
    /// The counts of the run.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            fetched: 0,
            skipped: 0,
            failed: Vec::new(),
            late: self.plan.late,
            datacube_calls: self.calls.datacube.load(Ordering::Relaxed),
            token_calls: self.calls.token.load(Ordering::Relaxed),
        };
        for unit in &self.plan.units {
            match self.results.get(unit) {
                Some(Fetched::Data(_)) => summary.fetched += 1,
                Some(Fetched::Empty) => summary.skipped += 1,
                Some(Fetched::Failed(error, attempts)) => {
                    let app = &self.plan.apps[unit.app].name;
                    let error = match error.remedy() {
                        Some(fix) => format!("{error}; fix: {}", fix.replace("<name>", app)),
                        None => error.to_string(),
                    };
                    summary.failed.push(Failure {
                        app: app.clone(),
                        report: unit.report,
                        period: unit.period,
                        error,
                        attempts: *attempts,
                    });
                }
                None => {}
            }
        }
        summary
    }

    /// Writes the history as OpenMetrics text, ending with `# EOF`.
    pub fn write_openmetrics(&self, out: &mut dyn Write) -> io::Result<Written> {
        let mut families = Families::default();
        for app in 0..self.plan.apps.len() {
            self.replay(app, &mut families);
        }
        families.write(out, self.plan.step.as_secs() as i64)
    }

    /// The data of `app` for `report` and `period`, if WeChat gave it.
    fn data(&self, app: usize, report: Report, period: Period) -> Option<&Data> {
        match self.results.get(&Unit {
            app,
            report,
            period,
        }) {
            Some(Fetched::Data(data)) => Some(data),
            _ => None,
        }
    }

    /// What the agent would have held for `report` and `period`.
    fn snapshot(&self, app: usize, report: Report, period: Period) -> Option<Snapshot> {
        if report == Report::Retention {
            // As in the agent: lag k from the cohort k periods back, only once the newest
            // cohort is published.
            self.data(app, report, period)?;
            let cohorts = retention_lags(period.kind())
                .iter()
                .map(|&lag| {
                    let cohort = match self.data(app, report, period.back(lag)) {
                        Some(Data::Retention(retention)) => Some(retention.clone()),
                        _ => None,
                    };
                    (lag, cohort)
                })
                .collect();
            return Some(Snapshot::Retention(retention_view(period, &cohorts)));
        }
        Some(match self.data(app, report, period)?.clone() {
            Data::Trend(trend) => Snapshot::Trend(trend),
            Data::Distribution(distribution) => Snapshot::Distribution(distribution),
            Data::Pages(pages) => Snapshot::Pages(top_pages(pages, self.plan.pages_top)),
            Data::Retention(_) => return None,
        })
    }

    /// Plays the periods of `app` in the order they would have appeared, rendering what
    /// `/metrics` showed between one change and the next.
    fn replay(&self, app: usize, families: &mut Families) {
        let mut events: Vec<(DateTime<Utc>, Report, PeriodKind, Period)> = Vec::new();
        for report in Report::ALL {
            for &kind in report.kinds() {
                for &period in &self.plan.periods[&kind] {
                    events.push((self.plan.visible(period), report, kind, period));
                }
            }
        }
        events.sort();
        let config = &self.plan.apps[app];
        let mut state = AppData {
            name: config.name.clone(),
            appid: config.appid.clone(),
            up: true,
            held: BTreeMap::new(),
        };
        let mut text = String::new();
        let mut index = 0;
        while index < events.len() {
            let at = events[index].0;
            if at >= self.plan.end {
                break;
            }
            while index < events.len() && events[index].0 == at {
                let (_, report, kind, period) = events[index];
                if let Some(snapshot) = self.snapshot(app, report, period) {
                    state.held.insert(
                        (report, kind),
                        Held {
                            period,
                            fetched_at: at,
                            snapshot,
                        },
                    );
                }
                index += 1;
            }
            // Unchanged values join the span before (see `Families::add`).
            if state.held.is_empty() {
                continue;
            }
            let until = events
                .get(index)
                .map_or(self.plan.end, |next| next.0)
                .min(self.plan.end);
            text.clear();
            render_data(std::slice::from_ref(&state), &mut text);
            families.add(&text, at.timestamp(), until.timestamp());
        }
    }
}

/// The families of the whole history, in the order first seen.
#[derive(Default)]
struct Families {
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
}

struct Family {
    header: String,
    series: Vec<Series>,
    by_key: HashMap<String, usize>,
}

/// One label set and the spans of time over which it held each value.
struct Series {
    key: String,
    spans: Vec<(i64, i64, f64)>,
}

impl Families {
    /// Adds a rendered exposition that held from `start` until `end` (Unix seconds).
    fn add(&mut self, text: &str, start: i64, end: i64) {
        let mut current = None;
        let mut fresh = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                fresh = !self.by_name.contains_key(name);
                let index = *self.by_name.entry(name.to_string()).or_insert_with(|| {
                    self.families.push(Family {
                        header: String::new(),
                        series: Vec::new(),
                        by_key: HashMap::new(),
                    });
                    self.families.len() - 1
                });
                current = Some(index);
                if fresh {
                    self.families[index].header = format!("{line}\n");
                }
            } else if line.starts_with("# TYPE ") {
                if let Some(index) = current.filter(|_| fresh) {
                    let header = &mut self.families[index].header;
                    header.push_str(line);
                    header.push('\n');
                }
            } else if let (Some(index), Some((key, value))) = (current, line.rsplit_once(' ')) {
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                let family = &mut self.families[index];
                let at = *family.by_key.entry(key.to_string()).or_insert_with(|| {
                    family.series.push(Series {
                        key: key.to_string(),
                        spans: Vec::new(),
                    });
                    family.series.len() - 1
                });
                let spans = &mut family.series[at].spans;
                match spans.last_mut() {
                    // The same value right after: one span, so the repetitions keep their step.
                    Some(last) if last.1 == start && last.2.to_bits() == value.to_bits() => {
                        last.1 = end;
                    }
                    _ => spans.push((start, end, value)),
                }
            }
        }
    }

    fn write(&self, out: &mut dyn Write, step: i64) -> io::Result<Written> {
        let mut written = Written::default();
        for family in &self.families {
            if family.series.is_empty() {
                continue;
            }
            out.write_all(family.header.as_bytes())?;
            for series in &family.series {
                written.series += 1;
                for &(start, end, value) in &series.spans {
                    let value = format_value(value);
                    let mut at = start;
                    while at < end {
                        writeln!(out, "{} {value} {at}", series.key)?;
                        written.samples += 1;
                        at += step;
                    }
                }
            }
        }
        out.write_all(b"# EOF\n")?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn config() -> Config {
        Config::from_toml(
            "[apps.shop]\nappid = \"wx1111111111111111\"\nsecret = \"s\"\n[apps.news]\nappid = \"wx2222222222222222\"\nsecret = \"s\"\n",
        )
        .unwrap()
    }

    fn options(from: &str, to: Option<&str>) -> Options {
        Options {
            from: day(from),
            to: to.map(day),
            apps: Vec::new(),
            step: Duration::from_secs(86_400),
            published_at: default_published_at(),
        }
    }

    #[test]
    fn a_period_appears_when_it_is_published() {
        let day_one = Period::containing(PeriodKind::Daily, day("2024-03-10"));
        // 10:00 Beijing on March 11 is 02:00 UTC.
        assert_eq!(
            visible(day_one, default_published_at()),
            utc("2024-03-11T02:00:00Z")
        );
        let week = Period::containing(PeriodKind::Weekly, day("2024-03-10"));
        assert_eq!(
            visible(week, default_published_at()),
            utc("2024-03-11T02:00:00Z")
        );
        let month = Period::containing(PeriodKind::Monthly, day("2024-02-10"));
        assert_eq!(
            visible(month, NaiveTime::from_hms_opt(15, 30, 0).unwrap()),
            utc("2024-03-01T07:30:00Z")
        );
    }

    #[test]
    fn each_period_and_retention_cohort_is_fetched_once() {
        let plan = plan(
            &config(),
            &options("2024-03-01", Some("2024-03-31")),
            utc("2024-06-01T00:00:00Z"),
        )
        .unwrap();
        let unique: BTreeSet<Unit> = plan.units.iter().copied().collect();
        assert_eq!(unique.len(), plan.units.len());
        // Per app: 31 days of trend, distribution and pages; daily cohorts from Jan 31 (lag 30
        // of March 1) to March 31; weeks ending Mar 3..31 and their cohorts 4 weeks back;
        // March and its cohort February.
        let of = |app: usize, report: Report, kind: PeriodKind| {
            plan.units
                .iter()
                .filter(|u| u.app == app && u.report == report && u.period.kind() == kind)
                .count()
        };
        assert_eq!(of(0, Report::VisitTrend, PeriodKind::Daily), 31);
        assert_eq!(of(0, Report::VisitPage, PeriodKind::Daily), 31);
        assert_eq!(of(0, Report::VisitTrend, PeriodKind::Weekly), 5);
        assert_eq!(of(0, Report::Retention, PeriodKind::Weekly), 9);
        assert_eq!(of(0, Report::Retention, PeriodKind::Monthly), 2);
        let daily_cohorts: BTreeSet<NaiveDate> = plan
            .units
            .iter()
            .filter(|u| {
                u.app == 1 && u.report == Report::Retention && u.period.kind() == PeriodKind::Daily
            })
            .map(|u| u.period.start())
            .collect();
        assert_eq!(daily_cohorts.first(), Some(&day("2024-01-31")));
        assert!(
            daily_cohorts.contains(&day("2024-02-16")),
            "lag 14 of March 1"
        );
        assert_eq!(
            daily_cohorts.len(),
            61,
            "Jan 31 to Mar 31: lags 30, 14 and 0..7 leave no gap"
        );
        assert_eq!(plan.fetches(), plan.units.len());
        assert_eq!(plan.late, 0);
        assert_eq!(plan.end, utc("2024-04-02T02:00:00Z"));
    }

    #[test]
    fn the_last_three_hours_are_left_to_the_running_exporter() {
        // 11:00 Beijing: yesterday was published at 10:00, inside the head block.
        let plan = plan(
            &config(),
            &options("2024-03-01", None),
            utc("2024-03-11T03:00:00Z"),
        )
        .unwrap();
        assert_eq!(plan.to, day("2024-03-10"));
        assert_eq!(
            plan.periods[&PeriodKind::Daily].last().unwrap().start(),
            day("2024-03-09")
        );
        // Yesterday's 4 daily reports and the week ending yesterday (trend and retention), per app.
        assert_eq!(plan.late, 2 * (4 + 2));
        assert_eq!(plan.end, utc("2024-03-11T00:00:00Z"));
    }

    #[test]
    fn bad_flags_are_explained() {
        let now = utc("2024-03-11T03:00:00Z");
        let error = plan(&config(), &options("2024-03-01", Some("2024-03-11")), now).unwrap_err();
        assert!(
            error.contains("--to 2024-03-11") && error.contains("2024-03-10"),
            "{error}"
        );
        let error = plan(&config(), &options("2024-03-05", Some("2024-03-01")), now).unwrap_err();
        assert!(
            error.contains("--from 2024-03-05 is after --to 2024-03-01"),
            "{error}"
        );
        let error = plan(&config(), &options("2016-12-01", None), now).unwrap_err();
        assert!(error.contains("2017"), "{error}");
        let mut bad = options("2024-03-01", None);
        bad.apps = vec!["shop".into(), "mall".into()];
        let error = plan(&config(), &bad, now).unwrap_err();
        assert!(
            error.contains("--app mall") && error.contains("configured: news, shop"),
            "{error}"
        );
        let mut bad = options("2024-03-01", None);
        bad.step = Duration::from_secs(30);
        assert!(plan(&config(), &bad, now)
            .unwrap_err()
            .contains("--step 30s"));
    }

    #[test]
    fn a_value_repeats_every_step_while_it_is_current() {
        let mut families = Families::default();
        let text = "# HELP m A gauge.\n# TYPE m gauge\nm{app=\"a\"} 5\nm{app=\"b\"} 1\n";
        families.add(text, 1000, 1300);
        families.add(
            "# HELP m A gauge.\n# TYPE m gauge\nm{app=\"a\"} 5\n",
            1300,
            1400,
        );
        families.add(
            "# HELP m A gauge.\n# TYPE m gauge\nm{app=\"a\"} 7\n",
            1400,
            1450,
        );
        let mut out = Vec::new();
        let written = families.write(&mut out, 120).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP m A gauge.\n# TYPE m gauge\n\
             m{app=\"a\"} 5 1000\nm{app=\"a\"} 5 1120\nm{app=\"a\"} 5 1240\nm{app=\"a\"} 5 1360\n\
             m{app=\"a\"} 7 1400\n\
             m{app=\"b\"} 1 1000\nm{app=\"b\"} 1 1120\nm{app=\"b\"} 1 1240\n# EOF\n"
        );
        assert_eq!(
            written,
            Written {
                series: 2,
                samples: 8
            }
        );
    }

    #[test]
    fn progress_shows_a_bar_and_the_time_left() {
        let progress = Progress::new(200);
        assert_eq!(progress.line(10), "[----------] 0/200 periods (0%)");
        progress.done.store(50, Ordering::Relaxed);
        progress.failed.store(2, Ordering::Relaxed);
        let line = progress.line(10);
        assert!(
            line.starts_with("[##--------] 50/200 periods (25%), 2 failed, ETA "),
            "{line}"
        );
        progress.done.store(200, Ordering::Relaxed);
        assert!(progress
            .line(0)
            .starts_with("200/200 periods (100%), 2 failed, took "));
    }
}
