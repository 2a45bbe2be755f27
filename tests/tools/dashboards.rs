//! The bundled Grafana dashboards and alert rules, proven on a real Prometheus: 35 days of
//! history loaded with `backfill`, the exporter scraped live, the rules evaluated. Every panel
//! query and every rule must be valid and return data, and the visitor-drop alert must fire
//! for the one day with fewer visitors and for no other. The dashboards are also checked
//! against Grafana's own schema and against the conventions users expect.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Days;
use serde_json::Value;

use common::prometheus::{backfill, create_blocks, temp_dir, ExporterProcess, Prometheus};
use common::{beijing, two_apps};
use wechat_miniprogram_exporter::period::{Period, PeriodKind};
use wechat_miniprogram_exporter::simulation::Fault;

pub(crate) const DASHBOARDS: [&str; 7] = [
    "overview",
    "retention",
    "sources",
    "pages",
    "audience",
    "performance",
    "exporter",
];

fn dashboard(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("dashboards/{name}.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all.retain(|panel| panel["type"] != "row");
    all
}

/// (panel title, expr, instant) of every query of every dashboard.
pub(crate) fn queries() -> Vec<(String, String, bool)> {
    let mut all = Vec::new();
    for name in DASHBOARDS {
        let dashboard = dashboard(name);
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().unwrap() {
                all.push((
                    format!("{name}: {}", panel["title"].as_str().unwrap()),
                    target["expr"].as_str().unwrap().to_string(),
                    target["instant"] == true,
                ));
            }
        }
    }
    all
}

/// An expression with the dashboards' variables replaced as Grafana would for the app `shop`.
pub(crate) fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$app", "shop")
        .replace("$period", "daily")
        .replace("$range", "7d")
        .replace("$cohort", "active")
}

