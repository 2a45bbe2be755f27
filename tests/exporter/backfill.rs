//! `backfill` as users run it: the binary against the simulated API, the file through the
//! real `promtool tsdb create-blocks-from openmetrics`, and a real Prometheus on the blocks.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};

use common::prometheus::{create_blocks, run_binary as run, temp_dir, Prometheus};
use common::{beijing, simulated, simulated_call, simulated_trend, spawn_simulation, two_apps};
use serde_json::Value;
use wechat_miniprogram_exporter::period::{beijing_date, Period, PeriodKind};
use wechat_miniprogram_exporter::report::Report;
use wechat_miniprogram_exporter::report::Settings as ReportSettings;
use wechat_miniprogram_exporter::simulation::{Fault, SimApp};

/// A configuration for the simulated apps, with quick backoff and one call at a time.
fn config(dir: &Path, apps: &[SimApp], api: SocketAddr) -> String {
    let extra = "[polling]\nerror_backoff_initial = \"100ms\"\nerror_backoff_max = \"1s\"\nconcurrency = 1\n";
    let path = dir.join("config.toml");
    std::fs::write(&path, common::config_toml(apps, api, extra)).unwrap();
    path.display().to_string()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| arg.to_string()).collect()
}

/// `backfill --from --to --output FILE` with `extra` flags, writing `history.om` in `dir`.
async fn backfill(
    config: &str,
    from: NaiveDate,
    to: NaiveDate,
    dir: &Path,
    extra: &[&str],
) -> (Output, PathBuf) {
    let file = dir.join("history.om");
    let (from, to) = (from.to_string(), to.to_string());
    let mut list = vec!["--config", config, "backfill", "--from", &from, "--to", &to];
    list.extend(extra);
    list.extend(["--output", file.to_str().unwrap()]);
    (run(args(&list)).await, file)
}

fn daily(date: NaiveDate) -> Period {
    Period::containing(PeriodKind::Daily, date)
}

/// When `serve` would have started exporting `period`: 10:00 Beijing the day after it ends.
fn published(period: Period) -> DateTime<Utc> {
    let day = period.end() + Days::new(1);
    beijing(&format!("{day} 10:00"))
}

fn visit_uv(app: &SimApp, period: Period) -> f64 {
    simulated_trend(app, period)["visit_uv"].as_f64().unwrap()
}

/// (series of `app`, the value the simulation answers for `day`) of the console's reports
/// with history, each asked as `serve` would ask it for that day.
fn console_figures(app: &SimApp, day: Period, last: NaiveDate) -> Vec<(String, f64)> {
    let reports = ReportSettings::default();
    let call = |report: &str, n: usize| {
        Report::by_name(report)
            .unwrap()
            .calls(day, &reports)
            .remove(n)
    };
    let selector = |name: &str, labels: &str| format!("{name}{{app=\"{}\",{labels}}}", app.name);
    let summary = &simulated(app, "daily_summary", day, last)["list"][0];
    let launch = simulated_call(app, "launch_time", &call("launch_time", 0), last);
    let launch: Value =
        serde_json::from_str(launch["default_time_data"].as_str().unwrap()).unwrap();
    let memory = simulated_call(app, "performance", &call("performance", 3), last);
    let memory = &memory["data"]["body"]["tables"][0]["lines"][0]["fields"][0]["value"];
    let errors = simulated_call(app, "js_errors", &call("js_errors", 0), last);
    vec![
        (
            selector("wechat_miniprogram_cumulative_users", "period=\"daily\""),
            summary["visit_total"].as_f64().unwrap(),
        ),
        (
            selector("wechat_miniprogram_launch_time_seconds", "phase=\"total\""),
            launch["list"][0]["cost_time"].as_f64().unwrap() / 1000.0,
        ),
        (
            selector(
                "wechat_miniprogram_performance",
                "module=\"memory\",indicator=\"memory\"",
            ),
            memory.as_str().unwrap().parse().unwrap(),
        ),
        (
            selector("wechat_miniprogram_js_error_groups", "error_type=\"app\""),
            errors["totalCount"].as_f64().unwrap(),
        ),
    ]
}

