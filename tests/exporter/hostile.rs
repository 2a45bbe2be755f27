//! The exporter against a hostile WeChat and bad input: each defect a security review found
//! has its regression test here (numbered as the review numbered them), with what else the
//! exporter must withstand. The binary-level ones (memory, signals, file descriptors,
//! configuration and secrets) run the real binary.

use crate::common::{self, Exporter};

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use common::hostile::{endless, json as answer, Hostile, Rule, Seen};
use common::prometheus::{check_metrics, temp_dir};
use common::tools::{curl, Binary};
use common::{beijing, sample, series, spawn_simulation, two_apps, TestApp};
use wechat_miniprogram_exporter::simulation::SimApp;
use wechat_miniprogram_exporter::wechat::KNOWN_ERRCODES;

const DAILY_TREND: &str = "datacube/getweanalysisappiddailyvisittrend";
const DISTRIBUTION: &str = "datacube/getweanalysisappidvisitdistribution";
const STABLE_TOKEN: &str = "cgi-bin/stable_token";

async fn behind(rule: Rule) -> (TestApp, Hostile) {
    behind_with("", rule).await
}

async fn behind_with(extra: &str, rule: Rule) -> (TestApp, Hostile) {
    let (app, proxy) = Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
        .toml(extra)
        .behind(rule)
        .start_behind()
        .await;
    (app, proxy.unwrap())
}

/// The upstream answer as JSON, changed by `change`.
fn rewrite(upstream: &Bytes, change: impl FnOnce(&mut Value)) -> Response {
    let mut value: Value = serde_json::from_slice(upstream).unwrap_or_default();
    change(&mut value);
    answer(value)
}

fn stable_tokens(proxy: &Hostile, appid: &str) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|seen| seen.path == STABLE_TOKEN && seen.json()["appid"] == appid)
        .count()
}

// 1. No bound on an answer's size: an endless answer is cut at the bound.
#[tokio::test]
async fn defect_1_an_endless_answer_is_cut_at_the_bound_and_is_a_decode_error() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        (seen.path == DAILY_TREND).then(endless)
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let labels = [
        ("app", "shop"),
        ("endpoint", "getweanalysisappiddailyvisittrend"),
        ("errcode", "decode"),
    ];
    assert!(sample(&metrics, "wechat_miniprogram_api_errors_total", &labels).is_some());
    let page = app.get("/apps/shop").await.text().await.unwrap();
    assert!(page.contains("longer than 4 MiB"), "{page}");
}

// 1. Four answers of 200 MB: refused on their announced length, never read.
#[tokio::test]
async fn defect_1_answers_announced_larger_than_the_bound_are_not_read() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        (seen.path.starts_with("datacube/")).then(|| {
            let mut response = Response::new(axum::body::Body::new(Sized200Mb(200 << 20)));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        })
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let decode = series(&metrics, "wechat_miniprogram_api_errors_total")
        .into_iter()
        .filter(|line| line.contains("errcode=\"decode\""))
        .count();
    assert!(decode >= 4, "{metrics}");
    assert!(
        series(&metrics, "wechat_miniprogram_visit_uv").is_empty(),
        "nothing accepted as data"
    );
}

/// A body announcing `usize` bytes of spaces.
struct Sized200Mb(u64);

impl http_body::Body for Sized200Mb {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 65_536] = [b' '; 65_536];
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        let size = self.0.min(CHUNK.len() as u64);
        self.0 -= size;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &CHUNK[..size as usize],
        )))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0)
    }
}

// 1. The process stays small while WeChat sends an endless answer (the real binary's peak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_1_memory_stays_bounded_under_endless_and_huge_answers() {
    let apps = two_apps();
    let (sim, api) = spawn_simulation(apps.clone()).await;
    let proxy = common::hostile::spawn_hostile(
        api,
        Arc::new(|seen: &Seen, _: &Bytes| seen.path.starts_with("datacube/").then(endless)),
    )
    .await;
    let dir = temp_dir("hostile-memory");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        common::config_toml(&apps, proxy.address, "[polling]\nconcurrency = 4\n"),
    )
    .unwrap();
    let exporter = Binary::start(&["--config", config.to_str().unwrap()]);
    let started = Instant::now();
    while proxy.count(DAILY_TREND) < 2 || started.elapsed() < Duration::from_secs(3) {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.child.id())).unwrap();
    let peak: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak < 100 * 1024,
        "peak RSS {peak} kB after endless answers"
    );
    drop(sim);
}

