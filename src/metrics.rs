//! Snapshots to Prometheus text: every metric name, label and HELP text lives here.
//!
//! [`render`] is pure: it writes the exposition of the held snapshots of every app, then the
//! exporter's own counters. Each WeChat series carries `appid` and `app` plus exactly the
//! labels its table in the README lists. A figure WeChat did not send is left out, never
//! written as 0, and no sample carries a timestamp. A family with no sample is left out.
//!
//! [`SelfMetrics`] counts what the client does (requests, errors by errcode, latency, token
//! fetches) with the `prometheus` crate, and remembers that it changed so that the store
//! knows when to render again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::config::{App, Shard};
use crate::period::PeriodKind;
use crate::poller::{Held, Snapshot};
use crate::wechat::client::Observer;
use crate::wechat::{Report, WeChatError};

/// Appended to the HELP of every WeChat data family.
const CACHED: &str = "Cached daily/weekly/monthly data from the WeChat datacube API, fetched once per published period.";

/// What the exporter holds of one app, as rendered.
#[derive(Clone, Debug, Default)]
pub struct AppData {
    /// The `app` label.
    pub name: String,
    /// The `appid` label.
    pub appid: String,
    /// Whether the app's last attempt succeeded.
    pub up: bool,
    /// The period held per (report, kind).
    pub held: BTreeMap<(Report, PeriodKind), Held>,
}

/// The source group names of `access_source_*` keys (the seed's key table), in snake_case.
pub fn source_name(key: i64) -> &'static str {
    match key {
        1 => "history_list",
        2 => "search",
        3 => "chat",
        4 => "scan_qr_code",
        5 => "official_account_profile",
        6 => "chat_top_bar",
        7 => "system_desktop",
        8 => "mini_program_profile",
        9 => "nearby_mini_programs",
        10 => "other",
        11 => "template_message",
        13 => "official_account_menu",
        14 => "app_share",
        15 => "payment_done_page",
        16 => "long_press_qr_code",
        17 => "qr_code_from_album",
        18 => "official_account_article",
        19 => "wallet",
        20 => "card_bag",
        21 => "card_in_mini_program",
        22 => "other_mini_program",
        23 => "back_from_other_mini_program",
        24 => "card_store_list",
        25 => "search_shortcut",
        26 => "customer_service_message",
        27 => "official_account_push",
        29 => "task_bar_recent",
        30 => "menu_dot_long_press",
        31 => "wifi_connected_page",
        32 => "city_services",
        33 => "wechat_ads",
        34 => "other_mobile_app",
        35 => "discover_my_mini_programs",
        36 => "task_bar_my_mini_programs",
        _ => "unknown",
    }
}

/// The bucket of an `access_staytime_info` key.
pub fn stay_time_bucket(key: i64) -> &'static str {
    match key {
        1 => "0-2s",
        2 => "3-5s",
        3 => "6-10s",
        4 => "11-20s",
        5 => "20-30s",
        6 => "30-50s",
        7 => "50-100s",
        8 => ">100s",
        _ => "unknown",
    }
}

/// The bucket of an `access_depth_info` key.
pub fn depth_bucket(key: i64) -> &'static str {
    match key {
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        5 => "5",
        6 => "6-10",
        7 => ">10",
        _ => "unknown",
    }
}

/// One family being written: the header goes out first and is taken back if no sample follows.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    start: usize,
    samples: usize,
}

