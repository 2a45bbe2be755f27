//! The console's reports against the simulated WeChat API: the daily summary, the user
//! portrait, launch performance, performance data, JS errors and the API quota.

use crate::common::{self, Exporter};

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::Value;

use common::prometheus::check_metrics;
use common::{beijing, sample, series, simulated, simulated_call, two_apps, TestApp};
use wechat_miniprogram_exporter::period::Period;
use wechat_miniprogram_exporter::report::Report;
use wechat_miniprogram_exporter::report::Settings as ReportSettings;
use wechat_miniprogram_exporter::simulation::Fault;

/// Every report, the quota included.
const EVERY_REPORT: &str = "[reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_distribution\", \"visit_page\", \"daily_summary\", \"user_portrait\", \"launch_time\", \"performance\", \"js_errors\", \"quota\"]\n";

/// The families of the console's reports (the quota aside).
const CONSOLE_FAMILIES: [&str; 10] = [
    "wechat_miniprogram_cumulative_users",
    "wechat_miniprogram_share_pv",
    "wechat_miniprogram_share_uv",
    "wechat_miniprogram_portrait_uv",
    "wechat_miniprogram_launch_time_seconds",
    "wechat_miniprogram_performance",
    "wechat_miniprogram_js_error_groups",
    "wechat_miniprogram_js_error_pv",
    "wechat_miniprogram_js_error_uv",
    "wechat_miniprogram_js_error_info",
];

const SHOP: &str = "wx1111111111111111";

fn day(text: &str) -> Period {
    Period::parse_ref_date(text).unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// The calls `report` makes for `period` with the default settings.
fn calls(report: &str, period: Period) -> Vec<wechat_miniprogram_exporter::wechat::Call> {
    Report::by_name(report)
        .unwrap()
        .calls(period, &ReportSettings::default())
}

/// The lines of the console's families that mention `app`.
fn console_lines<'a>(metrics: &'a str, app: &str) -> Vec<&'a str> {
    let label = format!("app=\"{app}\"");
    CONSOLE_FAMILIES
        .iter()
        .flat_map(|family| series(metrics, family))
        .filter(|line| line.contains(&label))
        .collect()
}

async fn every_report_at(start: &str) -> TestApp {
    Exporter::new(two_apps(), beijing(start))
        .toml(EVERY_REPORT)
        .start()
        .await
}

#[tokio::test]
async fn the_daily_summary_and_launch_times_are_the_simulated_values() {
    let app = every_report_at("2024-06-05 12:00").await;
    app.settle().await;
    let metrics = app.scrape().await;
    let shop = app.sim.apps()[0].clone();
    let yesterday = day("20240604");
    let last = date("2024-06-04");

    let summary = &simulated(&shop, "daily_summary", yesterday, last)["list"][0];
    for (family, field) in [
        ("wechat_miniprogram_cumulative_users", "visit_total"),
        ("wechat_miniprogram_share_pv", "share_pv"),
        ("wechat_miniprogram_share_uv", "share_uv"),
    ] {
        let labels = [("app", "shop"), ("period", "daily")];
        assert_eq!(
            sample(&metrics, family, &labels),
            summary[field].as_f64(),
            "{family}"
        );
    }

    for (call, phase) in
        calls("launch_time", yesterday)
            .iter()
            .zip(["total", "download", "first_render"])
    {
        let answer = simulated_call(&shop, "launch_time", call, last);
        let data: Value =
            serde_json::from_str(answer["default_time_data"].as_str().unwrap()).unwrap();
        let milliseconds = data["list"][0]["cost_time"].as_f64().unwrap();
        let labels = [("app", "shop"), ("phase", phase)];
        assert_eq!(
            sample(&metrics, "wechat_miniprogram_launch_time_seconds", &labels),
            Some(milliseconds / 1000.0),
            "{phase}"
        );
    }

    // Each report holds yesterday; the quota holds today.
    for (report, held) in [
        ("daily_summary", yesterday),
        ("user_portrait", yesterday),
        ("launch_time", yesterday),
        ("performance", yesterday),
        ("js_errors", yesterday),
        ("quota", day("20240605")),
    ] {
        let labels = [("app", "shop"), ("report", report), ("period", "daily")];
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_ref_date_timestamp_seconds",
                &labels
            ),
            Some(held.start_instant().timestamp() as f64),
            "{report}"
        );
        let fetched = sample(
            &metrics,
            "wechat_miniprogram_last_success_timestamp_seconds",
            &labels,
        );
        assert_eq!(
            fetched,
            Some(beijing("2024-06-05 12:00").timestamp() as f64),
            "{report}"
        );
    }
    check_metrics(&metrics);
}

