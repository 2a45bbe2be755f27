//! The command line's flags and subcommands, as the official exporters have them
//! (`--web.*`, `--log.*`, `--storage.path`), and what they override in the configuration.

// The doc comments of the flags are their `--help` text, written for a terminal.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_listen_address, Overrides, Web};
use crate::domain::Shard;
use crate::logging::{LogFormat, LogLevel};

/// Exports WeChat Mini Program analytics (datacube) as Prometheus metrics.
#[derive(Parser, Debug)]
#[command(version = version(), about)]
pub struct Cli {
    /// Configuration file (TOML); every key can also be set as WECHAT_MINIPROGRAM_<KEY>.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve /metrics on, overriding listen_address (e.g. ":10050").
    #[arg(long = "web.listen-address", global = true, value_name = "ADDR", value_parser = listen_address)]
    pub listen_address: Option<SocketAddr>,
    /// Log level.
    #[arg(long = "log.level", global = true, value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Log format.
    #[arg(
        long = "log.format",
        global = true,
        value_enum,
        default_value = "logfmt"
    )]
    pub log_format: LogFormat,
    /// Poll only the apps whose appid hashes to this shard (0-based); with --total-shards.
    #[arg(long, global = true, value_name = "N", requires = "total_shards")]
    pub shard: Option<u32>,
    /// How many exporters split the apps between them; with --shard.
    #[arg(
        long = "total-shards",
        global = true,
        value_name = "M",
        requires = "shard"
    )]
    pub total_shards: Option<u32>,
    /// TLS, basic auth and headers for the HTTP server: the exporter-toolkit web
    /// configuration file (YAML), read again when it or its certificates change.
    #[arg(long = "web.config.file", global = true, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", global = true, value_name = "PATH", default_value = "/metrics", value_parser = telemetry_path)]
    pub telemetry_path: String,
    /// Leave out the exporter's own metrics (its API counters and the process metrics); the
    /// analytics, up and the build info stay.
    #[arg(long = "web.disable-exporter-metrics", global = true)]
    pub disable_exporter_metrics: bool,
    /// The most HTTP connections open at once [default: 512, fewer under a low file limit].
    #[arg(long = "web.max-connections", global = true, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Let `POST /-/reload` read the configuration again, as Prometheus's flag does (SIGHUP
    /// always does).
    #[arg(long = "web.enable-lifecycle", global = true)]
    pub enable_lifecycle: bool,
    /// Where the state (held periods, publication hours) is kept across restarts
    /// [default for serve: ./data; demo: none].
    #[arg(long = "storage.path", global = true, value_name = "DIR")]
    pub storage_path: Option<PathBuf>,
    // What to do (`serve` when none is given).
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: Option<Command>,
}

// The subcommands; their doc comments are their help.
#[derive(Subcommand, Debug)]
#[allow(missing_docs)]
pub enum Command {
    /// Poll in the background and serve /metrics (the default).
    Serve,
    /// Validate the configuration and exit.
    CheckConfig(CheckConfigArgs),
    /// Poll every app once, print the exposition, exit non-zero if a report failed.
    Once,
    /// Run against a built-in simulated WeChat API with three demo Mini Programs.
    Demo,
    /// Fetch past days, weeks and months into an OpenMetrics file for
    /// `promtool tsdb create-blocks-from openmetrics` (see "Load history" in the README).
    Backfill(BackfillArgs),
    /// Serve only the simulated WeChat API (for trying the exporter or the compose stack).
    Simulate(SimulateArgs),
}

// The flags of `check-config`; their doc comments are their help.
#[derive(Args, Debug)]
#[allow(missing_docs)]
pub struct CheckConfigArgs {
    /// Also print what each app costs in steady state: WeChat calls a day by endpoint group,
    /// and the series it exports at most (the discovered apps included).
    #[arg(long)]
    pub cost: bool,
}

