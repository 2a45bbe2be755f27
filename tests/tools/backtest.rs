//! The drop alert backtested on a year: 2025 of the simulation for a business app and a
//! leisure app (traffic shaped by the real 2025 holidays and make-up workdays), with 12
//! one-day outages that halve the visitors (10 on ordinary days, 2 in the middle of the Spring
//! Festival and National Day holidays), backfilled, loaded into a real Prometheus with
//! `promtool`, every `*VisitUVDrop*` expression of the rules evaluated at 12:00 Beijing each
//! day. Prints, per app, the outages caught and the false alert days; `scripts/backtest-alerts`
//! runs it (`BACKTEST_RULES=FILE` backtests other rules, without the assertions).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Days, NaiveDate};

use crate::common;

use common::prometheus::{backfill, create_blocks, temp_dir, Prometheus};
use common::spawn_simulation;
use wechat_miniprogram_exporter::period::beijing_midnight;
use wechat_miniprogram_exporter::simulation::{Profile, SimApp};

/// The outages: 10 ordinary days of 2025 (workdays and weekends) and one day in the middle
/// of each long holiday (2025-01-31, the Spring Festival's fourth day; 2025-10-04, National
/// Day's fourth).
const OUTAGES: [&str; 12] = [
    "2025-02-19",
    "2025-03-14",
    "2025-04-22",
    "2025-05-17",
    "2025-06-25",
    "2025-07-12",
    "2025-08-07",
    "2025-09-03",
    "2025-11-13",
    "2025-12-16",
    "2025-01-31",
    "2025-10-04",
];

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn apps() -> Vec<SimApp> {
    let mut business = SimApp::new(
        "business",
        "wx00000000000000b1",
        "secret-business-0123",
        20_000.0,
    );
    business.profile = Profile::Business;
    let mut leisure = SimApp::new(
        "leisure",
        "wx00000000000000b2",
        "secret-leisure-0123",
        20_000.0,
    );
    leisure.profile = Profile::Leisure;
    for app in [&mut business, &mut leisure] {
        app.since = date("2024-10-01");
        for day in OUTAGES {
            app.dips.insert(date(day), 0.5);
        }
    }
    vec![business, leisure]
}

/// Every `expr` of an alert whose name has `VisitUVDrop` in it, in `rules` (YAML).
fn drop_expressions(rules: &str) -> Vec<(String, String)> {
    let rules: serde_yaml::Value = serde_yaml::from_str(rules).unwrap();
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap_or_default();
            if name.contains("VisitUVDrop") {
                found.push((name.to_string(), rule["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_alert_catches_every_outage_of_2025_and_fires_on_at_most_two_other_days_per_app() {
    let custom = std::env::var("BACKTEST_RULES").ok();
    let rules_file = custom
        .clone()
        .unwrap_or("deploy/prometheus/alerts.yml".into());
    let rules = std::fs::read_to_string(&rules_file).unwrap();
    let expressions = drop_expressions(&rules);
    assert!(
        !expressions.is_empty(),
        "{rules_file} has no *VisitUVDrop* alert"
    );

    let apps = apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let dir = temp_dir("backtest");
    let config = dir.join("config.toml");
    let extra = "[reports]\nenabled = [\"visit_trend\"]\n[polling]\nconcurrency = 8\n";
    std::fs::write(&config, common::config_toml(&apps, api, extra)).unwrap();
    let history = dir.join("2025.om");
    backfill(
        &config,
        date("2024-12-01"),
        date("2025-12-31"),
        &history,
        &[],
    )
    .await;
    let blocks = create_blocks(&history, &dir);
    let prometheus = Prometheus::start(&blocks, "global: {}\n").await;

    // The alert on day D is evaluated at 12:00 Beijing on D + 1, once D is published (10:00).
    let outages: BTreeSet<NaiveDate> = OUTAGES.iter().map(|day| date(day)).collect();
    let mut alerts: BTreeMap<String, BTreeSet<NaiveDate>> = BTreeMap::new();
    let mut day = date("2025-01-01");
    while day <= date("2025-12-31") {
        let at = beijing_midnight(day + Days::new(1)) + chrono::Duration::hours(12);
        for (_, expr) in &expressions {
            for sample in prometheus.query(expr, at).await {
                alerts
                    .entry(sample.labels["app"].clone())
                    .or_default()
                    .insert(day);
            }
        }
        day = day + Days::new(1);
    }
    let mut report = format!(
        "backtest of {rules_file} over 2025, {} expression(s) ({}), evaluated at 12:00 Beijing each day:\n",
        expressions.len(),
        expressions.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut results = Vec::new();
    for app in &apps {
        let fired = alerts.get(&app.name).cloned().unwrap_or_default();
        let caught = outages.intersection(&fired).count();
        let false_days: Vec<NaiveDate> = fired.difference(&outages).copied().collect();
        report.push_str(&format!(
            "  {} ({:?}): {caught} of {} outages caught, {} false alert days{}\n",
            app.name,
            app.profile,
            outages.len(),
            false_days.len(),
            if false_days.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    false_days
                        .iter()
                        .map(|day| day.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
        results.push((caught, false_days.len()));
    }
    println!("{report}");
    if custom.is_none() {
        for (caught, false_days) in results {
            assert_eq!(caught, outages.len(), "{report}");
            assert!(false_days <= 2, "{report}");
        }
    }
}
