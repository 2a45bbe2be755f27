//! The same history on VictoriaMetrics and on Prometheus: 45 days of `backfill` for two apps,
//! every report, imported into a real `victoria-metrics` through `/api/v1/import/prometheus`
//! and into a real Prometheus through `promtool`; every dashboard query and every alert
//! expression evaluated on both at instants across the history must give the same series
//! with the same values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::common;
use crate::dashboards::{queries, substitute};

use common::prometheus::{backfill, create_blocks, free_port, temp_dir, Prometheus};
use common::spawn_simulation;
use wechat_miniprogram_exporter::period::beijing_midnight;

/// A VictoriaMetrics server on a free port over `data`, stopped when dropped.
struct Victoria {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Victoria {
    async fn start(data: &Path) -> Victoria {
        let port = free_port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("victoria-metrics is installed by scripts/install-tools");
        let victoria = Victoria {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        while !victoria
            .http
            .get(format!("{}/health", victoria.url))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            assert!(started.elapsed() < Duration::from_secs(30), "not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        victoria
    }

    /// Imports the OpenMetrics text as `backfill` wrote it, and makes it searchable.
    async fn import(&self, history: &Path) {
        let response = self
            .http
            .post(format!("{}/api/v1/import/prometheus", self.url))
            .body(std::fs::read(history).unwrap())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
        self.http
            .get(format!("{}/internal/force_flush", self.url))
            .send()
            .await
            .unwrap();
    }

    /// A GET of the HTTP API, as JSON.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An instant query's answer as labels (without `__name__`) -> value.
type Answer = BTreeMap<BTreeMap<String, String>, f64>;

fn answer(body: &serde_json::Value, expr: &str) -> Answer {
    assert_eq!(body["status"], "success", "{expr}: {body}");
    let result = &body["data"]["result"];
    let items = match body["data"]["resultType"].as_str() {
        Some("vector") => result.as_array().unwrap().clone(),
        Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
        other => panic!("{expr}: unexpected result type {other:?}: {body}"),
    };
    items
        .iter()
        .map(|item| {
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(item["metric"].clone()).unwrap();
            labels.remove("__name__");
            (labels, item["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

/// A range query's answer as labels (without `__name__`) -> points, values rounded to 9
/// significant digits (the two stores may sum in different orders).
type Series = BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>;

fn series(body: &serde_json::Value, expr: &str) -> Series {
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(item["metric"].clone()).unwrap();
            labels.remove("__name__");
            let points = item["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|point| {
                    let value: f64 = point[1].as_str().unwrap().parse().unwrap();
                    (point[0].as_f64().unwrap() as i64, format!("{value:.9e}"))
                })
                .collect();
            (labels, points)
        })
        .collect()
}

/// The points of one answer that the other has not, series by series.
fn difference(prometheus: &Series, victoria: &Series) -> String {
    let mut text = String::new();
    let keys: std::collections::BTreeSet<_> = prometheus.keys().chain(victoria.keys()).collect();
    let none = Vec::new();
    for key in keys {
        let (p, v) = (
            prometheus.get(key).unwrap_or(&none),
            victoria.get(key).unwrap_or(&none),
        );
        let only = |a: &Vec<(i64, String)>, b: &Vec<(i64, String)>| -> Vec<(i64, String)> {
            a.iter()
                .filter(|point| !b.contains(point))
                .cloned()
                .collect()
        };
        let (only_p, only_v) = (only(p, v), only(v, p));
        if !only_p.is_empty() || !only_v.is_empty() {
            text +=
                &format!("  {key:?}: only on prometheus {only_p:?}, only on victoria {only_v:?}\n");
        }
    }
    text
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
}

/// Every expression of the bundled rules, by alert.
fn alert_expressions() -> Vec<(String, String)> {
    let rules = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| {
            let name = rule["alert"].as_str().unwrap();
            (
                format!("alert {name}"),
                rule["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// Backfills `from..=to` of two apps (every report; the shop's 2025-10-09 halved, so that the
/// drop alert has something to find) into `dir/history.om`.
async fn history(dir: &Path, from: NaiveDate, to: NaiveDate) -> PathBuf {
    let mut apps = common::two_apps();
    for app in &mut apps {
        app.since = day("2025-01-01");
    }
    apps[0].dips.insert(day("2025-10-09"), 0.5);
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    let config = dir.join("config.toml");
    let extra = "[reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_distribution\", \"visit_page\", \"daily_summary\", \"user_portrait\", \"launch_time\", \"performance\", \"js_errors\"]\n";
    std::fs::write(&config, common::config_toml(&apps, api, extra)).unwrap();
    let history = dir.join("history.om");
    backfill(&config, from, to, &history, &[]).await;
    history
}

/// The two stores holding the same history.
struct Stores {
    prometheus: Prometheus,
    victoria: Victoria,
}

impl Stores {
    /// The answers of both to the instant query, and whether Prometheus's has data: `Err`
    /// with both when they differ.
    async fn instant(&self, expr: &str, at: DateTime<Utc>) -> Result<bool, String> {
        let time = at.timestamp().to_string();
        let query = [("query", expr), ("time", time.as_str())];
        let on_prometheus = answer(&self.prometheus.get("/api/v1/query", &query).await, expr);
        let on_victoria = answer(&self.victoria.get("/api/v1/query", &query).await, expr);
        let agree = on_prometheus.len() == on_victoria.len()
            && on_prometheus.iter().all(|(labels, value)| {
                on_victoria
                    .get(labels)
                    .is_some_and(|other| same(*value, *other))
            });
        match agree {
            true => Ok(!on_prometheus.is_empty()),
            false => Err(format!(
                "at {at}: {expr}\n  prometheus: {on_prometheus:?}\n  victoria:   {on_victoria:?}"
            )),
        }
    }

    /// The range query hourly from `start` to `end` on both: `Err` with the points only one
    /// of them has when they differ.
    async fn range(&self, expr: &str, start: i64, end: i64) -> Result<(), String> {
        let (start, end) = (start.to_string(), end.to_string());
        let range = [
            ("query", expr),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "3600"),
        ];
        let on_prometheus = series(
            &self.prometheus.get("/api/v1/query_range", &range).await,
            expr,
        );
        let on_victoria = series(
            &self.victoria.get("/api/v1/query_range", &range).await,
            expr,
        );
        match on_prometheus == on_victoria {
            true => Ok(()),
            false => Err(format!(
                "hourly from {start} to {end}: {expr}\n{}",
                difference(&on_prometheus, &on_victoria)
            )),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_gives_the_same_values_on_victoriametrics_and_prometheus() {
    let (from, to) = (day("2025-09-01"), day("2025-10-15"));
    let dir = temp_dir("victoria");
    let history = history(&dir, from, to).await;
    let stores = Stores {
        prometheus: Prometheus::start(&create_blocks(&history, &dir), "global: {}\n").await,
        victoria: Victoria::start(&dir.join("victoria")).await,
    };
    stores.victoria.import(&history).await;

    // Instants across the history: before a day's publication (10:00), after it, late in the
    // day, and past the end (the last day still current).
    let instants: Vec<DateTime<Utc>> = [
        (day("2025-10-01"), 9 * 3600 + 30 * 60),
        (day("2025-10-10"), 12 * 3600),
        (day("2025-10-14"), 23 * 3600 + 17 * 60),
        (to + Days::new(1), 15 * 3600 + 45 * 60),
    ]
    .into_iter()
    .map(|(day, seconds)| beijing_midnight(day) + chrono::Duration::seconds(seconds))
    .collect();
    let dashboards = queries()
        .into_iter()
        .map(|(panel, expr, _)| (panel, substitute(&expr)));
    let mut disagreements = Vec::new();
    let mut with_data = 0;
    for (what, expr) in dashboards.chain(alert_expressions()) {
        let mut any = false;
        for at in &instants {
            match stores.instant(&expr, *at).await {
                Ok(data) => any |= data,
                Err(both) => disagreements.push(format!("{what} {both}")),
            }
        }
        with_data += usize::from(any);
    }
    // And the panels' range queries, as Grafana sends them: hourly over the last 10 days, at
    // half past. (On the hour, at exactly a day after a backfilled sample that has no
    // successor, 10:00:00 when an error leaves the top list or a holiday ends, Prometheus 2
    // still counts that sample in a [1d] range: its ranges are closed on the left. Prometheus
    // 3 and VictoriaMetrics leave it out, as at every other instant.)
    let end = instants[3].timestamp() / 3600 * 3600 + 1800;
    for (panel, expr, instant) in queries() {
        if !instant {
            if let Err(both) = stores
                .range(&substitute(&expr), end - 10 * 86400, end)
                .await
            {
                disagreements.push(format!("{panel}, {both}"));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // Most queries read the history (the rest read the exporter's own, live series).
    assert!(with_data >= 50, "only {with_data} queries returned data");
    // The drop alert finds the halved day on both.
    let (_, drop) = alert_expressions()
        .into_iter()
        .find(|(name, _)| name.ends_with("VisitUVDrop"))
        .unwrap();
    let time = instants[1].timestamp().to_string();
    let query = [("query", drop.as_str()), ("time", time.as_str())];
    let halved = answer(&stores.victoria.get("/api/v1/query", &query).await, &drop);
    assert_eq!(halved.len(), 1, "{halved:?}");
}
