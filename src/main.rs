//! The command line: parse flags, load the config, build the exporter, run until a signal.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{NaiveDate, NaiveTime};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

use wechat_miniprogram_exporter::app::Exporter;
use wechat_miniprogram_exporter::backfill;
use wechat_miniprogram_exporter::backfill::fetch::fetch;
use wechat_miniprogram_exporter::backfill::history::History;
use wechat_miniprogram_exporter::backfill::openmetrics::Written;
use wechat_miniprogram_exporter::backfill::plan::plan;
use wechat_miniprogram_exporter::backfill::progress::Progress;
use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::{parse_listen_address, Config, Overrides, Web};
use wechat_miniprogram_exporter::discovery::{merge_apps, Discovery};
use wechat_miniprogram_exporter::domain::Shard;
use wechat_miniprogram_exporter::logging::{self, LogFormat, LogLevel};
use wechat_miniprogram_exporter::reload::{Control, Source};
use wechat_miniprogram_exporter::server::listen::{self, Limits};
use wechat_miniprogram_exporter::server::web_config::WebConfig;
use wechat_miniprogram_exporter::server::{router_with, with_reload, Reload};
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
    /// TLS, basic auth and headers for the HTTP server: the exporter-toolkit web
    /// configuration file (YAML), read again when it or its certificates change.
    #[arg(long = "web.config.file", global = true, value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", global = true, value_name = "PATH", default_value = "/metrics", value_parser = telemetry_path)]
    telemetry_path: String,
    /// Leave out the exporter's own metrics (its API counters and the process metrics); the
    /// analytics, up and the build info stay.
    #[arg(long = "web.disable-exporter-metrics", global = true)]
    disable_exporter_metrics: bool,
    /// The most HTTP connections open at once [default: 512, fewer under a low file limit].
    #[arg(long = "web.max-connections", global = true, value_name = "N")]
    max_connections: Option<usize>,
    /// Let `POST /-/reload` read the configuration again, as Prometheus's flag does (SIGHUP
    /// always does).
    #[arg(long = "web.enable-lifecycle", global = true)]
    enable_lifecycle: bool,
    /// Where the state (held periods, publication hours) is kept across restarts
    /// [default for serve: ./data; demo: none].
    #[arg(long = "storage.path", global = true, value_name = "DIR")]
    storage_path: Option<PathBuf>,
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
    Backfill(BackfillArgs),
    /// Serve only the simulated WeChat API (for trying the exporter or the compose stack).
    Simulate(SimulateArgs),
}

#[derive(Args, Debug)]
struct BackfillArgs {
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
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// Address of the simulated API.
    #[arg(long, default_value = "127.0.0.1:10051", value_parser = listen_address)]
    listen: SocketAddr,
    /// Simulate this many more apps (app0000, app0001...), to try the exporter at scale.
    #[arg(long, value_name = "N", default_value_t = 0)]
    apps: usize,
    /// Write the exporter's configuration for every simulated app to FILE.
    #[arg(long = "config-out", value_name = "FILE")]
    config_out: Option<PathBuf>,
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
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the global flags, then runs the subcommand.
async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
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
    let overrides = Overrides {
        listen_address: cli.listen_address,
        shard,
        web: Web {
            telemetry_path: cli.telemetry_path.clone(),
            config_file: cli.web_config_file.clone(),
            disable_exporter_metrics: cli.disable_exporter_metrics,
            max_connections: cli.max_connections.unwrap_or(0),
            enable_lifecycle: cli.enable_lifecycle,
        },
        storage: cli.storage_path.clone(),
    };
    let file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(file, &overrides).await,
        Command::CheckConfig => Ok(check_config(file, &overrides).await),
        Command::Once => once(file, &overrides).await,
        Command::Demo => demo(&overrides).await,
        Command::Backfill(args) => backfill(file, &overrides, args).await,
        Command::Simulate(args) => simulate(args).await,
    }
}

/// The configuration, or its problems on stderr and exit code 2.
fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ExitCode> {
    Config::load(file, overrides).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(2)
    })
}

/// `serve`: poll in the background and serve /metrics until a signal; SIGHUP and
/// `POST /-/reload` read the configuration again.
async fn serve(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let mut overrides = overrides.clone();
    overrides
        .storage
        .get_or_insert_with(|| PathBuf::from("./data"));
    match load(file, &overrides) {
        Ok(config) => {
            let source = Source::File(file.map(Path::to_path_buf), overrides);
            run(&config, source, None).await
        }
        Err(code) => Ok(code),
    }
}

/// `check-config`: validate and describe the configuration.
async fn check_config(file: Option<&Path>, overrides: &Overrides) -> ExitCode {
    let config = match load(file, overrides) {
        Ok(config) => config,
        Err(code) => return code,
    };
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
    check_discovery(&config).await
}

