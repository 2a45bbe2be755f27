//! Keeping the running exporter in step with its configuration file and the apps discovery
//! lists.
//!
//! [`Control::reload`] (SIGHUP, `POST /-/reload`) reads the file again: a valid one is
//! applied ([`Fleet::apply`]: only what changed changes), an invalid one is refused with
//! every problem logged, counted in `..._config_last_reload_successful`, and the running
//! configuration stays. [`Control::watch`] reads the discovery sources on change and every
//! `discovery.refresh_interval`. The apps of the file and of every source are merged; an app
//! name or appid in two sources refuses the change, naming both, and the running apps stay.
//! At start, nothing is running yet: a source that clashes is left out (naming both) and the
//! others start. The exporter serves before the discovery URL answers: its apps join when it
//! does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use crate::clock::{Clock, Moment};
use crate::config::{Config, Listed, Overrides};
use crate::discovery::merge_apps;
use crate::discovery::Discovery;

use crate::fleet::{Changes, Fleet};
use crate::metrics::SelfMetrics;

/// How often the discovery files are checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the configuration comes from.
pub enum Source {
    /// A file (or none: the environment only) with the command line's overrides, read again
    /// on each reload.
    File(Option<PathBuf>, Overrides),
    /// A configuration that does not change (the demo).
    Fixed(Box<Config>),
}

impl Source {
    fn load(&self) -> Result<Config, String> {
        match self {
            Source::File(file, overrides) => {
                Config::load(file.as_deref(), overrides).map_err(|error| error.to_string())
            }
            Source::Fixed(config) => Ok(config.as_ref().clone()),
        }
    }
}

struct Current {
    config: Config,
    discovery: Discovery,
}

/// The running configuration, and what changes it.
pub struct Control {
    source: Source,
    fleet: Arc<Fleet>,
    metrics: Arc<SelfMetrics>,
    clock: Clock,
    current: Mutex<Current>,
}

impl Control {
    /// Control over `fleet`, starting from `config` (loaded from `source`).
    pub fn new(
        source: Source,
        config: Config,
        fleet: Arc<Fleet>,
        metrics: Arc<SelfMetrics>,
        clock: Clock,
    ) -> Control {
        let discovery = Discovery::new(config.discovery.clone(), config.shard);
        Control {
            source,
            fleet,
            metrics,
            clock,
            current: Mutex::new(Current { config, discovery }),
        }
    }

    /// Reads the discovery files once and starts polling every app, those of a source that
    /// clashes with an earlier one aside; the discovery URL is asked in the background and its
    /// apps join when it answers.
    pub async fn start(self: &Arc<Self>) -> Result<Changes, String> {
        let mut current = self.current.lock().await;
        current.discovery.read_files().await;
        let changes = self.apply_at_start(&current)?;
        self.metrics.reloaded(true, self.clock.now());
        if current.discovery.has_url() {
            let control = self.clone();
            tokio::spawn(async move {
                let mut current = control.current.lock().await;
                if current.discovery.read_url().await {
                    control.apply_discovered(&current);
                }
            });
        }
        Ok(changes)
    }

    /// Reads the configuration again and applies it; a configuration that does not load is
    /// refused and the running one stays.
    pub async fn reload(&self) -> Result<Changes, String> {
        let outcome = self.try_reload().await;
        self.metrics.reloaded(outcome.is_ok(), self.clock.now());
        match &outcome {
            Ok(changes) => tracing::info!(%changes, "configuration reloaded"),
            Err(problems) => {
                tracing::error!(problems = %problems, "configuration reload refused; the running configuration stays");
            }
        }
        outcome
    }

    async fn try_reload(&self) -> Result<Changes, String> {
        let config = self.source.load()?;
        let mut current = self.current.lock().await;
        let mut discovery = Discovery::new(config.discovery.clone(), config.shard);
        if config.discovery == current.config.discovery && config.shard == current.config.shard {
            std::mem::swap(&mut discovery, &mut current.discovery);
        } else {
            discovery.read_files().await;
            discovery.read_url().await;
        }
        let candidate = Current { config, discovery };
        match self.apply(&candidate) {
            Ok(changes) => {
                let today = crate::period::beijing_date(chrono::Utc::now());
                candidate.config.calendar.warn_if_uncovered(today);
                *current = candidate;
                // A person may have granted a refused permission: those reports ask again.
                self.fleet.ask_unauthorized_again();
                Ok(changes)
            }
            Err(problem) => {
                if candidate.config.discovery == current.config.discovery {
                    current.discovery = candidate.discovery;
                }
                Err(problem)
            }
        }
    }

    /// The apps of the configuration and of every discovery source, each named.
    fn sources(current: &Current) -> Vec<(String, Listed)> {
        let mut sources = vec![("the configuration".to_string(), current.config.listed())];
        sources.extend(
            current
                .discovery
                .lists()
                .map(|(source, apps)| (format!("discovery source {source}"), apps.clone())),
        );
        sources
    }

    /// Applies the file's configuration with the apps of every source.
    fn apply(&self, current: &Current) -> Result<Changes, String> {
        let apps = merge_apps(&Self::sources(current)).map_err(|problems| problems.join("; "))?;
        self.apply_apps(current, apps)
    }

    /// As [`Control::apply`], leaving out each discovery source that clashes with an earlier
    /// one (nothing runs yet to be kept).
    fn apply_at_start(&self, current: &Current) -> Result<Changes, String> {
        let mut accepted: Vec<(String, Listed)> = Vec::new();
        for source in Self::sources(current) {
            let mut candidate = accepted.clone();
            candidate.push(source.clone());
            match merge_apps(&candidate) {
                Ok(_) => accepted = candidate,
                Err(problems) => {
                    tracing::error!(source = %source.0, problems = %problems.join("; "), "discovered apps left out; the others start");
                }
            }
        }
        let apps = merge_apps(&accepted).map_err(|problems| problems.join("; "))?;
        self.apply_apps(current, apps)
    }

    /// Applies the configuration of `current` with `apps`.
    fn apply_apps(&self, current: &Current, apps: Listed) -> Result<Changes, String> {
        let config = current.config.with_listed(apps);
        self.fleet
            .apply(&config)
            .map_err(|error| format!("{error:#}"))
    }

    /// Applies what discovery found, or logs why not.
    fn apply_discovered(&self, current: &Current) {
        match self.apply(current) {
            Ok(changes) => tracing::info!(%changes, "discovered apps applied"),
            Err(problem) => {
                tracing::error!(problem, "discovered apps refused; the running apps stay");
            }
        }
    }

    /// Reads the discovery sources again on change and every refresh interval, applying what
    /// they list, until `shutdown` turns true.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut next_refresh = self.next_refresh().await;
        loop {
            let wake = self.clock.moment().after(CHECK_EVERY).min(next_refresh);
            tokio::select! {
                _ = self.clock.sleep_until_moment(wake) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let now = self.clock.moment();
            let mut current = self.current.lock().await;
            if !current.discovery.is_configured() {
                drop(current);
                next_refresh = self.next_refresh().await;
                continue;
            }
            let mut changed = false;
            if now >= next_refresh {
                changed |= current.discovery.read_files().await;
                changed |= current.discovery.read_url().await;
                next_refresh = now.after(current.discovery.refresh_interval());
            } else if current.discovery.changed() {
                changed |= current.discovery.read_files().await;
            }
            if changed {
                self.apply_discovered(&current);
            }
        }
    }

    async fn next_refresh(&self) -> Moment {
        let interval = self.current.lock().await.discovery.refresh_interval();
        self.clock.moment().after(interval.max(CHECK_EVERY))
    }
}