/// Samples of the file as (series, value, timestamp).
fn samples(text: &str) -> Vec<(String, f64, i64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let mut parts = line.rsplitn(3, ' ');
            let at = parts.next().unwrap().parse().unwrap();
            let value = parts.next().unwrap().parse().unwrap();
            (parts.next().unwrap().to_string(), value, at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_days_load_into_prometheus_and_read_as_they_did_live() {
    let dir = temp_dir("backfill-40");
    let apps = two_apps();
    let (sim, api) = spawn_simulation(apps.clone()).await;
    let config = config(&dir, &apps, api);
    // Three days back, so the run is the same at any hour (the last 3 hours are left out).
    let to = beijing_date(Utc::now()) - Days::new(3);
    let from = to - Days::new(39);
    let (output, file) = backfill(&config, from, to, &dir, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("0 skipped"), "{stderr}");
    assert!(stderr.contains("0 failed"), "{stderr}");
    assert!(!stderr.contains("secret-shop"), "{stderr}");

    // Each (app, report, period) was asked for once; 30 days of launch times or performance
    // data in one call.
    let mut asked = BTreeMap::new();
    for call in sim.calls().into_iter().filter(|call| call.body.is_some()) {
        assert_eq!(call.errcode, 0, "{call:?}");
        *asked
            .entry((call.appid, call.endpoint, call.body))
            .or_insert(0) += 1;
    }
    assert!(asked.values().all(|&n| n == 1), "{asked:?}");
    let datacube_calls = asked
        .keys()
        .filter(|(_, endpoint, _)| !endpoint.contains('/'))
        .count();
    let other_calls = asked.len() - datacube_calls;
    let per_app = |endpoint: &str| {
        asked
            .keys()
            .filter(|(appid, e, _)| e == endpoint && appid.as_deref() == Some("wx1111111111111111"))
            .count()
    };
    assert_eq!(
        per_app("wxaapi/log/get_performance"),
        2 * 3,
        "40 days: two spans, three phases"
    );
    assert_eq!(
        per_app("wxa/business/performance/boot"),
        2 * 5,
        "40 days: two spans, five modules"
    );
    assert_eq!(
        per_app("wxaapi/log/jserr_list"),
        40 * 3,
        "one day and type a call"
    );
    assert_eq!(
        per_app("getweanalysisappiduserportrait"),
        0,
        "no history of the portrait"
    );
    assert!(
        stderr.contains(&format!(
            "{} API calls ({datacube_calls} datacube, {other_calls} other, 2 token)",
            asked.len() + 2
        )),
        "{stderr}"
    );

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(
        !text.contains("wechat_miniprogram_up") && !text.contains("api_requests"),
        "health families are not history"
    );
    let blocks = create_blocks(&file, &dir);
    let prometheus = Prometheus::start(&blocks, "global: {}\n").await;

    let (shop, news) = (&apps[0], &apps[1]);
    for date in [
        from + Days::new(3),
        from + Days::new(20),
        to - Days::new(1),
        to,
    ] {
        let day = daily(date);
        // Right after publication, the plain selector sees exactly that day's figure.
        for app in [shop, news] {
            let expr = format!(
                "wechat_miniprogram_visit_uv{{period=\"daily\",app=\"{}\"}}",
                app.name
            );
            let at = published(day) + chrono::Duration::minutes(1);
            assert_eq!(
                prometheus.value(&expr, at).await,
                Some(visit_uv(app, day)),
                "{expr} {date}"
            );
        }
        // The console's reports with history, to the value: the daily summary, launch times
        // and performance data (asked 30 days at a time) and JS errors.
        let at = published(day) + chrono::Duration::minutes(1);
        for (expr, expected) in console_figures(shop, day, to) {
            assert_eq!(
                prometheus.value(&expr, at).await,
                Some(expected),
                "{expr} {date}"
            );
        }
    }

    // At 15:00 on a past day, the bundled form shows the previous day's figures, as a live
    // scrape did; the plain selector has nothing, the sample being five hours old.
    let afternoon = from + Days::new(10);
    let at = beijing(&format!("{afternoon} 15:00"));
    let bundled = "last_over_time(wechat_miniprogram_visit_uv{period=\"daily\",app=\"shop\"}[1d])";
    assert_eq!(
        prometheus.value(bundled, at).await,
        Some(visit_uv(shop, daily(afternoon - Days::new(1))))
    );
    assert_eq!(
        prometheus
            .value(
                "wechat_miniprogram_visit_uv{period=\"daily\",app=\"shop\"}",
                at
            )
            .await,
        None
    );
    // And at 09:00, before that day's publication, still the day before that.
    let morning = beijing(&format!("{afternoon} 09:00"));
    assert_eq!(
        prometheus.value(bundled, morning).await,
        Some(visit_uv(shop, daily(afternoon - Days::new(2))))
    );

    // Weekly and monthly: from their publication, and all week long in the bundled form.
    let week = Period::ending_within(PeriodKind::Weekly, from, to)[1];
    let weekly = "wechat_miniprogram_visit_uv{period=\"weekly\",app=\"news\"}";
    assert_eq!(
        prometheus
            .value(weekly, published(week) + chrono::Duration::minutes(1))
            .await,
        Some(visit_uv(news, week))
    );
    let saturday = week.next().start() + Days::new(5);
    assert_eq!(saturday.weekday(), Weekday::Sat);
    assert_eq!(
        prometheus
            .value(
                &format!("last_over_time({weekly}[1d])"),
                beijing(&format!("{saturday} 15:00"))
            )
            .await,
        Some(visit_uv(news, week))
    );
    let month = Period::ending_within(PeriodKind::Monthly, from, to)[0];
    assert_eq!(
        prometheus
            .value(
                "wechat_miniprogram_visit_uv{period=\"monthly\",app=\"shop\"}",
                published(month) + chrono::Duration::minutes(1)
            )
            .await,
        Some(visit_uv(shop, month))
    );

    // Retention follows the agent's lag rule: on a day, lag 7 is the cohort 7 days before.
    let day = daily(to - Days::new(2));
    let at = published(day) + chrono::Duration::minutes(1);
    let cohort = day.back(7);
    let expected = simulated(shop, "retention", cohort, to)["visit_uv"][7]["value"]
        .as_f64()
        .unwrap();
    let labels = "period=\"daily\",app=\"shop\",lag=\"7\"";
    assert_eq!(
        prometheus
            .value(
                &format!("wechat_miniprogram_retention_uv{{{labels},cohort=\"active\"}}"),
                at
            )
            .await,
        Some(expected)
    );
    assert_eq!(
        prometheus
            .value(
                &format!("wechat_miniprogram_retention_cohort_timestamp_seconds{{{labels}}}"),
                at
            )
            .await,
        Some(cohort.start_instant().timestamp() as f64)
    );
    // The freshness signal reads as live: 23 hours after publication the day is 57 hours old.
    let age = prometheus
        .value(
            "time() - last_over_time(wechat_miniprogram_ref_date_timestamp_seconds{app=\"shop\",report=\"visit_trend\",period=\"daily\"}[1d])",
            published(day) + chrono::Duration::hours(23),
        )
        .await
        .unwrap();
    assert_eq!(age, (34 + 23) as f64 * 3600.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_minute_step_makes_history_visible_to_plain_selectors() {
    let dir = temp_dir("backfill-step");
    let apps = two_apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let config = config(&dir, &apps, api);
    let to = beijing_date(Utc::now()) - Days::new(3);
    let from = to - Days::new(2);
    let (output, file) =
        backfill(&config, from, to, &dir, &["--app", "shop", "--step", "5m"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("app=\"news\""), "only the app asked for");
    let blocks = create_blocks(&file, &dir);
    let prometheus = Prometheus::start(&blocks, "global: {}\n").await;
    let plain = "wechat_miniprogram_visit_uv{period=\"daily\",app=\"shop\"}";
    let afternoon = from + Days::new(2);
    assert_eq!(
        prometheus
            .value(plain, beijing(&format!("{afternoon} 15:03")))
            .await,
        Some(visit_uv(&apps[0], daily(afternoon - Days::new(1))))
    );
    assert_eq!(
        prometheus
            .value(plain, beijing(&format!("{afternoon} 09:58")))
            .await,
        Some(visit_uv(&apps[0], daily(afternoon - Days::new(2))))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_periods_are_named_and_everything_else_is_written() {
    let dir = temp_dir("backfill-faults");
    let apps = two_apps();
    let (shop, news) = (&apps[0], &apps[1]);
    let (sim, api) = spawn_simulation(apps.clone()).await;
    // One call at a time, oldest first: the first day's calls meet the faults, five times
    // each (every attempt), and nothing else does.
    sim.inject(
        &shop.appid,
        Some("getweanalysisappiddailyvisittrend"),
        Fault::Errcode(-1),
        5,
    );
    sim.inject(
        &news.appid,
        Some("getweanalysisappidvisitpage"),
        Fault::Status(502),
        5,
    );
    let config = config(&dir, &apps, api);
    let to = beijing_date(Utc::now()) - Days::new(3);
    let from = to - Days::new(9);
    let (output, file) = backfill(&config, from, to, &dir, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 failed"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "shop visit_trend day {from} (ref_date {}): WeChat errcode -1",
            daily(from).ref_date()
        )) && stderr.contains("(after 5 attempts)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("news visit_page day {from}"))
            && stderr.contains("HTTP status 502"),
        "{stderr}"
    );

    // Every period that succeeded is in the file, at its publication; the failed ones are not.
    let text = std::fs::read_to_string(&file).unwrap();
    let samples = samples(&text);
    let times = |series: &str| -> BTreeSet<i64> {
        samples
            .iter()
            .filter(|(key, _, _)| key == series)
            .map(|(_, _, at)| *at)
            .collect()
    };
    let days: Vec<Period> = Period::ending_within(PeriodKind::Daily, from, to);
    let published_at = |days: &[Period]| -> BTreeSet<i64> {
        days.iter().map(|day| published(*day).timestamp()).collect()
    };
    assert_eq!(
        times("wechat_miniprogram_visit_uv{appid=\"wx1111111111111111\",app=\"shop\",period=\"daily\"}"),
        published_at(&days[1..])
    );
    assert_eq!(
        times("wechat_miniprogram_visit_uv{appid=\"wx2222222222222222\",app=\"news\",period=\"daily\"}"),
        published_at(&days)
    );
    let news_pages: BTreeSet<i64> = samples
        .iter()
        .filter(|(key, _, _)| {
            key.starts_with("wechat_miniprogram_page_visit_pv{appid=\"wx2222222222222222\"")
        })
        .map(|(_, _, at)| *at)
        .collect();
    assert_eq!(news_pages, published_at(&days[1..]));
    // The shop's first day still has its other reports.
    let first = published(days[0]).timestamp();
    assert!(times("wechat_miniprogram_ref_date_timestamp_seconds{appid=\"wx1111111111111111\",app=\"shop\",report=\"visit_distribution\",period=\"daily\"}").contains(&first));
    for (key, _, at) in &samples {
        assert!(
            !(key.contains("app=\"shop\"")
                && key.contains("report=\"visit_trend\"")
                && key.contains("period=\"daily\"")
                && *at == first),
            "the failed trend has no sample: {key}"
        );
    }
    create_blocks(&file, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_without_data_are_skipped_never_zero_and_bad_flags_exit_2() {
    let dir = temp_dir("backfill-young");
    let mut apps = two_apps();
    let to = beijing_date(Utc::now()) - Days::new(3);
    // The shop opened five days before the end of the range.
    apps[0].since = to - Days::new(4);
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let config = config(&dir, &apps, api);
    let from = to - Days::new(9);
    let (output, file) = backfill(&config, from, to, &dir, &["--app", "shop"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains(" 0 skipped"), "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let daily_uv: Vec<(String, f64, i64)> = samples(&text)
        .into_iter()
        .filter(|(key, _, _)| {
            key.starts_with("wechat_miniprogram_visit_uv{") && key.contains("daily")
        })
        .collect();
    assert_eq!(daily_uv.len(), 5, "{daily_uv:?}");
    assert!(daily_uv.iter().all(|(_, value, _)| *value > 0.0));

    for (flags, expected) in [
        (vec!["--from", "2099-01-01"], "--to"),
        (vec!["--from", "yesterday"], "not a date"),
        (vec!["--from", "2024-01-01", "--app", "mall"], "--app mall"),
        (vec!["--from", "2024-01-01", "--step", "1s"], "--step 1s"),
    ] {
        let mut list = vec!["--config", config.as_str(), "backfill"];
        list.extend(flags);
        let output = run(args(&list)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{list:?}: {stderr}");
        assert!(stderr.contains(expected), "{list:?}: {stderr}");
    }
}

/// The `ref_date` of every `wechat_miniprogram_visit_uv` sample of a daily period in an
/// OpenMetrics file, by app.
fn daily_ref_dates(history: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in history.lines() {
        let Some(rest) = line.strip_prefix("wechat_miniprogram_ref_date_timestamp_seconds{") else {
            continue;
        };
        if !rest.contains("report=\"visit_trend\"") || !rest.contains("period=\"daily\"") {
            continue;
        }
        let app = rest
            .split("app=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let day = DateTime::from_timestamp(value as i64, 0).unwrap();
        found
            .entry(app.to_string())
            .or_default()
            .insert(beijing_date(day).format("%Y%m%d").to_string());
    }
    found
}

#[tokio::test]
async fn missing_fills_exactly_the_days_the_exporter_was_down_each_call_once_and_a_dry_run_calls_nothing(
) {
    use crate::common::{
        config_toml, config_with_storage, fixed, spawn_manual_simulation, Exporter,
    };
    let dir = temp_dir("backfill-missing");
    let storage = dir.join("state");
    let (sim, api, clock) = spawn_manual_simulation(two_apps(), beijing("2024-06-05 12:00")).await;
    let toml = config_toml(&two_apps(), api, "");
    let config = config_with_storage(&toml, &storage);
    // Up on the 5th (holding the 4th), down for three days, up again on the 9th (the 8th).
    for day in ["2024-06-05 12:00", "2024-06-09 12:00"] {
        clock.set(beijing(day));
        let app = Exporter::on(&sim, api, &clock)
            .config(config.clone())
            .source(fixed(&config))
            .start()
            .await;
        app.settle().await;
        app.stop().await;
    }
    let file = dir.join("config.toml");
    std::fs::write(&file, &toml).unwrap();
    let (file, storage_flag) = (file.display().to_string(), storage.display().to_string());
    let output = dir.join("missing.om");
    let common_args = [
        "--config",
        &file,
        "--storage.path",
        &storage_flag,
        "backfill",
        "--missing",
        "--output",
        output.to_str().unwrap(),
    ];

    let before = sim.calls().len();
    let dry = run(args(&[&common_args[..], &["--dry-run"]].concat())).await;
    let printed = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(
        sim.calls().len(),
        before,
        "a dry run calls nothing, not even a token"
    );
    assert!(!output.exists());
    let total = printed.lines().last().unwrap();
    assert!(
        total.starts_with("  total of 2 Mini Program(s): "),
        "{printed}"
    );

    let done = run(args(&common_args)).await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let calls: Vec<_> = sim.calls()[before..]
        .iter()
        .filter(|call| call.body.is_some())
        .cloned()
        .collect();
    let distinct: BTreeSet<_> = calls
        .iter()
        .map(|call| (call.appid.clone(), call.endpoint.clone(), call.body.clone()))
        .collect();
    assert_eq!(distinct.len(), calls.len(), "each call made once");
    let announced: usize = total
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(calls.len(), announced, "the dry run said so: {printed}");
    // Exactly the calls that fetch the three days (retention asks for the cohorts they
    // need), and no other period.
    let days: Vec<Period> = ["20240605", "20240606", "20240607"]
        .iter()
        .map(|day| Period::parse_ref_date(day).unwrap())
        .collect();
    let reports = ReportSettings::default();
    let mut expected = BTreeSet::new();
    for app in two_apps() {
        for report in Report::all().filter(|report| report.is_backfilled(&reports)) {
            for call in report.history_calls(&days, &reports) {
                expected.insert((
                    Some(app.appid.clone()),
                    call.endpoint().to_string(),
                    Some(call.body.clone()),
                ));
            }
        }
    }
    assert_eq!(distinct, expected);
    let history = std::fs::read_to_string(&output).unwrap();
    let days: BTreeSet<String> = ["20240605", "20240606", "20240607"]
        .map(String::from)
        .into();
    let found = daily_ref_dates(&history);
    assert_eq!(found.len(), 2, "every app: {found:?}");
    for (app, dates) in &found {
        assert_eq!(dates, &days, "{app}");
    }
    create_blocks(&output, &dir.join("blocks"));
}
