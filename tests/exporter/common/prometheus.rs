//! The real Prometheus tools: `promtool`, and a `prometheus` server on a free port over a
//! data directory, queried over its HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wmpe-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `promtool` with `args`; panics with its output unless it succeeds.
pub fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed by scripts/install-tools");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Runs `promtool check metrics` on an exposition; panics unless it passes without a finding.
pub fn check_metrics(metrics: &str) {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/install-tools installs it)");
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).unwrap();
    drop(stdin);
    let output = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert_eq!(report.trim(), "", "promtool lint findings");
}

/// Blocks made from the OpenMetrics `file` by `promtool tsdb create-blocks-from openmetrics`,
/// in `dir/data`.
pub fn create_blocks(file: &Path, dir: &Path) -> PathBuf {
    let blocks = dir.join("data");
    promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        file.to_str().unwrap(),
        blocks.to_str().unwrap(),
    ]);
    blocks
}

/// Runs the exporter's binary with `args` off the runtime, so that a simulation in the test
/// keeps answering.
pub async fn run_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs `backfill` with `config` from `from` to `to` (Beijing days) into `output`, with
/// `extra` flags, and panics with its stderr unless it succeeds.
pub async fn backfill(
    config: &Path,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    output: &Path,
    extra: &[&str],
) {
    let mut args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "backfill".into(),
        "--from".into(),
        from.to_string(),
        "--to".into(),
        to.to_string(),
        "--output".into(),
        output.display().to_string(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let backfilled = run_binary(args).await;
    assert!(
        backfilled.status.success(),
        "{}",
        String::from_utf8_lossy(&backfilled.stderr)
    );
}

/// A free port on the loopback interface for a child process (see [`super::free_address`]).
pub fn free_port() -> u16 {
    super::free_address().port()
}

/// One series of a query result.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus server, stopped when dropped.
pub struct Prometheus {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) over the TSDB in `data`, keeping every block
    /// however old, and waits until it is ready.
    pub async fn start(data: &Path, config: &str) -> Prometheus {
        let config_path = data.with_extension("yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=10y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus is installed by scripts/install-tools");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prometheus's own time: the instant to ask about what it scraped. Its clock, not this
    /// process's, stamps the samples (they may differ: Prometheus is another program).
    pub async fn now(&self) -> DateTime<Utc> {
        let body = self.get("/api/v1/query", &[("query", "time()")]).await;
        let seconds: f64 = body["data"]["result"][1].as_str().unwrap().parse().unwrap();
        DateTime::from_timestamp(seconds as i64, 0).unwrap()
    }

    /// The result of the instant query `expr` at `at`; panics if Prometheus refuses it.
    pub async fn query(&self, expr: &str, at: DateTime<Utc>) -> Vec<Sample> {
        let body = self
            .get(
                "/api/v1/query",
                &[("query", expr), ("time", &at.timestamp().to_string())],
            )
            .await;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        let result = &body["data"]["result"];
        let items = match body["data"]["resultType"].as_str() {
            Some("vector") => result.as_array().unwrap().clone(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
            other => panic!("{expr}: unexpected result type {other:?}"),
        };
        items
            .iter()
            .map(|item| Sample {
                labels: serde_json::from_value(item["metric"].clone()).unwrap(),
                value: item["value"][1].as_str().unwrap().parse().unwrap(),
            })
            .collect()
    }

    /// The series of the range query `expr` from `start` to `end` every `step` seconds, each
    /// with its (timestamp, value) points; panics if Prometheus refuses it.
    pub async fn query_range(
        &self,
        expr: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: i64,
    ) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
        let body = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start.timestamp().to_string()),
                    ("end", &end.timestamp().to_string()),
                    ("step", &step.to_string()),
                ],
            )
            .await;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let points = item["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|point| {
                        (
                            point[0].as_f64().unwrap() as i64,
                            point[1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect();
                (
                    serde_json::from_value(item["metric"].clone()).unwrap(),
                    points,
                )
            })
            .collect()
    }

    /// A GET of the HTTP API, as JSON.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
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

    /// The single value of `expr` at `at`, `None` if the result is empty.
    pub async fn value(&self, expr: &str, at: DateTime<Utc>) -> Option<f64> {
        let samples = self.query(expr, at).await;
        assert!(samples.len() <= 1, "{expr} at {at}: {samples:?}");
        samples.first().map(|sample| sample.value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exporter's binary serving `config` on a free port (with `args` before any subcommand),
/// ready; stopped when dropped.
pub struct ExporterProcess {
    child: Child,
    pub address: std::net::SocketAddr,
}

impl ExporterProcess {
    pub async fn start(config: &Path, args: &[&str]) -> ExporterProcess {
        let address = super::free_address();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"));
        if !args.iter().any(|arg| arg.starts_with("--storage.path")) {
            // Never the default ./data in the working directory.
            let storage = temp_dir(&format!("storage-{}", address.port()));
            command.arg(format!("--storage.path={}", storage.display()));
        }
        let child = command
            .arg("--config")
            .arg(config)
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let exporter = ExporterProcess { child, address };
        let started = Instant::now();
        loop {
            let ready = reqwest::get(format!("http://{address}/readyz"))
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return exporter;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the exporter ({args:?}) was not ready within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A scrape of `/metrics`.
    pub async fn scrape(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