impl<'a> Family<'a> {
    fn begin(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let start = out.len();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family {
            out,
            name,
            start,
            samples: 0,
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                escape_label_value(self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self.samples += 1;
    }

    fn end(self) {
        if self.samples == 0 {
            self.out.truncate(self.start);
        }
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the text formats write it.
pub(crate) fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// The held snapshots of one kind of report, for every app.
fn each_held<'a>(
    apps: &'a [AppData],
    report: Report,
) -> impl Iterator<Item = (&'a AppData, PeriodKind, &'a Held)> + 'a {
    apps.iter().flat_map(move |app| {
        report.kinds().iter().filter_map(move |kind| {
            app.held
                .get(&(report, *kind))
                .map(|held| (app, *kind, held))
        })
    })
}

type TrendField = fn(&crate::wechat::Trend) -> Option<f64>;

const TREND_FAMILIES: [(&str, &str, TrendField); 7] = [
    (
        "wechat_miniprogram_sessions",
        "Opens of the Mini Program (session_cnt) in the period.",
        |t| t.session_cnt,
    ),
    (
        "wechat_miniprogram_visit_pv",
        "Visits (visit_pv) in the period.",
        |t| t.visit_pv,
    ),
    (
        "wechat_miniprogram_visit_uv",
        "Visitors (visit_uv), de-duplicated over the period.",
        |t| t.visit_uv,
    ),
    (
        "wechat_miniprogram_visit_uv_new",
        "New visitors (visit_uv_new) in the period.",
        |t| t.visit_uv_new,
    ),
    (
        "wechat_miniprogram_stay_time_uv_seconds",
        "Average stay per visitor (stay_time_uv) in the period.",
        |t| t.stay_time_uv,
    ),
    (
        "wechat_miniprogram_stay_time_session_seconds",
        "Average stay per open (stay_time_session) in the period.",
        |t| t.stay_time_session,
    ),
    (
        "wechat_miniprogram_visit_depth",
        "Average pages per visit (visit_depth) in the period.",
        |t| t.visit_depth,
    ),
];

type PageField = fn(&crate::wechat::Page) -> Option<f64>;

const PAGE_FAMILIES: [(&str, &str, PageField); 7] = [
    (
        "wechat_miniprogram_page_visit_pv",
        "Visits of the page (page_visit_pv) on the day.",
        |p| p.visit_pv,
    ),
    (
        "wechat_miniprogram_page_visit_uv",
        "Visitors of the page (page_visit_uv) on the day.",
        |p| p.visit_uv,
    ),
    (
        "wechat_miniprogram_page_stay_time_seconds",
        "Average stay per visit of the page (page_staytime_pv) on the day.",
        |p| p.staytime_pv,
    ),
    (
        "wechat_miniprogram_page_entry_pv",
        "Visits that entered on the page (entrypage_pv) on the day.",
        |p| p.entry_pv,
    ),
    (
        "wechat_miniprogram_page_exit_pv",
        "Visits that left from the page (exitpage_pv) on the day.",
        |p| p.exit_pv,
    ),
    (
        "wechat_miniprogram_page_share_pv",
        "Shares of the page (page_share_pv) on the day.",
        |p| p.share_pv,
    ),
    (
        "wechat_miniprogram_page_share_uv",
        "Users who shared the page (page_share_uv) on the day.",
        |p| p.share_uv,
    ),
];

/// Writes the exposition of every app's held data, then `self_metrics`, into `out`.
pub fn render(apps: &[AppData], self_metrics: &SelfMetrics, out: &mut String) {
    render_data(apps, out);
    render_health(apps, out);
    self_metrics.render(apps, out);
}

/// Writes the families that carry WeChat's data (and the period each report holds), without
/// the exporter's health: what `backfill` writes for past periods.
pub fn render_data(apps: &[AppData], out: &mut String) {
    render_trends(apps, out);
    render_retention(apps, out);
    render_distribution(apps, out);
    render_pages(apps, out);
    render_ref_dates(apps, out);
}

fn render_trends(apps: &[AppData], out: &mut String) {
    for (name, help, field) in TREND_FAMILIES {
        let mut family = Family::begin(out, name, "gauge", &format!("{help} {CACHED}"));
        for (app, kind, held) in each_held(apps, Report::VisitTrend) {
            if let Snapshot::Trend(trend) = &held.snapshot {
                if let Some(value) = field(trend) {
                    family.sample(
                        &[
                            ("appid", &app.appid),
                            ("app", &app.name),
                            ("period", kind.as_str()),
                        ],
                        value,
                    );
                }
            }
        }
        family.end();
    }
}

fn render_retention(apps: &[AppData], out: &mut String) {
    let mut family = Family::begin(
        out,
        "wechat_miniprogram_retention_uv",
        "gauge",
        &format!("Users of a cohort (new: visit_uv_new, active: visit_uv) who came back lag periods later; lag 0 is the cohort size. Each lag comes from the newest cohort old enough to have it. {CACHED}"),
    );
    each_lag(apps, |app, kind, lag| {
        for (cohort, (_, kept)) in [("new", lag.new), ("active", lag.active)] {
            if let Some(kept) = kept {
                family.sample(
                    &[
                        ("appid", &app.appid),
                        ("app", &app.name),
                        ("period", kind.as_str()),
                        ("cohort", cohort),
                        ("lag", &lag.lag.to_string()),
                    ],
                    kept,
                );
            }
        }
    });
    family.end();

    let mut family = Family::begin(
        out,
        "wechat_miniprogram_retention_ratio",
        "gauge",
        &format!("Share (0-1) of a cohort that came back lag periods later: key lag / key 0 of the same cohort. {CACHED}"),
    );
    each_lag(apps, |app, kind, lag| {
        for (cohort, pair) in [("new", lag.new), ("active", lag.active)] {
            if let (Some(size), Some(kept)) = pair {
                if lag.lag >= 1 && size > 0.0 {
                    family.sample(
                        &[
                            ("appid", &app.appid),
                            ("app", &app.name),
                            ("period", kind.as_str()),
                            ("cohort", cohort),
                            ("lag", &lag.lag.to_string()),
                        ],
                        kept / size,
                    );
                }
            }
        }
    });
    family.end();

    let mut family = Family::begin(
        out,
        "wechat_miniprogram_retention_cohort_timestamp_seconds",
        "gauge",
        &format!("Start (00:00 Beijing time) of the cohort whose retention is exported for this lag. {CACHED}"),
    );
    each_lag(apps, |app, kind, lag| {
        let start = lag.cohort.start_instant().timestamp() as f64;
        family.sample(
            &[
                ("appid", &app.appid),
                ("app", &app.name),
                ("period", kind.as_str()),
                ("lag", &lag.lag.to_string()),
            ],
            start,
        );
    });
    family.end();
}

fn each_lag(
    apps: &[AppData],
    mut f: impl FnMut(&AppData, PeriodKind, &crate::poller::RetentionLag),
) {
    for (app, kind, held) in each_held(apps, Report::Retention) {
        if let Snapshot::Retention(lags) = &held.snapshot {
            for lag in lags {
                f(app, kind, lag);
            }
        }
    }
}

fn render_distribution(apps: &[AppData], out: &mut String) {
    let distributions = || {
        each_held(apps, Report::VisitDistribution).filter_map(|(app, _, held)| {
            match &held.snapshot {
                Snapshot::Distribution(distribution) => Some((app, distribution)),
                _ => None,
            }
        })
    };

    let mut family = Family::begin(out, "wechat_miniprogram_access_source_sessions", "gauge",
        &format!("Opens on the day by source group (access_source_session_cnt; key is WeChat's, source its name). {CACHED}"));
    for (app, distribution) in distributions() {
        for item in distribution
            .indexes
            .get("access_source_session_cnt")
            .into_iter()
            .flatten()
        {
            if let Some(value) = item.value {
                family.sample(
                    &[
                        ("appid", &app.appid),
                        ("app", &app.name),
                        ("key", &item.key.to_string()),
                        ("source", source_name(item.key)),
                    ],
                    value,
                );
            }
        }
    }
    family.end();

    let mut family = Family::begin(
        out,
        "wechat_miniprogram_access_source_uv",
        "gauge",
        &format!("Visitors on the day by source group (access_source_visit_uv). {CACHED}"),
    );
    for (app, distribution) in distributions() {
        // The service answers a separate index; old documentation describes a per-item field.
        let items: Vec<(i64, f64)> = match distribution.indexes.get("access_source_visit_uv") {
            Some(items) => items
                .iter()
                .filter_map(|item| Some((item.key, item.value?)))
                .collect(),
            None => distribution
                .indexes
                .get("access_source_session_cnt")
                .into_iter()
                .flatten()
                .filter_map(|item| Some((item.key, item.visit_uv?)))
                .collect(),
        };
        for (key, value) in items {
            family.sample(
                &[
                    ("appid", &app.appid),
                    ("app", &app.name),
                    ("key", &key.to_string()),
                    ("source", source_name(key)),
                ],
                value,
            );
        }
    }
    family.end();

    for (name, index, help, bucket) in [
        (
            "wechat_miniprogram_stay_time_distribution",
            "access_staytime_info",
            "Visits on the day by stay-time bucket (access_staytime_info).",
            stay_time_bucket as fn(i64) -> &'static str,
        ),
        (
            "wechat_miniprogram_visit_depth_distribution",
            "access_depth_info",
            "Visits on the day by pages-visited bucket (access_depth_info).",
            depth_bucket,
        ),
    ] {
        let mut family = Family::begin(out, name, "gauge", &format!("{help} {CACHED}"));
        for (app, distribution) in distributions() {
            for item in distribution.indexes.get(index).into_iter().flatten() {
                if let Some(value) = item.value {
                    family.sample(
                        &[
                            ("appid", &app.appid),
                            ("app", &app.name),
                            ("key", &item.key.to_string()),
                            ("bucket", bucket(item.key)),
                        ],
                        value,
                    );
                }
            }
        }
        family.end();
    }
}

fn render_pages(apps: &[AppData], out: &mut String) {
    for (name, help, field) in PAGE_FAMILIES {
        let mut family = Family::begin(
            out,
            name,
            "gauge",
            &format!("{help} Top pages by visits. {CACHED}"),
        );
        for (app, _, held) in each_held(apps, Report::VisitPage) {
            if let Snapshot::Pages(pages) = &held.snapshot {
                for page in pages {
                    if let Some(value) = field(page) {
                        family.sample(
                            &[
                                ("appid", &app.appid),
                                ("app", &app.name),
                                ("page", &page.path),
                            ],
                            value,
                        );
                    }
                }
            }
        }
        family.end();
    }
}

fn render_ref_dates(apps: &[AppData], out: &mut String) {
    let mut family = Family::begin(out, "wechat_miniprogram_ref_date_timestamp_seconds", "gauge",
        "Start (00:00 Beijing time) of the period whose values are exported, per report and period. time() minus this is the data's age.");
    for app in apps {
        for ((report, kind), held) in &app.held {
            family.sample(
                &[
                    ("appid", &app.appid),
                    ("app", &app.name),
                    ("report", report.as_str()),
                    ("period", kind.as_str()),
                ],
                held.period.start_instant().timestamp() as f64,
            );
        }
    }
    family.end();
}

fn render_health(apps: &[AppData], out: &mut String) {
    let mut family = Family::begin(
        out,
        "wechat_miniprogram_last_success_timestamp_seconds",
        "gauge",
        "When the exported period of this report was fetched from WeChat (Unix time).",
    );
    for app in apps {
        for ((report, kind), held) in &app.held {
            family.sample(
                &[
                    ("appid", &app.appid),
                    ("app", &app.name),
                    ("report", report.as_str()),
                    ("period", kind.as_str()),
                ],
                held.fetched_at.timestamp() as f64,
            );
        }
    }
    family.end();

    let mut family = Family::begin(out, "wechat_miniprogram_up", "gauge",
        "0 while the last attempt of some report of the app failed with an error, else 1 (not-yet-published data is not an error).");
    for app in apps {
        family.sample(
            &[("appid", &app.appid), ("app", &app.name)],
            if app.up { 1.0 } else { 0.0 },
        );
    }
    family.end();

    let mut family = Family::begin(
        out,
        "wechat_miniprogram_exporter_build_info",
        "gauge",
        "The exporter's version; always 1.",
    );
    family.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    family.end();
}

/// The exporter's own counters and latency histogram.
pub struct SelfMetrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    token_fetches: IntCounterVec,
    shard: IntGaugeVec,
    apps: IntGauge,
    changes: AtomicU64,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics::new()
    }
}

