//! The agent against the simulated WeChat API: what it exports, when it calls, how it reacts.

use crate::common::{self, Exporter};

use std::collections::{BTreeMap, HashSet};

use chrono::{Duration, NaiveDate};
use serde_json::Value;

use common::{beijing, sample, series, simulated, simulated_trend, two_apps};
use wechat_miniprogram_exporter::period::Period;
use wechat_miniprogram_exporter::simulation::{Fault, SimApp};

const DAILY_TREND: &str = "getweanalysisappiddailyvisittrend";

fn period(ref_date: &str) -> Period {
    Period::parse_ref_date(ref_date).unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn item(list: &Value, key: i64) -> f64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == key)
        .unwrap()["value"]
        .as_f64()
        .unwrap()
}

const DATA_FAMILIES: [&str; 24] = [
    "wechat_miniprogram_sessions",
    "wechat_miniprogram_visit_pv",
    "wechat_miniprogram_visit_uv",
    "wechat_miniprogram_visit_uv_new",
    "wechat_miniprogram_stay_time_uv_seconds",
    "wechat_miniprogram_stay_time_session_seconds",
    "wechat_miniprogram_visit_depth",
    "wechat_miniprogram_retention_uv",
    "wechat_miniprogram_retention_ratio",
    "wechat_miniprogram_retention_cohort_timestamp_seconds",
    "wechat_miniprogram_access_source_sessions",
    "wechat_miniprogram_access_source_uv",
    "wechat_miniprogram_stay_time_distribution",
    "wechat_miniprogram_visit_depth_distribution",
    "wechat_miniprogram_page_visit_pv",
    "wechat_miniprogram_page_visit_uv",
    "wechat_miniprogram_page_stay_time_seconds",
    "wechat_miniprogram_page_entry_pv",
    "wechat_miniprogram_page_exit_pv",
    "wechat_miniprogram_page_share_pv",
    "wechat_miniprogram_page_share_uv",
    "wechat_miniprogram_ref_date_timestamp_seconds",
    "wechat_miniprogram_last_success_timestamp_seconds",
    "wechat_miniprogram_up",
];

/// Data lines (not the exporter's own health) that mention `app`.
fn data_lines<'a>(metrics: &'a str, app: &str) -> Vec<&'a str> {
    let label = format!("app=\"{app}\"");
    DATA_FAMILIES[..21]
        .iter()
        .flat_map(|family| series(metrics, family))
        .filter(|line| line.contains(&label))
        .collect()
}

