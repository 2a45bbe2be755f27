//! The command line: parse flags, load the config, build the exporter, run until a signal.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{NaiveDate, NaiveTime};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

use wechat_miniprogram_exporter::app::{serve, Exporter};
use wechat_miniprogram_exporter::backfill;
use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::{parse_listen_address, Config, Shard};
use wechat_miniprogram_exporter::logging::{self, LogFormat, LogLevel};
use wechat_miniprogram_exporter::simulation::{config_for, demo_apps, generated_apps, Simulation};

/// Exports WeChat Mini Program analytics (datacube) as Prometheus metrics.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); every key can also be set as WECHAT_MINIPROGRAM_<KEY>.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve /metrics on, overriding listen_address (e.g. ":10050").
    #[arg(long = "web.listen-address", global = true, value_name = "ADDR", value_parser = listen_address)]
    listen_address: Option<SocketAddr>,
    /// Log level.
    #[arg(long = "log.level", global = true, value_enum, default_value = "info")]
    log_level: LogLevel,
    /// Log format.
    #[arg(
        long = "log.format",
        global = true,
        value_enum,
        default_value = "logfmt"
    )]
    log_format: LogFormat,
    /// Poll only the apps whose appid hashes to this shard (0-based); with --total-shards.
    #[arg(long, global = true, value_name = "N", requires = "total_shards")]
    shard: Option<u32>,
    /// How many exporters split the apps between them; with --shard.
    #[arg(
        long = "total-shards",
        global = true,
        value_name = "M",
        requires = "shard"
    )]
    total_shards: Option<u32>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Poll in the background and serve /metrics (the default).
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Poll every app once, print the exposition, exit non-zero if a report failed.
    Once,
    /// Run against a built-in simulated WeChat API with three demo Mini Programs.
    Demo,
    /// Fetch past days, weeks and months into an OpenMetrics file for
    /// `promtool tsdb create-blocks-from openmetrics` (see "Load history" in the README).
    Backfill {
        /// First day, Beijing time (YYYY-MM-DD).
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
        from: NaiveDate,
        /// Last day [default: the latest completed day].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = date)]
        to: Option<NaiveDate>,
        /// Where to write the OpenMetrics text [default: standard output].
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only this app (by its name in the configuration); repeat for several.
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        /// Repeat each value at this interval while it is current (1m..1d): 1d suits queries
        /// over [1d] windows, as bundled; 5m makes history visible to plain selectors.
        #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = humantime::parse_duration)]
        step: Duration,
        /// Beijing time of day at which a period counts as published (when `serve` would have
        /// started exporting it).
        #[arg(long = "published-at", value_name = "HH:MM", default_value = "10:00", value_parser = time_of_day)]
        published_at: NaiveTime,
    },
    /// Serve only the simulated WeChat API (for trying the exporter or the compose stack).
    Simulate {
        /// Address of the simulated API.
        #[arg(long, default_value = "127.0.0.1:10051", value_parser = listen_address)]
        listen: SocketAddr,
        /// Simulate this many more apps (app0000, app0001...), to try the exporter at scale.
        #[arg(long, value_name = "N", default_value_t = 0)]
        apps: usize,
        /// Write the exporter's configuration for every simulated app to FILE.
        #[arg(long = "config-out", value_name = "FILE")]
        config_out: Option<PathBuf>,
    },
}

fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date; write YYYY-MM-DD"))
}

fn time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day; write HH:MM"))
}