/// Every `wechat_miniprogram_…{…}` selector in an expression.
fn selectors(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("wechat_miniprogram_") {
        rest = &rest[at..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let end = if rest[name_end..].starts_with('{') {
            name_end + rest[name_end..].find('}').unwrap() + 1
        } else {
            name_end
        };
        found.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    found
}

#[test]
fn dashboards_match_grafanas_schema() {
    let ajv = Path::new(".tools/node/node_modules/.bin/ajv");
    let schema = Path::new(".tools/grafana-dashboard.schema.json");
    assert!(
        ajv.exists() && schema.exists(),
        "run scripts/install-tools (it installs @grafana/schema and ajv into .tools)"
    );
    for name in DASHBOARDS {
        let output = Command::new(ajv)
            .args([
                "validate",
                "--spec=draft7",
                "--strict=false",
                "--errors=text",
                "-s",
            ])
            .arg(schema)
            .arg("-d")
            .arg(format!("dashboards/{name}.json"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let dashboard = dashboard(name);
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_string()));
        assert_eq!(dashboard["time"]["from"], "now-30d", "{name}");
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        let variable = |wanted: &str| {
            variables
                .iter()
                .find(|variable| variable["name"] == wanted)
                .unwrap_or_else(|| panic!("{name} has no variable {wanted}"))
        };
        assert_eq!(variable("datasource")["type"], "datasource");
        assert_eq!(variable("datasource")["query"], "prometheus");
        let app = variable("app");
        assert_eq!(app["type"], "query");
        assert_eq!(app["datasource"]["uid"], "${datasource}");
        assert_eq!(app["multi"], name != "pages", "{name}: app is multi-select");

        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap();
            // No hard-coded data source anywhere: always the variable.
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: {title}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}");
            // The units of the panel: its default, and those of its per-column overrides.
            let mut units = vec![panel["fieldConfig"]["defaults"]["unit"].as_str()];
            for special in panel["fieldConfig"]["overrides"].as_array().unwrap() {
                for property in special["properties"].as_array().unwrap() {
                    if property["id"] == "unit" {
                        units.push(property["value"].as_str());
                    }
                }
            }
            let unit = units[0];
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${datasource}");
                let expr = target["expr"].as_str().unwrap();
                let legend = target["legendFormat"].as_str().unwrap_or_default();
                if expr.contains("app=~\"$app\"") && !expr.contains(" by (") && !legend.is_empty() {
                    assert!(legend.contains("{{app}}"), "{name}: {title}: legend by app");
                }
                if expr.contains("retention_ratio") || expr.contains("offset 1w") {
                    assert_eq!(unit, Some("percentunit"), "{name}: {title}");
                }
                // Seconds, unless a timestamp, a ratio of seconds (week over week) or a rate
                // of seconds (CPU used per second).
                let ratio = expr.contains("offset 1w") || expr.contains("rate(");
                if expr.contains("_seconds") && !expr.contains("cohort_timestamp") && !ratio {
                    assert!(units.contains(&Some("s")), "{name}: {title}: seconds");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_rule_returns_data_and_the_drop_alert_fires_for_the_reduced_day_only() {
    let dir = temp_dir("dashboards");
    // What this test of the real clock assumes, set here: both apps publish yesterday at
    // midnight, the exporter asks from midnight (polling.first_attempt) and the history says
    // so (--published-at 00:00), so that yesterday is there at any hour of the day, live (and,
    // three hours after midnight, in the history too); and the test runs on one Beijing day.
    let today = common::clear_of_beijing_midnight(Duration::from_secs(120)).await;
    let mut apps = two_apps();
    let reduced = today - Days::new(1);
    for app in &mut apps {
        app.publish_hour = 0;
    }
    apps[0].dips.insert(reduced, 0.5);
    let (sim, api) = common::spawn_simulation(apps.clone()).await;
    let config = dir.join("config.toml");
    let extra = "[polling]\nfirst_attempt = \"00:00\"\nerror_backoff_initial = \"1s\"\nerror_backoff_max = \"2s\"\n\
        [reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_distribution\", \"visit_page\", \"daily_summary\", \"user_portrait\", \"launch_time\", \"performance\", \"js_errors\", \"quota\"]\n";
    std::fs::write(&config, common::config_toml(&apps, api, extra)).unwrap();

    // 35 days of history.
    let file = dir.join("history.om");
    let from = reduced - Days::new(34);
    backfill(&config, from, reduced, &file, &["--published-at", "00:00"]).await;
    let blocks = create_blocks(&file, &dir);

    // The exporter, live, meeting a few errors so that the error panels have something.
    sim.inject(
        &apps[0].appid,
        Some("getweanalysisappidvisitpage"),
        Fault::Errcode(-1),
        1,
    );
    sim.inject(&apps[1].appid, Some("stable_token"), Fault::Status(500), 1);
    // And yesterday's distribution with a key given twice, so that a value is dropped and
    // counted.
    let yesterday = Period::containing(PeriodKind::Daily, reduced);
    let mut duplicate = common::simulated(&apps[0], "visit_distribution", yesterday, reduced);
    let items = duplicate["list"][0]["item_list"].as_array_mut().unwrap();
    items.push(items[0].clone());
    sim.inject(
        &apps[0].appid,
        Some("getweanalysisappidvisitdistribution"),
        Fault::Body(duplicate.to_string()),
        1,
    );
    let exporter = ExporterProcess::start(&config, &[]).await;
    let rules = std::fs::canonicalize("deploy/prometheus/alerts.yml").unwrap();
    let prometheus = Prometheus::start(
        &blocks,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: wechat-miniprogram\n    static_configs:\n      - targets: ['{}']\n",
            rules.display(),
            exporter.address
        ),
    )
    .await;

    // Wait for a few scrapes, the recovered errors and the first rule evaluations.
    let started = Instant::now();
    loop {
        let now = prometheus.now().await;
        let alerts = prometheus
            .query("ALERTS{alertname=\"WeChatMiniProgramVisitUVDrop\"}", now)
            .await;
        let token_errors = prometheus
            .query(
                "wechat_miniprogram_token_fetches_total{outcome=\"error\"}",
                now,
            )
            .await;
        let scrapes = prometheus
            .value(
                "count_over_time(wechat_miniprogram_exporter_build_info[1m])",
                now,
            )
            .await;
        if !alerts.is_empty() && !token_errors.is_empty() && scrapes.unwrap_or(0.0) >= 5.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no drop alert, token error or scrapes after 60s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = prometheus.now().await;

    // (b) The drop alert is active for the shop, whose latest day has half its visitors.
    let alerts = prometheus
        .query("ALERTS{alertname=\"WeChatMiniProgramVisitUVDrop\"}", now)
        .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].labels["app"], "shop");
    // Over the whole history, its expression holds only once the reduced day is the latest.
    let rule_groups = prometheus.get("/api/v1/rules", &[]).await;
    let rules: Vec<&Value> = rule_groups["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), 11);
    let drop = rules
        .iter()
        .find(|rule| rule["name"] == "WeChatMiniProgramVisitUVDrop")
        .unwrap();
    let published = beijing(&format!("{today} 00:00"));
    let history = prometheus
        .query_range(
            drop["query"].as_str().unwrap(),
            now - chrono::Duration::days(27),
            now,
            3600,
        )
        .await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].0["app"], "shop");
    let times: Vec<i64> = history[0].1.iter().map(|(at, _)| *at).collect();
    assert!(!times.is_empty());
    assert!(
        times.iter().all(|at| *at >= published.timestamp()),
        "the alert held before the reduced day was published: {times:?}"
    );
    // 27 days of history were compared, 26 of them without a drop.
    let compared = prometheus
        .query_range(
            "last_over_time(wechat_miniprogram_visit_uv{period=\"daily\",app=\"shop\"}[1d] offset 1w)",
            now - chrono::Duration::days(27),
            now,
            3600,
        )
        .await;
    assert!(compared[0].1.len() >= 26 * 24, "{}", compared[0].1.len());

    // (a) Every rule evaluates cleanly, and every series it reads has data.
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        assert_eq!(rule["health"], "ok", "{name}: {}", rule["lastError"]);
        for selector in selectors(rule["query"].as_str().unwrap()) {
            let found = prometheus
                .query(&format!("last_over_time({selector}[1d])"), now)
                .await;
            assert!(!found.is_empty(), "{name}: {selector} has no data");
        }
    }

    // (a) Every panel query, as Grafana sends it, returns data: a range over the dashboard's
    // 30 days, or an instant query at the end.
    for (panel, expr, instant) in queries() {
        let expr = substitute(&expr);
        let data = if instant {
            !prometheus.query(&expr, now).await.is_empty()
        } else {
            prometheus
                .query_range(&expr, now - chrono::Duration::days(30), now, 3600)
                .await
                .iter()
                .any(|(_, points)| !points.is_empty())
        };
        assert!(data, "{panel}: {expr} returned no data");
    }
    // The app variable's query lists the apps.
    for name in DASHBOARDS {
        let dashboard = dashboard(name);
        let app = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["name"] == "app")
            .unwrap();
        let query = app["query"]["query"].as_str().unwrap();
        let metric = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(", app)"))
            .unwrap();
        let values = prometheus
            .get("/api/v1/label/app/values", &[("match[]", metric)])
            .await;
        let values: BTreeSet<&str> = values["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_str().unwrap())
            .collect();
        assert_eq!(values, BTreeSet::from(["news", "shop"]), "{name}: {query}");
    }

    // Every family the exporter exports is on some panel.
    let scrape = reqwest::get(format!("http://{}/metrics", exporter.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all_queries: String = queries().into_iter().map(|(_, expr, _)| expr).collect();
    let families: Vec<&str> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    // The exporter's own families, and the standard process metrics.
    let process = families
        .iter()
        .filter(|f| f.starts_with("process_"))
        .count();
    assert_eq!(families.len() - process, 52, "{families:?}");
    assert_eq!(process, 7, "{families:?}");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|family| !family.starts_with("process_") && !all_queries.contains(**family))
        .collect();
    assert!(missing.is_empty(), "families on no panel: {missing:?}");
}
