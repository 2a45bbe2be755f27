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
use crate::config::Config;
use crate::metrics::SelfMetrics;
use crate::poller::{AppPoller, Settings};
use crate::server::router;
use crate::sink::Sink;
use crate::store::Store;
use crate::wechat::client::{AppConnection, Client};

/// The exporter, built and not yet running.
pub struct Exporter {
    /// What `/metrics` serves.
    pub store: Arc<Store>,
    pollers: Vec<AppPoller>,
}

impl Exporter {
    /// Builds the client, store and pollers of `config`.
    pub fn build(config: &Config, clock: Clock) -> anyhow::Result<Exporter> {
        let self_metrics = Arc::new(SelfMetrics::new());
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
        let pollers = config
            .apps
            .iter()
            .enumerate()
            .map(|(number, app)| {
                AppPoller::new(
                    number,
                    AppConnection::new(app.clone()),
                    client.clone(),
                    store.clone() as Arc<dyn Sink>,
                    settings.clone(),
                    clock.clone(),
                )
            })
            .collect();
        Ok(Exporter { store, pollers })
    }

    /// Starts every poller in the background; they stop when `shutdown` turns true.
    pub fn start(self, shutdown: watch::Receiver<bool>) -> (Arc<Store>, JoinSet<()>) {
        let mut tasks = JoinSet::new();
        for poller in self.pollers {
            tasks.spawn(poller.run(shutdown.clone()));
        }
        (self.store, tasks)
    }

    /// Runs one round for every app at once; `true` if any report failed with an error.
    pub async fn poll_once(self) -> (Arc<Store>, bool) {
        let mut tasks = JoinSet::new();
        for mut poller in self.pollers {
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
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}
