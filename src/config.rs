//! Configuration: TOML file and environment, read with figment, validated once into [`Config`].
//!
//! Every key can be set in the file or overridden from the environment with the prefix
//! `WECHAT_MINIPROGRAM_` and `__` for nesting (`WECHAT_MINIPROGRAM_APPS__SHOP__SECRET`).
//! Validation turns strings into typed values once (durations, addresses, appids, secrets
//! read from files), so later code never re-checks; a bad configuration reports every bad key
//! with its path and what to do about it. Beyond reading the config and secret files, this
//! module does no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::{App, AppId, Polling, Secret, Shard, TokenSource};
use crate::report::{Report, ReportSet, Settings as ReportSettings};

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

/// An AppSecret as written in the configuration: a string, or digits (a TOML number); never
/// echoed in an error.
#[derive(Clone, Default, Serialize)]
#[serde(transparent)]
struct SecretText(String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretText, E> {
                Ok(SecretText(text.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<SecretText, E> {
                Ok(SecretText(number.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<SecretText, E> {
                Ok(SecretText(number.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(E::custom("must be a string (write the secret in quotes)"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(E::custom("must be a string (write the secret in quotes)"))
            }
        }
        deserializer.deserialize_any(Visitor)
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

/// The configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen_address: String,
    api_base_url: String,
    polling: RawPolling,
    reports: RawReports,
    discovery: RawDiscovery,
    apps: BTreeMap<String, RawApp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    files: Vec<String>,
    url: String,
    bearer_token_file: String,
    refresh_interval: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    not_ready_retry: String,
    error_backoff_initial: String,
    error_backoff_max: String,
    concurrency: i64,
    request_timeout: String,
    first_attempt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    enabled: Vec<String>,
    pages_top: i64,
    portrait_top: i64,
    portrait_ranges: Vec<String>,
    js_errors_top: i64,
    quota_interval: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen_address: "0.0.0.0:10050".into(),
            api_base_url: "https://api.weixin.qq.com".into(),
            polling: RawPolling {
                not_ready_retry: "30m".into(),
                error_backoff_initial: "30s".into(),
                error_backoff_max: "30m".into(),
                concurrency: 4,
                request_timeout: "30s".into(),
                first_attempt: "06:00".into(),
            },
            reports: RawReports {
                enabled: Report::all()
                    .filter(|report| !report.opt_in())
                    .map(|report| report.name().to_string())
                    .collect(),
                pages_top: 20,
                portrait_top: 30,
                portrait_ranges: vec!["1d".into(), "7d".into(), "30d".into()],
                js_errors_top: 10,
                quota_interval: "6h".into(),
            },
            discovery: RawDiscovery {
                files: Vec::new(),
                url: String::new(),
                bearer_token_file: String::new(),
                refresh_interval: "5m".into(),
            },
            apps: BTreeMap::new(),
        }
    }
}

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

/// Checks that `file` is a readable UTF-8 file, so that a directory or a binary file is
/// named as such instead of reading as an empty configuration.
fn check_file(file: &Path) -> Result<(), String> {
    let shown = file.display();
    let metadata = std::fs::metadata(file).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "the file {shown} does not exist; give the path of a TOML file (see config/example.toml)"
        ),
        _ => format!("cannot read {shown}: {error}"),
    })?;
    if metadata.is_dir() {
        return Err(format!(
            "{shown} is a directory; give the path of a TOML file (see config/example.toml)"
        ));
    }
    let bytes = std::fs::read(file).map_err(|error| format!("cannot read {shown}: {error}"))?;
    std::str::from_utf8(&bytes).map_err(|error| {
        format!(
            "{shown} is not UTF-8 text (at byte {}); a configuration is a TOML file",
            error.valid_up_to()
        )
    })?;
    Ok(())
}

/// Whether an environment key (after the prefix) is an app's secret.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.starts_with("apps") && (key.ends_with("__secret") || key.ends_with(".secret"))
}

/// Every `WECHAT_MINIPROGRAM_APPS__NAME__SECRET` of the environment, as written: (name in
/// lower case, value).
fn environment_secrets() -> Result<Vec<(String, String)>, ConfigError> {
    let mut secrets = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let Some(rest) = key.get(ENV_PREFIX.len()..).filter(|_| {
            key.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        }) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(name) = lower
            .strip_prefix("apps__")
            .and_then(|r| r.strip_suffix("__secret"))
        else {
            continue;
        };
        let Ok(value) = value.into_string() else {
            return Err(ConfigError {
                problems: vec![format!(
                    "apps.{name}.secret: the environment variable {key} is not UTF-8"
                )],
            });
        };
        secrets.push((name.to_string(), value));
    }
    Ok(secrets)
}

fn describe_figment_error(error: figment::Error) -> String {
    let key = if error.path.is_empty() {
        "configuration".to_string()
    } else {
        error.path.join(".")
    };
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| format!(" (from {})", metadata.name))
        .unwrap_or_default();
    // A TOML syntax error quotes the line it is on, which may hold a secret: only the
    // position and the reason are kept.
    let kind = error.kind.to_string();
    let kind: Vec<&str> = kind
        .lines()
        .filter(|line| !line.trim_start().starts_with('|') && !is_quoted_line(line))
        .collect();
    format!("{key}: {}{source}", kind.join(" "))
}

/// A line of a TOML error that quotes the source: `12 | text`.
fn is_quoted_line(line: &str) -> bool {
    let line = line.trim_start();
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].trim_start().starts_with('|')
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, problem: impl fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// A duration between `min` and `max`.
    fn duration_in(&mut self, key: &str, text: &str, min: Duration, max: Duration) -> Duration {
        let duration = self.duration(key, text);
        if duration.is_zero() {
            return min;
        }
        if !(min..=max).contains(&duration) {
            let show = |duration: Duration| humantime::format_duration(duration).to_string();
            self.add(
                key,
                format!(
                    "{text:?} is out of range; use from {} to {}",
                    show(min),
                    show(max)
                ),
            );
            return duration.clamp(min, max);
        }
        duration
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.add(key, "must be longer than zero");
                Duration::ZERO
            }
            Err(_) => {
                self.add(
                    key,
                    format!(
                        "{text:?} is not a duration; write e.g. \"30s\", \"30m\" or \"1h 30m\""
                    ),
                );
                Duration::ZERO
            }
        }
    }
}