#[tokio::test]
async fn all_reports_are_exported_with_the_simulated_values() {
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .toml("[reports]\npages_top = 5")
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    for family in DATA_FAMILIES {
        assert!(!series(&metrics, family).is_empty(), "{family} missing");
    }
    let shop = app.sim.apps()[0].clone();
    let labels = |period: &'static str| {
        [
            ("app", "shop"),
            ("appid", "wx1111111111111111"),
            ("period", period),
        ]
    };

    for (kind, ref_date) in [
        ("daily", "20240604"),
        ("weekly", "20240527-20240602"),
        ("monthly", "202405"),
    ] {
        let expected = simulated_trend(&shop, period(ref_date));
        for (field, family) in [
            ("visit_uv", "wechat_miniprogram_visit_uv"),
            ("visit_uv_new", "wechat_miniprogram_visit_uv_new"),
            ("session_cnt", "wechat_miniprogram_sessions"),
            ("visit_pv", "wechat_miniprogram_visit_pv"),
            ("stay_time_uv", "wechat_miniprogram_stay_time_uv_seconds"),
            (
                "stay_time_session",
                "wechat_miniprogram_stay_time_session_seconds",
            ),
            ("visit_depth", "wechat_miniprogram_visit_depth"),
        ] {
            assert_eq!(
                sample(&metrics, family, &labels(kind)),
                expected[field].as_f64(),
                "{family} {kind}"
            );
        }
        let start = period(ref_date).start_instant().timestamp() as f64;
        let freshness = [("app", "shop"), ("report", "visit_trend"), ("period", kind)];
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_ref_date_timestamp_seconds",
                &freshness
            ),
            Some(start)
        );
    }

    // Retention: lag k from the cohort k periods back, as known on the day after 2024-06-04.
    let last_day = date("2024-06-04");
    for (kind, held, lag) in [
        ("daily", "20240604", 3u32),
        ("daily", "20240604", 30),
        ("weekly", "20240527-20240602", 2),
        ("monthly", "202405", 1),
    ] {
        let cohort = period(held).back(lag);
        let expected = simulated(&shop, "retention", cohort, last_day);
        let lag_text = lag.to_string();
        for (cohort_label, field) in [("new", "visit_uv_new"), ("active", "visit_uv")] {
            let labels = [
                ("app", "shop"),
                ("period", kind),
                ("cohort", cohort_label),
                ("lag", lag_text.as_str()),
            ];
            let kept = item(&expected[field], i64::from(lag));
            assert!(kept > 0.0);
            assert_eq!(
                sample(&metrics, "wechat_miniprogram_retention_uv", &labels),
                Some(kept),
                "{kind} lag {lag}"
            );
            let ratio = sample(&metrics, "wechat_miniprogram_retention_ratio", &labels).unwrap();
            assert!((ratio - kept / item(&expected[field], 0)).abs() < 1e-12);
        }
        let labels = [
            ("app", "shop"),
            ("period", kind),
            ("lag", lag_text.as_str()),
        ];
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_retention_cohort_timestamp_seconds",
                &labels
            ),
            Some(cohort.start_instant().timestamp() as f64)
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_retention_ratio",
            &[("app", "shop"), ("lag", "0")]
        ),
        None
    );

    // Distribution and pages of 2024-06-04.
    let distribution = simulated(&shop, "visit_distribution", period("20240604"), last_day);
    let index = |name: &str| {
        distribution["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["index"] == name)
            .unwrap()["item_list"]
            .clone()
    };
    let labels = [("app", "shop"), ("key", "3"), ("source", "chat")];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_access_source_sessions",
            &labels
        ),
        Some(item(&index("access_source_session_cnt"), 3))
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_access_source_uv", &labels),
        Some(item(&index("access_source_visit_uv"), 3))
    );
    let labels = [("app", "shop"), ("key", "8"), ("bucket", ">100s")];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_stay_time_distribution",
            &labels
        ),
        Some(item(&index("access_staytime_info"), 8))
    );
    let labels = [("app", "shop"), ("key", "6"), ("bucket", "6-10")];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_visit_depth_distribution",
            &labels
        ),
        Some(item(&index("access_depth_info"), 6))
    );

    let pages = simulated(&shop, "visit_page", period("20240604"), last_day);
    let top = &pages["list"][0];
    let labels = [
        ("app", "shop"),
        ("page", top["page_path"].as_str().unwrap()),
    ];
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_page_visit_pv", &labels),
        top["page_visit_pv"].as_f64()
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_page_stay_time_seconds",
            &labels
        ),
        top["page_staytime_pv"].as_f64()
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_page_exit_pv", &labels),
        top["exitpage_pv"].as_f64()
    );
    let shop_pages = series(&metrics, "wechat_miniprogram_page_visit_pv")
        .into_iter()
        .filter(|l| l.contains("app=\"shop\""))
        .count();
    assert_eq!(shop_pages, 5, "pages_top = 5");
}

