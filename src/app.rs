//! Wiring: a validated config becomes a client, one poller per app, a store and a router.
//!
//! `main` and the integration tests build the exporter the same way: [`Exporter::build`], then
//! either [`Exporter::start`] (poll forever and serve) or [`Exporter::poll_once`].

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::{App, Config};
use crate::metrics::SelfMetrics;
use crate::poller::{AppPoller, Settings};
use crate::server::router;
use crate::sink::Sink;
use crate::store::Store;
use crate::supervise::supervise;
use crate::wechat::client::{AppConnection, Client};

/// The exporter, built and not yet running.
pub struct Exporter {
    /// What `/metrics` serves.
    pub store: Arc<Store>,
    client: Arc<Client>,
    settings: Arc<Settings>,
    apps: Vec<App>,
    clock: Clock,
}

impl Exporter {
    /// Builds the client, store and pollers of `config`.
    pub fn build(config: &Config, clock: Clock) -> anyhow::Result<Exporter> {
        let exporter_metrics = !config.web.disable_exporter_metrics;
        let self_metrics = Arc::new(SelfMetrics::with_exporter_metrics(exporter_metrics));
        self_metrics.describe_instance(config.shard, config.apps.len());
        let client = Arc::new(
            Client::new(
                &config.api_base_url,
                &config.polling,
                clock.clone(),
                self_metrics.clone(),
            )
            .context("building the HTTP client")?,
        );
        let store = Arc::new(Store::new(&config.apps, self_metrics));
        let settings = Arc::new(Settings {
            polling: config.polling.clone(),
            reports: config.reports.clone(),
        });
        Ok(Exporter {
            store,
            client,
            settings,
            apps: config.apps.clone(),
            clock,
        })
    }

    /// A poller for app number `number`, with a fresh token cache.
    fn poller(&self, number: usize) -> AppPoller {
        AppPoller::new(
            number,
            AppConnection::new(self.apps[number].clone()),
            self.client.clone(),
            self.store.clone() as Arc<dyn Sink>,
            self.settings.clone(),
            self.clock.clone(),
        )
    }

    /// Starts every poller in the background, each supervised (a panic restarts it); they
    /// stop when `shutdown` turns true.
    pub fn start(self, shutdown: watch::Receiver<bool>) -> (Arc<Store>, JoinSet<()>) {
        let exporter = Arc::new(self);
        let mut tasks = JoinSet::new();
        for number in 0..exporter.apps.len() {
            let this = exporter.clone();
            let stop = shutdown.clone();
            let start = move || this.poller(number).run(stop.clone());
            tasks.spawn(supervise(
                number,
                exporter.apps[number].name.clone(),
                exporter.store.clone() as Arc<dyn Sink>,
                exporter.clock.clone(),
                exporter.settings.polling.clone(),
                shutdown.clone(),
                start,
            ));
        }
        (exporter.store.clone(), tasks)
    }

    /// Runs one round for every app at once; `true` if any report failed with an error.
    pub async fn poll_once(self) -> (Arc<Store>, bool) {
        let mut tasks = JoinSet::new();
        for number in 0..self.apps.len() {
            let mut poller = self.poller(number);
            tasks.spawn(async move {
                poller.round().await;
                poller.has_errors()
            });
        }
        let mut failed = false;
        while let Some(result) = tasks.join_next().await {
            failed |= result.unwrap_or(true);
        }
        (self.store, failed)
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
