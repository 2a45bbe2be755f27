//! The whole exposition: every report's families, the period each report holds, the
//! exporter's health and its own counters.
//!
//! [`render_spilling`] is pure: it writes the families of every report of the registry for
//! every app (each report's module names its families and writes their samples), then
//! `ref_date_timestamp_seconds`, then the health families, then [`SelfMetrics`]. Each WeChat
//! series carries `appid` and `app` plus exactly the labels its table in the README lists. A
//! figure WeChat did not send is left out, never written as 0, no sample carries a timestamp,
//! and a family with no sample is left out.
//!
//! [`SelfMetrics`] counts what the client does (requests, errors by errcode, latency, token
//! fetches): the latency and the instance's gauges with the `prometheus` crate, the counters
//! of each app in compact maps of their own (`metrics/counters.rs`), written as the crate
//! writes its own; it remembers that it changed so that the store knows when to render again.

mod counters;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::process_collector::ProcessCollector;
use prometheus::{HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

use counters::Counters;

use crate::calendar::{Calendar, DayKind};
use crate::domain::{App, Shard};
use crate::exposition::{Exposition, Samples, Spill, Text};
use crate::period::{beijing_date, PeriodKind};
use crate::report::{AppData, Report, State};
use crate::wechat::client::Observer;
use crate::wechat::wire::Tally;
use crate::wechat::WeChatError;

/// Writes the exposition of every app's held data, then `self_metrics`, handing the text to
/// `spill` piece by piece (the last piece included), so that the whole text is never held.
pub fn render_spilling(
    apps: &[&AppData],
    calendar: &Calendar,
    self_metrics: &SelfMetrics,
    spill: Spill<'_>,
) {
    let mut out = String::with_capacity(512 << 10);
    {
        let mut text = Text::spilling(&mut out, &mut *spill);
        render_data(apps, calendar, &mut text);
        render_health(apps, calendar, &mut text);
    }
    spill(&mut out);
    self_metrics.render(apps, &mut out);
    spill(&mut out);
}

/// Writes the families that carry WeChat's data (and the period each report holds), without
/// the exporter's health: what `backfill` writes for past periods.
pub fn render_data(apps: &[&AppData], calendar: &Calendar, out: &mut dyn Exposition) {
    for report in Report::all() {
        report.render(apps, out);
    }
    render_ref_dates(apps, out);
    render_days(apps, calendar, out);
}

/// The kind of the newest day each app exports, from China's working calendar, as a state
/// set (every kind always there, so that a query over a window sees the latest, not the
/// day before), with the holiday's name beside it: what the drop alert compares like with
/// like by, on the same timestamps as the data.
fn render_days(apps: &[&AppData], calendar: &Calendar, out: &mut dyn Exposition) {
    let days: Vec<(&AppData, DayKind, Option<&str>)> = apps
        .iter()
        .filter_map(|app| {
            let newest = app
                .held
                .iter()
                .filter(|((_, kind), _)| *kind == PeriodKind::Daily)
                .map(|(_, held)| held.period)
                .max()?;
            let (kind, name) = calendar.day(newest.start());
            Some((*app, kind, name))
        })
        .collect();
    out.family("wechat_miniprogram_calendar_day",
        "The kind of the newest day (period=\"daily\") the app exports, in China's working calendar, as a state set (exactly one kind is 1): workday, weekend, holiday, or makeup_workday (a weekend day declared a working day, 调休上班).".into());
    for (app, kind, _) in &days {
        for each in DayKind::ALL {
            let value = if each == *kind { 1.0 } else { 0.0 };
            let labels = [("period", "daily"), ("kind", each.as_str())];
            Samples::new(out, &app.appid, &app.name).sample(&labels, value);
        }
    }
    out.family("wechat_miniprogram_calendar_holiday_info",
        "The public holiday the newest day (period=\"daily\") the app exports belongs to (a day off, or a make-up workday for it), by name; holiday=\"\" on other days. Always 1.".into());
    for (app, _, name) in &days {
        let labels = [("period", "daily"), ("holiday", name.unwrap_or(""))];
        Samples::new(out, &app.appid, &app.name).sample(&labels, 1.0);
    }
}

/// One sample per (app, report, kind) held: `value` of the held period.
fn per_held(apps: &[&AppData], out: &mut dyn Exposition, value: fn(&crate::report::Held) -> f64) {
    for app in apps {
        for ((report, kind), held) in &app.held {
            Samples::new(out, &app.appid, &app.name).sample(
                &[("report", report.name()), ("period", kind.as_str())],
                value(held),
            );
        }
    }
}

fn render_ref_dates(apps: &[&AppData], out: &mut dyn Exposition) {
    out.family("wechat_miniprogram_ref_date_timestamp_seconds",
        "Start (00:00 Beijing time) of the period whose values are exported, per report and period. time() minus this is the data's age.".into());
    per_held(apps, out, |held| {
        held.period.start_instant().timestamp() as f64
    });
}

fn render_health(apps: &[&AppData], calendar: &Calendar, out: &mut dyn Exposition) {
    out.family("wechat_miniprogram_exporter_calendar_year_covered",
        "Whether the calendar (built in, and calendar.file) knows the public holidays of this Beijing year, and from December of the next (1), or not (0: add the year with calendar.file).".into());
    let today = beijing_date(chrono::Utc::now());
    for year in Calendar::years_needed(today) {
        let covered = if calendar.covers(year) { 1.0 } else { 0.0 };
        out.sample(&[], &[("year", &year.to_string())], covered);
    }

    out.family(
        "wechat_miniprogram_last_success_timestamp_seconds",
        "When the exported period of this report was fetched from WeChat (Unix time).".into(),
    );
    per_held(apps, out, |held| held.fetched_at.timestamp() as f64);

    out.family("wechat_miniprogram_up",
        "0 while the app's access token cannot be had or its visit trend (the gate of its periods) fails, else 1; a failing or unauthorized report alone leaves it 1 (see wechat_miniprogram_report_status).".into());
    for app in apps {
        let up = if app.up { 1.0 } else { 0.0 };
        Samples::new(out, &app.appid, &app.name).sample(&[], up);
    }
    render_report_states(apps, out);
    render_app_info(apps, out);

    out.family(
        "wechat_miniprogram_exporter_build_info",
        "The exporter's version; always 1.".into(),
    );
    out.sample(&[], &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
}

/// A state set per job: its four states, exactly one of them 1.
fn render_report_states(apps: &[&AppData], out: &mut dyn Exposition) {
    out.family("wechat_miniprogram_report_status",
        "How each report and period of the app stands, as a state set (exactly one status is 1): ok (the newest period is held), waiting (not published or not asked yet), failing (the last attempt ended in an error), unauthorized (WeChat refuses the API to this app: 48001, 61007, 76022; asked again daily and at a reload).".into());
    for app in apps {
        for ((report, kind), state) in &app.states {
            for status in State::ALL {
                let value = if status == *state { 1.0 } else { 0.0 };
                Samples::new(out, &app.appid, &app.name).sample(
                    &[
                        ("report", report.name()),
                        ("period", kind.as_str()),
                        ("status", status.as_str()),
                    ],
                    value,
                );
            }
        }
    }
}

/// One series per app, carrying its own labels (`[apps.NAME.labels]`), for joins.
fn render_app_info(apps: &[&AppData], out: &mut dyn Exposition) {
    out.family("wechat_miniprogram_app_info",
        "Every polled Mini Program, with the labels its configuration gives it ([apps.NAME.labels]); always 1. Join with group_left to route or filter by them.".into());
    for app in apps {
        let labels: Vec<(&str, &str)> = app
            .labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Samples::new(out, &app.appid, &app.name).sample(&labels, 1.0);
    }
}

/// The exporter's own counters and latency histogram.
pub struct SelfMetrics {
    registry: Registry,
    requests: Counters,
    errors: Counters,
    duration: HistogramVec,
    token_fetches: Counters,
    dropped: Counters,
    /// The exporter's own counters, exported unless `--web.disable-exporter-metrics`.
    exporter: Registry,
    exporter_metrics: bool,
    process: Option<ProcessCollector>,
    shard: IntGaugeVec,
    apps: IntGauge,
    reload_successful: IntGauge,
    reload_success_time: prometheus::Gauge,
    tls_expiry: IntGaugeVec,
    changes: AtomicU64,
}

/// Registers `collector` in `registry` and hands it back.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("names are unique");
    collector
}

/// When the server's TLS certificate expires; set only with TLS.
fn tls_expiry_gauge(registry: &Registry) -> IntGaugeVec {
    let tls_expiry = Opts::new(
        "wechat_miniprogram_exporter_tls_certificate_expiry_timestamp_seconds",
        "When the server's TLS certificate (--web.config.file) expires (Unix time); absent without TLS.",
    );
    register(
        registry,
        IntGaugeVec::new(tls_expiry, &[]).expect("valid metric"),
    )
}

/// The gauges that describe this exporter (its shard, its number of apps), in `registry`.
fn instance_gauges(registry: &Registry) -> (IntGaugeVec, IntGauge) {
    let shard = Opts::new(
        "wechat_miniprogram_exporter_shard_info",
        "The shard this exporter is (--shard of --total-shards); always 1.",
    );
    let shard = register(
        registry,
        IntGaugeVec::new(shard, &["shard", "total_shards"]).expect("valid metric"),
    );
    let apps = IntGauge::new(
        "wechat_miniprogram_exporter_apps",
        "Mini Programs this exporter polls (those of its shard).",
    );
    (shard, register(registry, apps.expect("valid metric")))
}

/// Whether the last reload of the configuration worked, and when one last did, in
/// `registry`: as Prometheus names them.
fn reload_gauges(registry: &Registry) -> (IntGauge, prometheus::Gauge) {
    let successful = IntGauge::new(
        "wechat_miniprogram_exporter_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful (1) or refused (0).",
    );
    let time = prometheus::Gauge::new(
        "wechat_miniprogram_exporter_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload (or of the start).",
    );
    (
        register(registry, successful.expect("valid metric")),
        register(registry, time.expect("valid metric")),
    )
}

/// Appends families in the text format.
fn encode(families: &[prometheus::proto::MetricFamily], out: &mut String) {
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(families, &mut text)
        .expect("encoding into a String cannot fail");
    out.push_str(&text);
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics::new()
    }
}