#[tokio::test]
async fn an_expired_token_gives_exactly_one_refresh_and_one_retry() {
    // Before 10:00 the latest day is not out; the exporter shows the day before.
    let app = Exporter::new(two_apps(), beijing("2024-06-05 09:50"))
        .start()
        .await;
    app.settle().await;
    let shop = "wx1111111111111111";
    let before = app.calls_of(shop).len();
    let fetches = sample(
        &app.scrape().await,
        "wechat_miniprogram_token_fetches_total",
        &[("app", "shop"), ("outcome", "success")],
    );
    assert_eq!(fetches, Some(1.0));

    app.sim.expire_tokens(shop);
    app.advance_to(beijing("2024-06-05 10:25")).await;

    let calls = app.calls_of(shop)[before..].to_vec();
    let endpoints: Vec<(&str, i64)> = calls
        .iter()
        .map(|c| (c.endpoint.as_str(), c.errcode))
        .collect();
    assert_eq!(
        &endpoints[..3],
        [(DAILY_TREND, 42001), ("stable_token", 0), (DAILY_TREND, 0)],
        "{endpoints:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.errcode == 42001).count(), 1);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.endpoint == "stable_token")
            .count(),
        1
    );
    let metrics = app.scrape().await;
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_token_fetches_total",
            &[("app", "shop"), ("outcome", "success")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    let day = period("20240604").start_instant().timestamp() as f64;
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_ref_date_timestamp_seconds",
            &[("app", "shop"), ("report", "visit_page")]
        ),
        Some(day)
    );
}

#[tokio::test]
async fn a_token_refused_twice_is_an_error_not_a_loop() {
    let shop = "wx1111111111111111";
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .fault(shop, DAILY_TREND, Fault::Errcode(40001), 2)
        .start()
        .await;
    app.settle().await;
    let calls = app.calls_of(shop);
    let trend: Vec<i64> = calls
        .iter()
        .filter(|c| c.endpoint == DAILY_TREND)
        .map(|c| c.errcode)
        .collect();
    assert_eq!(trend, [40001, 40001]);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.endpoint == "stable_token")
            .count(),
        2
    );
    let metrics = app.scrape().await;
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_api_errors_total",
            &[
                ("app", "shop"),
                ("endpoint", DAILY_TREND),
                ("errcode", "40001")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn unpublished_periods_are_retried_later_and_exported_as_nothing() {
    let mut apps = two_apps();
    // shop has data only from 2024-06-04 on, which is published at 10:00 on 06-05.
    apps[0].since = date("2024-06-04");
    let app = Exporter::new(apps, beijing("2024-06-05 09:00"))
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        data_lines(&metrics, "shop"),
        Vec::<&str>::new(),
        "nothing, not zeros"
    );
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    // news (61503 before publication) shows the day before while waiting.
    let day_before = period("20240603").start_instant().timestamp() as f64;
    let news_daily = [
        ("app", "news"),
        ("report", "visit_trend"),
        ("period", "daily"),
    ];
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_ref_date_timestamp_seconds",
            &news_daily
        ),
        Some(day_before)
    );

    // 30 minutes later the daily trend is asked again, and nothing else of the day.
    let before: Vec<usize> = ["wx1111111111111111", "wx2222222222222222"]
        .iter()
        .map(|a| app.calls_of(a).len())
        .collect();
    app.advance_to(beijing("2024-06-05 09:30")).await;
    for (appid, before) in ["wx1111111111111111", "wx2222222222222222"]
        .iter()
        .zip(before)
    {
        let daily: Vec<String> = app.calls_of(appid)[before..]
            .iter()
            .filter(|c| c.begin_date.as_deref() == Some("20240604"))
            .map(|c| c.endpoint.clone())
            .collect();
        assert_eq!(daily, [DAILY_TREND], "{appid}");
    }
    assert_eq!(data_lines(&app.scrape().await, "shop"), Vec::<&str>::new());

    // Published at 10:00: the 10:00 retry gets it, for every daily report.
    app.advance_to(beijing("2024-06-05 10:00")).await;
    let metrics = app.scrape().await;
    let shop = app.sim.apps()[0].clone();
    let expected = simulated_trend(&shop, period("20240604"));
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_visit_uv",
            &[("app", "shop"), ("period", "daily")]
        ),
        expected["visit_uv"].as_f64()
    );
    let day = period("20240604").start_instant().timestamp() as f64;
    for report in [
        "visit_trend",
        "retention",
        "visit_distribution",
        "visit_page",
    ] {
        for app_name in ["shop", "news"] {
            let labels = [("app", app_name), ("report", report), ("period", "daily")];
            assert_eq!(
                sample(
                    &metrics,
                    "wechat_miniprogram_ref_date_timestamp_seconds",
                    &labels
                ),
                Some(day),
                "{app_name} {report}"
            );
        }
    }
    // shop's week and month began before its data: still nothing for them, and no zero.
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_visit_uv",
            &[("app", "shop"), ("period", "weekly")]
        ),
        None
    );
}

