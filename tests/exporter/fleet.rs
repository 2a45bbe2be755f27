//! Changing the apps of a running exporter: reloads (`POST /-/reload` and SIGHUP) with an
//! added, a removed and a changed app and an invalid file, and discovery from files and from
//! a URL, whose failures keep the last list. Unchanged apps keep their state and call nothing.

use crate::common::{self, Exporter};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;

use wechat_miniprogram_exporter::config::{Config, Overrides};
use wechat_miniprogram_exporter::reload::Source;
use wechat_miniprogram_exporter::simulation::{Call, SimApp};

use common::prometheus::{temp_dir, ExporterProcess};
use common::{beijing, sample, spawn_manual_simulation, spawn_simulation, TestApp};

fn four_apps() -> Vec<SimApp> {
    let mut apps = common::two_apps();
    apps.push(SimApp::new(
        "mall",
        "wx3333333333333333",
        "secret-mall-0123456789",
        2_000.0,
    ));
    apps.push(SimApp::new(
        "blog",
        "wx4444444444444444",
        "secret-blog-0123456789",
        300.0,
    ));
    apps
}

/// The `[apps.NAME]` tables of `apps` (by name), with `secret` for `shop` if given.
fn tables(apps: &[SimApp], names: &[&str], shop_secret: Option<&str>) -> String {
    let mut toml = String::new();
    for app in apps.iter().filter(|app| names.contains(&app.name.as_str())) {
        let secret = match (app.name.as_str(), shop_secret) {
            ("shop", Some(secret)) => secret,
            _ => &app.secret,
        };
        toml.push_str(&format!(
            "\n[apps.{}]\nappid = \"{}\"\nsecret = \"{secret}\"\n",
            app.name, app.appid
        ));
    }
    toml
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn series_of(metrics: &str, app: &str) -> usize {
    let label = format!("app=\"{app}\"");
    metrics.lines().filter(|line| line.contains(&label)).count()
}

fn calls_of_since(app: &TestApp, appid: &str, from: usize) -> Vec<Call> {
    app.calls_since(from)
        .into_iter()
        .filter(|call| call.appid.as_deref() == Some(appid))
        .collect()
}

/// Moves the clock to `at`, then waits (real time, 5 s at most) until a scrape satisfies
/// `check`: discovery runs beside the pollers.
async fn eventually(
    app: &TestApp,
    at: chrono::DateTime<chrono::Utc>,
    what: &str,
    check: impl Fn(&str) -> bool,
) {
    app.advance_to(at).await;
    let started = Instant::now();
    loop {
        app.settle().await;
        let metrics = app.scrape().await;
        if check(&metrics) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}\n{}",
            app.logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn post_reload(app: &TestApp) -> (StatusCode, String) {
    let response = app
        .http
        .post(format!("http://{}/-/reload", app.address))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_reload_adds_removes_and_restarts_apps_and_refuses_an_invalid_file() {
    let apps = four_apps();
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let dir = temp_dir("fleet-reload");
    let file = dir.join("config.toml");
    let head = format!("api_base_url = \"http://{api}\"\n");
    write(
        &file,
        &(head.clone() + &tables(&apps, &["shop", "news", "mall"], Some("a-wrong-secret"))),
    );
    let source = || Source::File(Some(file.clone()), Overrides::default());
    let config = Config::load(Some(&file), &Overrides::default()).unwrap();
    let app = Exporter::on(&sim, api, &clock)
        .config(config)
        .source(source())
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        sample(&metrics, "wechat_miniprogram_up", &[("app", "shop")]),
        Some(0.0)
    );
    assert!(series_of(&metrics, "news") > 100);

    // shop's secret fixed, news removed, blog added, mall unchanged.
    write(
        &file,
        &(head.clone() + &tables(&apps, &["shop", "mall", "blog"], None)),
    );
    let from = sim.calls().len();
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "1 added, 1 removed, 1 restarted, 1 unchanged");
    app.settle().await;
    let metrics = app.scrape().await;
    assert_eq!(
        series_of(&metrics, "news"),
        0,
        "every series of a removed app goes"
    );
    assert!(series_of(&metrics, "blog") > 100);
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
    assert_eq!(
        calls_of_since(&app, "wx3333333333333333", from),
        Vec::<Call>::new(),
        "mall calls nothing"
    );
    assert_eq!(
        calls_of_since(&app, "wx2222222222222222", from),
        Vec::<Call>::new(),
        "news stopped"
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    let applied = sample(
        &metrics,
        "wechat_miniprogram_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    );

    // An invalid file is refused with every problem, and the running configuration stays.
    write(
        &file,
        &(head
            + "[polling]\nconcurrency = 0\ncolour = \"blue\"\n"
            + &tables(&apps, &["shop"], None)),
    );
    clock.advance(Duration::from_secs(60));
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("colour"), "{body}");
    let metrics = app.scrape().await;
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_exporter_config_last_reload_successful",
            &[]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "wechat_miniprogram_exporter_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        applied
    );
    assert!(series_of(&metrics, "blog") > 100, "the running apps stay");
    assert!(app.logs.text().contains("configuration reload refused"));
    assert_eq!(app.get("/-/reload").await.status(), 405);
}

#[tokio::test]
async fn a_report_switched_off_by_a_reload_is_no_longer_exported_and_the_others_stay() {
    let apps = common::two_apps();
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let dir = temp_dir("fleet-reports-off");
    let file = dir.join("config.toml");
    write(&file, &common::config_toml(&apps, api, ""));
    let source = || Source::File(Some(file.clone()), Overrides::default());
    let config = Config::load(Some(&file), &Overrides::default()).unwrap();
    let app = Exporter::on(&sim, api, &clock)
        .config(config)
        .source(source())
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert!(metrics.contains("wechat_miniprogram_portrait_"));
    assert!(metrics.contains("wechat_miniprogram_js_error_"));

    let enabled = "[reports]\nenabled = [\"visit_trend\", \"retention\"]\n";
    write(&file, &common::config_toml(&apps, api, enabled));
    let from = sim.calls().len();
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    let metrics = app.scrape().await;
    for gone in [
        "wechat_miniprogram_portrait_",
        "wechat_miniprogram_js_error_",
        "wechat_miniprogram_page_",
    ] {
        assert!(!metrics.contains(gone), "{gone} is still exported");
    }
    assert!(
        !metrics.contains("report=\"user_portrait\""),
        "nor its status"
    );
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
    assert!(metrics.contains("wechat_miniprogram_retention_"));
    assert_eq!(
        sim.calls()[from..]
            .iter()
            .filter(|call| !call.endpoint.contains("token"))
            .count(),
        0,
        "the reports kept call nothing again"
    );
}

#[tokio::test]
async fn sighup_reloads_the_configuration_of_the_running_binary() {
    let apps = common::two_apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let dir = temp_dir("fleet-sighup");
    let file = dir.join("config.toml");
    let head = format!("api_base_url = \"http://{api}\"\n");
    let wrong = Some("a-wrong-secret");
    write(&file, &(head.clone() + &tables(&apps, &["shop"], wrong)));
    let exporter = ExporterProcess::start(&file, &[]).await;
    let wait_for = |what: &'static str, check: Box<dyn Fn(&str) -> bool>| {
        let exporter = &exporter;
        async move {
            let started = Instant::now();
            loop {
                let metrics = exporter.scrape().await;
                if check(&metrics) {
                    return metrics;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{what}: {metrics}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &exporter.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    wait_for(
        "shop down with a wrong secret",
        Box::new(|metrics| {
            sample(metrics, "wechat_miniprogram_up", &[("app", "shop")]) == Some(0.0)
        }),
    )
    .await;
    write(
        &file,
        &(head.clone() + &tables(&apps, &["shop", "news"], None)),
    );
    hangup();
    wait_for(
        "news added and shop's secret changed after SIGHUP",
        Box::new(|metrics| {
            let news = [("app", "news"), ("period", "daily")];
            sample(metrics, "wechat_miniprogram_visit_uv", &news).is_some()
                && sample(metrics, "wechat_miniprogram_up", &[("app", "shop")]) == Some(1.0)
        }),
    )
    .await;

    write(&file, &(head.clone() + &tables(&apps, &["news"], None)));
    hangup();
    wait_for(
        "shop removed after SIGHUP",
        Box::new(|metrics| series_of(metrics, "shop") == 0),
    )
    .await;

    write(&file, &(head + "listen_address = \"nowhere\"\n"));
    hangup();
    let metrics = wait_for(
        "the invalid file refused",
        Box::new(|metrics| {
            sample(
                metrics,
                "wechat_miniprogram_exporter_config_last_reload_successful",
                &[],
            ) == Some(0.0)
        }),
    )
    .await;
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "news"), ("period", "daily")]
    )
    .is_some());
}

