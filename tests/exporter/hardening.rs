//! The findings of the review of the state on disk, discovery, reload and the web
//! configuration, each reproduced: the disk, the clock and slow clients never hold the
//! exporter up, and no value of a period WeChat has not published is ever exported, whatever
//! happens to the process and its files.

use crate::common::{self, Exporter};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};

use common::prometheus::temp_dir;
use common::tools::{curl, run, Binary};
use common::{
    beijing, config_toml, config_with_storage, data_series, fixed, jobs_of, sample,
    spawn_manual_simulation, spawn_simulation, two_apps, TestApp,
};
use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::{Config, Overrides};
use wechat_miniprogram_exporter::period::{beijing_date, Period, PeriodKind};
use wechat_miniprogram_exporter::reload::Source;
use wechat_miniprogram_exporter::simulation::{generated_apps, SimApp};
use wechat_miniprogram_exporter::simulation::{Call, Fault, Simulation};

/// A shared library that makes every `fsync` and `fdatasync` of the process it is preloaded
/// into take `delay_ms` more: a throttled network volume.
fn slow_fsync(delay_ms: u32) -> PathBuf {
    let dir = temp_dir(&format!("slow-fsync-{delay_ms}"));
    let source = dir.join("slow.c");
    std::fs::write(
        &source,
        format!(
            r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <time.h>
static void pause_now(void) {{ struct timespec t = {{0, {delay_ms}L * 1000000L}}; nanosleep(&t, 0); }}
int fsync(int fd) {{ static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); pause_now(); return real(fd); }}
int fdatasync(int fd) {{ static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); pause_now(); return real(fd); }}
"#
        ),
    )
    .unwrap();
    let library = dir.join("slow.so");
    run(
        "gcc",
        &[
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            library.to_str().unwrap(),
            source.to_str().unwrap(),
            "-ldl",
        ],
    );
    library
}

/// How long a GET of `url` takes to be answered whole, and its status.
fn timed_get(url: &str) -> (Duration, u16) {
    let started = Instant::now();
    let fetched = curl(&["--max-time", "5", url]);
    (started.elapsed(), fetched.status)
}

/// Sends SIGTERM to `binary` and returns how long it took to exit.
fn terminate(binary: &mut Binary) -> Duration {
    let stopped = Instant::now();
    run("kill", &["-TERM", &binary.child.id().to_string()]);
    while binary.child.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "not stopped 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stopped.elapsed()
}

// Finding 1 (high). Every state write takes 100 ms more (a throttled volume) while 300 apps
// make their first round: the probes and the scrapes are answered all along (they used to
// wait for the disk), and SIGTERM ends the process within 10 s although most of the state is
// still to be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_slow_state_writes_never_hold_up_the_server_nor_the_exit() {
    let library = slow_fsync(100);
    let apps = generated_apps(300);
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let dir = temp_dir("hardening-slow-disk");
    let config = dir.join("config.toml");
    let reports = "[polling]\nconcurrency = 16\n[reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_distribution\", \"visit_page\"]\n";
    std::fs::write(&config, config_toml(&apps, api, reports)).unwrap();
    let storage = dir.join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"));
    command.env("LD_PRELOAD", &library);
    let mut exporter = Binary::start_with(
        command,
        &[
            "--config",
            config.to_str().unwrap(),
            &format!("--storage.path={}", storage.display()),
        ],
    );
    let healthz = exporter.url("http", "/healthz");
    let metrics = exporter.url("http", "/metrics");
    let mut slowest = (Duration::ZERO, Duration::ZERO);
    let mut probes = 0;
    let started = Instant::now();
    loop {
        let (health, status) = timed_get(&healthz);
        assert_eq!(status, 200);
        let (scrape, status) = timed_get(&metrics);
        assert_eq!(status, 200);
        slowest = (slowest.0.max(health), slowest.1.max(scrape));
        probes += 1;
        let ready = curl(&[&exporter.url("http", "/readyz")]).status == 200;
        if ready || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(probes >= 3, "the first round lasted {probes} probes");
    // The bounds leave room for a loaded test machine; scripts/measure-slow-disk measures
    // the release binary (100 ms per write, 1,000 apps).
    assert!(
        slowest.0 < Duration::from_secs(1),
        "/healthz took {:?}",
        slowest.0
    );
    assert!(
        slowest.1 < Duration::from_secs(2),
        "/metrics took {:?}",
        slowest.1
    );
    let exit = terminate(&mut exporter);
    assert!(exit < Duration::from_secs(10), "SIGTERM took {exit:?}");
}

/// A simulated app whose newest day is published in 36 hours: unpublished all this test.
fn unpublished_yesterday() -> SimApp {
    let mut app = SimApp::new(
        "shop",
        "wx1111111111111111",
        "secret-shop-0123456789",
        10_000.0,
    );
    let today = beijing_date(Utc::now());
    app.late.insert(today, 36 * 60);
    app
}

/// The start of the period whose `report` the scrape `metrics` of `app` holds, as a date.
fn held_day(metrics: &str, app: &str, report: &str) -> Option<chrono::NaiveDate> {
    let start = sample(
        metrics,
        "wechat_miniprogram_ref_date_timestamp_seconds",
        &[("app", app), ("report", report), ("period", "daily")],
    )?;
    let instant = chrono::DateTime::from_timestamp(start as i64, 0)?;
    Some(beijing_date(instant))
}

