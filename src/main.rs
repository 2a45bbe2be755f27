//! The command line: flags mapped to calls of the library (`startup`, `backfill::run`,
//! `simulation::standalone`), their outcomes to exit codes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;

use wechat_miniprogram_exporter::backfill::{self, Outcome};
use wechat_miniprogram_exporter::cli::{BackfillArgs, Cli, Command, SimulateArgs};
use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::{Config, Overrides};
use wechat_miniprogram_exporter::logging;
use wechat_miniprogram_exporter::reload::Source;
use wechat_miniprogram_exporter::simulation::{config_for, demo_apps, Simulation};
use wechat_miniprogram_exporter::{discovery, simulation, startup};

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
    let overrides = match cli.overrides() {
        Ok(overrides) => overrides,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(file, &overrides).await,
        Command::CheckConfig(args) => Ok(check_config(file, &overrides, args.cost).await),
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
            run(config, source, None).await
        }
        Err(code) => Ok(code),
    }
}

/// `check-config`: validate and describe the configuration and what discovery lists.
async fn check_config(file: Option<&Path>, overrides: &Overrides, cost: bool) -> ExitCode {
    let config = match load(file, overrides) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (discovered, problems, listed) = discovery::check(&config).await;
    for line in config.describe().into_iter().chain(discovered) {
        println!("{line}");
    }
    if cost {
        let costs = wechat_miniprogram_exporter::cost::of_config(&config.with_listed(listed));
        wechat_miniprogram_exporter::cost::lines(&costs)
            .iter()
            .for_each(|line| println!("{line}"));
    }
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
    let (store, failed) = match startup::once(&config, Clock::system()).await {
        Ok(done) => done,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
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
    let toml = format!(
        "listen_address = \"127.0.0.1:10050\"\n{}",
        config_for(simulation.apps(), &format!("http://{api}"))
    );
    let config = Config::from_toml_with(&toml, overrides)
        .map_err(|error| anyhow::anyhow!("demo configuration: {error}"))?;
    let source = Source::Fixed(Box::new(config.clone()));
    let banner = "Demo: 3 simulated Mini Programs against a simulated WeChat API";
    run(config, source, Some(banner)).await
}

/// Serves `config` (from `source`) until SIGINT or SIGTERM, then stops (bounded waits for
/// the pollers and the state). A demo first prints where to look.
async fn run(config: Config, source: Source, demo: Option<&str>) -> anyhow::Result<ExitCode> {
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
    let start = startup::Start {
        config,
        source,
        clock: Clock::system(),
        listener,
        hangups: true,
    };
    let running = match startup::start(start).await {
        Ok(running) => running,
        Err(problem) => {
            eprintln!("error: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `simulate`: only the simulated WeChat API, until a signal.
async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let out = args.config_out.as_deref();
    simulation::standalone(args.listen, args.apps, args.latency, out, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `backfill`: exit 1 if a call failed (everything fetched is still written), 2 on bad
/// flags.
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
        missing: args.missing,
        dry_run: args.dry_run,
    };
    Ok(
        match backfill::run(&config, &options, args.output.as_deref()).await? {
            Outcome::Complete => ExitCode::SUCCESS,
            Outcome::Incomplete => ExitCode::FAILURE,
            Outcome::Refused => ExitCode::from(2),
        },
    )
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