/// An exporter of the configuration `toml` (which does not change) against `sim`, settled.
async fn spawn_fixed(
    sim: &wechat_miniprogram_exporter::simulation::Simulation,
    api: SocketAddr,
    clock: &wechat_miniprogram_exporter::clock::Clock,
    toml: &str,
) -> TestApp {
    let config = Config::from_toml(toml).unwrap();
    let source = Source::Fixed(Box::new(config.clone()));
    let app = Exporter::on(sim, api, clock)
        .config(config)
        .source(source)
        .start()
        .await;
    app.settle().await;
    app
}

/// A secret file for `app` in `dir`, and its path.
fn secret_file(dir: &Path, app: &SimApp) -> String {
    let path = dir.join(format!("{}.secret", app.name));
    write(&path, &format!("{}\n", app.secret));
    path.display().to_string()
}

#[tokio::test]
async fn discovery_files_are_read_on_change_and_a_broken_one_keeps_its_apps() {
    let apps = four_apps();
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let dir = temp_dir("fleet-files");
    let listed = dir.join("apps");
    std::fs::create_dir_all(&listed).unwrap();
    let news = secret_file(&dir, &apps[1]);
    write(
        &listed.join("news.yaml"),
        &format!(
            "- name: news\n  appid: {}\n  secret_file: {news}\n",
            apps[1].appid
        ),
    );
    let toml = format!(
        "api_base_url = \"http://{api}\"\n[discovery]\nfiles = [\"{}/*.yaml\", \"{}/*.json\"]\n{}",
        listed.display(),
        listed.display(),
        tables(&apps, &["shop"], None)
    );
    let app = spawn_fixed(&sim, api, &clock, &toml).await;
    assert!(
        series_of(&app.scrape().await, "news") > 100,
        "listed by a file at start"
    );

    // A new file is picked up within seconds.
    let blog = secret_file(&dir, &apps[3]);
    write(
        &listed.join("blog.json"),
        &format!(
            r#"[{{"name": "blog", "appid": "{}", "secret_file": "{blog}"}}]"#,
            apps[3].appid
        ),
    );
    let noon = beijing("2024-06-05 12:00");
    let after = |seconds| noon + chrono::Duration::seconds(seconds);
    eventually(&app, after(6), "blog picked up", |m| {
        series_of(m, "blog") > 100
    })
    .await;

    // A file that no longer reads keeps the apps it listed.
    write(
        &listed.join("news.yaml"),
        "- name: news\n  appid: [not, an, appid\n",
    );
    eventually(&app, after(12), "news.yaml read again", |_| {
        app.logs.text().contains("discovery file not read")
    })
    .await;
    assert!(series_of(&app.scrape().await, "news") > 100);

    // An app listed twice, by the configuration and by a file: refused, naming both.
    write(
        &listed.join("clash.json"),
        &format!(
            r#"[{{"name": "shop", "appid": "{}", "secret_file": "{blog}"}}]"#,
            apps[0].appid
        ),
    );
    eventually(&app, after(18), "the clash seen", |_| {
        app.logs.text().contains("discovered apps refused")
    })
    .await;
    let logs = app.logs.text();
    assert!(logs.contains("discovered apps refused"), "{logs}");
    assert!(
        logs.contains("clash.json") && logs.contains("the configuration"),
        "{logs}"
    );
    std::fs::remove_file(listed.join("clash.json")).unwrap();

    // A file removed: its apps go.
    std::fs::remove_file(listed.join("blog.json")).unwrap();
    eventually(&app, after(24), "blog gone", |m| series_of(m, "blog") == 0).await;
}