/// Scrapes `binary` until `done` holds of the text, for at most 20 s.
fn scrape_until(binary: &Binary, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let body = curl(&[&binary.url("http", "/metrics")]).body;
        if done(&body) || started.elapsed() > Duration::from_secs(20) {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Finding 2 (high). Before polling.first_attempt the trend (the gate) does not ask; an
// exporter killed in its first round, whose JS errors' state was lost, used to ask for the
// newest day anyway, and WeChat's answer for a day it has not published ("no error", 0) was
// exported as 0. Now such a report shows the day before, as the gate does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_restart_before_the_first_attempt_never_exports_an_unpublished_day() {
    let today = common::clear_of_beijing_midnight(Duration::from_secs(120)).await;
    let yesterday = today - Days::new(1);
    let app = unpublished_yesterday();
    let (sim, api) = spawn_simulation(vec![app.clone()]).await;
    let dir = temp_dir("hardening-fake-zero");
    let config = dir.join("config.toml");
    let settings = "[polling]\nfirst_attempt = \"23:59\"\n";
    std::fs::write(
        &config,
        config_toml(std::slice::from_ref(&app), api, settings),
    )
    .unwrap();
    let storage = format!("--storage.path={}", dir.join("data").display());
    let args = ["--config", config.to_str().unwrap(), storage.as_str()];
    let has_js_errors = |text: &str| held_day(text, "shop", "js_errors").is_some();

    let mut first = Binary::start(&args);
    let metrics = scrape_until(&first, has_js_errors);
    assert_eq!(
        held_day(&metrics, "shop", "js_errors"),
        Some(yesterday - Days::new(1))
    );
    // Once the JS errors' state is on disk (the writer gathers files for a moment): kill -9,
    // and that state lost with it.
    let lost = dir.join("data/apps/wx1111111111111111/js_errors.daily.json");
    let waited = std::time::Instant::now();
    while !lost.exists() && waited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    std::fs::remove_file(&lost).unwrap();
    let calls = sim.calls().len();

    let second = Binary::start(&args);
    let metrics = scrape_until(&second, has_js_errors);
    assert_eq!(
        held_day(&metrics, "shop", "js_errors"),
        Some(yesterday - Days::new(1)),
        "the day before, never the unpublished newest day"
    );
    let newest = yesterday.format("%Y-%m-%d").to_string();
    let asked_newest = sim.calls()[calls..]
        .iter()
        .filter(|call| call.endpoint == "wxaapi/log/jserr_list")
        .any(|call| {
            call.body
                .as_deref()
                .is_some_and(|body| body.contains(&newest))
        });
    assert!(
        !asked_newest,
        "the JS errors of the unpublished day were asked"
    );
}

/// A deterministic sequence of numbers for the property test below.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// Every period the scrape `metrics` exports, per app and report, is one WeChat published
/// by `now`: the invariant of the property test.
fn assert_only_published(metrics: &str, apps: &[SimApp], now: chrono::DateTime<Utc>, step: &str) {
    for line in metrics
        .lines()
        .filter(|line| line.starts_with("wechat_miniprogram_ref_date_timestamp_seconds{"))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let start: i64 = value.parse().unwrap();
        let label = |name: &str| {
            let from = series.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            series[from..].split('"').next().unwrap().to_string()
        };
        let app = apps.iter().find(|app| app.name == label("app")).unwrap();
        let kind = match label("period").as_str() {
            "daily" => PeriodKind::Daily,
            "weekly" => PeriodKind::Weekly,
            _ => PeriodKind::Monthly,
        };
        let report = label("report");
        let day = beijing_date(chrono::DateTime::from_timestamp(start, 0).unwrap());
        let period = Period::containing(kind, day);
        let model = wechat_miniprogram_exporter::simulation::Model { app };
        if report == "quota" {
            continue;
        }
        assert!(
            model.published_at(period) <= now,
            "{step}: {} exports {report} {period}, not published until {}",
            app.name,
            model.published_at(period)
        );
    }
}