impl SelfMetrics {
    /// Registers every counter, at zero.
    pub fn new() -> SelfMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wechat_miniprogram_api_requests_total",
                "Requests sent to the WeChat API, by endpoint.",
            ),
            &["appid", "app", "endpoint"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("wechat_miniprogram_api_errors_total", "Failed WeChat API requests, by WeChat errcode or http_<status>, timeout, decode, connect. Not-yet-published answers (61503) are not errors."),
            &["appid", "app", "endpoint", "errcode"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "wechat_miniprogram_api_request_duration_seconds",
                "Duration of WeChat API requests, by endpoint.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["endpoint"],
        )
        .expect("valid metric");
        let token_fetches = IntCounterVec::new(
            Opts::new(
                "wechat_miniprogram_token_fetches_total",
                "Access tokens fetched, by outcome (success, error).",
            ),
            &["appid", "app", "outcome"],
        )
        .expect("valid metric");
        let shard = IntGaugeVec::new(
            Opts::new(
                "wechat_miniprogram_exporter_shard_info",
                "The shard this exporter is (--shard of --total-shards); always 1.",
            ),
            &["shard", "total_shards"],
        )
        .expect("valid metric");
        let apps = IntGauge::new(
            "wechat_miniprogram_exporter_apps",
            "Mini Programs this exporter polls (those of its shard).",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(token_fetches.clone()),
            Box::new(shard.clone()),
            Box::new(apps.clone()),
        ] {
            registry.register(collector).expect("names are unique");
        }
        SelfMetrics {
            registry,
            requests,
            errors,
            duration,
            token_fetches,
            shard,
            apps,
            changes: AtomicU64::new(0),
        }
    }

    /// Records which shard this exporter is and how many apps it polls.
    pub fn describe_instance(&self, shard: Shard, apps: usize) {
        self.shard.reset();
        self.shard
            .with_label_values(&[&shard.index.to_string(), &shard.total.to_string()])
            .set(1);
        self.apps.set(i64::try_from(apps).unwrap_or(i64::MAX));
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Counts up whenever a counter moves: the store renders again when it differs.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn render(&self, apps: &[AppData], out: &mut String) {
        // Every app gets its series at zero, so that rate() and increase() see the first error.
        for app in apps {
            for outcome in ["success", "error"] {
                self.token_fetches
                    .with_label_values(&[&app.appid, &app.name, outcome]);
            }
        }
        let families = self.registry.gather();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .expect("encoding into a String cannot fail");
        out.push_str(&text);
    }
}

