//! The exporter across restarts and publication hours: the state under `--storage.path` is
//! served again at once and saves every call for a period held; a state file that is
//! truncated, corrupt, of a future version, of another app or from the future is a warning
//! and a fresh start for that job, never a wrong value; and each app asks for a new period
//! from its usual publication hour, a late day still ending with the data.

use crate::common::{self, Exporter};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wechat_miniprogram_exporter::clock::Clock;
use wechat_miniprogram_exporter::config::Config;
use wechat_miniprogram_exporter::simulation::{Call, Simulation};

use common::prometheus::temp_dir;
use common::{
    beijing, config_toml, config_with_storage, data_series, fixed, sample, spawn_manual_simulation,
    two_apps,
};

const SHOP: &str = "wx1111111111111111";

/// The calls of report paths (not tokens) among `calls`.
fn report_calls(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|call| !call.endpoint.contains("token"))
        .collect()
}

fn state_file(storage: &Path, appid: &str, file: &str) -> PathBuf {
    storage.join("apps").join(appid).join(file)
}

/// A first exporter (with `settings`, TOML) that fetched everything at 2024-06-05 12:00 with
/// its state on `storage`, then stopped: what a second one starts from.
struct FirstRun {
    sim: Simulation,
    api: SocketAddr,
    clock: Clock,
    config: Config,
    /// The data series it served.
    before: Vec<String>,
}

async fn first_run(storage: &Path, settings: &str) -> FirstRun {
    let (sim, api, clock) = spawn_manual_simulation(two_apps(), beijing("2024-06-05 12:00")).await;
    let config = config_with_storage(&config_toml(&two_apps(), api, settings), storage);
    let first = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    first.settle().await;
    let before = data_series(&first.scrape().await);
    first.stop().await;
    drop(first);
    FirstRun {
        sim,
        api,
        clock,
        config,
        before,
    }
}

#[tokio::test]
async fn a_restart_on_the_same_storage_serves_the_same_values_at_once_and_calls_nothing() {
    let storage = temp_dir("durable-restart");
    let FirstRun {
        sim,
        api,
        clock,
        config,
        before,
    } = first_run(&storage, "").await;
    assert!(before.len() > 500, "{} series", before.len());
    assert!(state_file(&storage, SHOP, "visit_trend.daily.json").is_file());
    let calls = sim.calls().len();

    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    // At once: ready, with the same values, before any poller has run.
    assert_eq!(second.get("/readyz").await.status(), 200);
    assert_eq!(data_series(&second.scrape().await), before);
    second.settle().await;
    assert_eq!(
        second.calls_since(calls),
        Vec::<Call>::new(),
        "no call (not even a token) for periods held"
    );
    assert_eq!(data_series(&second.scrape().await), before);

    // The next day, only the new periods are fetched.
    second.advance_to(beijing("2024-06-06 12:00")).await;
    let next_day: Vec<String> = report_calls(&second.calls_since(calls))
        .iter()
        .filter_map(|call| call.begin_date.clone())
        .collect();
    assert!(
        next_day.iter().all(|date| date.as_str() >= "20240505"),
        "{next_day:?}"
    );
    assert!(next_day.contains(&"20240605".to_string()), "{next_day:?}");
}