// Finding 2, as a property: random sequences of restarts (with the state written, or killed
// before), state files lost, reloads that switch reports on and off, and hours passing, over
// days of a manual clock: no sample of a period WeChat has not published is ever exported.
#[tokio::test]
async fn finding_2_no_sequence_of_kills_restarts_reloads_and_lost_files_exports_an_unpublished_period(
) {
    let mut apps = two_apps();
    apps[1].publish_hour = 7;
    let storage = temp_dir("hardening-property");
    let start = beijing("2024-06-05 02:40");
    let (sim, api, clock) = spawn_manual_simulation(apps.clone(), start).await;
    let reports = [
        "",
        "[reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_page\"]\n",
        "[reports]\nenabled = [\"visit_trend\", \"js_errors\", \"daily_summary\", \"user_portrait\"]\n",
    ];
    let mut steps = Steps(0x5eed_1234_abcd_0001);
    let file = storage.with_extension("toml");
    let overrides = Overrides {
        storage: Some(storage.clone()),
        ..Overrides::default()
    };
    let source = || Source::File(Some(file.clone()), overrides.clone());
    for sequence in 0..12 {
        let _ = std::fs::remove_dir_all(&storage);
        clock.set(start + chrono::Duration::days(sequence * 3));
        std::fs::write(&file, config_toml(&apps, api, reports[0])).unwrap();
        let config = Config::load(Some(&file), &overrides).unwrap();
        let mut app = Exporter::on(&sim, api, &clock)
            .config(config.clone())
            .source(source())
            .start()
            .await;
        for step in 0..10 {
            let what = steps.next(6);
            let label = format!("sequence {sequence} step {step} ({what})");
            match what {
                0 => {
                    // Hours pass.
                    let hours = 1 + steps.next(9) as i64;
                    app.advance_to(clock.now() + chrono::Duration::hours(hours))
                        .await;
                }
                1 => {
                    // A restart, the state written first.
                    app.stop().await;
                    let config = Config::load(Some(&file), &overrides).unwrap();
                    app = Exporter::on(&sim, api, &clock)
                        .config(config)
                        .source(source())
                        .start()
                        .await;
                }
                2 | 3 => {
                    // kill -9 (the state not flushed), maybe a state file lost with it.
                    app.shutdown();
                    if what == 3 {
                        let files: Vec<PathBuf> = walk(&storage.join("apps"));
                        if !files.is_empty() {
                            let lost = &files[steps.next(files.len() as u64) as usize];
                            let _ = std::fs::remove_file(lost);
                        }
                    }
                    let config = Config::load(Some(&file), &overrides).unwrap();
                    app = Exporter::on(&sim, api, &clock)
                        .config(config)
                        .source(source())
                        .start()
                        .await;
                }
                _ => {
                    // A reload that switches reports on or off.
                    let settings = reports[steps.next(reports.len() as u64) as usize];
                    std::fs::write(&file, config_toml(&apps, api, settings)).unwrap();
                    app.control.reload().await.unwrap();
                    app.jobs = jobs_of(&Config::load(Some(&file), &overrides).unwrap());
                }
            }
            app.settle().await;
            assert_only_published(&app.scrape().await, &apps, clock.now(), &label);
        }
        app.stop().await;
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

// Finding 3 (medium). Clients that ask for a large response and never read it hold every
// connection: the probes are still answered (a reserve is kept for them), and each stuck
// response loses its connection after the write deadline, so scrapes come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_clients_that_never_read_a_large_response_neither_starve_probes_nor_scrapes() {
    use axum::routing::get;
    use wechat_miniprogram_exporter::server::listen::{serve, Limits};
    // As the exposition is sent: in parts, the next taken once the last is written.
    let part = bytes::Bytes::from(vec![b'x'; 4 << 20]);
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move { axum::body::Body::new(Parts(vec![part.clone(); 16].into())) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections: 4,
        write_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    tokio::spawn(serve(
        listener,
        router,
        None,
        limits,
        std::future::pending(),
    ));
    let stuck: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = move |path: &str| format!("http://{address}{path}");
    let probe = tokio::task::spawn_blocking(move || curl(&["--max-time", "2", &url("/healthz")]));
    let probe = probe.await.unwrap();
    assert_eq!(
        (probe.code, probe.status),
        (0, 200),
        "the probe while all are stuck"
    );
    let scrape = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            let scrape = curl(&[
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                &format!("http://{address}/metrics"),
            ]);
            if scrape.status == 200 || started.elapsed() > Duration::from_secs(10) {
                return (scrape.status, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let (status, waited) = scrape.await.unwrap();
    assert_eq!(status, 200, "a scrape once the stuck responses timed out");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    drop(stuck);
}

/// A body sent as the parts it is made of, one frame each, as the exporter sends
/// `/metrics`.
struct Parts(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Parts {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|part| Ok(http_body::Frame::data(part))),
        )
    }
}

/// Sends `request` on a new connection to `address` and reads the answer's status line.
fn raw_request(address: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

// Finding 4 (medium). 32 clients sending a wrong password over and over: the bcrypt work is
// done off the runtime, one at a time and slowed after failures, so /healthz (no auth) is
// answered as fast as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_wrong_passwords_never_slow_down_healthz() {
    let dir = temp_dir("hardening-bcrypt");
    let hash = common::tools::htpasswd("prometheus", "s3cret-pass");
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let (_sim, api) = spawn_simulation(two_apps()).await;
    let config = dir.join("config.toml");
    std::fs::write(&config, config_toml(&two_apps(), api, "")).unwrap();
    let exporter = Binary::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
    ]);
    let address = exporter.address;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..32)
        .map(|index| {
            let (stop, refused) = (stop.clone(), refused.clone());
            std::thread::spawn(move || {
                // "prometheus:wrong-N", base64.
                let credentials = base64_of(&format!("prometheus:wrong-{index}"));
                let request = format!(
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
                );
                while !stop.load(Ordering::Relaxed) {
                    if raw_request(address, &request).starts_with("HTTP/1.1 401") {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The flood is measured once it is being refused, however slowly the machine verifies.
    let waited = std::time::Instant::now();
    while refused.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = refused.load(Ordering::Relaxed);
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let (took, status) = timed_get(&exporter.url("http", "/healthz"));
            assert_eq!(status, 200);
            std::thread::sleep(Duration::from_millis(50));
            took
        })
        .collect();
    // And it went on through the timing: another refusal comes after the first sample.
    let waited = std::time::Instant::now();
    while refused.load(Ordering::Relaxed) == before && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = refused.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    assert!(before > 0, "no wrong password was refused in 60 s");
    assert!(
        during > 0,
        "the wrong passwords were still being refused while /healthz was timed"
    );
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(250),
        "/healthz p50 {median:?}: {times:?}"
    );
}

/// `text` in base64, as an `Authorization: Basic` header has it.
fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A configuration with no app of its own, discovering apps from `dir/*.json` and
/// `dir/*.yaml` (and `url`, if given).
fn discovering(dir: &Path, url: Option<&str>, api: &str) -> PathBuf {
    let mut toml = format!(
        "api_base_url = \"http://{api}\"\n[discovery]\nfiles = [\"{0}/*.json\", \"{0}/*.yaml\"]\n",
        dir.display()
    );
    if let Some(url) = url {
        toml.push_str(&format!(
            "url = \"{url}\"\nbearer_token_file = \"{}\"\n",
            dir.join("token").display()
        ));
        std::fs::write(dir.join("token"), "discovery-token-0123456789\n").unwrap();
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    config
}

/// Runs `command` to its end, within `limit` (a process still running then is killed and
/// the test fails), and returns what it printed.
fn output_within(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes read all along, so that a child printing much never blocks on them.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `check-config` of `config`, run through `wrapper` (such as `prlimit`) if given: its exit
/// code, stderr and stdout, and how long it took.
fn check_config(config: &Path, wrapper: &[&str]) -> (i32, String, String, Duration) {
    let binary = env!("CARGO_BIN_EXE_wechat-miniprogram-exporter");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let started = Instant::now();
    command.args(["check-config", "--config", config.to_str().unwrap()]);
    let output = output_within(command, Duration::from_secs(60));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        started.elapsed(),
    )
}

/// One discovered app's entry, its token read from a file.
fn entry(name: &str, appid: &str) -> String {
    format!(
        r#"{{"name": "{name}", "appid": "{appid}", "token_source": "file", "token_file": "/run/tokens/{appid}"}}"#
    )
}

// Finding 5 (medium). A discovery file nested a million levels deep, within the size limit,
// is refused before any value is built: in a second, within 1 GiB of address space, where a
// plain list passes under the same limit.
#[test]
fn finding_5_a_deeply_nested_discovery_file_is_refused_quickly_in_bounded_memory() {
    let dir = temp_dir("hardening-nested");
    let config = discovering(&dir, None, "127.0.0.1:9");
    let limit = ["prlimit", "--as=268435456", "--"];
    std::fs::write(
        dir.join("apps.json"),
        format!("[{}]", entry("shop", "wx1111111111111111")),
    )
    .unwrap();
    let (code, stderr, stdout, _) = check_config(&config, &limit);
    assert_eq!(code, 0, "a plain list passes under the limit: {stderr}");
    assert!(stdout.contains("1 Mini Program"), "{stdout}");
    for (name, text) in [
        ("flow.yaml", "[".repeat(3 << 20)),
        ("block.yaml", "- ".repeat(1 << 20)),
        (
            "mapping.yaml",
            (0..1500)
                .map(|level| format!("{}a:\n", " ".repeat(level)))
                .collect(),
        ),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        let (code, stderr, _, took) = check_config(&config, &limit);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains("levels deep"), "{name}: {stderr}");
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
        std::fs::remove_file(dir.join(name)).unwrap();
    }
}

// Finding 8 (lower). A discovered app named as a configured one is left out at start, as it
// is at run time: the exporter starts and polls the configured app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_a_discovered_app_clashing_with_a_configured_one_is_left_out_at_start() {
    let dir = temp_dir("hardening-clash");
    let apps = two_apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let listed = dir.join("listed");
    std::fs::create_dir_all(&listed).unwrap();
    std::fs::write(
        listed.join("apps.json"),
        format!("[{}]", entry("shop", "wx9999999999999999")),
    )
    .unwrap();
    let mut toml = config_toml(&apps, api, "");
    toml.push_str(&format!(
        "\n[discovery]\nfiles = [\"{}/*.json\"]\n",
        listed.display()
    ));
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let exporter = Binary::start(&["--config", config.to_str().unwrap()]);
    let metrics = scrape_until(&exporter, |text| {
        sample(
            text,
            "wechat_miniprogram_visit_uv",
            &[("app", "shop"), ("period", "daily")],
        )
        .is_some()
    });
    assert!(
        metrics.contains("appid=\"wx1111111111111111\""),
        "the configured shop is polled"
    );
    assert!(!metrics.contains("wx9999999999999999"));
    let stderr = exporter.stderr();
    assert!(stderr.contains("discovered apps left out"), "{stderr}");
    assert!(
        stderr.contains("apps.json"),
        "the source is named: {stderr}"
    );
}

// Finding 9 (lower). A 1 MiB app name is refused, named in a bounded message with its source;
// a source of 50,001 apps gives the first 50,000, with a warning.
#[test]
fn finding_9_huge_names_and_huge_lists_of_apps_are_bounded_with_a_warning() {
    let dir = temp_dir("hardening-bounds");
    let config = discovering(&dir, None, "127.0.0.1:9");
    let long = "n".repeat(1 << 20);
    std::fs::write(
        dir.join("long.json"),
        format!("[{}]", entry(&long, "wx1111111111111111")),
    )
    .unwrap();
    let (code, stderr, _, _) = check_config(&config, &[]);
    assert_eq!(code, 2, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("longer than 64 characters"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.contains("long.json"));
    assert!(
        stderr.len() < 4096,
        "the message is bounded: {} bytes",
        stderr.len()
    );
    std::fs::remove_file(dir.join("long.json")).unwrap();

    let entries: Vec<String> = (0..50_001)
        .map(|n| entry(&format!("app{n}"), &format!("wx{n:016}")))
        .collect();
    std::fs::write(dir.join("many.json"), format!("[{}]", entries.join(","))).unwrap();
    let (code, stderr, stdout, _) = check_config(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("50000 Mini Program"), "{stdout}");
    assert!(
        stderr.contains("lists more apps than one exporter polls"),
        "{stderr}"
    );
    assert!(stderr.contains("many.json"), "{stderr}");
}

/// A discovery endpoint that accepts connections and never answers.
fn hanging_endpoint() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/apps", listener.local_addr().unwrap());
    (listener, url)
}

// Finding 11 (lower). A discovery URL that never answers does not delay serving: the
// configured apps are served while it is asked in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_a_hanging_discovery_url_does_not_delay_serving() {
    let dir = temp_dir("hardening-hanging-url");
    let apps = two_apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let (_hanging, url) = hanging_endpoint();
    let mut toml = config_toml(&apps, api, "");
    toml.push_str(&format!("\n[discovery]\nurl = \"{url}\"\n"));
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let started = Instant::now();
    let exporter = Binary::start(&["--config", config.to_str().unwrap()]);
    let metrics = scrape_until(&exporter, |text| {
        sample(
            text,
            "wechat_miniprogram_visit_uv",
            &[("app", "news"), ("period", "daily")],
        )
        .is_some()
    });
    assert!(metrics.contains("app=\"shop\""));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

const SHOP: &str = "wx1111111111111111";

/// The state file `name` of the shop under `storage`.
fn shop_file(storage: &Path, name: &str) -> PathBuf {
    storage.join("apps").join(SHOP).join(name)
}

/// An exporter of the two apps at `at` with its state on `storage`, settled.
async fn settled_on(
    storage: &Path,
    at: &str,
) -> (TestApp, Simulation, std::net::SocketAddr, Clock) {
    let (sim, api, clock) = spawn_manual_simulation(two_apps(), beijing(at)).await;
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), storage);
    let app = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    app.settle().await;
    (app, sim, api, clock)
}

