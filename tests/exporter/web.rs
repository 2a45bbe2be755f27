//! The exporter as the official exporters are served, tried with real clients: `curl` over
//! TLS with the right and a wrong CA, client certificates made by `openssl`, basic auth with a
//! hash made by `htpasswd -nbBC 10`, configured headers, certificates rotated under a
//! running exporter, the telemetry path and the exporter-metrics flags.

use crate::common;

use std::path::Path;

use common::prometheus::{check_metrics, temp_dir};
use common::tools::{curl, htpasswd, Binary, Pki};
use common::{spawn_simulation, two_apps};

/// A configuration file for the simulated apps.
async fn config(dir: &Path) -> String {
    let apps = two_apps();
    let (_sim, api) = spawn_simulation(apps.clone()).await;
    // The simulation keeps serving: its task lives on the test's runtime.
    std::mem::forget(_sim);
    let path = dir.join("config.toml");
    std::fs::write(&path, common::config_toml(&apps, api, "")).unwrap();
    path.display().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_to_clients_that_trust_the_ca_and_certificates_rotate_live() {
    let dir = temp_dir("web-tls");
    let pki = Pki::new(&dir, "ca");
    pki.sign("ca", "server", true);
    let other = Pki::new(&dir, "other-ca");
    let web = write(
        &dir,
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
         http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n",
    );
    let config = config(&dir).await;
    let exporter = Binary::start(&["--config", &config, "--web.config.file", &web]);

    let fetched = curl(&[
        "--cacert",
        &pki.path("ca.crt"),
        &exporter.url("https", "/metrics"),
    ]);
    assert_eq!((fetched.code, fetched.status), (0, 200), "{}", fetched.body);
    assert!(fetched
        .body
        .contains("wechat_miniprogram_exporter_build_info"));
    assert!(
        fetched
            .headers
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{}",
        fetched.headers
    );
    // A client that trusts another CA refuses the certificate (curl: 60).
    let refused = curl(&[
        "--cacert",
        &other.path("other-ca.crt"),
        &exporter.url("https", "/metrics"),
    ]);
    assert_eq!(refused.code, 60, "{}", refused.headers);
    // Plain HTTP on the TLS port gets nothing.
    assert_ne!(curl(&[&exporter.url("http", "/metrics")]).status, 200);

    // The certificate is replaced by one of the other CA: within the second the files are
    // checked in, new connections have it.
    other.sign("other-ca", "server", true);
    let started = std::time::Instant::now();
    let rotated = loop {
        let rotated = curl(&[
            "--cacert",
            &other.path("other-ca.crt"),
            &exporter.url("https", "/healthz"),
        ]);
        if rotated.code == 0 || started.elapsed() > std::time::Duration::from_secs(5) {
            break rotated;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        (rotated.code, rotated.status),
        (0, 200),
        "{}",
        rotated.headers
    );
    let old = curl(&[
        "--cacert",
        &pki.path("ca.crt"),
        &exporter.url("https", "/healthz"),
    ]);
    assert_eq!(old.code, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_an_htpasswd_hash_guards_everything_but_healthz() {
    let dir = temp_dir("web-auth");
    let hash = htpasswd("prometheus", "s3cret-pass");
    let web = write(
        &dir,
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let config = config(&dir).await;
    let exporter = Binary::start(&["--config", &config, "--web.config.file", &web]);

    for path in ["/metrics", "/", "/readyz", "/apps/shop"] {
        let anonymous = curl(&[&exporter.url("http", path)]);
        assert_eq!(anonymous.status, 401, "{path}");
        assert!(
            anonymous.headers.contains("WWW-Authenticate")
                || anonymous.headers.contains("www-authenticate"),
            "{}",
            anonymous.headers
        );
        let wrong = curl(&["-u", "prometheus:wrong", &exporter.url("http", path)]);
        assert_eq!(wrong.status, 401, "{path}");
        let unknown = curl(&["-u", "nobody:s3cret-pass", &exporter.url("http", path)]);
        assert_eq!(unknown.status, 401, "{path}");
    }
    let metrics = curl(&[
        "-u",
        "prometheus:s3cret-pass",
        &exporter.url("http", "/metrics"),
    ]);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("wechat_miniprogram_up"));
    // Twice: the second is answered from the cache of verified credentials.
    assert_eq!(
        curl(&[
            "-u",
            "prometheus:s3cret-pass",
            &exporter.url("http", "/metrics")
        ])
        .status,
        200
    );
    assert_eq!(
        curl(&[&exporter.url("http", "/healthz")]).status,
        200,
        "health needs no credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_of_the_client_ca() {
    let dir = temp_dir("web-mtls");
    let pki = Pki::new(&dir, "ca");
    pki.sign("ca", "server", true);
    pki.sign("ca", "scraper", false);
    let stranger = Pki::new(&dir, "stranger-ca");
    stranger.sign("stranger-ca", "intruder", false);
    let web = write(
        &dir,
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let config = config(&dir).await;
    let exporter = Binary::start(&["--config", &config, "--web.config.file", &web]);
    let url = exporter.url("https", "/metrics");
    let ca = pki.path("ca.crt");

    let with = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &pki.path("scraper.crt"),
        "--key",
        &pki.path("scraper.key"),
        &url,
    ]);
    assert_eq!((with.code, with.status), (0, 200), "{}", with.headers);
    let without = curl(&["--cacert", &ca, &url]);
    assert_ne!(without.status, 200, "no client certificate");
    let intruder = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &stranger.path("intruder.crt"),
        "--key",
        &stranger.path("intruder.key"),
        &url,
    ]);
    assert_ne!(intruder.status, 200, "a certificate of another CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_web_config_is_refused_at_start_and_a_bad_change_keeps_the_running_one() {
    let dir = temp_dir("web-bad");
    let config = config(&dir).await;
    for (yaml, says) in [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
            "not supported",
        ),
        (
            "basic_auth_users:\n  prometheus: plaintext\n",
            "not a bcrypt hash",
        ),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/html\n",
            "only Strict-Transport-Security",
        ),
        ("tls_config:\n  cert_file: a\n", "unknown field"),
    ] {
        let web = write(&dir, "web.yml", yaml);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args([
                "--config",
                &config,
                "--web.config.file",
                &web,
                "--web.listen-address=127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(
            stderr.contains("--web.config.file") && stderr.contains(says),
            "{yaml}: {stderr}"
        );
    }

    let hash = htpasswd("prometheus", "pass");
    let web = write(
        &dir,
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let exporter = Binary::start(&["--config", &config, "--web.config.file", &web]);
    assert_eq!(
        curl(&["-u", "prometheus:pass", &exporter.url("http", "/metrics")]).status,
        200
    );
    // A change that does not load: the running configuration stays.
    std::fs::write(&web, "basic_auth_users: [not, a, map]\n").unwrap();
    assert_eq!(
        curl(&["-u", "prometheus:pass", &exporter.url("http", "/metrics")]).status,
        200
    );
    assert_eq!(curl(&[&exporter.url("http", "/metrics")]).status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_path_process_metrics_and_exporter_metrics_flags() {
    let dir = temp_dir("web-flags");
    let config = config(&dir).await;
    let exporter = Binary::start(&[
        "--config",
        &config,
        "--web.telemetry-path",
        "/wechat/metrics",
    ]);
    assert_eq!(curl(&[&exporter.url("http", "/metrics")]).status, 404);
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = curl(&[&exporter.url("http", "/wechat/metrics")]).body;
        if metrics.contains("wechat_miniprogram_visit_uv") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "wechat_miniprogram_api_requests_total",
        "wechat_miniprogram_visit_uv",
    ] {
        assert!(metrics.contains(&format!("\n{family}")), "{family}");
    }
    check_metrics(&metrics);
    let gzipped = curl(&["--compressed", &exporter.url("http", "/wechat/metrics")]);
    assert!(gzipped.headers.contains("gzip"), "{}", gzipped.headers);
    assert!(gzipped.body.contains("process_resident_memory_bytes"));
    let refused = curl(&[
        "-H",
        "Accept-Encoding: gzip;q=0",
        &exporter.url("http", "/wechat/metrics"),
    ]);
    assert!(
        !refused
            .headers
            .to_ascii_lowercase()
            .contains("content-encoding"),
        "{}",
        refused.headers
    );
    drop(exporter);

    let exporter = Binary::start(&["--config", &config, "--web.disable-exporter-metrics"]);
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = curl(&[&exporter.url("http", "/metrics")]).body;
        if metrics.contains("wechat_miniprogram_visit_uv") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        metrics.contains("wechat_miniprogram_visit_uv"),
        "the analytics stay"
    );
    assert!(metrics.contains("wechat_miniprogram_up{"), "up stays");
    assert!(
        metrics.contains("wechat_miniprogram_exporter_build_info"),
        "the build info stays"
    );
    for family in [
        "process_",
        "wechat_miniprogram_api_requests_total",
        "wechat_miniprogram_token_fetches_total",
    ] {
        assert!(!metrics.contains(family), "{family} is left out");
    }
}
