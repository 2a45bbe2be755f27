//! Wiring: a validated config becomes a store (with its state directory), a fleet of
//! pollers over it, and a router.
//!
//! `main` and the integration tests build the exporter the same way: [`Exporter::build`],
//! then either [`Exporter::start`] (poll forever; [`Exporter::apply`] for a new
//! configuration) or [`Exporter::poll_once`].

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::Config;
use crate::fleet::{Changes, Fleet};
use crate::metrics::SelfMetrics;
use crate::poller::{AppPoller, Settings};
use crate::server::router;
use crate::sink::Sink;
use crate::state::StateDir;
use crate::store::Store;
use crate::wechat::client::{AppConnection, Client};

/// The exporter, built and not yet running.
pub struct Exporter {
    /// What `/metrics` serves.
    pub store: Arc<Store>,
    /// The pollers.
    pub fleet: Arc<Fleet>,
    clock: Clock,
}

impl Exporter {
    /// Builds the store of `config`, over its state directory if it has one. A directory
    /// another exporter holds is refused (two exporters on one directory would overwrite each
    /// other's state and double every call).
    pub fn build(config: &Config, clock: Clock) -> Result<Exporter, String> {
        let exporter_metrics = !config.web.disable_exporter_metrics;
        let self_metrics = Arc::new(SelfMetrics::with_exporter_metrics(exporter_metrics));
        let disk = match config.storage.as_deref() {
            Some(path) => {
                Some(StateDir::open(path).map_err(|problem| format!("--storage.path: {problem}"))?)
            }
            None => None,
        };
        let store = Arc::new(Store::empty(self_metrics, disk));
        let fleet = Arc::new(Fleet::new(store.clone(), clock.clone()));
        Ok(Exporter {
            store,
            fleet,
            clock,
        })
    }

    /// Starts polling the apps of `config` in the background, each supervised (a panic
    /// restarts it); [`Fleet::stop`] stops them.
    pub fn start(&self, config: &Config) -> anyhow::Result<Changes> {
        self.fleet.apply(config)
    }

    /// Runs one round for every app of `config` at once; `true` if any report failed with
    /// an error.
    pub async fn poll_once(self, config: &Config) -> anyhow::Result<(Arc<Store>, bool)> {
        let client = Arc::new(Client::new(
            &config.api_base_url,
            &config.polling,
            self.clock.clone(),
            self.store.self_metrics().clone(),
        )?);
        self.store
            .self_metrics()
            .describe_instance(config.shard, config.apps.len());
        let settings = Arc::new(Settings {
            polling: config.polling.clone(),
            reports: config.reports.clone(),
        });
        let mut tasks = JoinSet::new();
        for app in &config.apps {
            let (slot, resume) = self.store.add(app, &config.reports, self.clock.now());
            let mut poller = AppPoller::new(
                slot,
                AppConnection::new(app.clone()),
                client.clone(),
                self.store.clone() as Arc<dyn Sink>,
                settings.clone(),
                self.clock.clone(),
                resume,
            );
            tasks.spawn(async move {
                poller.round().await;
                poller.has_errors()
            });
        }
        let mut failed = false;
        while let Some(result) = tasks.join_next().await {
            failed |= result.unwrap_or(true);
        }
        Ok((self.store, failed))
    }
}

/// Serves the exporter's routes on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::server::listen::serve(
        listener,
        router(store),
        None,
        crate::server::listen::Limits::default(),
        shutdown,
    )
    .await
}