#[tokio::test]
async fn the_daily_quota_stops_calls_for_that_app_until_the_next_beijing_day() {
    let shop = "wx1111111111111111";
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .fault(shop, DAILY_TREND, Fault::Errcode(45009), 1)
        .start()
        .await;
    app.settle().await;
    let calls = app.calls_of(shop).len();
    assert_eq!(
        calls,
        2,
        "one token fetch and the refused call: {:?}",
        app.calls_of(shop)
    );
    let metrics = app.scrape().await;
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(0.0)
    );
    assert!(
        sample(
            &metrics,
            "wechat_miniprogram_visit_uv",
            &[("app", "news"), ("period", "daily")]
        )
        .is_some(),
        "other apps go on"
    );

    app.advance_to(beijing("2024-06-05 23:59")).await;
    assert_eq!(
        app.calls_of(shop).len(),
        calls,
        "no call before the next Beijing day"
    );

    app.advance_to(beijing("2024-06-06 00:01")).await;
    assert!(app.calls_of(shop).len() > calls);
    let metrics = app.scrape().await;
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    // The new day is not out yet; the day before is shown.
    let day = period("20240604").start_instant().timestamp() as f64;
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_ref_date_timestamp_seconds",
            &[
                ("app", "shop"),
                ("report", "visit_trend"),
                ("period", "daily")
            ]
        ),
        Some(day)
    );
}

#[tokio::test]
async fn the_minute_quota_pauses_the_app_until_the_next_minute() {
    let shop = "wx1111111111111111";
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .fault(shop, DAILY_TREND, Fault::Errcode(45011), 1)
        .start()
        .await;
    app.settle().await;
    let calls = app.calls_of(shop).len();
    app.advance_to(beijing("2024-06-05 12:00") + Duration::seconds(59))
        .await;
    assert_eq!(app.calls_of(shop).len(), calls);
    app.advance_to(beijing("2024-06-05 12:01") + Duration::seconds(1))
        .await;
    let metrics = app.scrape().await;
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
}

#[tokio::test]
async fn server_errors_and_garbage_back_off_exponentially() {
    let shop = "wx1111111111111111";
    let start = beijing("2024-06-05 12:00");
    let app = Exporter::new(two_apps(), start)
        .fault(shop, DAILY_TREND, Fault::Status(502), 1)
        .fault(shop, DAILY_TREND, Fault::Garbage, 1)
        .start()
        .await;
    app.settle().await;
    let trend_calls = || {
        app.calls_of(shop)
            .iter()
            .filter(|c| c.endpoint == DAILY_TREND)
            .count()
    };
    assert_eq!(trend_calls(), 1);
    let metrics = app.scrape().await;
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_visit_uv",
            &[("app", "shop"), ("period", "daily")]
        ),
        None
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_page_visit_pv",
            &[("app", "shop")]
        ),
        None,
        "the other daily reports wait for the trend, which tells whether the day is out"
    );
    assert!(sample(&metrics, "wechat_miniprogram_visit_uv", &[("app", "news")]).is_some());

    // First retry after exactly the initial backoff (30s).
    app.advance_to(start + Duration::seconds(29)).await;
    assert_eq!(trend_calls(), 1);
    app.advance_to(start + Duration::seconds(30)).await;
    assert_eq!(trend_calls(), 2);
    // Second retry after 30..60s more (doubled, with jitter).
    app.advance_to(start + Duration::seconds(59)).await;
    assert_eq!(trend_calls(), 2);
    app.advance_to(start + Duration::seconds(90)).await;
    assert_eq!(trend_calls(), 3);

    let metrics = app.scrape().await;
    let pages = sample(
        &metrics,
        "wechat_miniprogram_page_visit_pv",
        &[("app", "shop")],
    );
    assert!(pages.is_some(), "fetched once the trend is");
    let errors = |errcode| {
        sample(
            &metrics,
            "wechat_miniprogram_api_errors_total",
            &[
                ("app", "shop"),
                ("endpoint", DAILY_TREND),
                ("errcode", errcode),
            ],
        )
    };
    assert_eq!(errors("http_502"), Some(1.0));
    assert_eq!(errors("decode"), Some(1.0));
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
}