impl RawConfig {
    fn validate(self, shard: Shard) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let listen_address = problems.listen_address(&self.listen_address);
        let api_base_url = problems.api_base_url(&self.api_base_url);
        let polling = self.polling.validate(&mut problems);
        let reports = self.reports.validate(&mut problems);
        let discovery = self.discovery.validate(&mut problems);
        if self.apps.is_empty() && !discovery.is_configured() {
            problems.add(
                "apps",
                format!("no Mini Program is configured; add an [apps.NAME] table with appid and secret_file (see config/example.toml), set {ENV_PREFIX}APPS__NAME__APPID and {ENV_PREFIX}APPS__NAME__SECRET, or list apps with [discovery]"),
            );
        }
        let mut apps = validate_apps(self.apps, &mut problems);
        if !problems.0.is_empty() {
            return Err(ConfigError {
                problems: problems.0,
            });
        }
        apps.retain(|app| shard.owns(&app.appid));
        Ok(Config {
            listen_address,
            api_base_url,
            polling,
            reports,
            apps,
            shard,
            web: Web::default(),
            discovery,
            storage: None,
        })
    }
}

impl Problems {
    fn listen_address(&mut self, text: &str) -> SocketAddr {
        parse_listen_address(text).unwrap_or_else(|| {
            self.add(
                "listen_address",
                format!("{text:?} is not an address; write HOST:PORT, e.g. \"0.0.0.0:10050\" or \":10050\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 10050))
        })
    }

    fn api_base_url(&mut self, text: &str) -> String {
        let url = text.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "https://".len()
        {
            self.add(
                "api_base_url",
                format!(
                    "{text:?} is not an http(s) URL; the default is \"https://api.weixin.qq.com\""
                ),
            );
        }
        url
    }
}

/// The allowed range of each polling delay: short enough to be useful, long enough not to
/// flood WeChat or the log.
const MINUTE: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

/// The most requests in flight that `polling.concurrency` allows.
pub const MAX_CONCURRENCY: i64 = 64;

impl RawPolling {
    fn validate(&self, problems: &mut Problems) -> Polling {
        let hour = 60 * MINUTE;
        let polling = Polling {
            not_ready_retry: problems.duration_in(
                "polling.not_ready_retry",
                &self.not_ready_retry,
                MINUTE,
                DAY,
            ),
            error_backoff_initial: problems.duration_in(
                "polling.error_backoff_initial",
                &self.error_backoff_initial,
                SECOND / 10,
                hour,
            ),
            error_backoff_max: problems.duration_in(
                "polling.error_backoff_max",
                &self.error_backoff_max,
                SECOND,
                DAY,
            ),
            concurrency: usize::try_from(self.concurrency.clamp(0, MAX_CONCURRENCY)).unwrap_or(0),
            request_timeout: problems.duration_in(
                "polling.request_timeout",
                &self.request_timeout,
                SECOND,
                10 * MINUTE,
            ),
            first_attempt: time_of_day(&self.first_attempt).unwrap_or_else(|| {
                problems.add(
                    "polling.first_attempt",
                    format!(
                        "{:?} is not a time of day; write HH:MM (Beijing time), e.g. \"06:00\"",
                        self.first_attempt
                    ),
                );
                Duration::ZERO
            }),
        };
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.add(
                "polling.concurrency",
                format!(
                    "{} must be between 1 and {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            );
        }
        if polling.error_backoff_initial > polling.error_backoff_max {
            problems.add(
                "polling.error_backoff_initial",
                "must not be longer than polling.error_backoff_max",
            );
        }
        polling
    }
}

/// `HH:MM` as the time since midnight.
fn time_of_day(text: &str) -> Option<Duration> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && minutes.to_string().len() <= 2)
        .then(|| Duration::from_secs(hours * 3600 + minutes * 60))
}

impl RawDiscovery {
    fn validate(&self, problems: &mut Problems) -> Discovery {
        let url = self.url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            problems.add("discovery.url", format!("{url:?} is not an http(s) URL"));
        }
        for file in &self.files {
            let (dir, name) = file.rsplit_once('/').unwrap_or((".", file));
            if file.trim().is_empty() || dir.contains(['*', '?', '[']) || name.is_empty() {
                problems.add(
                    "discovery.files",
                    format!("{file:?} is not a file path; `*`, `?` and `[...]` may match only in the file name, e.g. \"/etc/apps/*.yaml\""),
                );
            }
        }
        let token = self.bearer_token_file.trim();
        if !token.is_empty() && url.is_empty() {
            problems.add(
                "discovery.bearer_token_file",
                "is only used with discovery.url; set it or remove this",
            );
        }
        Discovery {
            files: self.files.clone(),
            url: (!url.is_empty()).then(|| url.to_string()),
            bearer_token_file: (!token.is_empty()).then(|| PathBuf::from(token)),
            refresh_interval: problems.duration_in(
                "discovery.refresh_interval",
                &self.refresh_interval,
                10 * SECOND,
                DAY,
            ),
        }
    }
}