// 2. A token lifetime of 8e12 s (a microsecond timestamp) neither panics nor stops polling.
#[tokio::test]
async fn defect_2_a_lifetime_of_eight_trillion_seconds_is_harmless() {
    let (app, proxy) = behind(Arc::new(|seen: &Seen, upstream: &Bytes| {
        (seen.path == STABLE_TOKEN)
            .then(|| rewrite(upstream, |token| token["expires_in"] = json!(8.0e12)))
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(1.0)
    );
    assert!(sample(&metrics, "wechat_miniprogram_visit_uv", &[("app", "shop")]).is_some());
    assert!(app.store.is_ready());
    // A day later the app still polls, with the token refreshed every two hours at most.
    app.advance_to(beijing("2024-06-06 12:00")).await;
    assert!(
        sample(
            &app.scrape().await,
            "wechat_miniprogram_up",
            &[("app", "shop")]
        ) == Some(1.0)
    );
    let tokens = stable_tokens(&proxy, "wx1111111111111111");
    assert!(
        (1..=14).contains(&tokens),
        "{tokens} token fetches in a day"
    );
}

// 3. A lifetime of 9.3e15 s: one token for many calls, not one per call.
#[tokio::test]
async fn defect_3_a_lifetime_beyond_any_date_does_not_refetch_on_every_call() {
    let (app, proxy) = behind(Arc::new(|seen: &Seen, upstream: &Bytes| {
        (seen.path == STABLE_TOKEN)
            .then(|| rewrite(upstream, |token| token["expires_in"] = json!(9.3e15)))
    }))
    .await;
    app.settle().await;
    let calls = proxy
        .seen()
        .iter()
        .filter(|seen| seen.path.starts_with("datacube/"))
        .count();
    assert!(calls > 20, "{calls}");
    assert_eq!(stable_tokens(&proxy, "wx1111111111111111"), 1);
}

// 3. Every call refused with 40001: the token source is asked again after a backoff, not for
//    every job.
#[tokio::test]
async fn defect_3_refusals_of_every_job_do_not_make_a_storm_of_token_fetches() {
    let (app, proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        seen.path
            .starts_with("datacube/")
            .then(|| answer(json!({"errcode": 40001, "errmsg": "invalid credential"})))
    }))
    .await;
    app.settle().await;
    for minute in 1..=10 {
        app.advance_to(beijing("2024-06-05 12:00") + chrono::Duration::minutes(minute))
            .await;
    }
    // 13 jobs an app, for 10 minutes: the first token, one refresh after the first refusal,
    // then a refresh per backoff (30 s, then about 1, 2, 4 minutes).
    let tokens = stable_tokens(&proxy, "wx1111111111111111");
    assert!(tokens <= 7, "{tokens} token fetches in 10 minutes");
}

// 3. A token endpoint answering HTTP 500 is asked once per backoff interval.
#[tokio::test]
async fn defect_3_a_failing_token_endpoint_is_asked_once_per_backoff() {
    let (app, proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        (seen.path == STABLE_TOKEN).then(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }))
    .await;
    app.settle().await;
    // 30 s, 30-60 s, 60-120 s, 120-240 s, 240-480 s...: at most 6 in 10 minutes.
    for second in (10..=600).step_by(10) {
        app.advance_to(beijing("2024-06-05 12:00") + chrono::Duration::seconds(second))
            .await;
    }
    let tokens = stable_tokens(&proxy, "wx1111111111111111");
    assert!(
        (3..=7).contains(&tokens),
        "{tokens} token fetches in 10 minutes"
    );
    assert_eq!(
        sample(
            &app.scrape().await,
            "wechat_miniprogram_up",
            &[("app", "shop")]
        ),
        Some(0.0)
    );
}

