//! One start-up path: a validated configuration becomes the running exporter (the store over
//! its state directory, the fleet of pollers, reload and discovery, SIGHUP, the router, the
//! web configuration and the server on a bound listener), and a [`Running`] handle stops it.
//! `main` and the tests start the exporter through [`start`] alone; `once` polls every app
//! one round through [`once`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::SelfMetrics;
use crate::poller::{AppPoller, Context, Settings};
use crate::reload::{Control, Source};
use crate::server::listen::{self, Limits};
use crate::server::web_config::WebConfig;
use crate::server::{router_with, with_reload, Reload};
use crate::sink::Sink;
use crate::state::StateDir;
use crate::store::Store;
use crate::wechat::client::{AppConnection, Client};

/// How long the pollers, then the state, may take at shutdown.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What the exporter starts from.
pub struct Start {
    /// The configuration, validated.
    pub config: Config,
    /// Where a reload reads the configuration again.
    pub source: Source,
    /// The clock of the pollers and of the schedule.
    pub clock: Clock,
    /// Where to serve, already bound.
    pub listener: TcpListener,
    /// Whether SIGHUP reloads (the binary; not the tests, which share one process).
    pub hangups: bool,
}

/// The exporter, running.
pub struct Running {
    /// Where it serves.
    pub address: SocketAddr,
    /// What it serves.
    pub store: Arc<Store>,
    /// Reloads and discovery.
    pub control: Arc<Control>,
    fleet: Arc<Fleet>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

/// The store of `config`, over its state directory if it has one (a directory another
/// exporter holds is refused).
fn store(config: &Config) -> Result<Arc<Store>, String> {
    let exporter_metrics = !config.web.disable_exporter_metrics;
    let self_metrics = Arc::new(SelfMetrics::with_exporter_metrics(exporter_metrics));
    let disk = match config.storage.as_deref() {
        Some(path) => {
            Some(StateDir::open(path).map_err(|problem| format!("--storage.path: {problem}"))?)
        }
        None => None,
    };
    Ok(Arc::new(Store::empty(self_metrics, disk)))
}

/// Starts the exporter: every problem that stops it is the error (the binary exits 2 with
/// it): a web configuration that does not load, a storage another exporter holds.
pub async fn start(start: Start) -> Result<Running, String> {
    let Start {
        config,
        source,
        clock,
        listener,
        hangups,
    } = start;
    let web = web_config(&config)?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let tls = web.as_ref().is_some_and(|web| web.current().tls.is_some());
    tracing::info!(address = %address, apps = config.apps.len(), tls, version = env!("CARGO_PKG_VERSION"), "serving {}", config.web.telemetry_path);
    let store = store(&config)?;
    config
        .calendar
        .warn_if_uncovered(crate::period::beijing_date(chrono::Utc::now()));
    let fleet = Arc::new(Fleet::new(store.clone(), clock.clone())?);
    let (stop, stopped) = watch::channel(false);
    if let Some(web) = &web {
        watch_web_config(web, store.self_metrics().clone(), stopped.clone());
    }
    let metrics = store.self_metrics().clone();
    let control = Arc::new(Control::new(
        source,
        config.clone(),
        fleet.clone(),
        metrics,
        clock,
    ));
    control.start().await?;
    tokio::spawn(control.clone().watch(stopped.clone()));
    if hangups {
        reload_on_hangup(control.clone(), stopped.clone())?;
    }
    let reload = config
        .web
        .enable_lifecycle
        .then(|| reload_route(control.clone()));
    let router = with_reload(
        router_with(store.clone(), &config.web.telemetry_path),
        reload,
    );
    let mut limits = Limits::default();
    if config.web.max_connections > 0 {
        limits.max_connections = config.web.max_connections;
    }
    let mut until = stopped;
    let server = tokio::spawn(listen::serve(listener, router, web, limits, async move {
        let _ = until.wait_for(|stop| *stop).await;
    }));
    Ok(Running {
        address,
        store,
        control,
        fleet,
        stop,
        server,
    })
}

/// The web configuration `--web.config.file` names, loaded (a file that does not load stops
/// the start).
fn web_config(config: &Config) -> Result<Option<Arc<WebConfig>>, String> {
    let Some(path) = &config.web.config_file else {
        return Ok(None);
    };
    let web = WebConfig::load(path).map_err(|problem| format!("--web.config.file: {problem}"))?;
    Ok(Some(Arc::new(web)))
}

/// Reads the web configuration again when its files change, until `stopped` turns true,
/// exporting its certificate's expiry each time it loads.
fn watch_web_config(
    web: &Arc<WebConfig>,
    metrics: Arc<SelfMetrics>,
    stopped: watch::Receiver<bool>,
) {
    let on_loaded = move |loaded: &crate::server::web_config::Loaded| {
        metrics.tls_certificate(loaded.validity.map(|(not_after, _)| not_after));
    };
    tokio::spawn(web.clone().watch(on_loaded, stopped));
}

/// Reads the configuration again on each SIGHUP, until `stopped` turns true.
fn reload_on_hangup(
    control: Arc<Control>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| format!("installing the SIGHUP handler: {error}"))?;
        tokio::spawn(async move {
            loop {
                let hangup = tokio::select! {
                    hangup = hangups.recv() => hangup.is_some(),
                    _ = stopped.wait_for(|stop| *stop) => false,
                };
                if !hangup {
                    return;
                }
                let _ = control.reload().await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (control, stopped);
    Ok(())
}

/// `POST /-/reload`: reads the configuration again.
fn reload_route(control: Arc<Control>) -> Reload {
    Arc::new(move || {
        let control = control.clone();
        Box::pin(async move { control.reload().await.map(|changes| changes.to_string()) })
    })
}

impl Running {
    /// Stops serving and polling, then writes the state: the pollers get `STOP_WAIT` to
    /// finish a request in flight, the state as long again (whatever the disk does, the exit
    /// is never held longer: what is not on disk is fetched again after a restart), and the
    /// storage is given up. `true` if the state was all written.
    pub async fn stop(self) -> bool {
        let _ = self.stop.send(true);
        if let Ok(Err(error)) = self.server.await {
            tracing::warn!(%error, "the server stopped with an error");
        }
        if tokio::time::timeout(STOP_WAIT, self.fleet.stop())
            .await
            .is_err()
        {
            tracing::warn!("pollers did not stop within 5s; exiting anyway");
        }
        let store = self.store.clone();
        let written = matches!(
            tokio::task::spawn_blocking(move || store.flush(STOP_WAIT)).await,
            Ok(true)
        );
        if !written {
            tracing::warn!("the state was not all written within 5s; what is missing is fetched again after a restart");
        }
        self.store.close();
        written
    }

    /// Stops everything at once, writing nothing more, as `kill -9` does (the storage is given
    /// up, as the process's exit does).
    pub fn kill(&self) {
        self.fleet.signal_stop();
        let _ = self.stop.send(true);
        self.store.close();
    }
}

/// Polls every app of `config` one round, at once: the store, and whether any report failed
/// with an error.
pub async fn once(config: &Config, clock: Clock) -> Result<(Arc<Store>, bool), String> {
    let store = store(config)?;
    let client = Arc::new(
        Client::new(
            &config.api_base_url,
            &config.polling,
            clock.clone(),
            store.self_metrics().clone(),
        )
        .map_err(|error| format!("building the HTTP client: {error}"))?,
    );
    store
        .self_metrics()
        .describe_instance(config.shard, config.apps.len());
    let settings = Arc::new(Settings {
        polling: config.polling.clone(),
        reports: config.reports.clone(),
    });
    let mut tasks = JoinSet::new();
    for app in &config.apps {
        let (slot, resume) = store.add(app, &config.reports, clock.now());
        let context = Context {
            app: slot,
            connection: AppConnection::new(app.clone()),
            client: client.clone(),
            sink: store.clone() as Arc<dyn Sink>,
            settings: settings.clone(),
            clock: clock.clone(),
        };
        let mut poller = AppPoller::new(context, resume);
        tasks.spawn(async move {
            poller.round().await;
            poller.has_errors()
        });
    }
    let mut failed = false;
    while let Some(result) = tasks.join_next().await {
        failed |= result.unwrap_or(true);
    }
    Ok((store, failed))
}
