//! What a configuration costs before it runs: per app, the WeChat calls a day in steady state
//! (by endpoint group) and the series it exports at most, computed from the registry and the
//! app's own report settings as the poller asks (`check-config --cost`).
//!
//! Steady state is an app whose publication hour is learned: each period of each enabled
//! report is fetched once with the calls the report makes for it, a week's and a month's
//! calls spread over their days; the report that gates a kind finds its period unpublished
//! about once before it is out (one probe a period); a refreshing report (the quota) asks on
//! its interval; an AppSecret-based token is fetched once per window of calls (the daily
//! round, and each refresh), at most every two hours. A token from a URL or a file costs no
//! WeChat call.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::config::Config;
use crate::domain::{App, TokenSource};
use crate::period::{Period, PeriodKind};
use crate::report::{Report, Settings as ReportSettings};

/// The endpoint groups, in the order they are shown.
pub const GROUPS: [&str; 5] = ["datacube", "performance", "js_errors", "quota", "token"];

/// Series of the exporter's own for each job (report and kind): its period's start, its last
/// success, and the four states of `wechat_miniprogram_report_status`.
const SERIES_PER_JOB: usize = 2 + 4;

/// Series of the exporter's own for each app: `up`, `app_info`, token fetches by outcome.
const SERIES_PER_APP: usize = 1 + 1 + 2;

/// What one app costs.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// The app's name.
    pub app: String,
    /// WeChat calls a day, by endpoint group ([`GROUPS`]).
    pub calls: BTreeMap<&'static str, f64>,
    /// Series exported at most.
    pub series: usize,
}

impl Cost {
    /// Calls a day in all.
    pub fn calls_a_day(&self) -> f64 {
        self.calls.values().sum()
    }
}

/// The group of the endpoint at `path`.
pub fn group(path: &str) -> &'static str {
    if path.starts_with("datacube/") {
        "datacube"
    } else if path.starts_with("wxaapi/log/jserr") {
        "js_errors"
    } else if path.starts_with("cgi-bin/openapi/quota") {
        "quota"
    } else if path.contains("token") {
        "token"
    } else {
        "performance"
    }
}

/// How many periods of `kind` end a day, on average.
fn per_day(kind: PeriodKind) -> f64 {
    match kind {
        PeriodKind::Daily => 1.0,
        PeriodKind::Weekly => 1.0 / 7.0,
        PeriodKind::Monthly => 12.0 / 365.25,
    }
}

/// What `app` costs with `reports`, its report settings.
pub fn of_app(app: &App, reports: &ReportSettings) -> Cost {
    let mut calls: BTreeMap<&'static str, f64> = GROUPS.iter().map(|group| (*group, 0.0)).collect();
    let mut series = SERIES_PER_APP;
    let mut endpoints: Vec<&'static str> = Vec::new();
    let mut windows = 1.0;
    let sample_day = NaiveDate::from_ymd_opt(2024, 6, 4).expect("a date");
    for report in Report::all().filter(|report| report.is_enabled(reports)) {
        for kind in report.kinds() {
            let period = Period::containing(*kind, sample_day);
            let asked = report.calls(period, reports);
            let (count, rate) = match report.refresh(reports) {
                Some(every) => {
                    let rounds = 86_400.0 / every.as_secs_f64().max(1.0);
                    windows += rounds;
                    (asked.len() as f64, rounds)
                }
                None if report.gates() => (asked.len() as f64 + 1.0, per_day(*kind)),
                None => (asked.len() as f64, per_day(*kind)),
            };
            if let Some(call) = asked.first() {
                *calls.entry(group(call.path)).or_default() += count * rate;
            }
            for call in &asked {
                if !endpoints.contains(&call.path) {
                    endpoints.push(call.path);
                }
            }
            series += report.max_series(*kind, reports) + SERIES_PER_JOB;
        }
    }
    if matches!(
        app.token,
        TokenSource::StableToken(_) | TokenSource::Token(_)
    ) {
        // A token lives two hours: at most twelve a day.
        *calls.entry("token").or_default() += f64::min(windows, 12.0);
    }
    // The request counter of each endpoint asked.
    series += endpoints.len();
    Cost {
        app: app.name.clone(),
        calls,
        series,
    }
}