/// The report calls (not tokens) of `calls`.
fn report_calls(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|call| !call.endpoint.contains("token"))
        .collect()
}

// Finding 6 (medium). A link where the state goes: an app directory that is a symlink is
// neither read nor written through, and a link planted where a temporary file could be named
// is never written through (temporary files have random names and are created exclusively).
#[tokio::test]
async fn finding_6_links_in_the_storage_are_never_followed() {
    let storage = temp_dir("hardening-links");
    let (first, sim, api, clock) = settled_on(&storage, "2024-06-05 12:00").await;
    first.stop().await;
    drop(first);
    // The shop's directory moved elsewhere and linked back; a victim file beside it.
    let elsewhere = temp_dir("hardening-links-elsewhere");
    let moved = elsewhere.join(SHOP);
    std::fs::rename(storage.join("apps").join(SHOP), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, storage.join("apps").join(SHOP)).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&elsewhere)
        .into_iter()
        .map(|file| (file.clone(), std::fs::read(&file).unwrap()))
        .collect();
    let calls = sim.calls().len();
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    second.settle().await;
    let asked = report_calls(&sim.calls()[calls..])
        .iter()
        .filter(|call| call.appid.as_deref() == Some(SHOP))
        .count();
    assert!(
        asked > 0,
        "the linked state is not read: the shop is fetched again"
    );
    assert!(
        second
            .logs
            .text()
            .contains("a link, not a directory of the storage"),
        "{}",
        second.logs.text()
    );
    assert!(
        !second.store.flush(Duration::from_secs(1)),
        "the shop's state is not written through the link"
    );
    second.shutdown();
    let after: Vec<(PathBuf, Vec<u8>)> = walk(&elsewhere)
        .into_iter()
        .map(|file| (file.clone(), std::fs::read(&file).unwrap()))
        .collect();
    assert_eq!(before, after, "nothing written through the link");
    drop(second);

    std::fs::remove_file(storage.join("apps").join(SHOP)).unwrap();

    // Links where the temporary files of the news app could be, to a victim.
    let victim = elsewhere.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let news = storage.join("apps/wx2222222222222222");
    for name in [
        "visit_trend.daily.tmp",
        "visit_trend.daily.json.tmp",
        ".visit_trend.daily.json.tmp",
    ] {
        std::os::unix::fs::symlink(&victim, news.join(name)).unwrap();
    }
    let third = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    // Links planted while it runs, before the next day's writes.
    for name in ["visit_trend.daily.tmp", "visit_trend.daily.json.tmp"] {
        let _ = std::fs::remove_file(news.join(name));
        std::os::unix::fs::symlink(&victim, news.join(name)).unwrap();
    }
    third.advance_to(beijing("2024-06-06 12:00")).await;
    third.stop().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let trend = std::fs::read_to_string(news.join("visit_trend.daily.json")).unwrap();
    assert!(
        trend.contains("\"20240605\""),
        "the new day is written: {trend}"
    );
}

