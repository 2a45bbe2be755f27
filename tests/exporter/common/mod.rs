//! One helper per area: a simulated WeChat API and an exporter on port 0 sharing a manual
//! clock, scrapes, sample look-ups and captured logs.

#![allow(dead_code)]

pub mod hostile;
pub mod prometheus;
pub mod tools;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio::net::TcpListener;

use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::Config;
use wechat_miniprogram_exporter::logging::{self, LogFormat, LogLevel};
use wechat_miniprogram_exporter::period::{Period, PeriodKind};
use wechat_miniprogram_exporter::reload::{Control, Source};
use wechat_miniprogram_exporter::report::Report;
use wechat_miniprogram_exporter::report::Settings as ReportSettings;
use wechat_miniprogram_exporter::simulation::model::Request;
use wechat_miniprogram_exporter::simulation::{Fault, Model, SimApp, Simulation};
use wechat_miniprogram_exporter::startup::{self, Running, Start};
use wechat_miniprogram_exporter::store::Store;
use wechat_miniprogram_exporter::wechat::Call;

/// An instant given in Beijing time, e.g. `beijing("2024-06-05 12:00")`.
pub fn beijing(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(&format!("{text} +0800"), "%Y-%m-%d %H:%M %z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Waits, if need be, until a test of the real clock that takes up to `lasting` cannot
/// straddle a Beijing midnight, and returns the Beijing date it runs on: such a test computes
/// "yesterday" once, and the exporter it starts must see the same.
pub async fn clear_of_beijing_midnight(lasting: Duration) -> NaiveDate {
    use wechat_miniprogram_exporter::period::beijing_date;
    let now = Utc::now();
    let lasting = chrono::Duration::from_std(lasting).unwrap();
    let today = beijing_date(now);
    if beijing_date(now + lasting) == today {
        return today;
    }
    let midnight = wechat_miniprogram_exporter::period::beijing_midnight(today.succ_opt().unwrap());
    let wait = (midnight - now + chrono::Duration::seconds(5))
        .to_std()
        .unwrap();
    tokio::time::sleep(wait).await;
    beijing_date(Utc::now())
}

/// A loopback address, free now, for a child process (an exporter, Prometheus) to listen on.
///
/// It lies below the kernel's ephemeral range, which port-0 listeners and outgoing
/// connections draw from: a port taken there and dropped could be handed to a concurrent
/// test's listener before the child binds it, and the child's "listening" port would answer
/// for another server. Ports are handed out in turn from an offset of the process id, so the
/// tests of one process never get the same one twice.
pub fn free_address() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000, ephemeral.saturating_sub(10_000).max(1_000));
    let offset = std::process::id().wrapping_mul(97);
    for _ in 0..span {
        let port = first + offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let address = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(address).is_ok() {
            return address;
        }
    }
    panic!("no free loopback port from {first} to {}", first + span);
}

/// Two simulated apps: `shop` answers empty lists before publication, `news` errcode 61503.
pub fn two_apps() -> Vec<SimApp> {
    let shop = SimApp::new(
        "shop",
        "wx1111111111111111",
        "secret-shop-0123456789",
        10_000.0,
    );
    let mut news = SimApp::new(
        "news",
        "wx2222222222222222",
        "secret-news-0123456789",
        50_000.0,
    );
    news.not_ready = wechat_miniprogram_exporter::simulation::NotReady::Errcode;
    vec![shop, news]
}

/// What the simulated API answers to the first call of `report` for `period` of `app`, once
/// every day up to `last_day` is published.
pub fn simulated(app: &SimApp, report: &str, period: Period, last_day: NaiveDate) -> Value {
    let call = Report::by_name(report)
        .unwrap()
        .calls(period, &ReportSettings::default())
        .remove(0);
    simulated_call(app, report, &call, last_day)
}

/// What the simulated API answers to `call` of `report` for `app`, once every day up to
/// `last_day` is published.
pub fn simulated_call(app: &SimApp, report: &str, call: &Call, last_day: NaiveDate) -> Value {
    let model = Model { app };
    let now = model.published_at(Period::containing(PeriodKind::Daily, last_day));
    let body: Value = serde_json::from_str(&call.body).unwrap();
    let request = Request {
        model,
        kind: call.asks.kind(),
        body: &body,
        now,
    };
    Report::by_name(report).unwrap().simulate(&request).unwrap()
}