impl RawReports {
    fn validate(&self, problems: &mut Problems) -> ReportSettings {
        let mut count =
            |key: &str, value: i64, range: std::ops::RangeInclusive<usize>, why: &str| {
                let count = usize::try_from(value).unwrap_or(0);
                if !range.contains(&count) {
                    let (low, high) = (range.start(), range.end());
                    problems.add(
                        key,
                        format!("{value} must be between {low} and {high}{why}"),
                    );
                }
                count
            };
        let pages_top = count(
            "reports.pages_top",
            self.pages_top,
            1..=200,
            " (WeChat answers the top 200 pages)",
        );
        let portrait_top = count("reports.portrait_top", self.portrait_top, 1..=500, "");
        let js_errors_top = count(
            "reports.js_errors_top",
            self.js_errors_top,
            1..=100,
            " (WeChat answers 30 groups per call)",
        );
        ReportSettings {
            enabled: self.enabled(problems),
            pages_top,
            portrait_top,
            portrait_ranges: self.portrait_ranges(problems),
            js_errors_top,
            quota_interval: problems.duration_in(
                "reports.quota_interval",
                &self.quota_interval,
                10 * MINUTE,
                DAY,
            ),
        }
    }

    /// Every name must be a report of the registry.
    fn enabled(&self, problems: &mut Problems) -> ReportSet {
        let mut enabled = ReportSet::default();
        for name in &self.enabled {
            let name = name.trim();
            match Report::by_name(name) {
                Some(report) => enabled = enabled.with(report),
                None => {
                    let known: Vec<&str> = Report::all().map(|report| report.name()).collect();
                    problems.add(
                        "reports.enabled",
                        format!(
                            "{name:?} is not a report; the reports are {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        enabled
    }

    fn portrait_ranges(&self, problems: &mut Problems) -> Vec<u32> {
        let mut ranges: Vec<u32> = Vec::new();
        for range in &self.portrait_ranges {
            let days = match range.trim() {
                "1d" => 1,
                "7d" => 7,
                "30d" => 30,
                other => {
                    problems.add(
                        "reports.portrait_ranges",
                        format!("{other:?} is not a portrait range; WeChat offers \"1d\", \"7d\" and \"30d\""),
                    );
                    continue;
                }
            };
            if !ranges.contains(&days) {
                ranges.push(days);
            }
        }
        if ranges.is_empty() && self.enabled.iter().any(|name| name == "user_portrait") {
            problems.add(
                "reports.portrait_ranges",
                "is empty; list at least one of \"1d\", \"7d\" and \"30d\", or remove user_portrait from reports.enabled",
            );
        }
        ranges
    }
}

/// Every app, ordered by name; an appid configured twice is a problem.
fn validate_apps(raw: BTreeMap<String, RawApp>, problems: &mut Problems) -> Vec<App> {
    let mut apps = Vec::new();
    let mut seen_appids: BTreeMap<AppId, String> = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("apps.{}", bounded_name(&name));
        if let Some(app) = raw.validate(&name, &key, problems) {
            if let Some(other) = seen_appids.insert(app.appid.clone(), name.clone()) {
                problems.add(
                    &format!("{key}.appid"),
                    format!("{} is also the appid of apps.{other}; each Mini Program must be configured once", app.appid),
                );
            }
            apps.push(app);
        }
    }
    apps
}

/// One app as a discovery source lists it: the keys of an `[apps.NAME]` table and its name;
/// an AppSecret only by file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedApp {
    name: String,
    appid: Option<String>,
    #[serde(default)]
    token_source: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

/// The apps `listed` (a discovery source's entries), checked as the configuration's apps are
/// (secret files are read now): every problem names its app (`apps.NAME...`).
pub fn listed_apps(listed: Vec<ListedApp>) -> Result<Vec<App>, Vec<String>> {
    let mut problems = Problems::default();
    let mut raw = BTreeMap::new();
    for app in listed {
        let key = format!("apps.{}", bounded_name(&app.name));
        let entry = RawApp {
            appid: app.appid,
            secret: None,
            secret_file: app.secret_file,
            token_source: app.token_source,
            token_url: app.token_url,
            token_file: app.token_file,
        };
        if raw.insert(app.name.clone(), entry).is_some() {
            problems.add(&key, "is listed twice");
        }
    }
    let apps = validate_apps(raw, &mut problems);
    if problems.0.is_empty() {
        Ok(apps)
    } else {
        Err(problems.0)
    }
}

/// An app name as problems show it: cut, so that a huge name cannot make a huge message.
fn bounded_name(name: &str) -> String {
    let mut shown: String = name.chars().take(MAX_NAME).collect();
    if name.chars().count() > MAX_NAME {
        shown.push('…');
    }
    shown
}

/// The longest app name: it is a label value of every series of the app.
pub const MAX_NAME: usize = 64;

impl RawApp {
    fn validate(self, name: &str, key: &str, problems: &mut Problems) -> Option<App> {
        let before = problems.0.len();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.add(
                key,
                "the app name may hold only letters, digits, '_' and '-'",
            );
        } else if name.len() > MAX_NAME {
            problems.add(
                key,
                format!("the app name is longer than {MAX_NAME} characters"),
            );
        }
        let appid = self.appid(key, problems);
        let token = self.token_source(key, problems);
        match (appid, problems.0.len() == before) {
            (Some(appid), true) => Some(App {
                name: name.to_string(),
                appid,
                token: token.expect("no problem means a token source"),
            }),
            _ => None,
        }
    }

    fn appid(&self, key: &str, problems: &mut Problems) -> Option<AppId> {
        match self.appid.as_deref() {
            Some(text) => {
                let appid = AppId::parse(text);
                if appid.is_none() {
                    problems.add(
                        &format!("{key}.appid"),
                        format!("{:?} is not a Mini Program AppID (\"wx\" and 16 letters or digits; see the admin console under Development > Development Settings)", bounded_name(text.trim())),
                    );
                }
                appid
            }
            None => {
                problems.add(
                    &format!("{key}.appid"),
                    "is missing; set it to the Mini Program's AppID (\"wx...\")",
                );
                None
            }
        }
    }

    fn token_source(&self, key: &str, problems: &mut Problems) -> Option<TokenSource> {
        let source = self.token_source.as_deref().unwrap_or("stable_token");
        let token = match source {
            "stable_token" | "token" => self.secret_token(source, key, problems),
            "url" => self.token_url(key, problems),
            "file" => match &self.token_file {
                Some(path) => Some(TokenSource::File(path.clone())),
                None => {
                    problems.add(
                        &format!("{key}.token_file"),
                        "is required with token_source = \"file\"",
                    );
                    None
                }
            },
            other => {
                problems.add(
                    &format!("{key}.token_source"),
                    format!("{other:?} is not a token source; use \"stable_token\" (default), \"token\", \"url\" or \"file\""),
                );
                None
            }
        };
        if matches!(source, "url" | "file") && (self.secret.is_some() || self.secret_file.is_some())
        {
            problems.add(key, format!("secret and secret_file are not used with token_source = \"{source}\"; remove them"));
        }
        token
    }

    /// `stable_token` or `token`: the AppSecret, and no token location.
    fn secret_token(
        &self,
        source: &str,
        key: &str,
        problems: &mut Problems,
    ) -> Option<TokenSource> {
        let secret = self.secret(key, problems);
        for (field, set) in [
            ("token_url", self.token_url.is_some()),
            ("token_file", self.token_file.is_some()),
        ] {
            if set {
                problems.add(
                    &format!("{key}.{field}"),
                    format!(
                        "is only used with token_source = \"{}\"; remove it or change token_source",
                        &field[6..]
                    ),
                );
            }
        }
        secret.map(|secret| {
            if source == "token" {
                TokenSource::Token(secret)
            } else {
                TokenSource::StableToken(secret)
            }
        })
    }

    fn token_url(&self, key: &str, problems: &mut Problems) -> Option<TokenSource> {
        match self.token_url.as_deref().map(str::trim) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(TokenSource::Url(url.to_string()))
            }
            Some(url) => {
                problems.add(
                    &format!("{key}.token_url"),
                    format!("{url:?} is not an http(s) URL"),
                );
                None
            }
            None => {
                problems.add(
                    &format!("{key}.token_url"),
                    "is required with token_source = \"url\"",
                );
                None
            }
        }
    }

    fn secret(&self, key: &str, problems: &mut Problems) -> Option<Secret> {
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                problems.add(key, "set either secret or secret_file, not both");
                None
            }
            (Some(SecretText(secret)), None) if !secret.trim().is_empty() => {
                Some(Secret::new(secret.trim()))
            }
            (Some(_), None) => {
                problems.add(&format!("{key}.secret"), "is empty");
                None
            }
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
                Ok(_) => {
                    problems.add(
                        &format!("{key}.secret_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Err(error) => {
                    problems.add(
                        &format!("{key}.secret_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    None
                }
            },
            (None, None) => {
                problems.add(
                    key,
                    format!("no AppSecret: set secret_file (or secret, or the environment variable {ENV_PREFIX}APPS__{}__SECRET)", key[5..].to_uppercase()),
                );
                None
            }
        }
    }
}

/// An AppID is "wx" followed by 16 letters or digits.
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
mod tests {
    use super::*;

    const APP: &str = "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = \"s3cr3t\"\n";

    fn problems(text: &str) -> Vec<String> {
        Config::from_toml(text).unwrap_err().problems
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let config = Config::from_toml(APP).unwrap();
        assert_eq!(config.listen_address, "0.0.0.0:10050".parse().unwrap());
        assert_eq!(config.api_base_url, "https://api.weixin.qq.com");
        assert_eq!(config.polling.not_ready_retry, Duration::from_secs(1800));
        assert_eq!(
            config.polling.error_backoff_initial,
            Duration::from_secs(30)
        );
        assert_eq!(config.polling.error_backoff_max, Duration::from_secs(1800));
        assert_eq!(config.polling.concurrency, 4);
        assert_eq!(config.polling, Polling::default(), "one set of defaults");
        assert_eq!(config.reports.pages_top, 20);
        assert_eq!(config.apps[0].name, "shop");
        assert!(
            matches!(&config.apps[0].token, TokenSource::StableToken(secret) if secret.expose() == "s3cr3t")
        );
    }

    #[test]
    fn every_bad_key_is_named_with_its_fix() {
        let found = problems(
            "listen_address = \"nowhere\"\n[polling]\nnot_ready_retry = \"soon\"\nconcurrency = 0\n[reports]\npages_top = 500\n\
             [apps.shop]\nappid = \"wx123\"\n[apps.blog]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"magic\"\n",
        );
        let keys: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "listen_address",
                "polling.not_ready_retry",
                "polling.concurrency",
                "reports.pages_top",
                "apps.blog.token_source",
                "apps.shop.appid",
                "apps.shop",
            ],
            "{found:#?}"
        );
        assert!(found[1].contains("\"30m\""), "{}", found[1]);
        assert!(
            found[6].contains("WECHAT_MINIPROGRAM_APPS__SHOP__SECRET"),
            "{}",
            found[6]
        );
    }

