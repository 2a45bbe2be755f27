//! The binary as users run it: configuration errors, environment overrides, `once`, `demo`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::simulation::{demo_apps, Simulation};

const BINARY: &str = env!("CARGO_BIN_EXE_wechat-miniprogram-exporter");

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wmpe-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args` and only the given `WECHAT_MINIPROGRAM_*` variables.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("WECHAT_MINIPROGRAM_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_bad_config_names_every_key_and_exits_2() {
    let path = temp_file(
        "bad.toml",
        "[polling]\nnot_ready_retry = \"half an hour\"\n[apps.shop]\nappid = \"shop\"\nsecret = \"x\"\n",
    );
    let output = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("polling.not_ready_retry: \"half an hour\" is not a duration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apps.shop.appid: \"shop\" is not a Mini Program AppID"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_and_no_apps_are_explained() {
    let output = run(
        &["--config", "/nonexistent/exporter.toml", "check-config"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("/nonexistent/exporter.toml does not exist"));
    let output = run(&["check-config"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("apps: no Mini Program is configured"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn every_key_can_come_from_the_environment() {
    let path = temp_file("env.toml", "[apps.shop]\nappid = \"wx1234567890abcdef\"\n");
    let config = path.to_str().unwrap();
    let output = run(
        &["--config", config, "check-config"],
        &[("WECHAT_MINIPROGRAM_APPS__SHOP__SECRET", "from-the-env")],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("shop (wx1234567890abcdef), token from stable_token"),
        "{stdout}"
    );
    assert!(!stdout.contains("from-the-env"));

    let output = run(
        &["--config", config, "check-config"],
        &[
            ("WECHAT_MINIPROGRAM_APPS__SHOP__SECRET", "x"),
            ("WECHAT_MINIPROGRAM_POLLING__CONCURRENCY", "0"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("polling.concurrency: 0 must be between 1 and 64"));

    // An app entirely from the environment.
    let output = run(
        &["check-config", "--web.listen-address", ":9999"],
        &[
            ("WECHAT_MINIPROGRAM_APPS__BLOG__APPID", "wx2234567890abcdef"),
            ("WECHAT_MINIPROGRAM_APPS__BLOG__SECRET", "y"),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("/metrics on 0.0.0.0:9999"));
}

/// The body of `GET path` from `base` (`http://host:port`), read to the end.
fn get(base: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect(&answer);
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    body.to_string()
}

fn simulated_api() -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let address = Simulation::new(demo_apps(), Clock::system())
                .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap();
            sender.send(address).unwrap();
            std::future::pending::<()>().await;
        });
    });
    receiver.recv().unwrap()
}

fn demo_config(api: SocketAddr, secret_of_shop: &str) -> PathBuf {
    let mut toml = format!("api_base_url = \"http://{api}\"\n");
    for app in demo_apps() {
        let secret = if app.name == "shop" {
            secret_of_shop.to_string()
        } else {
            app.secret.clone()
        };
        toml.push_str(&format!(
            "[apps.{}]\nappid = \"{}\"\nsecret = \"{secret}\"\n",
            app.name, app.appid
        ));
    }
    temp_file(&format!("once-{secret_of_shop}.toml"), &toml)
}