// 4. SIGTERM completes while a client holds half a request and another reads slowly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_4_shutdown_is_bounded_with_a_half_sent_request_and_a_slow_reader() {
    let dir = temp_dir("hostile-drain");
    let (sim, api) =
        spawn_simulation(wechat_miniprogram_exporter::simulation::generated_apps(200)).await;
    let config = dir.join("config.toml");
    std::fs::write(&config, common::config_toml(sim.apps(), api, "")).unwrap();
    let exporter = Binary::start(&["--config", config.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut half = std::net::TcpStream::connect(exporter.address).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut slow = std::net::TcpStream::connect(exporter.address).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    slow.read_exact(&mut first).unwrap();
    let stopped = Instant::now();
    let pid = exporter.child.id().to_string();
    common::tools::run("kill", &["-TERM", &pid]);
    let mut exporter = exporter;
    loop {
        if let Some(status) = exporter.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "not stopped 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "{:?}",
        stopped.elapsed()
    );
    drop((half, slow));
}

// 5. 150 idle connections under a 128-file limit do not starve scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_5_idle_connections_under_a_low_file_limit_do_not_starve_scrapes() {
    let dir = temp_dir("hostile-idle");
    let apps = two_apps();
    let (sim, api) = spawn_simulation(apps.clone()).await;
    let config = dir.join("config.toml");
    std::fs::write(&config, common::config_toml(&apps, api, "")).unwrap();
    let mut limited = std::process::Command::new("prlimit");
    limited.args([
        "--nofile=128",
        "--",
        env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"),
    ]);
    let exporter = Binary::start_with(limited, &["--config", config.to_str().unwrap()]);
    let idle: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(exporter.address).ok())
        .collect();
    assert!(idle.len() >= 100);
    for _ in 0..10 {
        let scrape = curl(&["--max-time", "5", &exporter.url("http", "/metrics")]);
        assert_eq!((scrape.code, scrape.status), (0, 200), "{}", scrape.headers);
    }
    drop((idle, sim));
}

// 6. A redirect is never followed: the AppSecret and the token stay with WeChat's host.
#[tokio::test]
async fn defect_6_redirects_are_not_followed_with_credentials() {
    let elsewhere = common::hostile::spawn_hostile(
        "127.0.0.1:9".parse().unwrap(),
        Arc::new(|_: &Seen, _: &Bytes| {
            Some(answer(
                json!({"access_token": "stolen", "expires_in": 7200}),
            ))
        }),
    )
    .await;
    let target = format!("http://{}/collect", elsewhere.address);
    let (app, _proxy) = behind(Arc::new(move |seen: &Seen, _: &Bytes| {
        let redirect = |status: StatusCode| {
            let mut response = status.into_response();
            response
                .headers_mut()
                .insert("location", target.parse().unwrap());
            response
        };
        match seen.path.as_str() {
            STABLE_TOKEN if seen.json()["appid"] == "wx1111111111111111" => {
                Some(redirect(StatusCode::TEMPORARY_REDIRECT))
            }
            DAILY_TREND => Some(redirect(StatusCode::FOUND)),
            _ => None,
        }
    }))
    .await;
    app.settle().await;
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    let metrics = app.scrape().await;
    let errors: Vec<&str> = series(&metrics, "wechat_miniprogram_api_errors_total");
    assert!(
        errors
            .iter()
            .any(|line| line.contains("errcode=\"http_307\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|line| line.contains("errcode=\"http_302\"")),
        "{errors:?}"
    );
}

// 7. Absurd numbers and durations are refused by check-config with the allowed range.
#[test]
fn defect_7_absurd_concurrency_and_durations_fail_check_config() {
    let dir = temp_dir("hostile-config");
    for (polling, says) in [
        (
            "concurrency = 9223372036854775807",
            "must be between 1 and 64",
        ),
        ("not_ready_retry = \"1ns\"", "use from 1m to 1day"),
        ("error_backoff_initial = \"1ns\"", "use from 100ms to 1h"),
        ("error_backoff_max = \"300000years\"", "use from 1s to 1day"),
    ] {
        let path = dir.join("config.toml");
        std::fs::write(&path, format!("[polling]\n{polling}\n[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n")).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{polling}: {stderr}");
        assert!(stderr.contains(says), "{polling}: {stderr}");
    }
}