    #[test]
    fn absurd_numbers_and_durations_are_refused_with_the_allowed_range() {
        let found = problems(&format!(
            "{APP}[polling]\nconcurrency = 9223372036854775807\nnot_ready_retry = \"1ns\"\n\
             error_backoff_initial = \"1ns\"\nerror_backoff_max = \"300000years\"\nrequest_timeout = \"1h\"\n\
             [reports]\nquota_interval = \"1s\"\n"
        ));
        let expected = [
            "polling.not_ready_retry: \"1ns\" is out of range; use from 1m to 1day",
            "polling.error_backoff_initial: \"1ns\" is out of range; use from 100ms to 1h",
            "polling.error_backoff_max: \"300000years\" is out of range; use from 1s to 1day",
            "polling.request_timeout: \"1h\" is out of range; use from 1s to 10m",
            "polling.concurrency: 9223372036854775807 must be between 1 and 64",
            "reports.quota_interval: \"1s\" is out of range; use from 10m to 1day",
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn a_toml_error_never_quotes_the_line_it_is_on() {
        let found = problems("[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 0123secret\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("0123secret"), "{found:?}");
        assert!(found[0].contains("line 3"), "{found:?}");
        let config =
            Config::from_toml("[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret = 123456\n")
                .unwrap();
        let TokenSource::StableToken(secret) = &config.apps[0].token else {
            panic!()
        };
        assert_eq!(secret.expose(), "123456", "an all-digit secret is a secret");
    }

    #[test]
    fn reports_are_named_from_the_registry_and_their_settings_checked() {
        let found = problems(&format!(
            "{APP}[reports]\nenabled = [\"visit_trend\", \"visits\"]\nportrait_ranges = [\"2d\"]\njs_errors_top = 101\nportrait_top = 0\n"
        ));
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().any(|p| p.starts_with("reports.enabled: \"visits\" is not a report; the reports are visit_trend, retention")), "{found:#?}");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reports.portrait_ranges: \"2d\"")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reports.js_errors_top: 101 must be between 1 and 100")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reports.portrait_top: 0 must be between 1 and 500")),
            "{found:#?}"
        );

        let config = Config::from_toml(&format!(
            "{APP}[reports]\nenabled = [\"quota\", \"quota\"]\n"
        ))
        .unwrap();
        let report = |name| Report::by_name(name).unwrap();
        assert_eq!(config.reports.enabled, ReportSet::of([report("quota")]));
        let defaults = Config::from_toml(APP).unwrap().reports;
        assert!(defaults.is_enabled(report("js_errors")) && !defaults.is_enabled(report("quota")));
        assert_eq!(defaults, ReportSettings::default(), "one set of defaults");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_reported_with_their_path() {
        let found = problems(&format!("{APP}[polling]\nconcurency = 3\n"));
        assert!(found[0].contains("concurency"), "{found:?}");
        let found = problems(&format!("{APP}[reports]\npages_top = \"many\"\n"));
        assert!(found[0].starts_with("reports.pages_top"), "{found:?}");
    }

    #[test]
    fn secrets_come_from_files_and_are_never_printed() {
        let dir = std::env::temp_dir().join(format!("wmpe-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shop");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let config = Config::from_toml(&format!(
            "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret_file = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        let TokenSource::StableToken(secret) = &config.apps[0].token else {
            panic!()
        };
        assert_eq!(secret.expose(), "from-a-file");
        assert!(!format!("{config:?}").contains("from-a-file"));

        let found = problems(
            "[apps.shop]\nappid = \"wx1234567890abcdef\"\nsecret_file = \"/nonexistent/secret\"\n",
        );
        assert!(
            found[0].starts_with("apps.shop.secret_file: cannot read /nonexistent/secret"),
            "{found:?}"
        );
    }

    #[test]
    fn external_token_sources_need_their_location_and_no_secret() {
        let config = Config::from_toml(
            "[apps.a]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"url\"\ntoken_url = \"http://tokens.internal/{appid}\"\n\
             [apps.b]\nappid = \"wx2234567890abcdef\"\ntoken_source = \"file\"\ntoken_file = \"/run/token\"\n",
        )
        .unwrap();
        assert!(matches!(&config.apps[0].token, TokenSource::Url(url) if url.ends_with("{appid}")));
        assert!(matches!(&config.apps[1].token, TokenSource::File(_)));
        let found = problems(
            "[apps.a]\nappid = \"wx1234567890abcdef\"\ntoken_source = \"url\"\nsecret = \"x\"\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn the_same_appid_twice_is_refused() {
        let found = problems(&format!(
            "{APP}[apps.shop2]\nappid = \"wx1234567890abcdef\"\nsecret = \"x\"\n"
        ));
        assert!(
            found[0].contains("also the appid of apps.shop"),
            "{found:?}"
        );
    }

    #[test]
    fn listen_addresses_in_exporter_style() {
        assert_eq!(
            parse_listen_address(":9100"),
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("localhost:1"),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("[::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listen_address("nowhere"), None);
    }

    #[test]
    fn shards_split_the_apps_stably_and_completely() {
        let appids: Vec<String> = (0..300).map(|n| format!("wx{n:016x}")).collect();
        let shards: Vec<Shard> = (0..3).map(|n| Shard::new(n, 3).unwrap()).collect();
        let mut sizes = [0; 3];
        for appid in &appids {
            let owners: Vec<u32> = shards
                .iter()
                .filter(|shard| shard.owns(appid))
                .map(|shard| shard.index)
                .collect();
            assert_eq!(owners.len(), 1, "{appid}: {owners:?}");
            sizes[owners[0] as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| (70..=130).contains(&n)), "{sizes:?}");
        // The assignment is a contract (FNV-1a 64 of the appid, modulo the shards): it must
        // not change between versions.
        assert!(Shard::new(2, 3).unwrap().owns("wx5a1e0c2b7d9f3e41"));
        assert!(Shard::default().owns("anything"));
        assert!(Shard::new(3, 3).unwrap_err().contains("0 to 2"));
        assert!(Shard::new(0, 0).is_err());
    }
}