#[tokio::test]
async fn the_portrait_of_every_range_is_exported_however_its_ref_date_is_written() {
    use wechat_miniprogram_exporter::simulation::RefDateForm;
    let mut apps = two_apps();
    let mut third = apps[0].clone();
    third.name = "blog".into();
    third.appid = "wx3333333333333333".into();
    third.secret = "secret-blog-0123456789".into();
    apps.push(third);
    // shop answers as the official example does (a range named by its first day), news
    // with the range written out, blog with its last day.
    let forms = [
        RefDateForm::FirstDay,
        RefDateForm::Range,
        RefDateForm::LastDay,
    ];
    for (app, form) in apps.iter_mut().zip(forms) {
        app.portrait_ref_date = form;
    }
    let app = Exporter::new(apps.clone(), beijing("2024-06-05 12:00"))
        .toml(EVERY_REPORT)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let yesterday = day("20240604");
    let week = calls("user_portrait", yesterday).remove(1);
    let written = simulated_call(&apps[0], "user_portrait", &week, date("2024-06-04"));
    assert_eq!(
        written["ref_date"], "20240529",
        "the 7 days named by their first day"
    );
    for sim in &apps {
        for range in ["1d", "7d", "30d"] {
            let labels = [("app", sim.name.as_str()), ("range", range)];
            assert!(
                sample(&metrics, "wechat_miniprogram_portrait_uv", &labels).is_some(),
                "{} ({:?}): no portrait of {range}",
                sim.name,
                sim.portrait_ref_date
            );
        }
        let portrait_calls = app
            .calls_of(&sim.appid)
            .into_iter()
            .filter(|call| call.endpoint == "getweanalysisappiduserportrait")
            .count();
        assert_eq!(
            portrait_calls, 3,
            "{}: one call per range, none again",
            sim.name
        );
    }
}

#[tokio::test]
async fn the_portrait_performance_data_and_quota_are_the_simulated_values() {
    let app = every_report_at("2024-06-05 12:00").await;
    app.settle().await;
    let metrics = app.scrape().await;
    let shop = app.sim.apps()[0].clone();
    let yesterday = day("20240604");
    let last = date("2024-06-04");

    for (call, range) in calls("user_portrait", yesterday)
        .iter()
        .zip(["1d", "7d", "30d"])
    {
        let answer = simulated_call(&shop, "user_portrait", call, last);
        for (cohort, half) in [("new", "visit_uv_new"), ("active", "visit_uv")] {
            for (dimension, key) in [
                ("province", "province"),
                ("device", "devices"),
                ("age", "ages"),
            ] {
                let entries = answer[half][key].as_array().unwrap();
                let largest = entries
                    .iter()
                    .max_by_key(|e| e["value"].as_i64().unwrap())
                    .unwrap();
                let name = largest["name"].as_str().unwrap();
                let labels = [
                    ("app", "shop"),
                    ("range", range),
                    ("cohort", cohort),
                    ("dimension", dimension),
                    ("name", name),
                ];
                assert_eq!(
                    sample(&metrics, "wechat_miniprogram_portrait_uv", &labels),
                    largest["value"].as_f64(),
                    "{range} {cohort} {dimension}"
                );
            }
        }
    }

    let memory = &calls("performance", yesterday)[3];
    let answer = simulated_call(&shop, "performance", memory, last);
    for table in answer["data"]["body"]["tables"].as_array().unwrap() {
        let indicator = table["id"].as_str().unwrap();
        let value: f64 = table["lines"][0]["fields"][0]["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let labels = [
            ("app", "shop"),
            ("module", "memory"),
            ("indicator", indicator),
        ];
        assert_eq!(
            sample(&metrics, "wechat_miniprogram_performance", &labels),
            Some(value)
        );
    }
    assert_eq!(
        series(&metrics, "wechat_miniprogram_performance")
            .iter()
            .filter(|line| line.contains("app=\"shop\""))
            .count(),
        7,
        "five modules, seven indicators"
    );

    let today = day("20240605");
    let quota = &Report::by_name("quota")
        .unwrap()
        .calls(today, &ReportSettings::default())[0];
    let answer = simulated_call(&shop, "quota", quota, last);
    for (family, field) in [
        ("wechat_miniprogram_api_quota_daily_limit", "daily_limit"),
        ("wechat_miniprogram_api_quota_used", "used"),
        ("wechat_miniprogram_api_quota_remaining", "remain"),
    ] {
        let labels = [
            ("app", "shop"),
            ("endpoint", "getweanalysisappiddailyvisittrend"),
        ];
        assert_eq!(
            sample(&metrics, family, &labels),
            answer["quota"][field].as_f64(),
            "{family}"
        );
    }
    let endpoints = series(&metrics, "wechat_miniprogram_api_quota_used")
        .iter()
        .filter(|line| line.contains("app=\"shop\""))
        .count();
    assert_eq!(endpoints, 13, "every path the exporter calls, once");
}