#[tokio::test]
async fn no_scrape_calls_wechat() {
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .start()
        .await;
    app.settle().await;
    let calls = app.sim.calls().len();
    for _ in 0..10 {
        app.scrape().await;
        let gzipped = app
            .http
            .get(format!("http://{}/metrics", app.address))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gzipped.headers()["content-encoding"], "gzip");
        for path in ["/", "/healthz", "/readyz"] {
            assert_eq!(app.get(path).await.status(), 200, "{path}");
        }
    }
    assert_eq!(app.sim.calls().len(), calls);
}

#[tokio::test]
async fn a_period_already_held_is_not_fetched_again() {
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .start()
        .await;
    app.settle().await;
    let shop = "wx1111111111111111";
    let calls = app.calls_of(shop).len();
    app.advance_to(beijing("2024-06-05 23:59")).await;
    assert_eq!(app.calls_of(shop).len(), calls, "nothing new the same day");

    app.advance_to(beijing("2024-06-06 12:00")).await;
    let mut per_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for call in &app.calls_of(shop)[calls..] {
        *per_endpoint.entry(call.endpoint.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("getweanalysisappiddailyretaininfo", 10),
        (DAILY_TREND, 1),
        ("getweanalysisappidvisitdistribution", 1),
        ("getweanalysisappidvisitpage", 1),
        ("getweanalysisappiddailysummarytrend", 1),
        ("getweanalysisappiduserportrait", 3),
        ("wxaapi/log/get_performance", 3),
        ("wxa/business/performance/boot", 5),
        ("wxaapi/log/jserr_list", 3),
        ("stable_token", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        per_endpoint, expected,
        "one new day: 17 datacube calls, 11 other report calls and a fresh token"
    );

    // Over the whole run, no (report, period) was asked twice (retention cohorts are asked
    // once per day held, for a different key each time).
    let mut seen = HashSet::new();
    for call in app
        .sim
        .calls()
        .iter()
        .filter(|c| c.begin_date.is_some() && !c.endpoint.contains("retaininfo"))
    {
        assert!(
            seen.insert((
                call.appid.clone(),
                call.endpoint.clone(),
                call.begin_date.clone()
            )),
            "{call:?} twice"
        );
    }
}

#[tokio::test]
async fn a_new_week_and_month_are_fetched_when_they_end() {
    // Sunday 2024-06-30 12:00: the week and the month end at midnight.
    let app = Exporter::new(two_apps(), beijing("2024-06-30 12:00"))
        .start()
        .await;
    app.settle().await;
    app.advance_to(beijing("2024-07-01 12:00")).await;
    let metrics = app.scrape().await;
    for (report, kind, ref_date) in [
        ("visit_trend", "weekly", "20240624-20240630"),
        ("retention", "monthly", "202406"),
        ("visit_trend", "monthly", "202406"),
    ] {
        let labels = [("app", "news"), ("report", report), ("period", kind)];
        let start = period(ref_date).start_instant().timestamp() as f64;
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_ref_date_timestamp_seconds",
                &labels
            ),
            Some(start),
            "{report} {kind}"
        );
    }
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_logs_metrics_or_pages() {
    let shop = "wx1111111111111111";
    // news is configured with a wrong secret: a configuration error, logged with its fix.
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .edit(|toml| toml.replace("secret-news-0123456789", "wrong-secret-news-987654"))
        .fault(shop, DAILY_TREND, Fault::Errcode(40001), 2)
        .fault(shop, "getweanalysisappidvisitpage", Fault::Status(503), 1)
        .start()
        .await;
    app.settle().await;
    app.advance_to(beijing("2024-06-05 13:00")).await;
    let logs = app.logs.text();
    assert!(logs.contains("errcode=40125"), "{logs}");
    assert!(
        logs.contains("AppSecret is wrong"),
        "the fix is named: {logs}"
    );
    assert!(logs.contains("errcode=40001"), "{logs}");
    let metrics = app.scrape().await;
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        page.contains("40125"),
        "the landing page shows the last error"
    );
    assert!(
        page.contains("check apps.news.secret or secret_file"),
        "and the fix, with the app's own key"
    );
    assert!(
        logs.contains("check apps.news.secret or secret_file"),
        "{logs}"
    );
    let mut credentials = app.sim.issued_tokens();
    assert!(!credentials.is_empty());
    credentials.extend(
        [
            "secret-shop-0123456789",
            "secret-news-0123456789",
            "wrong-secret-news-987654",
        ]
        .map(String::from),
    );
    for credential in &credentials {
        for (what, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("landing page", &page),
        ] {
            assert!(
                !text.contains(credential.as_str()),
                "{what} hold a credential"
            );
        }
    }
    assert!(!logs.contains("access_token="), "{logs}");
}