/// A discovery endpoint answering what `answer` holds, to requests with the right token.
async fn spawn_endpoint(answer: Arc<Mutex<(u16, String)>>) -> SocketAddr {
    let route = get(move |headers: HeaderMap| {
        let answer = answer.clone();
        async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|value| value == "Bearer discovery-token");
            if !authorized {
                return (StatusCode::UNAUTHORIZED, String::new());
            }
            let (status, body) = answer.lock().unwrap().clone();
            (StatusCode::from_u16(status).unwrap(), body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/apps", route))
            .await
            .unwrap();
    });
    address
}

#[tokio::test]
async fn url_discovery_keeps_the_last_list_while_the_endpoint_fails() {
    let apps = four_apps();
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let dir = temp_dir("fleet-url");
    let blog = secret_file(&dir, &apps[3]);
    let list = format!(
        r#"[{{"name": "blog", "appid": "{}", "secret_file": "{blog}"}}]"#,
        apps[3].appid
    );
    let answer = Arc::new(Mutex::new((200, list)));
    let endpoint = spawn_endpoint(answer.clone()).await;
    let token = dir.join("token");
    write(&token, "discovery-token\n");
    let toml = format!(
        "api_base_url = \"http://{api}\"\n[discovery]\nurl = \"http://{endpoint}/apps\"\nbearer_token_file = \"{}\"\nrefresh_interval = \"1m\"\n{}",
        token.display(),
        tables(&apps, &["shop"], None)
    );
    let app = spawn_fixed(&sim, api, &clock, &toml).await;
    assert!(series_of(&app.scrape().await, "blog") > 100);

    *answer.lock().unwrap() = (500, "oops".into());
    let failed = |_: &str| app.logs.text().contains("discovery URL failed");
    eventually(
        &app,
        beijing("2024-06-05 12:01") + chrono::Duration::seconds(5),
        "asked again",
        failed,
    )
    .await;
    assert!(
        series_of(&app.scrape().await, "blog") > 100,
        "the last list stays"
    );

    *answer.lock().unwrap() = (200, "[]".into());
    let gone = |m: &str| series_of(m, "blog") == 0;
    eventually(
        &app,
        beijing("2024-06-05 12:02") + chrono::Duration::seconds(10),
        "blog gone",
        gone,
    )
    .await;
}