#[tokio::test]
async fn js_errors_are_counted_by_type_with_the_top_groups_and_their_messages() {
    let app = every_report_at("2024-06-05 12:00").await;
    app.settle().await;
    let metrics = app.scrape().await;
    let shop = app.sim.apps()[0].clone();
    let yesterday = day("20240604");
    let answer = simulated_call(
        &shop,
        "js_errors",
        &calls("js_errors", yesterday)[0],
        date("2024-06-04"),
    );
    for (error_type, groups) in [("app", 45.0), ("plugin", 0.0), ("framework", 4.0)] {
        let labels = [("app", "shop"), ("error_type", error_type)];
        assert_eq!(
            sample(&metrics, "wechat_miniprogram_js_error_groups", &labels),
            Some(groups)
        );
    }
    let shop_app_errors: Vec<&str> = series(&metrics, "wechat_miniprogram_js_error_pv")
        .into_iter()
        .filter(|line| line.contains("app=\"shop\"") && line.contains("error_type=\"app\""))
        .collect();
    assert_eq!(shop_app_errors.len(), 10, "reports.js_errors_top");
    let top = &answer["data"][0];
    let id = &top["errorMsgMd5"].as_str().unwrap()[..12];
    let labels = [("app", "shop"), ("error_type", "app"), ("error_id", id)];
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_js_error_pv", &labels),
        top["pv"].as_f64()
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_js_error_uv", &labels),
        top["uv"].as_f64()
    );
    let message = top["errorMsg"].as_str().unwrap().lines().next().unwrap();
    let escaped = message.replace('\\', "\\\\").replace('"', "\\\"");
    let info = series(&metrics, "wechat_miniprogram_js_error_info")
        .into_iter()
        .find(|line| line.contains(&format!("error_id=\"{id}\"")) && line.contains("app=\"shop\""))
        .unwrap();
    assert!(
        info.ends_with(&format!("message=\"{escaped}\"}} 1")),
        "{info}"
    );
}