impl Observer for SelfMetrics {
    fn request(&self, app: &App, endpoint: &str, elapsed: Duration, error: Option<&WeChatError>) {
        self.requests
            .with_label_values(&[&app.appid, &app.name, endpoint])
            .inc();
        self.duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .with_label_values(&[&app.appid, &app.name, endpoint, &error.label()])
                .inc();
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn token_fetch(&self, app: &App, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        self.token_fetches
            .with_label_values(&[&app.appid, &app.name, outcome])
            .inc();
        self.changes.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Period;
    use crate::poller::RetentionLag;
    use crate::wechat::{Distribution, DistributionItem, Page, Trend};
    use chrono::DateTime;

    fn app_with(held: Vec<((Report, PeriodKind), Snapshot)>) -> AppData {
        let period = Period::parse_ref_date("20240310").unwrap();
        AppData {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            up: true,
            held: held
                .into_iter()
                .map(|(key, snapshot)| {
                    (
                        key,
                        Held {
                            period,
                            fetched_at: DateTime::from_timestamp(1_710_000_000, 0).unwrap(),
                            snapshot,
                        },
                    )
                })
                .collect(),
        }
    }

    fn rendered(apps: &[AppData]) -> String {
        let mut out = String::new();
        render(apps, &SelfMetrics::new(), &mut out);
        out
    }

    #[test]
    fn missing_fields_are_left_out_not_zeroed() {
        let trend = Trend {
            visit_uv: Some(55500.0),
            stay_time_session: Some(0.0),
            ..Trend::default()
        };
        let text = rendered(&[app_with(vec![(
            (Report::VisitTrend, PeriodKind::Daily),
            Snapshot::Trend(trend),
        )])]);
        assert!(text.contains("wechat_miniprogram_visit_uv{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\"} 55500\n"), "{text}");
        assert!(text.contains("wechat_miniprogram_stay_time_session_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\"} 0\n"));
        assert!(
            !text.contains("wechat_miniprogram_stay_time_uv_seconds"),
            "{text}"
        );
        assert!(!text.contains("wechat_miniprogram_sessions"));
        // 2024-03-10 00:00 in Beijing is 2024-03-09 16:00 UTC.
        assert!(text.contains("wechat_miniprogram_ref_date_timestamp_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",report=\"visit_trend\",period=\"daily\"} 1710000000\n"), "{text}");
    }

    #[test]
    fn ratios_need_a_lag_of_at_least_one_and_a_cohort_size() {
        let held = Period::parse_ref_date("20240310").unwrap();
        let lags = vec![
            RetentionLag {
                lag: 0,
                cohort: held,
                new: (Some(100.0), Some(100.0)),
                active: (Some(0.0), Some(0.0)),
            },
            RetentionLag {
                lag: 1,
                cohort: held.prev(),
                new: (Some(90.0), Some(45.0)),
                active: (Some(0.0), Some(3.0)),
            },
        ];
        let text = rendered(&[app_with(vec![(
            (Report::Retention, PeriodKind::Daily),
            Snapshot::Retention(lags),
        )])]);
        let ratios: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wechat_miniprogram_retention_ratio{"))
            .collect();
        assert_eq!(ratios, ["wechat_miniprogram_retention_ratio{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\",cohort=\"new\",lag=\"1\"} 0.5"]);
        assert!(text.contains("wechat_miniprogram_retention_cohort_timestamp_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\",lag=\"1\"} 1709913600\n"), "{text}");
    }

    #[test]
    fn distribution_keys_get_names_and_unknown_ones_are_kept_as_unknown() {
        let item = |key, value| DistributionItem {
            key,
            value: Some(value),
            visit_uv: None,
        };
        let distribution = Distribution {
            indexes: BTreeMap::from([
                (
                    "access_source_session_cnt".to_string(),
                    vec![item(1, 10.0), item(99, 1.0)],
                ),
                ("access_source_visit_uv".to_string(), vec![item(1, 7.0)]),
                ("access_staytime_info".to_string(), vec![item(8, 5.0)]),
                ("access_depth_info".to_string(), vec![item(6, 4.0)]),
                ("brand_new_index".to_string(), vec![item(1, 3.0)]),
            ]),
        };
        let text = rendered(&[app_with(vec![(
            (Report::VisitDistribution, PeriodKind::Daily),
            Snapshot::Distribution(distribution),
        )])]);
        for line in [
            "wechat_miniprogram_access_source_sessions{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"1\",source=\"history_list\"} 10",
            "wechat_miniprogram_access_source_sessions{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"99\",source=\"unknown\"} 1",
            "wechat_miniprogram_access_source_uv{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"1\",source=\"history_list\"} 7",
            "wechat_miniprogram_stay_time_distribution{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"8\",bucket=\">100s\"} 5",
            "wechat_miniprogram_visit_depth_distribution{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"6\",bucket=\"6-10\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("brand_new_index"));
    }

    #[test]
    fn page_paths_are_escaped() {
        let page = Page {
            path: "pages/a\"b\\c\nd".into(),
            visit_pv: Some(1.0),
            ..Page::default()
        };
        let text = rendered(&[app_with(vec![(
            (Report::VisitPage, PeriodKind::Daily),
            Snapshot::Pages(vec![page]),
        )])]);
        assert!(text.contains(r#"page="pages/a\"b\\c\nd"} 1"#), "{text}");
    }

    #[test]
    fn no_sample_carries_a_timestamp_and_empty_families_are_omitted() {
        let text = rendered(&[app_with(vec![])]);
        assert!(!text.contains("wechat_miniprogram_visit_uv"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
        assert!(
            text.contains("wechat_miniprogram_up{appid=\"wx1234567890abcdef\",app=\"shop\"} 1\n")
        );
        assert!(text.contains("wechat_miniprogram_exporter_build_info{version=\""));
    }
}