// Finding 7 (medium). The wall clock stepped back three days: the poller never aims at an
// older period than it holds (nothing older is asked, shown or written), and a backoff
// after an error is a delay on the monotonic clock, not a date three days away.
#[tokio::test]
async fn finding_7_a_step_of_the_wall_clock_neither_stalls_polling_nor_brings_back_an_older_period()
{
    let storage = temp_dir("hardening-clock-step");
    let (app, sim, _api, clock) = settled_on(&storage, "2024-06-05 12:00").await;
    let held = |metrics: &str| held_day(metrics, "shop", "visit_trend");
    assert_eq!(
        held(&app.scrape().await),
        Some(chrono::NaiveDate::from_ymd_opt(2024, 6, 4).unwrap())
    );
    let calls = sim.calls().len();
    clock.step(-chrono::Duration::days(3));
    clock.advance(Duration::from_secs(6 * 3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = report_calls(&sim.calls()[calls..]).len();
    assert_eq!(
        asked,
        0,
        "older periods asked, first {:?}",
        sim.calls().get(calls)
    );
    assert_eq!(
        held(&app.scrape().await),
        Some(chrono::NaiveDate::from_ymd_opt(2024, 6, 4).unwrap())
    );
    app.stop().await;
    let trend = std::fs::read_to_string(shop_file(&storage, "visit_trend.daily.json")).unwrap();
    assert!(trend.contains("\"20240604\""), "{trend}");
    drop(app);

    // An error, then the clock stepped back two hours (the period asked stays the same):
    // the retry comes after the backoff, not two hours later.
    let (sim, api, clock) = spawn_manual_simulation(two_apps(), beijing("2024-06-05 12:00")).await;
    sim.inject(
        SHOP,
        Some("getweanalysisappiddailyvisittrend"),
        Fault::Status(502),
        1,
    );
    let config = Config::from_toml(&config_toml(&two_apps(), api, "")).unwrap();
    let app = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    app.settle().await;
    let trend_calls = || {
        sim.calls()
            .iter()
            .filter(|call| call.appid.as_deref() == Some(SHOP))
            .filter(|call| call.endpoint == "getweanalysisappiddailyvisittrend")
            .count()
    };
    assert_eq!(trend_calls(), 1, "the failed call");
    clock.step(-chrono::Duration::hours(2));
    clock.advance(Duration::from_secs(5 * 60));
    let started = Instant::now();
    while trend_calls() < 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        trend_calls() >= 2,
        "retried 5 minutes later on the monotonic clock"
    );
}

// Finding 10 (lower). A storage that cannot be written (here its format file cannot be
// replaced): what it holds is still read and served, nothing is fetched again, and the
// temporary files a crash left are removed at start.
#[tokio::test]
async fn finding_10_a_storage_that_cannot_be_written_is_still_read_and_stray_temporary_files_go() {
    let storage = temp_dir("hardening-unwritable");
    let (first, sim, api, clock) = settled_on(&storage, "2024-06-05 12:00").await;
    let before = data_series(&first.scrape().await);
    first.stop().await;
    drop(first);
    std::fs::remove_file(storage.join("format")).unwrap();
    std::fs::create_dir_all(storage.join("format/blocked")).unwrap();
    let strays = [
        shop_file(&storage, "visit_trend.daily.tmp"),
        shop_file(&storage, ".visit_page.daily.json.123-00ff.tmp"),
        storage.join(".format.1-00.tmp"),
    ];
    for stray in &strays {
        std::fs::write(stray, "").unwrap();
    }
    let calls = sim.calls().len();
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    second.settle().await;
    assert!(
        report_calls(&sim.calls()[calls..]).is_empty(),
        "nothing fetched again"
    );
    assert_eq!(data_series(&second.scrape().await), before);
    assert!(
        second.logs.text().contains("cannot be written"),
        "{}",
        second.logs.text()
    );
    for stray in &strays {
        assert!(!stray.exists(), "{} left", stray.display());
    }
}

// Finding 10, the writes: a state that cannot be written (its app directory is taken by a
// file) waits in memory and is written once it can be, at the next flush at the latest.
#[tokio::test]
async fn finding_10_a_write_that_fails_is_kept_and_written_when_it_can_be() {
    let storage = temp_dir("hardening-write-later");
    std::fs::create_dir_all(storage.join("apps")).unwrap();
    std::fs::write(storage.join("apps").join(SHOP), "in the way").unwrap();
    let (app, _sim, _api, _clock) = settled_on(&storage, "2024-06-05 12:00").await;
    assert!(
        !app.store.flush(Duration::from_millis(500)),
        "the shop cannot be written yet"
    );
    std::fs::remove_file(storage.join("apps").join(SHOP)).unwrap();
    assert!(
        app.store.flush(Duration::from_secs(10)),
        "written at the flush"
    );
    assert!(shop_file(&storage, "visit_trend.daily.json").is_file());
}

// Finding 12 (lower). A discovery file rewritten in place is, for a moment, a shorter valid
// list: the apps it seems to drop stay until the file is still so at the next check, so a
// rewrite removes nothing; a real removal applies one check later.
#[tokio::test]
async fn finding_12_a_discovery_file_being_rewritten_removes_no_app() {
    use wechat_miniprogram_exporter::config::Discovery as Settings;
    use wechat_miniprogram_exporter::discovery::Discovery;
    use wechat_miniprogram_exporter::domain::Shard;
    let dir = temp_dir("hardening-rewrite");
    let file = dir.join("apps.json");
    let list = |n: usize| {
        let entries: Vec<String> = (0..n)
            .map(|i| entry(&format!("app{i}"), &format!("wx{i:016}")))
            .collect();
        format!("[{}]", entries.join(","))
    };
    let count = |discovery: &Discovery| {
        discovery
            .lists()
            .map(|(_, listed)| listed.apps.len())
            .sum::<usize>()
    };
    let settings = Settings {
        files: vec![format!("{}/*.json", dir.display())],
        url: None,
        bearer_token_file: None,
        refresh_interval: Duration::from_secs(60),
    };
    let mut discovery = Discovery::new(settings, Shard::default());
    std::fs::write(&file, list(101)).unwrap();
    assert!(discovery.read_files().await);
    assert_eq!(count(&discovery), 101);
    // Half written, then whole again.
    std::fs::write(&file, list(50)).unwrap();
    assert!(
        !discovery.read_files().await,
        "a shorter list is not taken at once"
    );
    assert_eq!(count(&discovery), 101);
    std::fs::write(&file, list(101)).unwrap();
    assert!(!discovery.read_files().await);
    assert_eq!(count(&discovery), 101);
    // Really shorter: taken at the next check.
    std::fs::write(&file, list(50)).unwrap();
    assert!(!discovery.read_files().await);
    assert!(
        discovery.changed(),
        "a shorter list waiting makes the next check read"
    );
    assert!(discovery.read_files().await);
    assert_eq!(count(&discovery), 50);
    // Longer lists are taken at once.
    std::fs::write(&file, list(60)).unwrap();
    assert!(discovery.read_files().await);
    assert_eq!(count(&discovery), 60);
}

// Finding 14 (lower). A state file larger than the bound (4 MiB; a held period is some
// 60 KB) is not parsed: a warning, and that one job is fetched again.
#[tokio::test]
async fn finding_14_an_oversized_state_file_is_ignored_and_its_job_fetched_again() {
    let storage = temp_dir("hardening-oversized");
    let (first, sim, api, clock) = settled_on(&storage, "2024-06-05 12:00").await;
    first.stop().await;
    drop(first);
    let file = shop_file(&storage, "visit_page.daily.json");
    let mut text = std::fs::read(&file).unwrap();
    text.extend(std::iter::repeat_n(b' ', 5 << 20));
    std::fs::write(&file, text).unwrap();
    let calls = sim.calls().len();
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    second.settle().await;
    let again: Vec<String> = report_calls(&sim.calls()[calls..])
        .iter()
        .map(|call| format!("{} {}", call.appid.as_deref().unwrap_or(""), call.endpoint))
        .collect();
    assert_eq!(again, [format!("{SHOP} getweanalysisappidvisitpage")]);
    assert!(
        second.logs.text().contains("too large"),
        "{}",
        second.logs.text()
    );
}

/// A web configuration serving TLS with `dir/server.crt` and `dir/server.key`.
fn tls_web_config(dir: &Path) -> PathBuf {
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    web
}

/// A configuration file of the two simulated apps, in `dir`.
async fn two_apps_config(dir: &Path) -> (PathBuf, Simulation) {
    let (sim, api) = spawn_simulation(two_apps()).await;
    let config = dir.join("config.toml");
    std::fs::write(&config, config_toml(&two_apps(), api, "")).unwrap();
    (config, sim)
}

// Finding 13 (lower). The certificate replaced by a FIFO (which would block whoever opens
// it): the files are checked off the serving path, so TLS keeps being served with the last
// good certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_a_fifo_in_place_of_the_certificate_never_blocks_serving() {
    let dir = temp_dir("hardening-fifo-cert");
    let pki = common::tools::Pki::new(&dir, "ca");
    pki.sign("ca", "server", true);
    let web = tls_web_config(&dir);
    let (config, _sim) = two_apps_config(&dir).await;
    let exporter = Binary::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
    ]);
    let healthz = || {
        curl(&[
            "--max-time",
            "3",
            "--cacert",
            &pki.path("ca.crt"),
            &exporter.url("https", "/healthz"),
        ])
    };
    assert_eq!(healthz().status, 200);
    std::fs::remove_file(dir.join("server.crt")).unwrap();
    run("mkfifo", &[dir.join("server.crt").to_str().unwrap()]);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let fetched = healthz();
        assert_eq!(
            (fetched.code, fetched.status),
            (0, 200),
            "{}",
            exporter.stderr()
        );
    }
    assert!(
        exporter.stderr().contains("not a regular file"),
        "{}",
        exporter.stderr()
    );
}