#[tokio::test]
async fn unpublished_console_reports_are_exported_as_nothing_until_published() {
    let mut apps = two_apps();
    // shop has data only from 2024-06-04 on, which is published at 10:00 on 06-05.
    apps[0].since = date("2024-06-04");
    let app = Exporter::new(apps, beijing("2024-06-05 09:00"))
        .toml(EVERY_REPORT)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        console_lines(&metrics, "shop"),
        Vec::<&str>::new(),
        "nothing, not zeros"
    );
    // news publishes at 10:00 as well, and shows the day before meanwhile (the portrait,
    // which WeChat keeps no past of, waits).
    assert!(sample(
        &metrics,
        "wechat_miniprogram_cumulative_users",
        &[("app", "news")]
    )
    .is_some());
    assert!(series(&metrics, "wechat_miniprogram_portrait_uv").is_empty());

    // While the daily trend is not out, no console report is asked for the day.
    let before = app.calls_of(SHOP).len();
    app.advance_to(beijing("2024-06-05 09:30")).await;
    let asked: Vec<String> = app.calls_of(SHOP)[before..]
        .iter()
        .filter(|call| call.body.is_some())
        .map(|call| call.endpoint.clone())
        .collect();
    // The week and the month, which began before the app's first day, are asked again too.
    assert_eq!(
        asked,
        [
            "getweanalysisappiddailyvisittrend",
            "getweanalysisappidweeklyvisittrend",
            "getweanalysisappidmonthlyvisittrend"
        ]
    );

    app.advance_to(beijing("2024-06-05 10:00")).await;
    let metrics = app.scrape().await;
    for family in CONSOLE_FAMILIES {
        assert!(
            series(&metrics, family)
                .iter()
                .any(|line| line.contains("app=\"shop\"")),
            "{family} once published"
        );
    }
}