/// The simulated visit trend item of `period` of `app`.
pub fn simulated_trend(app: &SimApp, period: Period) -> Value {
    simulated(app, "visit_trend", period, period.end())["list"][0].clone()
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct TestApp {
    pub sim: Simulation,
    /// The simulated API's address.
    pub api: SocketAddr,
    pub clock: Clock,
    pub address: SocketAddr,
    pub store: Arc<Store>,
    pub logs: Logs,
    pub http: reqwest::Client,
    /// Jobs per app: a (report, period kind) of every enabled report.
    pub jobs: usize,
    /// Jobs of the apps that set reports of their own, by name.
    pub jobs_by_app: std::collections::BTreeMap<String, usize>,
    /// Reloads and discovery.
    pub control: Arc<Control>,
    /// The configuration it started with.
    pub config: Config,
    /// The exporter, until it is stopped.
    running: Mutex<Option<Running>>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

/// The exporter's TOML for `apps` against the simulation at `api`, plus `extra` lines.
pub fn config_toml(apps: &[SimApp], api: SocketAddr, extra: &str) -> String {
    let toml = wechat_miniprogram_exporter::simulation::config_for(apps, &format!("http://{api}"));
    let (first, apps) = toml.split_once('\n').unwrap();
    format!("{first}\n{extra}\n{apps}")
}

/// The simulation of `apps` on the real clock, on a free port.
pub async fn spawn_simulation(apps: Vec<SimApp>) -> (Simulation, SocketAddr) {
    let sim = Simulation::new(apps, Clock::system());
    let address = sim
        .clone()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, address)
}

/// An exporter polling a simulation, built step by step and started with [`Exporter::start`]:
///
/// ```text
/// Exporter::new(two_apps(), beijing("2024-06-05 12:00"))
///     .toml("[reports]\npages_top = 5")
///     .fault(shop, DAILY_TREND, Fault::Errcode(40001), 2)
///     .start()
///     .await
/// ```
///
/// Must run on a current-thread runtime (`#[tokio::test]`) so that logs are captured.
pub struct Exporter {
    simulation: Simulated,
    extra: String,
    edit: Box<dyn FnOnce(String) -> String>,
    config: Option<Config>,
    source: Option<Source>,
    prepare: Vec<Preparation>,
    rule: Option<hostile::Rule>,
}

/// A change to the simulation before the exporter starts (a fault to inject, a latency).
type Preparation = Box<dyn FnOnce(&Simulation)>;

/// The simulation an [`Exporter`] polls: one it starts, or one already running.
enum Simulated {
    New {
        apps: Vec<SimApp>,
        start: DateTime<Utc>,
    },
    Running {
        sim: Simulation,
        api: SocketAddr,
        clock: Clock,
    },
}

impl Exporter {
    /// An exporter of the configuration of `apps`, polling a new simulation of them, both on
    /// a manual clock at `start`.
    pub fn new(apps: Vec<SimApp>, start: DateTime<Utc>) -> Exporter {
        Exporter::polling(Simulated::New { apps, start })
    }

    /// An exporter polling the running `sim` (at `api`) on its `clock`: a restart, a second
    /// exporter. Its configuration is given with [`Exporter::config`].
    pub fn on(sim: &Simulation, api: SocketAddr, clock: &Clock) -> Exporter {
        Exporter::polling(Simulated::Running {
            sim: sim.clone(),
            api,
            clock: clock.clone(),
        })
    }

    fn polling(simulation: Simulated) -> Exporter {
        Exporter {
            simulation,
            extra: String::new(),
            edit: Box::new(|toml| toml),
            config: None,
            source: None,
            prepare: Vec::new(),
            rule: None,
        }
    }

    /// Extra top-level TOML, before the apps.
    pub fn toml(mut self, extra: &str) -> Exporter {
        self.extra = extra.to_string();
        self
    }

    /// A last edit of the whole configuration text.
    pub fn edit(mut self, edit: impl FnOnce(String) -> String + 'static) -> Exporter {
        self.edit = Box::new(edit);
        self
    }

    /// This configuration instead of the one of the apps.
    pub fn config(mut self, config: Config) -> Exporter {
        self.config = Some(config);
        self
    }

    /// Where reloads read the configuration (by default: it never changes).
    pub fn source(mut self, source: Source) -> Exporter {
        self.source = Some(source);
        self
    }

    /// The next `times` calls of `appid` to `endpoint` answer `fault`.
    pub fn fault(self, appid: &str, endpoint: &str, fault: Fault, times: usize) -> Exporter {
        let (appid, endpoint) = (appid.to_string(), endpoint.to_string());
        self.prepare(move |sim| sim.inject(&appid, Some(&endpoint), fault, times))
    }

    /// A preparation of the simulation before the exporter starts.
    pub fn prepare(mut self, prepare: impl FnOnce(&Simulation) + 'static) -> Exporter {
        self.prepare.push(Box::new(prepare));
        self
    }

    /// The exporter asks a hostile proxy (see [`hostile`]) that answers with `rule` where
    /// it says and forwards to the simulation otherwise.
    pub fn behind(mut self, rule: hostile::Rule) -> Exporter {
        self.rule = Some(rule);
        self
    }

    /// Starts the simulation (if new) and the exporter.
    pub async fn start(self) -> TestApp {
        self.start_behind().await.0
    }

    /// As [`Exporter::start`], with the hostile proxy of [`Exporter::behind`].
    pub async fn start_behind(self) -> (TestApp, Option<hostile::Hostile>) {
        let (logs, guard) = capture_logs();
        let (sim, api, clock, apps) = match self.simulation {
            Simulated::New { apps, start } => {
                let (sim, api, clock) = spawn_manual_simulation(apps.clone(), start).await;
                (sim, api, clock, apps)
            }
            Simulated::Running { sim, api, clock } => {
                let apps = sim.apps().to_vec();
                (sim, api, clock, apps)
            }
        };
        for prepare in self.prepare {
            prepare(&sim);
        }
        let proxy = match self.rule {
            Some(rule) => Some(hostile::spawn_hostile(api, rule).await),
            None => None,
        };
        let asked = proxy.as_ref().map_or(api, |proxy| proxy.address);
        let config = match self.config {
            Some(config) => config,
            None => {
                Config::from_toml(&(self.edit)(config_toml(&apps, asked, &self.extra))).unwrap()
            }
        };
        let source = self.source.unwrap_or_else(|| fixed(&config));
        let app = start_exporter(config, source, clock, sim, api, logs, guard).await;
        (app, proxy)
    }
}

/// `toml` as a configuration that keeps its state on `storage`.
pub fn config_with_storage(toml: &str, storage: &std::path::Path) -> Config {
    let mut config = Config::from_toml(toml).unwrap();
    config.storage = Some(storage.to_path_buf());
    config
}

/// `config` as a source that never changes.
pub fn fixed(config: &Config) -> Source {
    Source::Fixed(Box::new(config.clone()))
}

/// Captures this thread's logs (debug and up) until the guard is dropped.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let guard = tracing::subscriber::set_default(logging::subscriber(
        LogLevel::Debug,
        LogFormat::Logfmt,
        move || writer.clone(),
    ));
    (logs, guard)
}