// Finding 15 (lower). A second exporter on the same storage is refused with a message naming
// the first one's pid (two would double every call and overwrite each other's state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_15_a_second_exporter_on_the_same_storage_is_refused() {
    let dir = temp_dir("hardening-lock");
    let (config, _sim) = two_apps_config(&dir).await;
    let storage = format!("--storage.path={}", dir.join("data").display());
    let first = Binary::start(&["--config", config.to_str().unwrap(), &storage]);
    let mut second = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"));
    second.args([
        "--config",
        config.to_str().unwrap(),
        &storage,
        "--web.listen-address=127.0.0.1:0",
    ]);
    let second = output_within(second, Duration::from_secs(10));
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let expected = format!("is in use by another exporter (pid {})", first.child.id());
    assert!(stderr.contains(&expected), "{stderr}");
    drop(first);
    // Once the first has exited, the storage is free.
    let third = Binary::start(&["--config", config.to_str().unwrap(), &storage]);
    assert_eq!(curl(&[&third.url("http", "/healthz")]).status, 200);
}

// Finding 16 (lower). POST /-/reload is off unless --web.enable-lifecycle, as in Prometheus
// (SIGHUP always reloads), and a form posted from another site's page is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_16_the_reload_endpoint_needs_the_lifecycle_flag_and_the_same_origin() {
    let dir = temp_dir("hardening-lifecycle");
    let (config, _sim) = two_apps_config(&dir).await;
    let post = |exporter: &Binary, origin: Option<&str>| {
        let url = exporter.url("http", "/-/reload");
        let header = origin.map(|origin| format!("Origin: {origin}"));
        let mut args = vec!["-X", "POST"];
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        args.push(&url);
        curl(&args).status
    };
    let off = Binary::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(post(&off, None), 403);
    drop(off);
    let on = Binary::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.enable-lifecycle",
    ]);
    assert_eq!(post(&on, None), 200);
    let same = format!("http://{}", on.address);
    assert_eq!(post(&on, Some(&same)), 200);
    assert_eq!(post(&on, Some("https://evil.example")), 403);
    assert_eq!(post(&on, Some("null")), 403);
}

// Finding 17 (lower). A discovery endpoint that echoes the bearer token (here as the appid
// of the app it lists, which the error then quotes): the token never reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_17_the_discovery_token_is_never_logged_even_when_echoed() {
    use axum::http::HeaderMap;
    let route = axum::routing::get(|headers: HeaderMap| async move {
        let token = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .trim_start_matches("Bearer ")
            .to_string();
        format!(
            r#"[{{"name": "echo", "appid": "{token}", "token_source": "file", "token_file": "/x"}}]"#
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/apps", route))
            .await
            .unwrap();
    });
    let dir = temp_dir("hardening-token");
    let config = discovering(&dir, Some(&format!("http://{address}/apps")), "127.0.0.1:9");
    let (code, stderr, stdout, _) = tokio::task::spawn_blocking(move || check_config(&config, &[]))
        .await
        .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a Mini Program AppID"), "{stderr}");
    assert!(stderr.contains("<redacted>"), "{stderr}");
    for text in [&stderr, &stdout] {
        assert!(!text.contains("discovery-token-0123456789"), "{text}");
    }
}