#[tokio::test]
async fn a_report_refused_for_permission_leaves_the_app_up_and_is_asked_once_a_day_and_at_a_reload()
{
    const BOOT: &str = "wxa/business/performance/boot";
    let start = beijing("2024-06-05 12:00");
    let app = Exporter::new(two_apps(), start)
        .fault(SHOP, BOOT, Fault::Errcode(48001), 1000)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let shop_performance = series(&metrics, "wechat_miniprogram_performance")
        .into_iter()
        .filter(|line| line.contains("app=\"shop\""))
        .count();
    assert_eq!(shop_performance, 0);
    for family in [
        "wechat_miniprogram_visit_uv",
        "wechat_miniprogram_cumulative_users",
        "wechat_miniprogram_launch_time_seconds",
        "wechat_miniprogram_js_error_groups",
    ] {
        assert!(
            sample(&metrics, family, &[("app", "shop")]).is_some(),
            "{family}"
        );
    }
    let status = |metrics: &str, app: &str, report: &str, status: &str| {
        let labels = [
            ("app", app),
            ("report", report),
            ("period", "daily"),
            ("status", status),
        ];
        sample(metrics, "wechat_miniprogram_report_status", &labels)
    };
    for (who, expected) in [("shop", "unauthorized"), ("news", "ok")] {
        for state in ["ok", "waiting", "failing", "unauthorized"] {
            let value = if state == expected { 1.0 } else { 0.0 };
            assert_eq!(
                status(&metrics, who, "performance", state),
                Some(value),
                "{who} {state}"
            );
        }
    }
    assert_eq!(status(&metrics, "shop", "visit_trend", "ok"), Some(1.0));
    // One refused report is not the app down: its token and its visit trend are fine.
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    common::prometheus::check_metrics(&metrics);
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("errcode 48001"), "{page}");
    assert!(page.contains("grant the permission"), "{page}");

    // Three Beijing days, every 30 minutes: the refused call once a day, not every backoff.
    let mut instant = start;
    while instant < beijing("2024-06-08 12:00") {
        instant += chrono::Duration::minutes(30);
        app.advance_to(instant).await;
    }
    let refused_days = |app: &TestApp| {
        let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for call in app
            .calls_of(SHOP)
            .iter()
            .filter(|call| call.endpoint == BOOT)
        {
            *per_day
                .entry(wechat_miniprogram_exporter::period::beijing_date(call.at))
                .or_default() += 1;
        }
        per_day
    };
    let per_day = refused_days(&app);
    assert_eq!(per_day.len(), 4, "{per_day:?}");
    assert!(per_day.values().all(|calls| *calls == 1), "{per_day:?}");
    let warnings = app
        .logs
        .text()
        .lines()
        .filter(|line| line.contains("report not authorized") && line.contains("app=shop"))
        .count();
    assert_eq!(warnings, 4, "one warning a day");
    let metrics = app.scrape().await;
    assert_eq!(
        status(&metrics, "shop", "performance", "unauthorized"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );

    // A reload asks again at once: a person may have granted the permission.
    let before: usize = refused_days(&app).values().sum();
    let reload = app
        .http
        .post(format!("http://{}/-/reload", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    for _ in 0..200 {
        if refused_days(&app).values().sum::<usize>() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(refused_days(&app).values().sum::<usize>(), before + 1);
}

#[tokio::test]
async fn the_portrait_keeps_only_the_largest_entries() {
    let extra = "[reports]\nportrait_top = 5\nportrait_ranges = [\"7d\"]\n";
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .toml(extra)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for line in series(&metrics, "wechat_miniprogram_portrait_uv") {
        assert!(line.contains("range=\"7d\""), "{line}");
        let group = line.split(",name=").next().unwrap().to_string();
        *per_group.entry(group).or_default() += 1;
    }
    // 2 apps x 2 cohorts x 6 dimensions; genders and platforms have 3 entries each.
    assert_eq!(per_group.len(), 24);
    assert!(per_group.values().all(|&n| n <= 5), "{per_group:?}");
    assert_eq!(per_group.values().filter(|&&n| n == 5).count(), 16);
}

#[tokio::test]
async fn hostile_js_error_messages_give_valid_bounded_labels() {
    let messages = [
        "quote \" in the middle".to_string(),
        "back\\slash\\".to_string(),
        "first line\nsecond line\r\nthird".to_string(),
        "x".repeat(10 * 1024),
        "} 1\nwechat_miniprogram_up{app=\"shop\"} 0".to_string(),
    ];
    let data: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(n, message)| serde_json::json!({"errorMsgMd5": format!("{:012x}{:020x}", n + 1, 0), "errorMsg": message, "pv": 100 - n, "uv": 1}))
        .collect();
    let body = serde_json::json!({"success": true, "data": data, "totalCount": 5, "errcode": 0})
        .to_string();
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .fault(SHOP, "wxaapi/log/jserr_list", Fault::Body(body), 1)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let info: Vec<&str> = series(&metrics, "wechat_miniprogram_js_error_info")
        .into_iter()
        .filter(|line| line.contains("app=\"shop\"") && line.contains("error_type=\"app\""))
        .collect();
    assert_eq!(info.len(), 5, "{info:#?}");
    for line in &info {
        assert!(line.ends_with("\"} 1"), "{line}");
        assert!(line.len() < 300, "bounded: {line}");
    }
    assert!(info[2].contains("message=\"first line\"}"), "{}", info[2]);
    assert!(info[4].contains(r#"message="} 1"}"#), "{}", info[4]);
    assert_eq!(
        series(&metrics, "wechat_miniprogram_up")
            .iter()
            .filter(|l| l.contains("app=\"shop\""))
            .count(),
        1,
        "no line injected"
    );
    check_metrics(&metrics);
}

/// The calls of each report per app per day over a simulated week, to the day: what the
/// README's cost table says.
#[tokio::test]
async fn a_week_costs_the_calls_the_readme_lists() {
    let app = every_report_at("2024-06-05 12:00").await;
    app.settle().await;
    let start = app.calls_of(SHOP).len();
    // Every 30 minutes (polling.not_ready_retry) for a week, as a running exporter lives it.
    let first = beijing("2024-06-05 12:30");
    for step in 0..7 * 48 {
        app.advance_to(first + chrono::Duration::minutes(30 * step))
            .await;
    }
    let mut per_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for call in &app.calls_of(SHOP)[start..] {
        *per_endpoint.entry(call.endpoint.clone()).or_default() += 1;
    }
    eprintln!("calls of one app over 7 days (2024-06-06 to 06-12, one week and no month ending): {per_endpoint:#?}");
    // Published at 10:00: for the first three days, 8 not-ready probes of the daily trend
    // (from polling.first_attempt, 06:00, to 09:30); then the app knows the hour and asks
    // from 09:30, one probe a day, the week (on Monday) too; the quota every 6 hours for each
    // of 13 paths; a token when the last one is within 5 minutes of its 2 hours and a call
    // is due.
    let expected: BTreeMap<String, usize> = [
        (
            "getweanalysisappiddailyvisittrend",
            3 * (8 + 1) + 4 * (1 + 1),
        ),
        ("getweanalysisappidweeklyvisittrend", 1 + 1),
        ("getweanalysisappiddailyretaininfo", 7 * 10),
        ("getweanalysisappidweeklyretaininfo", 5),
        ("getweanalysisappidvisitdistribution", 7),
        ("getweanalysisappidvisitpage", 7),
        ("getweanalysisappiddailysummarytrend", 7),
        ("getweanalysisappiduserportrait", 7 * 3),
        ("wxaapi/log/get_performance", 7 * 3),
        ("wxa/business/performance/boot", 7 * 5),
        ("wxaapi/log/jserr_list", 7 * 3),
        ("cgi-bin/openapi/quota/get", 7 * 4 * 13),
        ("stable_token", 38),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(per_endpoint, expected);
}

#[tokio::test]
async fn each_exported_day_has_its_kind_in_the_calendar_and_a_calendar_file_is_applied() {
    // 2025-01-31, the Spring Festival's fourth day, is exported on 2025-02-01.
    let app = Exporter::new(two_apps(), beijing("2025-02-01 12:00"))
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    common::prometheus::check_metrics(&metrics);
    let kind = |metrics: &str, kind: &str| {
        let labels = [("app", "shop"), ("period", "daily"), ("kind", kind)];
        sample(metrics, "wechat_miniprogram_calendar_day", &labels)
    };
    assert_eq!(kind(&metrics, "holiday"), Some(1.0));
    assert_eq!(kind(&metrics, "workday"), Some(0.0));
    let labels = [("app", "shop"), ("holiday", "春节")];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_calendar_holiday_info",
            &labels
        ),
        Some(1.0)
    );

    // A calendar file: 2024-06-04 made a company holiday, and every year the exporter needs
    // now covered.
    let dir = common::prometheus::temp_dir("calendar-file");
    let file = dir.join("calendar.yaml");
    let today = wechat_miniprogram_exporter::period::beijing_date(chrono::Utc::now());
    let mut days = String::from("- {date: 2024-06-04, kind: holiday, name: company day}\n");
    for year in wechat_miniprogram_exporter::calendar::Calendar::years_needed(today) {
        days.push_str(&format!(
            "- {{date: {year}-01-01, kind: holiday, name: 元旦}}\n"
        ));
    }
    std::fs::write(&file, days).unwrap();
    let extra = format!("[calendar]\nfile = \"{}\"\n", file.display());
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .toml(&extra)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        kind(&metrics, "holiday"),
        Some(1.0),
        "2024-06-04 from the file"
    );
    let labels = [("app", "shop"), ("holiday", "company day")];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_calendar_holiday_info",
            &labels
        ),
        Some(1.0)
    );
    for line in series(
        &metrics,
        "wechat_miniprogram_exporter_calendar_year_covered",
    ) {
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(!app.logs.text().contains("the calendar does not know"));
}

#[tokio::test]
async fn a_year_the_calendar_does_not_cover_is_warned_of_and_exported_as_zero() {
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let today = wechat_miniprogram_exporter::period::beijing_date(chrono::Utc::now());
    let calendar = wechat_miniprogram_exporter::calendar::Calendar::default();
    for year in wechat_miniprogram_exporter::calendar::Calendar::years_needed(today) {
        let year_label = year.to_string();
        let covered = sample(
            &metrics,
            "wechat_miniprogram_exporter_calendar_year_covered",
            &[("year", &year_label)],
        );
        assert_eq!(
            covered,
            Some(if calendar.covers(year) { 1.0 } else { 0.0 }),
            "{year}"
        );
        let warned = app
            .logs
            .text()
            .contains(&format!("does not know the public holidays of {year}"));
        assert_eq!(warned, !calendar.covers(year), "{year}");
    }
    // A year far out is never covered by the built-in table: the check can fail.
    assert!(!calendar.covers(2099));
}