/// Reads the discovery sources once and lists what they give; a source that fails, or apps
/// that clash, are errors (exit code 2).
async fn check_discovery(config: &Config) -> ExitCode {
    if !config.discovery.is_configured() {
        return ExitCode::SUCCESS;
    }
    let mut discovery = Discovery::new(config.discovery.clone(), config.shard);
    discovery.read_files().await;
    discovery.read_url().await;
    let failed: Vec<String> = discovery
        .problems()
        .map(|(_, problem)| format!("discovery source {problem}"))
        .collect();
    let mut sources = vec![("the configuration".to_string(), config.apps.clone())];
    for (source, apps) in discovery.lists() {
        println!(
            "  discovery source {source}: {} Mini Program(s)",
            apps.len()
        );
        for app in apps {
            println!(
                "    {} ({}), token from {}",
                app.name,
                app.appid,
                app.token.name()
            );
        }
        sources.push((format!("discovery source {source}"), apps.clone()));
    }
    let problems = match merge_apps(&sources) {
        Ok(apps) => {
            println!("  {} Mini Program(s) in all", apps.len());
            failed
        }
        Err(clashes) => failed.into_iter().chain(clashes).collect(),
    };
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `once`: poll every app once and print the exposition.
async fn once(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let config = match load(file, overrides) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let exporter = match Exporter::build(&config, Clock::system()) {
        Ok(exporter) => exporter,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let (store, failed) = exporter.poll_once(&config).await?;
    print!("{}", String::from_utf8_lossy(&store.metrics(false)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `demo`: the simulated API in the background, and the exporter polling it.
async fn demo(overrides: &Overrides) -> anyhow::Result<ExitCode> {
    let simulation = Simulation::new(demo_apps(), Clock::system());
    let api = simulation
        .clone()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let mut toml =
        format!("listen_address = \"127.0.0.1:10050\"\napi_base_url = \"http://{api}\"\n");
    for app in simulation.apps() {
        toml.push_str(&format!(
            "[apps.{}]\nappid = \"{}\"\nsecret = \"{}\"\n",
            app.name, app.appid, app.secret
        ));
    }
    let config = Config::from_toml_with(&toml, overrides)
        .map_err(|error| anyhow::anyhow!("demo configuration: {error}"))?;
    run(
        &config,
        Source::Fixed(Box::new(config.clone())),
        Some("Demo: 3 simulated Mini Programs against a simulated WeChat API"),
    )
    .await
}

/// Serves `config` (from `source`) until SIGINT or SIGTERM, then stops the pollers (a
/// bounded wait) and writes the state. A demo first prints where to look.
async fn run(config: &Config, source: Source, demo: Option<&str>) -> anyhow::Result<ExitCode> {
    let web = match &config.web.config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(web) => Some(Arc::new(web)),
            Err(problem) => {
                eprintln!("error: --web.config.file: {problem}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let listener = TcpListener::bind(config.listen_address)
        .await
        .with_context(|| {
            format!(
                "binding {} (listen_address / --web.listen-address)",
                config.listen_address
            )
        })?;
    let address = listener.local_addr()?;
    if let Some(banner) = demo {
        // A closed stdout (a pipe whose reader left) must not stop the demo.
        let _ = writeln!(
            std::io::stdout(),
            "{banner} ({}).\n  metrics:      http://{address}{}\n  status page:  http://{address}/",
            config.api_base_url,
            config.web.telemetry_path
        );
    }
    tracing::info!(address = %address, apps = config.apps.len(), tls = web.as_ref().is_some_and(|web| web.current().tls.is_some()), version = env!("CARGO_PKG_VERSION"), "serving {}", config.web.telemetry_path);
    let clock = Clock::system();
    let exporter = match Exporter::build(config, clock.clone()) {
        Ok(exporter) => exporter,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let (stop, stopped) = watch::channel(false);
    if let Some(web) = &web {
        let metrics = exporter.store.self_metrics().clone();
        let on_loaded = move |loaded: &wechat_miniprogram_exporter::server::web_config::Loaded| {
            metrics.tls_certificate(loaded.validity.map(|(not_after, _)| not_after));
        };
        tokio::spawn(web.clone().watch(on_loaded, stopped.clone()));
    }
    let control = match start_control(config, source, &exporter, stopped, clock).await {
        Ok(control) => control,
        Err(problems) => {
            eprintln!("error: {problems}");
            return Ok(ExitCode::from(2));
        }
    };
    let reload = config.web.enable_lifecycle.then(|| reload_route(control));
    let router = with_reload(
        router_with(exporter.store.clone(), &config.web.telemetry_path),
        reload,
    );
    let mut limits = Limits::default();
    if config.web.max_connections > 0 {
        limits.max_connections = config.web.max_connections;
    }
    listen::serve(listener, router, web, limits, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    })
    .await?;
    stop_pollers(&exporter).await;
    Ok(ExitCode::SUCCESS)
}

/// Starts polling the apps of `config` and of discovery, watches the discovery sources and
/// SIGHUP until `stopped` turns true.
async fn start_control(
    config: &Config,
    source: Source,
    exporter: &Exporter,
    stopped: watch::Receiver<bool>,
    clock: Clock,
) -> Result<Arc<Control>, String> {
    let metrics = exporter.store.self_metrics().clone();
    let control = Control::new(
        source,
        config.clone(),
        exporter.fleet.clone(),
        metrics,
        clock,
    );
    let control = Arc::new(control);
    control.start().await?;
    tokio::spawn(control.clone().watch(stopped.clone()));
    #[cfg(unix)]
    {
        let control = control.clone();
        let mut stopped = stopped;
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
    Ok(control)
}

/// `POST /-/reload`: reads the configuration again.
fn reload_route(control: Arc<Control>) -> Reload {
    Arc::new(move || {
        let control = control.clone();
        Box::pin(async move { control.reload().await.map(|changes| changes.to_string()) })
    })
}

/// Stops the pollers (a request in flight gets a bounded wait) and writes the state.
async fn stop_pollers(exporter: &Exporter) {
    if tokio::time::timeout(Duration::from_secs(5), exporter.fleet.stop())
        .await
        .is_err()
    {
        tracing::warn!("pollers did not stop within 5s; exiting anyway");
    }
    let store = exporter.store.clone();
    // The flush waits at most 5 s whatever the disk does (a blocked volume never holds the
    // exit): what is not on disk by then is fetched again after the restart.
    let flushed = tokio::task::spawn_blocking(move || store.flush(Duration::from_secs(5))).await;
    if !matches!(flushed, Ok(true)) {
        tracing::warn!("the state was not all written within 5s; what is missing is fetched again after a restart");
    }
}

/// `simulate`: only the simulated WeChat API, until a signal.
async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut all = demo_apps();
    all.extend(generated_apps(args.apps));
    let simulation = Simulation::new(all, Clock::system());
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    if let Some(path) = args.config_out {
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
    if args.apps > 0 {
        println!("  and {} generated apps (app0000...)", args.apps);
    }
    tokio::select! {
        result = simulation.serve(listener) => result?,
        _ = shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `backfill`: plan, fetch with progress on stderr, write, summarise. Exit 1 if a call
/// failed (everything fetched is still written), 2 on bad flags.
async fn backfill(
    file: Option<&Path>,
    overrides: &Overrides,
    args: BackfillArgs,
) -> anyhow::Result<ExitCode> {
    let config = match load(file, overrides) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let options = backfill::Options {
        from: args.from,
        to: args.to,
        apps: args.apps,
        step: args.step,
        published_at: args.published_at,
    };
    let plan = match plan(&config, &options, Clock::system().now()) {
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
    let progress = Arc::new(Progress::new(plan.fetches()));
    let drawing = tokio::spawn(draw_progress(progress.clone()));
    let history = fetch(&config, plan, Clock::system(), progress.clone()).await;
    drawing.abort();
    let _ = drawing.await;
    let history = history.context("building the HTTP client")?;
    let terminal = std::io::stderr().is_terminal();
    eprintln!(
        "{}{}",
        if terminal { "\r\x1b[2K" } else { "" },
        progress.line(0)
    );
    let written = write_history(&history, args.output.as_deref())?;
    Ok(summarise(&history, written, args.output.as_deref()))
}

/// Writes the history to `output` (aside, then renamed, so that a reader never sees half a
/// file) or to standard output.
fn write_history(history: &History, output: Option<&Path>) -> anyhow::Result<Written> {
    let Some(path) = output else {
        let mut writer = std::io::BufWriter::new(std::io::stdout().lock());
        let written = history.write_openmetrics(&mut writer)?;
        writer.flush()?;
        return Ok(written);
    };
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
    Ok(written)
}

/// Prints the summary and the failed calls; exit 1 if any.
fn summarise(history: &History, written: Written, output: Option<&Path>) -> ExitCode {
    let summary = history.summary();
    eprintln!("backfill: {summary}");
    eprintln!(
        "backfill: wrote {} samples of {} series to {}",
        written.samples,
        written.series,
        output.map_or("standard output".into(), |path| path.display().to_string())
    );
    if summary.failed.is_empty() {
        return ExitCode::SUCCESS;
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
    ExitCode::FAILURE
}

/// Draws `progress` on stderr until aborted: a bar redrawn in place on a terminal, otherwise
/// a plain line every 10% or 30 seconds.
async fn draw_progress(progress: Arc<Progress>) {
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