/// The `notAfter` of the certificate `path`, as Unix time.
fn not_after(path: &str) -> i64 {
    let line = run("openssl", &["x509", "-noout", "-enddate", "-in", path]);
    let date = line.trim().trim_start_matches("notAfter=");
    let date = date.split_whitespace().collect::<Vec<_>>().join(" ");
    chrono::NaiveDateTime::parse_from_str(&date, "%b %d %H:%M:%S %Y GMT")
        .unwrap()
        .and_utc()
        .timestamp()
}

// Finding 19 (lower). An expired and a not-yet-valid certificate are served (the operator
// may be mid-rotation) but warned of at load, and the expiry is a metric for an alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_19_a_certificate_out_of_its_validity_is_warned_of_and_its_expiry_exported() {
    let dir = temp_dir("hardening-expired");
    let pki = common::tools::Pki::new(&dir, "ca");
    let (config, _sim) = two_apps_config(&dir).await;
    let web = tls_web_config(&dir);
    for (at, warning) in [
        ("2020-01-01 00:00:00", "the TLS certificate has expired"),
        (
            "2099-01-01 00:00:00",
            "the TLS certificate is not valid yet",
        ),
    ] {
        pki.sign_at("ca", "server", true, Some(at));
        let exporter = Binary::start(&[
            "--config",
            config.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
        ]);
        let metrics = curl(&["--insecure", &exporter.url("https", "/metrics")]);
        assert_eq!(metrics.status, 200);
        let expiry = sample(
            &metrics.body,
            "wechat_miniprogram_exporter_tls_certificate_expiry_timestamp_seconds",
            &[],
        );
        assert_eq!(
            expiry,
            Some(not_after(&pki.path("server.crt")) as f64),
            "{at}"
        );
        assert!(
            exporter.stderr().contains(warning),
            "{at}: {}",
            exporter.stderr()
        );
    }
}

// What held up in the same review, kept so.

#[test]
fn discovered_entries_with_traversal_nul_html_or_an_overlong_appid_are_refused_in_bounded_messages()
{
    let dir = temp_dir("hardening-entries");
    let config = discovering(&dir, None, "127.0.0.1:9");
    let long = format!("wx{}", "1".repeat(1 << 20));
    for (name, appid) in [
        ("traversal", "../../../../etc/passwd"),
        ("nul", "wx11111111\\u000011111"),
        ("<script>alert(1)</script>", "wx1111111111111111"),
        ("html", "<img src=x onerror=alert(1)>"),
        ("long", long.as_str()),
    ] {
        std::fs::write(dir.join("apps.json"), format!("[{}]", entry(name, appid))).unwrap();
        let (code, stderr, stdout, _) = check_config(&config, &[]);
        assert_eq!(code, 2, "{name}: {}", &stderr[..stderr.len().min(500)]);
        assert!(
            !stdout.contains("discovery source"),
            "{name}: nothing listed: {stdout}"
        );
        assert!(stderr.len() < 4096, "{name}: {} bytes", stderr.len());
    }
}