/// The simulation of `apps` on a manual clock at `start`, on a free port.
pub async fn spawn_manual_simulation(
    apps: Vec<SimApp>,
    start: DateTime<Utc>,
) -> (Simulation, SocketAddr, Clock) {
    let clock = Clock::manual(start);
    let sim = Simulation::new(apps, clock.clone());
    let api = sim
        .clone()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, api, clock)
}

/// The series of WeChat data (not the exporter's own), sorted: what must survive a restart.
pub fn data_series(metrics: &str) -> Vec<String> {
    let own = [
        "wechat_miniprogram_api_",
        "wechat_miniprogram_token_",
        "wechat_miniprogram_exporter_",
    ];
    let mut lines: Vec<String> = metrics
        .lines()
        .filter(|line| line.starts_with("wechat_miniprogram_"))
        .filter(|line| !own.iter().any(|prefix| line.starts_with(prefix)))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// Jobs per app that `config` enables: a (report, period kind) of every enabled report.
pub fn jobs_of(config: &Config) -> usize {
    jobs_enabled(&config.reports)
}

/// Jobs of an app polling the reports `reports` enables.
pub fn jobs_enabled(reports: &ReportSettings) -> usize {
    Report::all()
        .filter(|report| report.is_enabled(reports))
        .map(|report| report.kinds().len())
        .sum()
}

/// Starts the exporter of `config` (from `source`, for reloads) on `clock` against `sim`
/// (at `api`), and serves it on a free port.
async fn start_exporter(
    mut config: Config,
    source: Source,
    clock: Clock,
    sim: Simulation,
    api: SocketAddr,
    logs: Logs,
    guard: tracing::subscriber::DefaultGuard,
) -> TestApp {
    let jobs = jobs_of(&config);
    let jobs_by_app = config
        .app_reports
        .keys()
        .map(|name| (name.clone(), jobs_enabled(&config.reports_of(name))))
        .collect();
    // The tests reload over HTTP.
    config.web.enable_lifecycle = true;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = Start {
        config: config.clone(),
        source,
        clock: clock.clone(),
        listener,
        hangups: false,
    };
    let running = startup::start(start).await.unwrap();
    TestApp {
        sim,
        api,
        clock,
        address: running.address,
        store: running.store.clone(),
        logs,
        http: reqwest::Client::new(),
        jobs,
        jobs_by_app,
        control: running.control.clone(),
        config,
        running: Mutex::new(Some(running)),
        _log_guard: guard,
    }
}

impl TestApp {
    /// Jobs the app named `name` has.
    fn jobs_wanted(&self, name: &str) -> usize {
        self.jobs_by_app.get(name).copied().unwrap_or(self.jobs)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("http://{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn scrape(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Waits until no job of any app is due at the clock's time: everything that could be
    /// fetched has been, and the rest waits for a later instant.
    pub async fn settle(&self) {
        for _ in 0..2000 {
            if self.is_settled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let now = self.clock.now();
        let unsettled: Vec<String> = self
            .store
            .overview()
            .iter()
            .flat_map(|app| {
                let mut unsettled: Vec<String> = app
                    .jobs
                    .iter()
                    .filter(|((_, kind), status)| !job_settled(*kind, status, now))
                    .map(|(job, status)| format!("{} {job:?}: {status:?}", app.name))
                    .collect();
                if !app.ready || app.jobs.len() != self.jobs_wanted(&app.name) {
                    unsettled.push(format!(
                        "{}: ready {}, {} of {} jobs",
                        app.name,
                        app.ready,
                        app.jobs.len(),
                        self.jobs_wanted(&app.name)
                    ));
                }
                unsettled
            })
            .collect();
        let text = self.logs.text();
        let last: Vec<&str> = text.lines().rev().take(40).collect();
        panic!(
            "the exporter did not settle at {now}; unsettled: {unsettled:#?}\nthe last log lines, latest first:\n{}",
            last.join("\n")
        );
    }

    fn is_settled(&self) -> bool {
        let now = self.clock.now();
        self.store.overview().iter().all(|app| {
            app.ready
                && app.jobs.len() == self.jobs_wanted(&app.name)
                && app
                    .jobs
                    .iter()
                    .all(|((_, kind), status)| job_settled(*kind, status, now))
        })
    }

    /// Moves the clock and waits for the exporter to finish what became due.
    pub async fn advance_to(&self, instant: DateTime<Utc>) {
        self.clock.set(instant);
        self.settle().await;
    }

    /// Calls the simulation answered for `appid` so far.
    pub fn calls_of(&self, appid: &str) -> Vec<wechat_miniprogram_exporter::simulation::Call> {
        self.sim
            .calls()
            .into_iter()
            .filter(|call| call.appid.as_deref() == Some(appid))
            .collect()
    }

    /// Stops the pollers and the server at once, without waiting for the state: as a kill
    /// does (the storage's lock is given up, as the process's exit does).
    pub fn shutdown(&self) {
        if let Some(running) = self.running.lock().unwrap().as_ref() {
            running.kill();
        }
    }

    /// Stops the pollers and the server, and waits until the state is on disk, as a
    /// shutdown of the real exporter does.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            assert!(running.stop().await, "the state is written");
        }
    }

    /// Calls the simulation answered since the `from`-th, of every app.
    pub fn calls_since(&self, from: usize) -> Vec<wechat_miniprogram_exporter::simulation::Call> {
        self.sim.calls().into_iter().skip(from).collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if matches {
                value.parse().ok()
            } else {
                None
            }
        })
}

/// Every sample line of the family `name`.
pub fn series<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// Whether a job is done (holds the latest period, nothing planned) or waits for later than
/// `now`.
fn job_settled(
    kind: PeriodKind,
    status: &wechat_miniprogram_exporter::sink::JobStatus,
    now: DateTime<Utc>,
) -> bool {
    let target = Period::latest_completed(kind, now);
    (status.held == Some(target) && status.next_attempt.is_none())
        || status.next_attempt.is_some_and(|next| next > now)
}
