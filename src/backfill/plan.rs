//! The plan of a backfill: the flags checked against the configuration and the present, and
//! every call to make, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};

use super::{Options, HEAD_BLOCK};
use crate::config::Config;
use crate::cost::{group, GROUPS};
use crate::domain::App;
use crate::period::{beijing_date, beijing_midnight, Period, PeriodKind};
use crate::report::Report;
use crate::report::Settings as ReportSettings;
use crate::wechat::Call;

/// One call to make: a call of a report of an app. Calls that several periods share (a
/// retention cohort serves ten daily periods) are one unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unit {
    /// The app, by its number in `Plan::apps`.
    pub app: usize,
    /// The report.
    pub report: Report,
    /// The call.
    pub call: Call,
}

/// The periods of each (report, kind) of one app.
pub type Periods = BTreeMap<(Report, PeriodKind), Vec<Period>>;

/// What a backfill will fetch and write, checked before any call.
#[derive(Debug)]
pub struct Plan {
    pub(super) apps: Vec<App>,
    from: NaiveDate,
    to: NaiveDate,
    pub(super) step: Duration,
    published_at: NaiveTime,
    /// Each app's report settings, by its number.
    pub(super) reports: Vec<ReportSettings>,
    /// Per app, the periods its replay shows: those fetched and, with `--missing`, the one
    /// after each (held by the running exporter), where the one before stops.
    pub(super) shown: Vec<Periods>,
    /// `--missing`: a period not fetched ends the one before (it is not shown on).
    pub(super) gaps_only: bool,
    /// The calendar each day's kind is told from.
    pub(super) calendar: std::sync::Arc<crate::calendar::Calendar>,
    /// Every call, each once, oldest first.
    pub(super) units: Vec<Unit>,
    /// (app, report, period)s of the range published after the cutoff.
    pub(super) late: usize,
    /// Where the history stops: 3 hours before the run, or when the period after `to` would
    /// have replaced the last one.
    pub(super) end: DateTime<Utc>,
}

impl Plan {
    /// The calls to make (each once).
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

    /// What `--dry-run` prints: per app, the calls to make by endpoint group (retries and
    /// tokens aside), then the total.
    pub fn calls_by_app(&self) -> Vec<String> {
        let mut per_app = vec![BTreeMap::<&str, usize>::new(); self.apps.len()];
        for unit in &self.units {
            *per_app[unit.app].entry(group(unit.call.path)).or_default() += 1;
        }
        let line = |name: &str, groups: &BTreeMap<&str, usize>| {
            let total: usize = groups.values().sum();
            let shown: Vec<String> = GROUPS
                .iter()
                .filter_map(|group| Some(format!("{group} {}", groups.get(group)?)))
                .collect();
            format!("  {name}: {total} calls ({})", shown.join(", "))
        };
        let mut lines = vec!["backfill --dry-run: the calls it would make (each once; retries and tokens aside), and none made:".to_string()];
        let mut all = BTreeMap::new();
        for (app, groups) in self.apps.iter().zip(&per_app) {
            lines.push(line(&app.name, groups));
            for (group, calls) in groups {
                *all.entry(*group).or_default() += calls;
            }
        }
        lines.push(line(
            &format!("total of {} Mini Program(s)", self.apps.len()),
            &all,
        ));
        lines
    }