#[tokio::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let shop = "wx1111111111111111";
    let app = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .fault(shop, "getweanalysisappidvisitpage", Fault::Status(500), 1)
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert!(metrics.contains("wechat_miniprogram_api_errors_total{"));
    common::prometheus::check_metrics(&metrics);
}

#[tokio::test]
async fn readiness_waits_for_every_app_first_round() {
    use std::sync::Arc;
    use wechat_miniprogram_exporter::config::Config;
    use wechat_miniprogram_exporter::metrics::SelfMetrics;
    use wechat_miniprogram_exporter::sink::{AppSlot, Sink};
    use wechat_miniprogram_exporter::store::Store;

    let toml = common::config_toml(&two_apps(), "127.0.0.1:9".parse().unwrap(), "");
    let config = Config::from_toml(&toml).unwrap();
    let store = Arc::new(Store::new(&config.apps, Arc::new(SelfMetrics::new())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(wechat_miniprogram_exporter::server::listen::serve(
        listener,
        wechat_miniprogram_exporter::server::router(store.clone()),
        None,
        wechat_miniprogram_exporter::server::listen::Limits::default(),
        std::future::pending(),
    ));
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{address}{path}"))
            .await
            .unwrap()
            .status()
    };

    assert_eq!(status("/readyz").await, 503);
    assert_eq!(status("/healthz").await, 200);
    store.first_round_done(AppSlot(0));
    assert_eq!(status("/readyz").await, 503, "one app of two");
    store.first_round_done(AppSlot(1));
    assert_eq!(status("/readyz").await, 200);
}

#[tokio::test]
async fn the_status_pages_show_each_app_failing_first_and_each_report() {
    let mut apps = two_apps();
    apps.push(SimApp::new(
        "blog",
        "wx3333333333333333",
        "secret-blog-0123456789",
        100.0,
    ));
    let app = Exporter::new(apps, beijing("2024-06-05 12:00"))
        .edit(|toml| toml.replace("secret-news-0123456789", "wrong-secret"))
        .start()
        .await;
    app.settle().await;
    let page = app.get("/").await.text().await.unwrap();
    for needle in [
        "href=\"/metrics\"",
        "3 Mini Programs: <b>2 up</b>, <b class=\"down\">1 down</b>",
        "href=\"/apps/blog\"",
        "errcode 40125",
    ] {
        assert!(
            page.contains(needle),
            "landing page lacks {needle}:\n{page}"
        );
    }
    let (news, blog) = (
        page.find("/apps/news").unwrap(),
        page.find("/apps/blog").unwrap(),
    );
    assert!(news < blog, "the failing app first");

    let detail = app.get("/apps/shop").await.text().await.unwrap();
    for needle in [
        "visit_distribution",
        "day 2024-06-04",
        "week 2024-05-27..2024-06-02",
    ] {
        assert!(detail.contains(needle), "the app's page lacks {needle}");
    }
    assert_eq!(app.get("/apps/nobody").await.status(), 404);
}

#[tokio::test]
async fn polling_once_reports_failures() {
    use wechat_miniprogram_exporter::clock::Clock;
    use wechat_miniprogram_exporter::config::Config;
    use wechat_miniprogram_exporter::startup;

    let clock = Clock::manual(beijing("2024-06-05 12:00"));
    let sim = wechat_miniprogram_exporter::simulation::Simulation::new(two_apps(), clock.clone());
    let api = sim
        .clone()
        .spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let toml = common::config_toml(&two_apps(), api, "");
    let config = Config::from_toml(&toml).unwrap();
    let (store, failed) = startup::once(&config, clock.clone()).await.unwrap();
    assert!(!failed);
    let metrics = String::from_utf8(store.metrics(false).to_vec()).unwrap();
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "news"), ("period", "monthly")]
    )
    .is_some());

    let broken = toml.replace("secret-news-0123456789", "wrong");
    let config = Config::from_toml(&broken).unwrap();
    let (_, failed) = startup::once(&config, clock).await.unwrap();
    assert!(failed);
}