/// The labels of `app`'s `wechat_miniprogram_app_info` series, as written.
fn app_info<'a>(metrics: &'a str, app: &str) -> Option<&'a str> {
    let label = format!("app=\"{app}\"");
    common::series(metrics, "wechat_miniprogram_app_info")
        .into_iter()
        .find(|line| line.contains(&label))
}

fn pages_of(metrics: &str, app: &str) -> usize {
    let label = format!("app=\"{app}\"");
    common::series(metrics, "wechat_miniprogram_page_visit_pv")
        .into_iter()
        .filter(|line| line.contains(&label))
        .count()
}

#[tokio::test]
async fn apps_have_reports_and_labels_of_their_own_from_the_file_and_discovery_and_a_reload_changes_one_alone(
) {
    let apps = four_apps();
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let dir = temp_dir("fleet-own");
    let listed = dir.join("apps");
    std::fs::create_dir_all(&listed).unwrap();
    let news = secret_file(&dir, &apps[1]);
    write(
        &listed.join("news.yaml"),
        &format!(
            "- name: news\n  appid: {}\n  secret_file: {news}\n  labels: {{team: content}}\n  reports:\n    enabled: [visit_trend, visit_page]\n    pages_top: 2\n",
            apps[1].appid
        ),
    );
    let blog = secret_file(&dir, &apps[3]);
    let answer = Arc::new(Mutex::new((
        200,
        format!(
            r#"[{{"name": "blog", "appid": "{}", "secret_file": "{blog}", "labels": {{"brand": "b"}}, "reports": {{"pages_top": 1}}}}]"#,
            apps[3].appid
        ),
    )));
    let endpoint = spawn_endpoint(answer).await;
    let token = dir.join("token");
    write(&token, "discovery-token\n");
    let file = dir.join("config.toml");
    let config_text = |team: &str, pages: usize| {
        format!(
            "api_base_url = \"http://{api}\"\n[discovery]\nfiles = [\"{}/*.yaml\"]\nurl = \"http://{endpoint}/apps\"\nbearer_token_file = \"{}\"\n{}\n[apps.shop.labels]\nteam = \"{team}\"\n[apps.shop.reports]\npages_top = {pages}\n",
            listed.display(),
            token.display(),
            tables(&apps, &["shop", "mall"], None)
        )
    };
    write(&file, &config_text("growth", 3));
    let source = || Source::File(Some(file.clone()), Overrides::default());
    let config = Config::load(Some(&file), &Overrides::default()).unwrap();
    let mut app = Exporter::on(&sim, api, &clock)
        .config(config)
        .source(source())
        .start()
        .await;
    app.jobs_by_app.insert("news".into(), 4);
    app.settle().await;
    let metrics = app.scrape().await;
    common::prometheus::check_metrics(&metrics);
    let info = |metrics: &str, name: &str| app_info(metrics, name).unwrap_or("").to_string();
    assert!(
        info(&metrics, "shop").contains("team=\"growth\""),
        "{}",
        info(&metrics, "shop")
    );
    assert!(info(&metrics, "news").contains("team=\"content\""));
    assert!(info(&metrics, "blog").contains("brand=\"b\""));
    assert!(
        info(&metrics, "mall").ends_with("app=\"mall\"} 1"),
        "{}",
        info(&metrics, "mall")
    );
    // Pages: shop 3, news 2 (from its file), blog 1 (from the URL), mall the global 20.
    assert_eq!(pages_of(&metrics, "shop"), 3);
    assert_eq!(pages_of(&metrics, "news"), 2);
    assert_eq!(pages_of(&metrics, "blog"), 1);
    assert!(pages_of(&metrics, "mall") > 3);
    // news polls only its two reports.
    let news_retention = common::series(&metrics, "wechat_miniprogram_retention_uv")
        .into_iter()
        .filter(|line| line.contains("app=\"news\""))
        .count();
    assert_eq!(news_retention, 0);

    // A reload that changes shop's labels and pages: shop alone starts again.
    write(&file, &config_text("ops", 4));
    app.settle().await;
    let from = sim.calls().len();
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("1 restarted") && body.contains("3 unchanged"),
        "{body}"
    );
    app.settle().await;
    let metrics = app.scrape().await;
    assert!(info(&metrics, "shop").contains("team=\"ops\""));
    for other in &apps[1..] {
        let calls = calls_of_since(&app, &other.appid, from);
        assert!(calls.is_empty(), "{} called {calls:?}", other.name);
    }
    // The period held stays as fetched; the next one has shop's new number of pages.
    assert_eq!(pages_of(&metrics, "shop"), 3);
    app.advance_to(beijing("2024-06-06 12:00")).await;
    let metrics = app.scrape().await;
    assert_eq!(pages_of(&metrics, "shop"), 4);
    assert_eq!(pages_of(&metrics, "news"), 2);
}