    /// When the period would have appeared on `/metrics`.
    pub(super) fn visible(&self, period: Period) -> DateTime<Utc> {
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
    check_step(options.step)?;
    let apps = chosen_apps(config, &options.apps)?;
    let reports: Vec<ReportSettings> = apps
        .iter()
        .map(|app| config.reports_of(&app.name))
        .collect();
    let cutoff = now - chrono::Duration::from_std(HEAD_BLOCK).expect("3 hours fit");
    let published = |period: &Period| visible(*period, options.published_at) < cutoff;
    let storage = config.storage.as_deref().filter(|_| options.missing);
    let (from, to, wanted) = match storage {
        Some(storage) => missing(storage, &apps, &reports, options, now)?,
        None if options.missing => {
            return Err("--missing needs --storage.path: the state directory of the exporter whose gaps to fill".into());
        }
        None => {
            let (from, to) = range(options, now)?;
            let wanted = reports
                .iter()
                .map(|reports| in_range(reports, from, to))
                .collect();
            (from, to, wanted)
        }
    };
    let mut late = 0;
    let mut fetched: Vec<Periods> = Vec::new();
    for periods in wanted {
        let mut ready = Periods::new();
        for (job, list) in periods {
            let (now_ready, after): (Vec<Period>, Vec<Period>) =
                list.into_iter().partition(published);
            late += after.len();
            ready.insert(job, now_ready);
        }
        fetched.push(ready);
    }
    let units = units(&fetched, &reports);
    let shown = if options.missing {
        fetched.iter().map(with_next).collect()
    } else {
        fetched
    };
    let last_day = Period::containing(PeriodKind::Daily, to);
    let end = cutoff.min(visible(last_day.next(), options.published_at));
    Ok(Plan {
        apps,
        from,
        to,
        step: options.step,
        published_at: options.published_at,
        reports,
        shown,
        gaps_only: options.missing,
        calendar: config.calendar.clone(),
        units,
        late,
        end,
    })
}

/// Every period of every backfilled report of `reports` that ends from `from` to `to`.
fn in_range(reports: &ReportSettings, from: NaiveDate, to: NaiveDate) -> Periods {
    let mut periods = Periods::new();
    for report in Report::all().filter(|report| report.is_backfilled(reports)) {
        for &kind in report.kinds() {
            periods.insert((report, kind), Period::ending_within(kind, from, to));
        }
    }
    periods
}

/// `--missing`: the periods no running exporter held, as the state under `storage` records
/// them, of the backfilled reports of each app (within `--from` and `--to` if given), and the
/// range they span.
fn missing(
    storage: &std::path::Path,
    apps: &[App],
    reports: &[ReportSettings],
    options: &Options,
    now: DateTime<Utc>,
) -> Result<(NaiveDate, NaiveDate, Vec<Periods>), String> {
    if !storage.join("apps").is_dir() {
        return Err(format!(
            "--missing: {} holds no exporter state; give the --storage.path of the exporter whose gaps to fill",
            storage.display()
        ));
    }
    let yesterday = beijing_date(now) - Days::new(1);
    let from = options.from.unwrap_or(NaiveDate::MIN);
    let to = options.to.unwrap_or(yesterday);
    let mut wanted = Vec::new();
    let (mut first, mut last) = (yesterday, NaiveDate::MIN);
    for (app, reports) in apps.iter().zip(reports) {
        let mut periods = Periods::new();
        for ((report, kind), list) in crate::state::read_gaps(storage, &app.appid) {
            if !report.is_backfilled(reports) {
                continue;
            }
            let list: Vec<Period> = list
                .into_iter()
                .filter(|period| period.start() >= from && period.end() <= to)
                .collect();
            for period in &list {
                first = first.min(period.start());
                last = last.max(period.end());
            }
            periods.insert((report, kind), list);
        }
        wanted.push(periods);
    }
    if last < first {
        (first, last) = (yesterday, yesterday);
    }
    Ok((first, last, wanted))
}

/// `periods` with the period after each, where it stops.
fn with_next(periods: &Periods) -> Periods {
    periods
        .iter()
        .map(|(job, list)| {
            let mut shown: Vec<Period> = list
                .iter()
                .flat_map(|period| [*period, period.next()])
                .collect();
            shown.sort();
            shown.dedup();
            (*job, shown)
        })
        .collect()
}

/// The days asked for: `--to` (default yesterday) must have ended, `--from` must come before
/// it and not before Mini Programs existed.
fn range(options: &Options, now: DateTime<Utc>) -> Result<(NaiveDate, NaiveDate), String> {
    let yesterday = beijing_date(now) - Days::new(1);
    let to = options.to.unwrap_or(yesterday);
    if to > yesterday {
        return Err(format!(
            "--to {to}: that day has not ended in Beijing time; the latest day WeChat can answer is {yesterday}"
        ));
    }
    let Some(from) = options.from else {
        return Err(
            "--from is needed (or --missing, to fill what the exporter did not hold)".into(),
        );
    };
    if from > to {
        return Err(format!("--from {from} is after --to {to}"));
    }
    let first = NaiveDate::from_ymd_opt(2017, 1, 1).expect("a valid date");
    if from < first {
        return Err(format!(
            "--from {from}: Mini Programs, and their analytics, start in January 2017; use {first} or later"
        ));
    }
    Ok((from, to))
}

fn check_step(step: Duration) -> Result<(), String> {
    if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&step)
        || step.subsec_nanos() != 0
    {
        return Err(format!(
            "--step {}: use whole seconds from 1m to 1d; 1d (the default) suits queries over [1d] windows, 5m makes history visible to plain selectors",
            humantime::format_duration(step)
        ));
    }
    Ok(())
}