#[tokio::test]
async fn tokens_can_come_from_the_classic_endpoint_a_token_service_or_a_file() {
    let apps = vec![
        SimApp::new(
            "classic",
            "wx1111111111111111",
            "secret-classic-01234",
            1000.0,
        ),
        SimApp::new(
            "service",
            "wx2222222222222222",
            "secret-service-01234",
            1000.0,
        ),
        SimApp::new(
            "filed",
            "wx3333333333333333",
            "secret-filed-0123456",
            1000.0,
        ),
    ];
    let token_file = std::env::temp_dir().join(format!("wmpe-token-{}", std::process::id()));
    let file_for_edit = token_file.clone();
    let app = Exporter::new(apps, beijing("2024-06-05 12:00")).edit(move |toml| {
            let api = toml.lines().next().unwrap().trim_start_matches("api_base_url = \"").trim_end_matches('"').to_string();
            toml.replace(
                "appid = \"wx1111111111111111\"\n",
                "appid = \"wx1111111111111111\"\ntoken_source = \"token\"\n",
            )
            // A token service: here the classic endpoint, which answers {access_token, expires_in}.
            .replace(
                "appid = \"wx2222222222222222\"\nsecret = \"secret-service-01234\"\n",
                &format!("appid = \"wx2222222222222222\"\ntoken_source = \"url\"\ntoken_url = \"{api}/cgi-bin/token?grant_type=client_credential&appid={{appid}}&secret=secret-service-01234\"\n"),
            )
            .replace(
                "appid = \"wx3333333333333333\"\nsecret = \"secret-filed-0123456\"\n",
                &format!("appid = \"wx3333333333333333\"\ntoken_source = \"file\"\ntoken_file = \"{}\"\n", file_for_edit.display()),
            )
        }).start()
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    for name in ["classic", "service"] {
        assert!(
            sample(
                &metrics,
                "wechat_miniprogram_visit_uv",
                &[("app", name), ("period", "daily")]
            )
            .is_some(),
            "{name}"
        );
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_token_fetches_total",
                &[("app", name), ("outcome", "success")]
            ),
            Some(1.0)
        );
    }
    assert_eq!(
        app.calls_of("wx1111111111111111")
            .iter()
            .filter(|c| c.endpoint == "token")
            .count(),
        1
    );
    assert_eq!(
        app.calls_of("wx1111111111111111")
            .iter()
            .filter(|c| c.endpoint == "stable_token")
            .count(),
        0
    );
    // No file yet: the token source fails and says so, without a panic.
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "filed")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_token_fetches_total",
            &[("app", "filed"), ("outcome", "error")]
        ),
        Some(1.0)
    );
    assert!(app.logs.text().contains("cannot read token file"));

    // Another program (a central token service) writes the token; the next retry uses it.
    let answer: Value = app
        .http
        .post(format!("http://{}/cgi-bin/stable_token", app.api))
        .json(&serde_json::json!({"grant_type": "client_credential", "appid": "wx3333333333333333", "secret": "secret-filed-0123456"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(
        &token_file,
        format!("{}\n", answer["access_token"].as_str().unwrap()),
    )
    .unwrap();
    app.advance_to(beijing("2024-06-05 12:00") + Duration::seconds(30))
        .await;
    let metrics = app.scrape().await;
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "filed"), ("period", "daily")]
    )
    .is_some());
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "filed")]),
        Some(1.0)
    );
    let _ = std::fs::remove_file(&token_file);
}