#[test]
fn a_yaml_alias_bomb_is_refused_in_bounded_memory() {
    let dir = temp_dir("hardening-alias-bomb");
    let config = discovering(&dir, None, "127.0.0.1:9");
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in b'b'..=b'k' {
        let previous = (level - 1) as char;
        let level = level as char;
        bomb.push_str(&format!("{level}: &{level} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"));
    }
    std::fs::write(dir.join("apps.yaml"), bomb).unwrap();
    let (code, stderr, _, took) = check_config(&config, &["prlimit", "--as=268435456", "--"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("apps.yaml"), "{stderr}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// An endpoint at `/apps` answering `body` (with a redirect at `/moved` to `/apps`).
async fn answering(body: bytes::Bytes) -> std::net::SocketAddr {
    use axum::response::Redirect;
    let router = axum::Router::new()
        .route(
            "/apps",
            axum::routing::get(move || async move { body.clone() }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async { Redirect::temporary("/apps") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_answer_over_16_mib_is_refused_and_a_redirect_not_followed() {
    let list = format!("[{}]", entry("shop", SHOP));
    let mut huge = list.clone().into_bytes();
    huge.extend(std::iter::repeat_n(b' ', 17 << 20));
    let huge = answering(huge.into()).await;
    let fine = answering(list.into()).await;
    for (url, problem) in [
        (format!("http://{huge}/apps"), "larger than 16 MiB"),
        (format!("http://{fine}/moved"), "HTTP status 307"),
        (format!("http://{fine}/apps"), ""),
    ] {
        let dir = temp_dir("hardening-url-bounds");
        let config = discovering(&dir, Some(&url), "127.0.0.1:9");
        let (code, stderr, stdout, _) =
            tokio::task::spawn_blocking(move || check_config(&config, &[]))
                .await
                .unwrap();
        if problem.is_empty() {
            assert_eq!(code, 0, "{stderr}");
            assert!(stdout.contains("shop (wx1111111111111111)"), "{stdout}");
        } else {
            assert_eq!(code, 2, "{url}: {stderr}");
            assert!(stderr.contains(problem), "{url}: {stderr}");
        }
    }
}

#[tokio::test]
async fn a_linked_directory_fifo_or_million_deep_state_file_is_one_warning_and_one_refetch() {
    let storage = temp_dir("hardening-odd-files");
    let (first, sim, api, clock) = settled_on(&storage, "2024-06-05 12:00").await;
    first.stop().await;
    drop(first);
    let elsewhere = temp_dir("hardening-odd-files-elsewhere").join("trend.json");
    std::fs::copy(shop_file(&storage, "visit_trend.daily.json"), &elsewhere).unwrap();
    std::fs::remove_file(shop_file(&storage, "visit_trend.daily.json")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, shop_file(&storage, "visit_trend.daily.json")).unwrap();
    std::fs::remove_file(shop_file(&storage, "visit_page.daily.json")).unwrap();
    std::fs::create_dir(shop_file(&storage, "visit_page.daily.json")).unwrap();
    std::fs::remove_file(shop_file(&storage, "retention.daily.json")).unwrap();
    run(
        "mkfifo",
        &[shop_file(&storage, "retention.daily.json")
            .to_str()
            .unwrap()],
    );
    let deep = format!("{}{}", "[".repeat(1 << 20), "]".repeat(1 << 20));
    std::fs::write(shop_file(&storage, "daily_summary.daily.json"), deep).unwrap();
    let calls = sim.calls().len();
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    second.settle().await;
    let again: std::collections::BTreeSet<String> = report_calls(&sim.calls()[calls..])
        .iter()
        .map(|call| format!("{} {}", call.appid.as_deref().unwrap_or(""), call.endpoint))
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "getweanalysisappiddailyretaininfo",
        "getweanalysisappiddailysummarytrend",
        "getweanalysisappiddailyvisittrend",
        "getweanalysisappidvisitpage",
    ]
    .iter()
    .map(|endpoint| format!("{SHOP} {endpoint}"))
    .collect();
    assert_eq!(again, expected);
    let logs = second.logs.text();
    assert_eq!(logs.matches("state file ignored").count(), 4, "{logs}");
}

#[test]
fn kill_9_at_any_moment_never_leaves_a_state_file_that_does_not_read() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_sim, api) = runtime.block_on(spawn_simulation(generated_apps(100)));
    let dir = temp_dir("hardening-kill-9");
    let config = dir.join("config.toml");
    std::fs::write(&config, config_toml(&generated_apps(100), api, "")).unwrap();
    let storage = dir.join("data");
    let args = [
        "--config".to_string(),
        config.display().to_string(),
        format!("--storage.path={}", storage.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut steps = Steps(0x6b11_9999);
    for _ in 0..6 {
        let mut exporter = Binary::start(&args);
        std::thread::sleep(Duration::from_millis(200 + steps.next(1500)));
        exporter.child.kill().unwrap();
        exporter.child.wait().unwrap();
    }
    let files: Vec<PathBuf> = walk(&storage.join("apps"))
        .into_iter()
        .filter(|file| {
            file.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    assert!(files.len() > 100, "{} files written", files.len());
    for file in files {
        let text = std::fs::read(&file).unwrap();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&text).is_ok(),
            "{} does not read",
            file.display()
        );
    }
    let exporter = Binary::start(&args);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !exporter.stderr().contains("state file ignored"),
        "{}",
        exporter.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sighups_are_coalesced_and_the_exporter_keeps_serving() {
    let dir = temp_dir("hardening-sighups");
    let (config, _sim) = two_apps_config(&dir).await;
    let mut exporter = Binary::start(&["--config", config.to_str().unwrap(), "--log.level=info"]);
    let pid = exporter.child.id() as i32;
    // The shell's own kill: 2,000 signals within milliseconds.
    let storm = format!("for i in $(seq 2000); do kill -HUP {pid}; done");
    tokio::task::spawn_blocking(move || run("bash", &["-c", &storm]));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (took, status) = timed_get(&exporter.url("http", "/healthz"));
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "{took:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reloads = exporter.stderr().matches("configuration reloaded").count();
    assert!(
        (1..100).contains(&reloads),
        "{reloads} reloads for 2000 SIGHUPs"
    );
    assert!(
        exporter
            .child
            .try_wait()
            .is_ok_and(|status| status.is_none()),
        "still running"
    );
}

#[test]
fn a_header_with_a_line_break_in_the_web_configuration_is_refused() {
    let dir = temp_dir("hardening-header-injection");
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "http_server_config:\n  headers:\n    X-Frame-Options: \"deny\\r\\nSet-Cookie: a=b\"\n",
    )
    .unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        config_toml(&two_apps(), "127.0.0.1:9".parse().unwrap(), ""),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"));
    command.args([
        "--config",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
        "--web.listen-address=127.0.0.1:0",
    ]);
    let output = output_within(command, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("X-Frame-Options"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_rotation_keeps_the_last_good_certificate() {
    let dir = temp_dir("hardening-bad-rotation");
    let pki = common::tools::Pki::new(&dir, "ca");
    pki.sign("ca", "server", true);
    let web = tls_web_config(&dir);
    let (config, _sim) = two_apps_config(&dir).await;
    let exporter = Binary::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
    ]);
    // The port takes connections before the web configuration is read: the certificate is
    // broken only once the exporter serves with the good one.
    let https = || {
        curl(&[
            "--cacert",
            &pki.path("ca.crt"),
            &exporter.url("https", "/healthz"),
        ])
    };
    let before = https();
    assert_eq!(
        (before.code, before.status),
        (0, 200),
        "{}",
        exporter.stderr()
    );
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let fetched = https();
    assert_eq!(
        (fetched.code, fetched.status),
        (0, 200),
        "{}",
        exporter.stderr()
    );
    assert!(
        exporter.stderr().contains("the running one stays"),
        "{}",
        exporter.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_a_small_answer_are_evicted_for_newcomers() {
    let dir = temp_dir("hardening-small-readers");
    let (config, _sim) = two_apps_config(&dir).await;
    let exporter = Binary::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.max-connections=4",
    ]);
    let stuck: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(exporter.address).unwrap();
            std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let scrape = curl(&["--max-time", "3", &exporter.url("http", "/metrics")]);
        assert_eq!((scrape.code, scrape.status), (0, 200));
    }
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_head_options_and_http_1_0_are_answered_as_http_says() {
    let dir = temp_dir("hardening-http");
    let (config, _sim) = two_apps_config(&dir).await;
    let exporter = Binary::start(&["--config", config.to_str().unwrap()]);
    let address = exporter.address;
    let answers = tokio::task::spawn_blocking(move || {
        [
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "OPTIONS /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /healthz HTTP/1.0\r\n\r\n",
        ]
        .map(|request| raw_request(address, request))
    })
    .await
    .unwrap();
    assert_eq!(
        answers[0].matches("HTTP/1.1 200").count(),
        2,
        "{}",
        answers[0]
    );
    let (head, body) = answers[1].split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "HEAD has no body");
    assert!(answers[2].starts_with("HTTP/1.1 405"), "{}", answers[2]);
    assert!(
        answers[3].starts_with("HTTP/1.0 200") || answers[3].starts_with("HTTP/1.1 200"),
        "{}",
        answers[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_not_sent_within_the_head_timeout_loses_its_connection() {
    use wechat_miniprogram_exporter::server::listen::{serve, Limits};
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    tokio::spawn(serve(
        listener,
        router,
        None,
        limits,
        std::future::pending(),
    ));
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
}