impl SelfMetrics {
    /// Registers every counter, at zero, and the process metrics.
    pub fn new() -> SelfMetrics {
        SelfMetrics::with_exporter_metrics(true)
    }

    /// As [`SelfMetrics::new`]; with `exporter_metrics` false
    /// (`--web.disable-exporter-metrics`), the exporter's own counters and the process metrics
    /// are counted but not exported (the analytics, `up`, the build and shard info are).
    pub fn with_exporter_metrics(exporter_metrics: bool) -> SelfMetrics {
        let registry = Registry::new();
        let exporter = Registry::new();
        let requests = Counters::new(
            "wechat_miniprogram_api_requests_total",
            "Requests sent to the WeChat API, by endpoint.",
            &["endpoint"],
        );
        let errors = Counters::new(
            "wechat_miniprogram_api_errors_total",
            "Failed WeChat API requests, by WeChat errcode or http_<status>, timeout, decode, connect. Not-yet-published answers (61503) are not errors.",
            &["endpoint", "errcode"],
        );
        let duration = HistogramOpts::new(
            "wechat_miniprogram_api_request_duration_seconds",
            "Duration of WeChat API requests, by endpoint.",
        )
        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let duration = register(
            &exporter,
            HistogramVec::new(duration, &["endpoint"]).expect("valid metric"),
        );
        let token_fetches = Counters::new(
            "wechat_miniprogram_token_fetches_total",
            "Access tokens fetched, by outcome (success, error).",
            &["outcome"],
        );
        let dropped = Counters::new(
            "wechat_miniprogram_api_values_dropped_total",
            "Values of WeChat's answers dropped rather than exported, by reason: invalid (negative, absurdly large, a share above 1) or duplicate (an entry given twice; the first is kept).",
            &["endpoint", "reason"],
        );
        let (shard, apps) = instance_gauges(&registry);
        let (reload_successful, reload_success_time) = reload_gauges(&registry);
        SelfMetrics {
            tls_expiry: tls_expiry_gauge(&registry),
            registry,
            exporter,
            process: exporter_metrics.then(ProcessCollector::for_self),
            exporter_metrics,
            requests,
            errors,
            duration,
            token_fetches,
            dropped,
            shard,
            apps,
            reload_successful,
            reload_success_time,
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

    /// Records a reload of the configuration (or the first load) at `at`.
    pub fn reloaded(&self, ok: bool, at: chrono::DateTime<chrono::Utc>) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(at.timestamp() as f64);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Records when the server's TLS certificate expires (Unix time), or that there is none.
    pub fn tls_certificate(&self, not_after: Option<i64>) {
        self.tls_expiry.reset();
        if let Some(not_after) = not_after {
            self.tls_expiry
                .with_label_values(&[] as &[&str])
                .set(not_after);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Counts up whenever a counter moves: the store renders again when it differs.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn render(&self, apps: &[&AppData], out: &mut String) {
        // Every app gets its series at zero, so that rate() and increase() see the first error.
        for app in apps {
            for outcome in ["success", "error"] {
                self.token_fetches.add(&app.name, &app.appid, &[outcome], 0);
            }
        }
        let gathered = self.registry.gather();
        if !self.exporter_metrics {
            return encode(&gathered, out);
        }
        enum Family<'a> {
            Gathered(prometheus::proto::MetricFamily),
            Counted(&'a Counters),
        }
        let counted = [
            &self.requests,
            &self.errors,
            &self.token_fetches,
            &self.dropped,
        ];
        let mut families: Vec<(String, Family<'_>)> = gathered
            .into_iter()
            .chain(self.exporter.gather())
            .map(|family| (family.name().to_string(), Family::Gathered(family)))
            .chain(counted.map(|c| (c.name().to_string(), Family::Counted(c))))
            .collect();
        families.sort_by(|a, b| a.0.cmp(&b.0));
        // The counters of an app that was removed (by a reload or discovery) go with it.
        let current: std::collections::BTreeSet<&str> =
            apps.iter().map(|app| app.name.as_str()).collect();
        for (_, family) in families {
            match family {
                Family::Gathered(family) => encode(std::slice::from_ref(&family), out),
                Family::Counted(counters) => counters.write(&current, out),
            }
        }
    }

    /// Writes the process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// `process_open_fds`, `process_start_time_seconds`...), read now: they are not cached
    /// with the rest.
    pub fn render_process(&self, out: &mut String) {
        use prometheus::core::Collector as _;
        if let Some(process) = &self.process {
            encode(&process.collect(), out);
        }
    }
}

impl Observer for SelfMetrics {
    fn request(&self, app: &App, endpoint: &str, elapsed: Duration, error: Option<&WeChatError>) {
        let appid = app.appid.as_str();
        self.requests.add(&app.name, appid, &[endpoint], 1);
        self.duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            let errcode = error.label();
            self.errors.add(&app.name, appid, &[endpoint, &errcode], 1);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn dropped(&self, app: &App, endpoint: &str, tally: Tally) {
        for (reason, count) in [("invalid", tally.invalid), ("duplicate", tally.duplicate)] {
            if count > 0 {
                let values = [endpoint, reason];
                let appid = app.appid.as_str();
                self.dropped
                    .add(&app.name, appid, &values, u64::from(count));
            }
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn token_fetch(&self, app: &App, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        let appid = app.appid.as_str();
        self.token_fetches.add(&app.name, appid, &[outcome], 1);
        self.changes.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use chrono::DateTime;

    use crate::period::{Period, PeriodKind};
    use crate::report::visit_trend::{Trend, VisitTrend};
    use crate::report::Held;

    fn shop(held: Vec<(Report, Trend)>) -> AppData {
        AppData {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            up: true,
            held: held
                .into_iter()
                .map(|(report, snapshot)| {
                    let held = Held {
                        period: Period::parse_ref_date("20240310").unwrap(),
                        fetched_at: DateTime::from_timestamp(1_710_000_000, 0).unwrap(),
                        snapshot: crate::report::typed_snapshot::<VisitTrend>(snapshot),
                    };
                    ((report, PeriodKind::Daily), held)
                })
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    fn rendered(apps: &[&AppData]) -> String {
        let mut out = String::new();
        let mut spill = |text: &mut String| out.push_str(&std::mem::take(text));
        render_spilling(apps, &Calendar::default(), &SelfMetrics::new(), &mut spill);
        out
    }

    #[test]
    fn each_held_period_has_its_start_and_fetch_time() {
        let trend = Trend {
            visit_uv: Some(55500.0),
            ..Trend::default()
        };
        let text = rendered(&[&shop(vec![(
            Report::by_name("visit_trend").unwrap(),
            trend,
        )])]);
        // 2024-03-10 00:00 in Beijing is 2024-03-09 16:00 UTC.
        assert!(text.contains("wechat_miniprogram_ref_date_timestamp_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",report=\"visit_trend\",period=\"daily\"} 1710000000\n"), "{text}");
        assert!(text.contains("wechat_miniprogram_last_success_timestamp_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",report=\"visit_trend\",period=\"daily\"} 1710000000\n"), "{text}");
    }

    #[test]
    fn no_sample_carries_a_timestamp_and_empty_families_are_omitted() {
        let text = rendered(&[&shop(vec![])]);
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