/// Four simulated apps, app1 (wx1111111111111111) to app4.
fn four_apps() -> Vec<SimApp> {
    let app = |n: u32| {
        let appid = format!("wx{}", n.to_string().repeat(16));
        SimApp::new(&format!("app{n}"), &appid, "secret-0123456789", 1000.0)
    };
    (1..=4).map(app).collect()
}

#[tokio::test]
async fn no_more_than_polling_concurrency_requests_are_in_flight() {
    let apps = four_apps();
    let app = Exporter::new(apps, beijing("2024-06-05 12:00"))
        .toml("[polling]\nconcurrency = 2")
        .prepare(|sim| {
            sim.set_latency(std::time::Duration::from_millis(15));
        })
        .start()
        .await;
    app.settle().await;
    assert_eq!(
        app.sim.max_in_flight(),
        2,
        "two at a time, and not one by one"
    );
}

#[tokio::test]
async fn the_simulation_counts_each_report_call_and_the_time_it_took_to_answer() {
    let apps = four_apps();
    let latency = std::time::Duration::from_millis(15);
    let app = Exporter::new(apps, beijing("2024-06-05 12:00"))
        .toml("[polling]\nconcurrency = 2")
        .prepare(move |sim| sim.set_latency(latency))
        .start()
        .await;
    app.settle().await;
    let served = app.sim.served();
    let report_calls = app
        .sim
        .calls()
        .iter()
        .filter(|call| !call.endpoint.contains("token"))
        .count();
    assert!(report_calls > 8, "{report_calls}");
    assert_eq!(served.calls, report_calls as u64);
    assert!(
        served.service_seconds >= latency.as_secs_f64(),
        "{served:?}"
    );
    // Two at a time, each at least the latency: the first call to the last answer cannot be
    // shorter than that floor.
    let floor = served.service_seconds * served.calls as f64 / 2.0;
    assert!(served.first_to_last_seconds >= floor * 0.99, "{served:?}");
}

#[tokio::test]
async fn the_calls_of_one_period_are_made_in_one_turn_not_in_step_with_every_other_app() {
    let apps = four_apps();
    let app = Exporter::new(apps, beijing("2024-06-05 16:00"))
        .toml(
            "[polling]\nconcurrency = 1\n[reports]\nenabled = [\"visit_trend\", \"user_portrait\"]",
        )
        .prepare(|sim| {
            sim.set_latency(std::time::Duration::from_millis(5));
        })
        .start()
        .await;
    app.settle().await;
    // The portrait of a day is three calls (1, 7 and 30 days): each app's follow one another,
    // where requests taken in turn would have gone app1, app2, app3, app4, app1...
    let portraits: Vec<String> = app
        .sim
        .calls()
        .into_iter()
        .filter(|call| call.endpoint == "getweanalysisappiduserportrait")
        .filter_map(|call| call.appid)
        .collect();
    assert_eq!(portraits.len(), 12, "{portraits:?}");
    for period in portraits.chunks(3) {
        assert!(
            period.iter().all(|appid| *appid == period[0]),
            "{portraits:?}"
        );
    }
}