// The flags of `backfill`; their doc comments are their help.
#[derive(Args, Debug)]
#[allow(missing_docs)]
pub struct BackfillArgs {
    /// First day, Beijing time (YYYY-MM-DD); with --missing, the earliest gap filled.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date, required_unless_present = "missing")]
    pub from: Option<NaiveDate>,
    /// Last day [default: the latest completed day].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
    pub to: Option<NaiveDate>,
    /// Where to write the OpenMetrics text [default: standard output].
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only this app (by its name in the configuration); repeat for several.
    #[arg(long = "app", value_name = "NAME")]
    pub apps: Vec<String>,
    /// Repeat each value at this interval while it is current (1m..1d): 1d suits queries
    /// over [1d] windows, as bundled; 5m makes history visible to plain selectors.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Beijing time of day at which a period counts as published (when `serve` would have
    /// started exporting it).
    #[arg(long = "published-at", value_name = "HH:MM", default_value = "10:00", value_parser = time_of_day)]
    pub published_at: NaiveTime,
    /// Only the periods no running exporter held (the days it was down), as the state of
    /// --storage.path records them, for every app.
    #[arg(long)]
    pub missing: bool,
    /// Print the calls the backfill would make, per app and in all, and make none.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

// The flags of `simulate`; their doc comments are their help.
#[derive(Args, Debug)]
#[allow(missing_docs)]
pub struct SimulateArgs {
    /// Address of the simulated API.
    #[arg(long, default_value = "127.0.0.1:10051", value_parser = listen_address)]
    pub listen: SocketAddr,
    /// Simulate this many more apps (app0000, app0001...), to try the exporter at scale.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub apps: usize,
    /// Write the exporter's configuration for every simulated app to FILE.
    #[arg(long = "config-out", value_name = "FILE")]
    pub config_out: Option<PathBuf>,
    /// Make every report's answer take this long, as WeChat's do (e.g. 20ms), to measure
    /// the exporter against a service time.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
}

/// The version, the commit it was built from when known and the build date, as the official
/// exporters print them: `0.1.0 (revision: 9691a3d…, build date: 20261202-04:10:00)`.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let revision = option_env!("EXPORTER_BUILD_REVISION").unwrap_or("unknown");
        let built = env!("EXPORTER_BUILD_EPOCH")
            .parse()
            .ok()
            .and_then(|epoch| chrono::DateTime::from_timestamp(epoch, 0))
            .map_or("unknown".to_string(), |at| {
                at.format("%Y%m%d-%H:%M:%S").to_string()
            });
        format!(
            "{} (revision: {revision}, build date: {built})",
            env!("CARGO_PKG_VERSION")
        )
    });
    &VERSION
}

fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date; write YYYY-MM-DD"))
}

fn time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day; write HH:MM"))
}

fn telemetry_path(text: &str) -> Result<String, String> {
    let reserved = ["/", "/healthz", "/readyz"];
    if !text.starts_with('/') || reserved.contains(&text) || text.starts_with("/apps/") {
        return Err(format!(
            "{text:?} is not a path for the metrics; write e.g. /metrics (not /, /healthz, /readyz or /apps/...)"
        ));
    }
    Ok(text.to_string())
}

fn listen_address(text: &str) -> Result<SocketAddr, String> {
    parse_listen_address(text).ok_or_else(|| format!("{text:?} is not HOST:PORT or :PORT"))
}

impl Cli {
    /// What the global flags override in the configuration; a bad shard is the error.
    pub fn overrides(&self) -> Result<Overrides, String> {
        let shard = match (self.shard, self.total_shards) {
            (Some(index), Some(total)) => Some(Shard::new(index, total)?),
            _ => None,
        };
        Ok(Overrides {
            listen_address: self.listen_address,
            shard,
            web: Web {
                telemetry_path: self.telemetry_path.clone(),
                config_file: self.web_config_file.clone(),
                disable_exporter_metrics: self.disable_exporter_metrics,
                max_connections: self.max_connections.unwrap_or(0),
                enable_lifecycle: self.enable_lifecycle,
            },
            storage: self.storage_path.clone(),
        })
    }
}