// 8. A distribution repeating an index and a key gives each series once, the first kept,
//    and the duplicates are counted.
#[tokio::test]
async fn defect_8_repeated_indexes_and_keys_give_each_series_once() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, upstream: &Bytes| {
        (seen.path == DISTRIBUTION).then(|| {
            rewrite(upstream, |answer| {
                let list = answer["list"].as_array_mut().unwrap();
                let first = list[0].clone();
                list[0]["item_list"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": 1, "value": 999_999}));
                list.push(first);
            })
        })
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    let lines = series(&metrics, "wechat_miniprogram_access_source_sessions");
    let distinct: BTreeSet<&str> = lines
        .iter()
        .map(|line| line.rsplit_once(' ').unwrap().0)
        .collect();
    assert_eq!(distinct.len(), lines.len(), "a series twice");
    assert!(!metrics.contains(" 999999\n"), "the first value is kept");
    let dropped = [
        ("app", "shop"),
        ("reason", "duplicate"),
        ("endpoint", "getweanalysisappidvisitdistribution"),
    ];
    let count = sample(
        &metrics,
        "wechat_miniprogram_api_values_dropped_total",
        &dropped,
    )
    .unwrap();
    assert!(count >= 15.0, "{count}");
    check_metrics(&metrics);
}

// 9. An AppSecret echoed by WeChat's error message is scrubbed from logs and pages.
#[tokio::test]
async fn defect_9_a_secret_echoed_by_the_upstream_is_never_shown() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        (seen.path == STABLE_TOKEN).then(|| {
            let secret = seen.json()["secret"].as_str().unwrap_or_default().to_string();
            answer(json!({"errcode": 40125, "errmsg": format!("invalid appsecret {secret}, hint: [{secret}]")}))
        })
    }))
    .await;
    app.settle().await;
    let logs = app.logs.text();
    assert!(logs.contains("40125"), "{logs}");
    let page = app.get("/").await.text().await.unwrap();
    let detail = app.get("/apps/shop").await.text().await.unwrap();
    for secret in ["secret-shop-0123456789", "secret-news-0123456789"] {
        assert!(!logs.contains(secret), "the log holds a secret");
        assert!(
            !page.contains(secret) && !detail.contains(secret),
            "a page holds a secret"
        );
        assert!(!app.scrape().await.contains(secret));
    }
}

// 9. An all-digit secret and a quoted one come from the environment as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_9_environment_secrets_are_taken_as_written_and_never_echoed() {
    let mut digits = SimApp::new("digits", "wx1111111111111111", "0123456789", 1000.0);
    digits.publish_hour = 0;
    let mut quoted = SimApp::new("quoted", "wx2222222222222222", "\"quoted\"", 1000.0);
    quoted.publish_hour = 0;
    let (_sim, api) = spawn_simulation(vec![digits, quoted]).await;
    let dir = temp_dir("hostile-secrets");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("api_base_url = \"http://{api}\"\n[apps.digits]\nappid = \"wx1111111111111111\"\n[apps.quoted]\nappid = \"wx2222222222222222\"\n"),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args(["--config", config.to_str().unwrap(), "once"])
            .env("WECHAT_MINIPROGRAM_APPS__DIGITS__SECRET", "0123456789")
            .env("WECHAT_MINIPROGRAM_APPS__QUOTED__SECRET", "\"quoted\"")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for app in ["digits", "quoted"] {
        assert!(
            sample(&stdout, "wechat_miniprogram_visit_uv", &[("app", app)]).is_some(),
            "{app}: {stderr}"
        );
    }
    assert!(!stderr.contains("0123456789") && !stdout.contains("0123456789"));

    // A secret written as a TOML number is a secret, and a TOML error never quotes it.
    let path = dir.join("number.toml");
    std::fs::write(&path, "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 987654321\n[polling]\nconcurrency = 0\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("polling.concurrency") && !stderr.contains("987654321"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 0987654321x\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr.contains("0987654321x"), "{stderr}");
}