#[tokio::test]
async fn broken_state_files_are_warnings_and_only_their_jobs_are_fetched_again() {
    let storage = temp_dir("durable-broken");
    let FirstRun {
        sim,
        api,
        clock,
        config,
        before,
    } = first_run(&storage, "").await;

    let file = |name: &str| state_file(&storage, SHOP, name);
    let text = |name: &str| std::fs::read_to_string(file(name)).unwrap();
    // Truncated (a crash mid-write cannot do this, a full disk or a copy can).
    let trend = text("visit_trend.weekly.json");
    std::fs::write(file("visit_trend.weekly.json"), &trend[..trend.len() / 2]).unwrap();
    // Not JSON at all.
    std::fs::write(file("visit_page.daily.json"), b"\x00\xff garbage").unwrap();
    // Written by a later version.
    let later = text("visit_distribution.daily.json").replacen("\"format\":1", "\"format\":99", 1);
    std::fs::write(file("visit_distribution.daily.json"), later).unwrap();
    // Another app's file.
    let other = text("daily_summary.daily.json").replace(SHOP, "wx2222222222222222");
    std::fs::write(file("daily_summary.daily.json"), other).unwrap();
    // A period that has not ended.
    let future = text("launch_time.daily.json").replace("\"20240604\"", "\"20990101\"");
    std::fs::write(file("launch_time.daily.json"), future).unwrap();
    // Answers that WeChat could not have sent for that period.
    let wrong = text("js_errors.daily.json").replacen("\"data\":[", "\"data\":7,\"was\":[", 1);
    std::fs::write(file("js_errors.daily.json"), wrong).unwrap();
    std::fs::write(file("publication.json"), b"{").unwrap();
    let calls = sim.calls().len();

    let second = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    second.settle().await;
    let again: std::collections::BTreeSet<String> = report_calls(&second.calls_since(calls))
        .iter()
        .map(|call| call.endpoint.clone())
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "getweanalysisappidweeklyvisittrend",
        "getweanalysisappidvisitpage",
        "getweanalysisappidvisitdistribution",
        "getweanalysisappiddailysummarytrend",
        "wxaapi/log/get_performance",
        "wxaapi/log/jserr_list",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(again, expected, "exactly the jobs whose file was broken");
    assert!(report_calls(&second.calls_since(calls))
        .iter()
        .all(|call| call.appid.as_deref() == Some(SHOP)));
    assert_eq!(
        data_series(&second.scrape().await),
        before,
        "no wrong value"
    );
    let logs = second.logs.text();
    assert_eq!(logs.matches("state file ignored").count(), 6, "{logs}");
    // The period not yet ended is a warning of its own: maybe the clock is wrong, so the file
    // is kept, and the older period fetched meanwhile is not written over it.
    assert_eq!(logs.matches("a period not yet ended").count(), 1, "{logs}");
    second.stop().await;
    assert!(text("launch_time.daily.json").contains("\"20990101\""));
}

#[tokio::test]
async fn new_settings_apply_to_the_answers_read_back_and_only_new_calls_are_made() {
    let storage = temp_dir("durable-settings");
    let one_range = "[reports]\nportrait_ranges = [\"1d\"]\n";
    let FirstRun {
        sim, api, clock, ..
    } = first_run(&storage, one_range).await;
    let calls = sim.calls().len();
    let settings = "[reports]\nportrait_ranges = [\"1d\", \"7d\"]\npages_top = 5\n";
    let changed = config_with_storage(&config_toml(&two_apps(), api, settings), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(changed.clone())
        .source(fixed(&changed))
        .start()
        .await;
    second.settle().await;
    let asked: Vec<String> = report_calls(&second.calls_since(calls))
        .iter()
        .map(|call| format!("{} {}", call.endpoint, call.body.as_deref().unwrap_or("")))
        .collect();
    // Per app, the portrait's ranges as they are now: its held answers lack the 7-day one.
    assert_eq!(asked.len(), 2 * 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|call| call.starts_with("getweanalysisappiduserportrait")),
        "{asked:?}"
    );
    let metrics = second.scrape().await;
    let pages = common::series(&metrics, "wechat_miniprogram_page_visit_pv")
        .into_iter()
        .filter(|line| line.contains("app=\"shop\""))
        .count();
    assert_eq!(pages, 5, "pages_top applies to the pages read back");
    assert!(metrics.contains("range=\"7d\""));
}