#[test]
fn once_prints_the_exposition_and_fails_on_errors() {
    let api = simulated_api();
    let output = run(
        &[
            "--config",
            demo_config(api, "demo-secret-shop").to_str().unwrap(),
            "once",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("wechat_miniprogram_visit_uv{appid=\"wx5a1e0c2b7d9f3e41\",app=\"shop\",period=\"daily\"}"), "{stdout}");

    let output = run(
        &[
            "--config",
            demo_config(api, "wrong-secret").to_str().unwrap(),
            "--log.format",
            "json",
            "once",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("40125"))
        .expect("the error is logged");
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(log["app"], "shop");
    assert!(!stderr.contains("wrong-secret"));
}

#[test]
fn demo_serves_every_family_within_seconds_and_stops_on_sigterm() {
    let mut child = Command::new(BINARY)
        .args(["demo", "--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep reading stdout to the end, as a terminal would.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (url_sender, url_receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("metrics:") {
                let _ = url_sender.send(url.trim().to_string());
            }
        }
    });
    let url = url_receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("demo prints the metrics URL");

    let started = Instant::now();
    let families = [
        "wechat_miniprogram_visit_uv{",
        "wechat_miniprogram_retention_ratio{",
        "wechat_miniprogram_access_source_uv{",
        "wechat_miniprogram_stay_time_distribution{",
        "wechat_miniprogram_visit_depth_distribution{",
        "wechat_miniprogram_page_share_uv{",
        "wechat_miniprogram_last_success_timestamp_seconds{",
        "wechat_miniprogram_token_fetches_total{",
        "wechat_miniprogram_api_request_duration_seconds_bucket{",
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = runtime.block_on(async {
        loop {
            if let Ok(response) = reqwest::get(&url).await {
                let body = response.text().await.unwrap();
                if families.iter().all(|family| body.contains(family)) {
                    return body;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "demo did not show every family in 10s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(metrics.contains("app=\"tickets\""));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit 10s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_example_config_is_valid_and_documents_the_defaults() {
    let secret = temp_file("example-secret", "s3cret\n");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    let example = example.replace("/run/secrets/shop", secret.to_str().unwrap());
    let path = temp_file("example.toml", &example);
    let output = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("shop (wx1234567890abcdef), token from stable_token"));
    let defaults = wechat_miniprogram_exporter::config::Config::from_toml(
        "[apps.a]\nappid = \"wx1234567890abcdef\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let documented = wechat_miniprogram_exporter::config::Config::from_toml(&example).unwrap();
    assert_eq!(documented.polling, defaults.polling);
    assert_eq!(documented.reports, defaults.reports);
    assert_eq!(documented.listen_address, defaults.listen_address);
}

#[test]
fn simulate_serves_the_api_that_the_example_config_points_at() {
    let mut child = Command::new(BINARY)
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let api = first
        .split_whitespace()
        .last()
        .expect("the address is printed")
        .to_string();
    assert!(api.starts_with("http://127.0.0.1:"), "{first}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let output = run(
        &["--config", example, "once"],
        &[("WECHAT_MINIPROGRAM_API_BASE_URL", &api)],
    );
    let served = get(&api, "/-/served");
    let _ = child.kill();
    let _ = child.wait();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let report_calls: f64 = stdout
        .lines()
        .filter(|line| {
            line.starts_with("wechat_miniprogram_api_requests_total{") && !line.contains("token")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(report_calls > 0.0, "{stdout}");
    let served: serde_json::Value = serde_json::from_str(&served).expect(&served);
    assert_eq!(
        served["calls"].as_f64(),
        Some(report_calls),
        "the simulation counts the report calls the exporter made, not the token calls"
    );
    for measured in ["service_seconds", "first_to_last_seconds"] {
        assert!(
            served[measured]
                .as_f64()
                .is_some_and(|seconds| seconds > 0.0),
            "{served}"
        );
    }
    for app in ["shop", "news", "tickets"] {
        let series = format!("app=\"{app}\",period=\"monthly\"}}");
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("wechat_miniprogram_visit_uv{")
                    && line.contains(&series)),
            "{app}: {stdout}"
        );
    }
}

#[test]
fn check_config_reads_the_discovery_files_and_names_an_app_listed_twice() {
    let listed = temp_file(
        "discovered.yaml",
        "- name: blog\n  appid: wx4444444444444444\n  token_source: url\n  token_url: http://tokens/{appid}\n",
    );
    let config = temp_file(
        "discovery.toml",
        &format!("[discovery]\nfiles = [\"{}\"]\n", listed.display()),
    );
    let output = run(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("blog (wx4444444444444444), token from url"),
        "{stdout}"
    );
    assert!(stdout.contains("1 Mini Program(s) in all"), "{stdout}");

    let clash = temp_file(
        "clash.toml",
        &format!(
            "[discovery]\nfiles = [\"{}\"]\n[apps.blog]\nappid = \"wx5555555555555555\"\nsecret = \"s\"\n",
            listed.display()
        ),
    );
    let output = run(&["--config", clash.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("\"blog\" is in the configuration and in discovery source"),
        "{stderr}"
    );
}