// 10. Random errcodes give a bounded set of labels; a huge one is `other`.
#[tokio::test]
async fn defect_10_random_errcodes_give_bounded_labels() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        seen.path.starts_with("datacube/").then(|| {
            let errcode: Value = match fastrand::u8(..4) {
                0 => json!(fastrand::i64(1..1_000_000)),
                1 => json!(1e30),
                2 => json!("99999999999999999999999"),
                _ => json!(-fastrand::i64(2..1000)),
            };
            answer(json!({"errcode": errcode, "errmsg": "x".repeat(1 << 20)}))
        })
    }))
    .await;
    for minute in 0..30 {
        app.advance_to(beijing("2024-06-05 12:00") + chrono::Duration::minutes(minute))
            .await;
    }
    let metrics = app.scrape().await;
    let labels: BTreeSet<String> = series(&metrics, "wechat_miniprogram_api_errors_total")
        .iter()
        .filter_map(|line| {
            line.split("errcode=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect();
    assert!(!labels.is_empty());
    for label in &labels {
        let known = KNOWN_ERRCODES.iter().any(|code| code.to_string() == *label);
        assert!(known || label == "other", "{label}");
    }
    // A 1 MB error message is logged cut.
    let longest = app.logs.text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} bytes");
}

// 10. Values that cannot be true are not exported: negative, 1e308, a returning share above 1.
#[tokio::test]
async fn defect_10_values_that_cannot_be_true_are_dropped_and_counted() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, upstream: &Bytes| {
        if seen.path == DAILY_TREND {
            return Some(rewrite(upstream, |trend| {
                trend["list"][0]["visit_uv"] = json!(-5);
                trend["list"][0]["visit_pv"] = json!(1e308);
            }));
        }
        (seen.path == "datacube/getweanalysisappiddailyretaininfo").then(|| {
            rewrite(upstream, |cohort| {
                if let Some(size) = cohort["visit_uv"][0]["value"].as_f64() {
                    cohort["visit_uv"][1]["value"] = json!(size * 2.0);
                }
            })
        })
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
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
            "wechat_miniprogram_visit_pv",
            &[("app", "shop"), ("period", "daily")]
        ),
        None
    );
    assert!(sample(
        &metrics,
        "wechat_miniprogram_sessions",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
    for line in series(&metrics, "wechat_miniprogram_retention_ratio") {
        let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!((0.0..=1.0).contains(&value), "{line}");
    }
    let dropped = [
        ("app", "shop"),
        ("reason", "invalid"),
        ("endpoint", "getweanalysisappiddailyvisittrend"),
    ];
    assert!(
        sample(
            &metrics,
            "wechat_miniprogram_api_values_dropped_total",
            &dropped
        )
        .unwrap()
            >= 2.0
    );
    check_metrics(&metrics);
}

// Deeply nested JSON is a decode error, not a stack overflow.
#[tokio::test]
async fn deeply_nested_answers_are_decode_errors() {
    let (app, _proxy) = behind(Arc::new(|seen: &Seen, _: &Bytes| {
        (seen.path == DAILY_TREND || seen.path == STABLE_TOKEN).then(|| {
            let depth = 200_000;
            let body = format!("{{\"list\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
            ([("content-type", "application/json")], body).into_response()
        })
    }))
    .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert!(series(&metrics, "wechat_miniprogram_api_errors_total")
        .iter()
        .any(|line| line.contains("errcode=\"decode\"")));
}

// A token service answering a lifetime of 0, negative or nothing is asked again within a
// minute, not on every call.
#[tokio::test]
async fn token_service_lifetimes_of_zero_negative_or_none_give_a_sane_cache() {
    for lifetime in [json!(0), json!(-3600), Value::Null, json!("soon")] {
        let expires = lifetime.clone();
        let (app, proxy) = behind(Arc::new(move |seen: &Seen, upstream: &Bytes| {
            let expires = expires.clone();
            (seen.path == STABLE_TOKEN)
                .then(|| rewrite(upstream, move |token| token["expires_in"] = expires))
        }))
        .await;
        app.settle().await;
        for second in (60..=600).step_by(60) {
            app.advance_to(beijing("2024-06-05 12:00") + chrono::Duration::seconds(second))
                .await;
        }
        let tokens = stable_tokens(&proxy, "wx1111111111111111");
        assert!(
            tokens <= 11,
            "{lifetime}: {tokens} token fetches in 10 minutes"
        );
        assert_eq!(
            sample(
                &app.scrape().await,
                "wechat_miniprogram_up",
                &[("app", "shop")]
            ),
            Some(1.0),
            "{lifetime}"
        );
    }
}

// --config naming a directory or a file that is not UTF-8 says so.
#[test]
fn a_directory_or_a_binary_file_as_config_is_named_as_such() {
    let dir = temp_dir("hostile-config-file");
    let binary = dir.join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    for (path, says) in [(dir.clone(), "is a directory"), (binary, "is not UTF-8")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("no Mini Program"),
            "{stderr}"
        );
    }
}