/// What every app of `config` costs, each with its own report settings.
pub fn of_config(config: &Config) -> Vec<Cost> {
    let apps = config.apps.iter();
    apps.map(|app| of_app(app, &config.reports_of(&app.name)))
        .collect()
}

/// The lines `check-config --cost` prints: one per app, then the total.
pub fn lines(costs: &[Cost]) -> Vec<String> {
    let row = |name: &str, calls: &BTreeMap<&'static str, f64>, series: usize| {
        let groups: Vec<String> = GROUPS
            .iter()
            .map(|group| format!("{group} {:.1}", calls.get(group).copied().unwrap_or(0.0)))
            .collect();
        let total: f64 = calls.values().sum();
        format!(
            "  {name}: {total:.1} calls a day ({}), {series} series at most",
            groups.join(", ")
        )
    };
    let mut lines = vec![
        "cost in steady state (WeChat calls a day, by endpoint group; series exported):"
            .to_string(),
    ];
    let mut total: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut series = 0;
    for cost in costs {
        lines.push(row(&cost.app, &cost.calls, cost.series));
        for (group, calls) in &cost.calls {
            *total.entry(group).or_default() += calls;
        }
        series += cost.series;
    }
    lines.push(row(
        &format!("total of {} Mini Program(s)", costs.len()),
        &total,
        series,
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, Secret};
    use crate::report::ReportSet;

    fn app(token: TokenSource) -> App {
        App {
            name: "shop".into(),
            appid: AppId::parse("wx1234567890abcdef").unwrap(),
            token,
            labels: Vec::new(),
        }
    }

    #[test]
    fn the_default_reports_cost_what_the_readme_lists_and_the_portrait_most_of_the_series() {
        let cost = of_app(
            &app(TokenSource::StableToken(Secret::new("s"))),
            &ReportSettings::default(),
        );
        // Datacube: trend 1 + 1 probe a day (and a week's and a month's, spread), retention
        // 10 (5 a week, 2 a month), distribution, pages, summary 1 each, portrait 3.
        let week = 1.0 / 7.0;
        let month = 12.0 / 365.25;
        let datacube = 2.0 + 2.0 * week + 2.0 * month + 10.0 + 5.0 * week + 2.0 * month + 3.0 + 3.0;
        assert!((cost.calls["datacube"] - datacube).abs() < 1e-9, "{cost:?}");
        assert_eq!(cost.calls["performance"], 3.0 + 5.0);
        assert_eq!(cost.calls["js_errors"], 3.0);
        assert_eq!(cost.calls["quota"], 0.0);
        assert_eq!(cost.calls["token"], 1.0);
        // The portrait alone: 30 entries x 6 dimensions x 2 cohorts x 3 ranges.
        let without = ReportSettings {
            enabled: ReportSet::defaults().without(Report::by_name("user_portrait").unwrap()),
            ..ReportSettings::default()
        };
        let rest = of_app(&app(TokenSource::Url("http://t".into())), &without);
        assert_eq!(cost.series - rest.series, 1080 + SERIES_PER_JOB + 1);
        assert_eq!(rest.calls["token"], 0.0, "a token service is not WeChat");
    }

    #[test]
    fn the_quota_asks_every_interval_and_needs_a_token_each_time() {
        let reports = ReportSettings {
            enabled: ReportSet::of([
                Report::by_name("visit_trend").unwrap(),
                Report::by_name("quota").unwrap(),
            ]),
            quota_interval: std::time::Duration::from_secs(6 * 3600),
            ..ReportSettings::default()
        };
        let cost = of_app(&app(TokenSource::Token(Secret::new("s"))), &reports);
        // The quota of the 3 visit trend paths, 4 times a day; a token for each and the round.
        assert_eq!(cost.calls["quota"], 3.0 * 4.0);
        assert_eq!(cost.calls["token"], 5.0);
        let lines = lines(&[cost.clone(), cost]);
        assert_eq!(lines.len(), 4);
        assert!(
            lines[3].starts_with("  total of 2 Mini Program(s): "),
            "{lines:?}"
        );
        assert!(lines[3].contains("quota 24.0"), "{lines:?}");
    }
}