fn listen_address(text: &str) -> Result<SocketAddr, String> {
    parse_listen_address(text).ok_or_else(|| format!("{text:?} is not HOST:PORT or :PORT"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let subscriber = logging::subscriber(cli.log_level, cli.log_format, std::io::stderr);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve);
    let shard = match (cli.shard, cli.total_shards) {
        (Some(index), Some(total)) => match Shard::new(index, total) {
            Ok(shard) => Some(shard),
            Err(problem) => {
                eprintln!("error: {problem}");
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    };
    if let Command::Simulate {
        listen,
        apps,
        config_out,
    } = command
    {
        let mut all = demo_apps();
        all.extend(generated_apps(apps));
        let simulation = Simulation::new(all, Clock::System);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        if let Some(path) = config_out {
            let api = format!("http://{}", listener.local_addr()?);
            std::fs::write(&path, config_for(simulation.apps(), &api))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "Simulated WeChat API for {} Mini Programs at http://{}",
            simulation.apps().len(),
            listener.local_addr()?
        );
        for app in simulation.apps().iter().take(3) {
            println!(
                "  {:8} appid {}  publishes at {:02}:00 Beijing time",
                app.name, app.appid, app.publish_hour
            );
        }
        if apps > 0 {
            println!("  and {apps} generated apps (app0000...)");
        }
        tokio::select! {
            result = simulation.serve(listener) => result?,
            _ = shutdown_signal() => {}
        }
        return Ok(ExitCode::SUCCESS);
    }

    let config = if let Command::Demo = command {
        let simulation = Simulation::new(demo_apps(), Clock::System);
        let address = simulation
            .clone()
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
        let listen = cli
            .listen_address
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10050)));
        demo_config(&simulation, address, listen)?
    } else {
        let mut config = match Config::load(cli.config.as_deref()) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("{error}");
                return Ok(ExitCode::from(2));
            }
        };
        if let Some(listen) = cli.listen_address {
            config.listen_address = listen;
        }
        config
    };
    let mut config = config;
    if let Some(shard) = shard {
        config.keep_shard(shard);
    }

    match command {
        Command::CheckConfig => {
            println!(
                "configuration is valid: {} Mini Program(s), /metrics on {}",
                config.apps.len(),
                config.listen_address
            );
            if config.shard.total > 1 {
                println!(
                    "  shard {} of {}: the apps below are this shard's",
                    config.shard.index, config.shard.total
                );
            }
            for app in &config.apps {
                println!(
                    "  {} ({}), token from {}",
                    app.name,
                    app.appid,
                    app.token.name()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Once => {
            let (store, failed) = Exporter::build(&config, Clock::System)?.poll_once().await;
            print!("{}", String::from_utf8_lossy(&store.metrics(false)));
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve | Command::Demo => {
            let listener = TcpListener::bind(config.listen_address)
                .await
                .with_context(|| {
                    format!(
                        "binding {} (listen_address / --web.listen-address)",
                        config.listen_address
                    )
                })?;
            let address = listener.local_addr()?;
            if let Command::Demo = command {
                // A closed stdout (a pipe whose reader left) must not stop the demo.
                let _ = writeln!(
                    std::io::stdout(),
                    "Demo: 3 simulated Mini Programs against a simulated WeChat API ({}).\n  metrics:      http://{address}/metrics\n  status page:  http://{address}/",
                    config.api_base_url
                );
            }
            tracing::info!(address = %address, apps = config.apps.len(), version = env!("CARGO_PKG_VERSION"), "serving /metrics");
            let (stop, stopped) = watch::channel(false);
            let (store, mut pollers) = Exporter::build(&config, Clock::System)?.start(stopped);
            let server = tokio::spawn(serve(listener, store, async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            }));
            server.await.context("the server task failed")??;
            // Pollers stop at their next await point; a request in flight gets a bounded wait.
            let drained = tokio::time::timeout(Duration::from_secs(10), async {
                while pollers.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!("pollers did not stop within 10s; exiting anyway");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            from,
            to,
            output,
            apps,
            step,
            published_at,
        } => {
            let options = backfill::Options {
                from,
                to,
                apps,
                step,
                published_at,
            };
            run_backfill(&config, &options, output.as_deref()).await
        }
        Command::Simulate { .. } => unreachable!("handled above"),
    }
}

/// `backfill`: plan, fetch with progress on stderr, write, summarise. Exit 1 if a period
/// failed (everything fetched is still written), 2 on bad flags.
async fn run_backfill(
    config: &Config,
    options: &backfill::Options,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let plan = match backfill::plan(config, options, Clock::System.now()) {
        Ok(plan) => plan,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let (first, last) = plan.range();
    eprintln!(
        "backfill: {} ({}), {first} to {last}: {} periods to fetch",
        plan.app_names().join(", "),
        config.api_base_url,
        plan.fetches()
    );
    let progress = Arc::new(backfill::Progress::new(plan.fetches()));
    let drawing = tokio::spawn(draw_progress(progress.clone()));
    let history = backfill::fetch(config, plan, Clock::System, progress.clone()).await;
    drawing.abort();
    let _ = drawing.await;
    let history = history.context("building the HTTP client")?;
    let terminal = std::io::stderr().is_terminal();
    eprintln!(
        "{}{}",
        if terminal { "\r\x1b[2K" } else { "" },
        progress.line(0)
    );

    let written = match output {
        Some(path) => {
            // Written aside and renamed, so that a reader never sees half a file.
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let written = history
                .write_openmetrics(&mut writer)
                .and_then(|written| writer.flush().map(|()| written))
                .with_context(|| format!("writing {}", partial.display()))?;
            std::fs::rename(&partial, path)
                .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
            written
        }
        None => {
            let mut writer = std::io::BufWriter::new(std::io::stdout().lock());
            let written = history.write_openmetrics(&mut writer)?;
            writer.flush()?;
            written
        }
    };
    let summary = history.summary();
    eprintln!("backfill: {summary}");
    eprintln!(
        "backfill: wrote {} samples of {} series to {}",
        written.samples,
        written.series,
        output.map_or("standard output".into(), |path| path.display().to_string())
    );
    if summary.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("backfill: {} periods failed:", summary.failed.len());
    const SHOWN: usize = 100;
    for failure in summary.failed.iter().take(SHOWN) {
        eprintln!("  {failure}");
    }
    if summary.failed.len() > SHOWN {
        eprintln!("  ... and {} more", summary.failed.len() - SHOWN);
    }
    eprintln!("backfill: run again for the failed days; periods already in Prometheus are simply written again");
    Ok(ExitCode::FAILURE)
}

/// Draws `progress` on stderr until aborted: a bar redrawn in place on a terminal, otherwise
/// a plain line every 10% or 30 seconds.
async fn draw_progress(progress: Arc<backfill::Progress>) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown_tenth = 0;
    let mut shown_at = std::time::Instant::now();
    loop {
        if terminal {
            eprint!("\r\x1b[2K{}", progress.line(30));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let tenth = 10 * progress.done() / progress.total().max(1);
        if tenth > shown_tenth || shown_at.elapsed() >= Duration::from_secs(30) {
            eprintln!("backfill: {}", progress.line(0));
            shown_tenth = tenth;
            shown_at = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The configuration of the demo: the simulated apps, pointed at the simulated API.
fn demo_config(
    simulation: &Simulation,
    api: SocketAddr,
    listen: SocketAddr,
) -> anyhow::Result<Config> {
    let mut toml = format!("listen_address = \"{listen}\"\napi_base_url = \"http://{api}\"\n");
    for app in simulation.apps() {
        toml.push_str(&format!(
            "[apps.{}]\nappid = \"{}\"\nsecret = \"{}\"\n",
            app.name, app.appid, app.secret
        ));
    }
    Config::from_toml(&toml).map_err(|error| anyhow::anyhow!("demo configuration: {error}"))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
