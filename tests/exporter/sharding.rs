//! Sharding: several exporters split the apps by appid, so that together they poll every app
//! exactly once.

use crate::common;

use std::collections::BTreeMap;

use common::prometheus::{temp_dir, ExporterProcess};
use common::sample;
use wechat_miniprogram_exporter::simulation::SimApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_export_each_of_thirty_apps_exactly_once() {
    let dir = temp_dir("sharding");
    let apps: Vec<SimApp> = (0..30)
        .map(|n| {
            SimApp::new(
                &format!("app{n:02}"),
                &format!("wx{:016x}", 0x5a1e_0000_0000_u64 + n * 7919),
                &format!("secret-{n:02}-0123456789"),
                1000.0 + 100.0 * n as f64,
            )
        })
        .collect();
    let (sim, api) = common::spawn_simulation(apps.clone()).await;
    let config = dir.join("config.toml");
    std::fs::write(&config, common::config_toml(&apps, api, "")).unwrap();

    // With or without the `serve` subcommand.
    let shards = [
        ExporterProcess::start(&config, &["--shard", "0", "--total-shards", "3"]).await,
        ExporterProcess::start(&config, &["serve", "--shard", "1", "--total-shards", "3"]).await,
        ExporterProcess::start(&config, &["--shard=2", "--total-shards=3", "serve"]).await,
    ];
    let mut owner: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, shard) in shards.iter().enumerate() {
        let metrics = shard.scrape().await;
        let shard_label = index.to_string();
        assert_eq!(
            sample(
                &metrics,
                "wechat_miniprogram_exporter_shard_info",
                &[("shard", &shard_label), ("total_shards", "3")]
            ),
            Some(1.0)
        );
        let mut polled = 0;
        for line in metrics
            .lines()
            .filter(|line| line.starts_with("wechat_miniprogram_up{"))
        {
            let appid = line
                .split("appid=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            owner.entry(appid.to_string()).or_default().push(index);
            // Polled for real: the shard holds the app's visitors.
            assert!(
                sample(
                    &metrics,
                    "wechat_miniprogram_visit_uv",
                    &[("appid", appid), ("period", "daily")]
                )
                .is_some(),
                "{appid} on shard {index}"
            );
            polled += 1;
        }
        assert_eq!(
            sample(&metrics, "wechat_miniprogram_exporter_apps", &[]),
            Some(polled as f64)
        );
        assert!(
            (4..=16).contains(&polled),
            "shard {index} has {polled} apps"
        );
    }
    assert_eq!(owner.len(), 30, "every app is polled: {owner:?}");
    assert!(owner.values().all(|shards| shards.len() == 1), "{owner:?}");
    for app in &apps {
        assert!(owner.contains_key(&app.appid), "{} is missed", app.appid);
    }
    // No app's data was asked for by two exporters.
    let mut tokens: BTreeMap<String, usize> = BTreeMap::new();
    for call in sim
        .calls()
        .into_iter()
        .filter(|call| call.endpoint == "stable_token")
    {
        *tokens.entry(call.appid.unwrap()).or_default() += 1;
    }
    assert!(tokens.values().all(|&n| n == 1), "{tokens:?}");
}

#[test]
fn a_shard_outside_the_total_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
        .args(["--shard", "3", "--total-shards", "3", "check-config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shards are numbered 0 to 2"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
        .args(["--shard", "1", "check-config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--total-shards"));
}