/// The apps named by `--app` (each once), or every configured app.
fn chosen_apps(config: &Config, names: &[String]) -> Result<Vec<App>, String> {
    if names.is_empty() {
        return Ok(config.apps.clone());
    }
    let mut chosen: Vec<App> = Vec::new();
    for name in names {
        let Some(app) = config.apps.iter().find(|app| &app.name == name) else {
            let known: Vec<&str> = config.apps.iter().map(|app| app.name.as_str()).collect();
            return Err(format!(
                "--app {name}: no such app in the configuration; configured: {}",
                known.join(", ")
            ));
        };
        if !chosen.iter().any(|other| other.name == app.name) {
            chosen.push(app.clone());
        }
    }
    Ok(chosen)
}

/// Every call of each app's `periods`, each once; oldest first, the apps side by side, so
/// that progress is even and a late failure costs little.
fn units(periods: &[Periods], reports: &[ReportSettings]) -> Vec<Unit> {
    let mut units = BTreeSet::new();
    for (app, (periods, reports)) in periods.iter().zip(reports).enumerate() {
        for (&(report, _), list) in periods {
            for call in report.history_calls(list, reports) {
                units.insert(Unit { app, report, call });
            }
        }
    }
    let mut units: Vec<Unit> = units.into_iter().collect();
    units.sort_by_key(|unit| {
        (
            unit.call.asks.start(),
            unit.call.asks.kind(),
            unit.app,
            unit.report,
        )
    });
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::default_published_at;

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
            from: Some(day(from)),
            to: to.map(day),
            apps: Vec::new(),
            step: Duration::from_secs(86_400),
            published_at: default_published_at(),
            missing: false,
            dry_run: false,
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
        let unique: BTreeSet<&Unit> = plan.units.iter().collect();
        assert_eq!(unique.len(), plan.units.len());
        // Per app: 31 days of trend, distribution and pages; daily cohorts from Jan 31 (lag 30
        // of March 1) to March 31; weeks ending Mar 3..31 and their cohorts 4 weeks back;
        // March and its cohort February.
        let of = |app: usize, report: &str, kind: PeriodKind| {
            plan.units
                .iter()
                .filter(|u| u.app == app && u.report.name() == report && u.call.asks.kind() == kind)
                .count()
        };
        assert_eq!(of(0, "visit_trend", PeriodKind::Daily), 31);
        assert_eq!(of(0, "visit_page", PeriodKind::Daily), 31);
        assert_eq!(of(0, "visit_trend", PeriodKind::Weekly), 5);
        assert_eq!(of(0, "retention", PeriodKind::Weekly), 9);
        assert_eq!(of(0, "retention", PeriodKind::Monthly), 2);
        let daily_cohorts: BTreeSet<NaiveDate> = plan
            .units
            .iter()
            .filter(|u| {
                u.app == 1
                    && u.report.name() == "retention"
                    && u.call.asks.kind() == PeriodKind::Daily
            })
            .map(|u| u.call.asks.start())
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
            plan.shown[0][&(Report::by_name("visit_trend").unwrap(), PeriodKind::Daily)]
                .last()
                .unwrap()
                .start(),
            day("2024-03-09")
        );
        // Yesterday's 8 daily reports with history (not the portrait) and the week ending
        // yesterday (trend and retention), per app.
        assert_eq!(plan.late, 2 * (8 + 2));
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
}
