//! Benchmark of publication-aware probing, on the manual clock: 50 simulated apps for 4
//! weeks, each publishing at its own habitual time between 06:00 and 15:00 (Beijing), up to
//! 30 minutes earlier or later from day to day; then the same with one day in ten up to 3
//! hours late. Prints the WeChat calls per app per day, split into the calls that fetched
//! data, the not-ready probes and the token fetches, and how long after its publication each
//! day's data was fetched.
//!
//!     cargo run --release --example probing
//!
//! The default settings (`not_ready_retry` 30m, `first_attempt` 06:00) are used; the clock
//! moves in 5-minute steps and the exporter finishes what is due at each.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};

use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::Config;
use wechat_miniprogram_exporter::period::{beijing_date, beijing_midnight, Period, PeriodKind};
use wechat_miniprogram_exporter::reload::Source;
use wechat_miniprogram_exporter::simulation::model::Model;
use wechat_miniprogram_exporter::simulation::{config_for, generated_apps, SimApp, Simulation};
use wechat_miniprogram_exporter::startup::{self, Start};
use wechat_miniprogram_exporter::store::Store;

const APPS: usize = 50;
const DAYS: u64 = 28;
const STEP: Duration = Duration::from_secs(300);

/// The apps, each with its habit: a publication time drawn between 06:00 and 15:00.
fn apps() -> Vec<SimApp> {
    let mut rng = fastrand::Rng::with_seed(20_241_130);
    let mut apps = generated_apps(APPS);
    for app in &mut apps {
        let minute = rng.u32(6 * 60..15 * 60);
        app.publish_hour = minute / 60;
        app.publish_minute = minute % 60;
        app.publish_spread = 30;
        app.not_ready = wechat_miniprogram_exporter::simulation::NotReady::EmptyList;
    }
    apps
}

/// Days on which an app publishes late, and by how much: one day in ten, up to 3 hours.
fn late_days(apps: &mut [SimApp], first: NaiveDate) {
    let mut rng = fastrand::Rng::with_seed(7);
    for app in apps {
        for day in 0..DAYS + 1 {
            if rng.u32(0..10) == 0 {
                app.late.insert(first + Days::new(day), rng.u32(60..180));
            }
        }
    }
}

/// Whether every app has done what is due at `now`.
fn settled(store: &Store, now: DateTime<Utc>) -> bool {
    store.overview().iter().all(|app| {
        app.ready
            && app.jobs.iter().all(|((_, kind), status)| {
                let target = Period::latest_completed(*kind, now);
                (status.held == Some(target) && status.next_attempt.is_none())
                    || status.next_attempt.is_some_and(|next| next > now)
            })
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    println!(
        "{APPS} apps, {DAYS} days, publication 06:00-15:00 by app habit, ±30 min from day to day"
    );
    run(false).await?;
    println!("\nthe same, one day in ten up to 3 hours late");
    run(true).await?;
    Ok(())
}

/// Runs the exporter against the simulation for the days measured and prints what it cost.
async fn run(late: bool) -> anyhow::Result<()> {
    let start_day = NaiveDate::from_ymd_opt(2024, 6, 3).expect("a date");
    let start = beijing_midnight(start_day) + chrono::Duration::hours(12);
    let clock = Clock::manual(start);
    let mut apps = apps();
    if late {
        late_days(&mut apps, start_day);
    }
    let sim = Simulation::new(apps.clone(), clock.clone());
    let api: SocketAddr = sim
        .clone()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let config = Config::from_toml(&config_for(&apps, &format!("http://{api}")))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let starting = Start {
        source: Source::Fixed(Box::new(config.clone())),
        config,
        clock: clock.clone(),
        listener: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        hangups: false,
    };
    let exporter = startup::start(starting)
        .await
        .map_err(|problem| anyhow::anyhow!("{problem}"))?;

    // Day 0 is the start (the first round fetches what is out); days 1..=DAYS are measured.
    let first = beijing_midnight(start_day + Days::new(1));
    let end = beijing_midnight(start_day + Days::new(DAYS + 1));
    let mut now = start;
    let mut measured_from = 0;
    while now < end {
        for _ in 0..10_000 {
            if settled(&exporter.store, now) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if now < first && now + chrono::Duration::from_std(STEP)? >= first {
            measured_from = sim.calls().len();
        }
        now += chrono::Duration::from_std(STEP)?;
        clock.set(now);
    }
    report(&apps, &sim.calls()[measured_from..], first);
    exporter.stop().await;
    Ok(())
}

/// Prints the calls per app per day and the delays after publication.
fn report(
    apps: &[SimApp],
    calls: &[wechat_miniprogram_exporter::simulation::Call],
    first: DateTime<Utc>,
) {
    let (mut needed, mut probes, mut tokens) = (0usize, 0usize, 0usize);
    let mut fetched: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    for call in calls {
        if call.endpoint == "stable_token" || call.endpoint == "token" {
            tokens += 1;
        } else if call.not_ready {
            probes += 1;
        } else {
            needed += 1;
        }
        if call.endpoint == "getweanalysisappiddailyvisittrend"
            && !call.not_ready
            && call.errcode == 0
        {
            let key = (
                call.appid.clone().unwrap_or_default(),
                call.begin_date.clone().unwrap_or_default(),
            );
            fetched.entry(key).or_insert(call.at);
        }
    }
    let app_days = (apps.len() as f64) * DAYS as f64;
    let mut delays: Vec<i64> = Vec::new();
    for app in apps {
        let model = Model { app };
        for day in 0..DAYS {
            let date = beijing_date(first) - Days::new(1) + Days::new(day);
            let period = Period::containing(PeriodKind::Daily, date);
            let key = (app.appid.clone(), period.ref_date());
            let delay = fetched.get(&key).map_or(i64::MAX, |at| {
                (*at - model.published_at(period)).num_minutes()
            });
            delays.push(delay);
        }
    }
    delays.sort_unstable();
    let mean = delays.iter().sum::<i64>() as f64 / delays.len() as f64;
    println!("WeChat calls per app per day:");
    println!("  fetching data      {:6.2}", needed as f64 / app_days);
    println!("  not-ready probes   {:6.2}", probes as f64 / app_days);
    println!("  token fetches      {:6.2}", tokens as f64 / app_days);
    println!("daily data fetched after its publication, minutes:");
    println!(
        "  mean {:.1}, median {}, 99th percentile {}, max {}",
        mean,
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        delays[delays.len() - 1]
    );
}
