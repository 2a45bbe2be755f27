//! Configuration: TOML file and environment, read with figment, validated once into [`Config`].
//!
//! Every key can be set in the file or overridden from the environment with the prefix
//! `WECHAT_MINIPROGRAM_` and `__` for nesting (`WECHAT_MINIPROGRAM_APPS__SHOP__SECRET`).
//! Validation turns strings into typed values once (durations, addresses, appids, secrets
//! read from files), so later code never re-checks; a bad configuration reports every bad key
//! with its path and what to do about it. Beyond reading the config and secret files, this
//! module does no IO.
//!
//! One job per file: `raw` (the tables as written, and the defaults), `source` (the file
//! and the environment), `problems` (collecting what is wrong), `validate` (tables into
//! typed settings) and `apps` (each app into a domain `App`). Only the wiring (discovery,
//! the fleet, reload, start-up, backfill, the command line) imports this module.

mod apps;
mod per_app;
mod problems;
mod raw;
mod source;
mod validate;

use apps::*;
pub use apps::{listed_apps, Listed, ListedApp, MAX_NAME};
pub use per_app::{MAX_LABELS, MAX_LABEL_VALUE, RESERVED_LABELS};
pub use problems::MAX_CONCURRENCY;
use problems::*;
use raw::*;
use source::*;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use crate::domain::{App, Polling, Shard};
use crate::report::{Overrides as ReportOverrides, Settings as ReportSettings};

/// The environment prefix of every configuration key.
pub const ENV_PREFIX: &str = "WECHAT_MINIPROGRAM_";

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where `/metrics` is served.
    pub listen_address: SocketAddr,
    /// The WeChat API base URL, without a trailing slash.
    pub api_base_url: String,
    /// How the poller schedules and retries.
    pub polling: Polling,
    /// What is exported of the reports.
    pub reports: ReportSettings,
    /// The Mini Programs, ordered by name: those of this instance's shard only.
    pub apps: Vec<App>,
    /// What apps set of their own over `[reports]`, by app name.
    pub app_reports: BTreeMap<String, ReportOverrides>,
    /// China's working calendar: built in, with `calendar.file` over it.
    pub calendar: std::sync::Arc<crate::calendar::Calendar>,
    /// Which share of the apps this instance polls (set from the command line).
    pub shard: Shard,
    /// How `/metrics` is served (set from the command line).
    pub web: Web,
    /// Where more apps are listed (`[discovery]`).
    pub discovery: Discovery,
    /// `--storage.path`: where the state is kept across restarts (none: in memory only).
    pub storage: Option<PathBuf>,
}

/// The `[discovery]` table: files and a URL that list more apps, read again on change and
/// every `refresh_interval`, as Prometheus' file_sd and http_sd.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Discovery {
    /// Paths of JSON or YAML files listing apps; `*` and `?` may match in the file name.
    pub files: Vec<String>,
    /// An HTTP(S) endpoint answering the same list.
    pub url: Option<String>,
    /// A file holding the bearer token sent to `url`.
    pub bearer_token_file: Option<PathBuf>,
    /// How often every source is read again.
    pub refresh_interval: Duration,
}

impl Discovery {
    /// Whether any source is configured.
    pub fn is_configured(&self) -> bool {
        !self.files.is_empty() || self.url.is_some()
    }
}

/// The `--web.*` flags, as the official exporters have them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Web {
    /// `--web.telemetry-path`: where the exposition is served.
    pub telemetry_path: String,
    /// `--web.config.file`: TLS, basic auth and headers (exporter-toolkit format).
    pub config_file: Option<PathBuf>,
    /// `--web.disable-exporter-metrics`: leave out the exporter's own metrics.
    pub disable_exporter_metrics: bool,
    /// `--web.max-connections`: the most connections open at once (0: from the file limit).
    pub max_connections: usize,
    /// `--web.enable-lifecycle`: `POST /-/reload` reads the configuration again.
    pub enable_lifecycle: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            telemetry_path: "/metrics".into(),
            config_file: None,
            disable_exporter_metrics: false,
            max_connections: 0,
            enable_lifecycle: false,
        }
    }
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per problem: `key: what is wrong; what to do`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// What the command line sets over the configuration: applied while it is loaded, so that
/// validation sees the values in effect.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--web.listen-address`, over `listen_address`.
    pub listen_address: Option<SocketAddr>,
    /// `--shard N --total-shards M`: only the apps of that shard are kept.
    pub shard: Option<Shard>,
    /// The `--web.*` flags.
    pub web: Web,
    /// `--storage.path`.
    pub storage: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, figment: Figment) -> Figment {
        match self.listen_address {
            Some(address) => {
                figment.merge(Serialized::default("listen_address", address.to_string()))
            }
            None => figment,
        }
    }
}

impl Config {
    /// Reads the file (if any) and the environment, applies `overrides`, and validates the
    /// result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(file) = file {
            check_file(file).map_err(|problem| ConfigError {
                problems: vec![format!("--config: {problem}")],
            })?;
            figment = figment.merge(Toml::file(file));
        }
        // AppSecrets are taken from the environment as written: figment would read an
        // all-digit secret as a number and drop the quotes of a quoted one.
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            .filter(|key| !is_secret_key(key.as_str()));
        let mut figment = figment.merge(env);
        for (name, secret) in environment_secrets()? {
            figment = figment.merge(Serialized::default(&format!("apps.{name}.secret"), secret));
        }
        Config::from_figment(overrides.apply(figment), overrides)
    }

    /// Validates a configuration given as TOML text (and nothing else).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, &Overrides::default())
    }

    /// Validates a configuration given as TOML text, with `overrides`.
    pub fn from_toml_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(text));
        Config::from_figment(overrides.apply(figment), overrides)
    }

    fn from_figment(figment: Figment, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|errors| ConfigError {
            problems: errors.into_iter().map(describe_figment_error).collect(),
        })?;
        let mut config = raw.validate(overrides.shard.unwrap_or_default())?;
        config.web = overrides.web.clone();
        config.storage = overrides.storage.clone();
        Ok(config)
    }
}

impl Config {
    /// The report settings of the app named `name`: `[reports]` with what the app sets of
    /// its own.
    pub fn reports_of(&self, name: &str) -> ReportSettings {
        match self.app_reports.get(name) {
            Some(overrides) => self.reports.with(overrides),
            None => self.reports.clone(),
        }
    }

    /// The apps of the configuration file, as a source lists them.
    pub fn listed(&self) -> Listed {
        Listed {
            apps: self.apps.clone(),
            reports: self.app_reports.clone(),
        }
    }

    /// This configuration polling `listed` (its own apps and the discovered ones).
    pub fn with_listed(&self, listed: Listed) -> Config {
        Config {
            apps: listed.apps,
            app_reports: listed.reports,
            ..self.clone()
        }
    }

    /// What `check-config` says of a valid configuration: the apps, each with its token source.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "configuration is valid: {} Mini Program(s), /metrics on {}",
            self.apps.len(),
            self.listen_address
        )];
        if self.shard.total > 1 {
            lines.push(format!(
                "  shard {} of {}: the apps below are this shard's",
                self.shard.index, self.shard.total
            ));
        }
        for app in &self.apps {
            lines.push(format!(
                "  {} ({}), token from {}",
                app.name,
                app.appid,
                app.token.name()
            ));
        }
        lines
    }
}

/// Reads `HOST:PORT`, `[V6]:PORT` or `:PORT` (all interfaces).
pub fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (host == "localhost").then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests;