#[tokio::test]
async fn an_app_no_longer_configured_leaves_no_series_behind() {
    let storage = temp_dir("durable-removed");
    let FirstRun {
        sim, api, clock, ..
    } = first_run(&storage, "").await;

    let shop_only = config_with_storage(&config_toml(&two_apps()[..1], api, ""), &storage);
    let second = Exporter::on(&sim, api, &clock)
        .config(shop_only.clone())
        .source(fixed(&shop_only))
        .start()
        .await;
    let metrics = second.scrape().await;
    assert!(!metrics.contains("app=\"news\""), "{metrics}");
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
}

#[tokio::test]
async fn a_storage_path_that_cannot_be_written_keeps_the_exporter_serving() {
    let blocker = temp_dir("durable-blocked").join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let (sim, api, clock) = spawn_manual_simulation(two_apps(), beijing("2024-06-05 12:00")).await;
    let config = config_with_storage(&config_toml(&two_apps(), api, ""), &blocker.join("data"));
    let app = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    app.settle().await;
    let metrics = app.scrape().await;
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
    assert!(
        app.logs.text().contains("--storage.path"),
        "{}",
        app.logs.text()
    );
}

/// The daily trend calls of `appid` among `calls`, as (Beijing time, not ready).
fn trend_calls(calls: &[Call], appid: &str) -> Vec<(String, bool)> {
    calls
        .iter()
        .filter(|call| call.appid.as_deref() == Some(appid))
        .filter(|call| call.endpoint == "getweanalysisappiddailyvisittrend")
        .map(|call| {
            let beijing = call.at + chrono::Duration::hours(8);
            (beijing.format("%m-%d %H:%M").to_string(), call.not_ready)
        })
        .collect()
}

#[tokio::test]
async fn each_app_asks_from_its_usual_hour_and_a_late_day_still_ends_with_the_data() {
    let mut apps = two_apps();
    apps[0].publish_hour = 9;
    apps[0].publish_minute = 40;
    // 2024-06-09's data comes at 15:40 instead of 09:40.
    apps[0].late.insert(
        chrono::NaiveDate::from_ymd_opt(2024, 6, 10).unwrap(),
        6 * 60,
    );
    let (sim, api, clock) =
        spawn_manual_simulation(apps.clone(), beijing("2024-06-05 12:00")).await;
    let config = Config::from_toml(&config_toml(&apps, api, "")).unwrap();
    let app = Exporter::on(&sim, api, &clock)
        .config(config.clone())
        .source(fixed(&config))
        .start()
        .await;
    app.settle().await;
    let start = sim.calls().len();
    let mut now = beijing("2024-06-05 12:05");
    while now < beijing("2024-06-11 00:00") {
        now += chrono::Duration::minutes(5);
        app.advance_to(now).await;
    }
    let calls = trend_calls(&app.calls_since(start), SHOP);
    let on = |day: &str| -> Vec<(String, bool)> {
        calls
            .iter()
            .filter(|(at, _)| at.starts_with(day))
            .cloned()
            .collect()
    };
    // Days 1-3: from polling.first_attempt (06:00), every 30 minutes, found at 10:00.
    assert_eq!(on("06-06").len(), 9, "{:?}", on("06-06"));
    assert_eq!(on("06-06")[0], ("06-06 06:00".to_string(), true));
    // Three days seen: from a quarter before the usual 09:40-10:00, found by 10:10.
    let today = on("06-09");
    assert!(today.len() <= 3, "{today:?}");
    let found = today.iter().find(|(_, not_ready)| !not_ready).unwrap();
    assert!(found.0.as_str() <= "06-09 10:10", "{today:?}");
    // The late day: asked every 30 minutes until it came, found within 30 minutes of 15:40.
    let late = on("06-10");
    let found = late.iter().find(|(_, not_ready)| !not_ready).unwrap();
    assert!(
        found.0.as_str() >= "06-10 15:40" && found.0.as_str() <= "06-10 16:10",
        "{late:?}"
    );
    assert!(late.len() >= 10, "{late:?}");
    let metrics = app.scrape().await;
    assert!(sample(
        &metrics,
        "wechat_miniprogram_visit_uv",
        &[("app", "shop"), ("period", "daily")]
    )
    .is_some());
}
