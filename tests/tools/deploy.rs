//! The deployment files, checked by the real tools: the Dockerfile by hadolint, the compose
//! stack by docker-compose, amtool and promtool, and the Helm chart by helm, kubernetes-validate
//! and promtool. Each also has to hold the bundled rules and dashboards, unchanged.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::prometheus::{promtool, temp_dir, Prometheus};
use common::tools::Binary;

const CHART: &str = "deploy/helm/wechat-miniprogram-exporter";
const COMPOSE: &str = "deploy/docker-compose";

/// Runs `program` with `args`; panics with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}; run scripts/install-tools"));
    let text = text(&output);
    assert!(output.status.success(), "{program} {args:?}:\n{text}");
    text
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every YAML document of `text`, as JSON (PyYAML, from the tools' venv).
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(".tools/venv/bin/python")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/install-tools");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn helm(args: &[&str]) -> String {
    run(".tools/helm/helm", args)
}

fn template(values: Option<&str>) -> Vec<Value> {
    let mut args = vec!["template", "wmpe", CHART, "--namespace", "monitoring"];
    if let Some(values) = values {
        args.extend(["-f", values]);
    }
    yaml_documents(&helm(&args))
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|doc| doc["kind"] == kind).collect()
}

fn bundled_dashboards() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("dashboards")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(path).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_a_non_root_image_on_the_default_port() {
    run(".tools/venv/bin/hadolint", &["Dockerfile"]);
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(
        froms[1].contains("distroless"),
        "no shell in the runtime image"
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(dockerfile.contains("\nEXPOSE 10050\n"));
    assert!(!dockerfile
        .lines()
        .any(|line| line.trim_start().starts_with("HEALTHCHECK")));
    // The build context holds what the build copies, and nothing else.
    let ignore = std::fs::read_to_string(".dockerignore").unwrap();
    for needed in ["!Cargo.toml", "!Cargo.lock", "!build.rs", "!src"] {
        assert!(ignore.lines().any(|line| line == needed), "{needed}");
    }
    assert!(ignore.lines().any(|line| line == "*"));
    // The image's version label is the crate's, as `--version` prints it (scripts/test-image
    // builds the image and checks the label against the binary inside).
    let label = format!(
        "org.opencontainers.image.version=\"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(dockerfile.contains(&label), "the Dockerfile has no {label}");
}

#[test]
fn the_compose_stack_is_valid_and_mounts_the_bundled_rules_and_dashboards() {
    let file = format!("{COMPOSE}/docker-compose.yml");
    run("docker-compose", &["-f", &file, "config", "-q"]);
    let config = run(
        "docker-compose",
        &["-f", &file, "--profile", "demo", "config"],
    );
    let config = &yaml_documents(&config)[0];
    let services = config["services"].as_object().unwrap();
    for service in [
        "exporter",
        "simulate",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services.contains_key(service), "{service}");
    }
    run(
        "amtool",
        &[
            "check-config",
            &format!("{COMPOSE}/alertmanager/alertmanager.yml"),
        ],
    );

    // Rebuild Prometheus's /etc/prometheus from the mounts, then let promtool check the config
    // and the rules it loads.
    let root = std::fs::canonicalize(".").unwrap();
    let etc = temp_dir("compose-prometheus");
    let mut mounted = Vec::new();
    for (source, target) in volumes(&services["prometheus"]) {
        let Some(inside) = target.strip_prefix("/etc/prometheus/") else {
            continue;
        };
        let source = PathBuf::from(source);
        let copy = etc.join(inside);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&source, &copy).unwrap();
        mounted.push(source.strip_prefix(&root).unwrap().to_path_buf());
    }
    assert!(
        mounted.contains(&PathBuf::from("deploy/prometheus/alerts.yml")),
        "{mounted:?}"
    );
    let checked = promtool(&[
        "check",
        "config",
        etc.join("prometheus.yml").to_str().unwrap(),
    ]);
    let found = format!("SUCCESS: {} rules found", bundled_rules());
    assert!(checked.contains(&found), "{checked}");

    // The exporter's state lives on a named volume.
    let exporter_volumes = volumes(&services["exporter"]);
    assert!(
        exporter_volumes
            .iter()
            .any(|(source, target)| source == "exporter-data"
                && target == "/var/lib/wechat-miniprogram-exporter"),
        "{exporter_volumes:?}"
    );

    let grafana_sources: Vec<String> = volumes(&services["grafana"])
        .into_iter()
        .map(|(source, _)| source)
        .collect();
    assert!(
        grafana_sources.contains(&root.join("dashboards").display().to_string()),
        "{grafana_sources:?}"
    );

    // The exporter's configuration of the stack is valid as shipped.
    let exporter = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
        .args([
            "--config",
            &format!("{COMPOSE}/exporter/config.toml"),
            "check-config",
        ])
        .output()
        .unwrap();
    assert!(exporter.status.success(), "{}", text(&exporter));
    assert!(text(&exporter).contains("3 Mini Program(s)"));
}

/// The secure overlay as documented: `web/generate` makes the files, the exporter serves
/// with the web configuration it wrote, and a real Prometheus, configured as the overlay
/// mounts it, scrapes the exporter over verified TLS with basic auth.
#[tokio::test]
async fn the_secure_compose_overlay_scrapes_the_exporter_over_tls_with_basic_auth() {
    let base = format!("{COMPOSE}/docker-compose.yml");
    let overlay = format!("{COMPOSE}/docker-compose.secure.yml");
    run(
        "docker-compose",
        &["-f", &base, "-f", &overlay, "config", "-q"],
    );
    let merged = run("docker-compose", &["-f", &base, "-f", &overlay, "config"]);
    let services = yaml_documents(&merged)[0]["services"].clone();
    let command: Vec<&str> = services["exporter"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(
        command.contains(&"--web.config.file=/etc/wechat-miniprogram-exporter/web/web-config.yml"),
        "{command:?}"
    );

    // The generated files, where the overlay mounts them from.
    let web = temp_dir("compose-web");
    run(&format!("{COMPOSE}/web/generate"), &[web.to_str().unwrap()]);
    let generated = |file: &str| web.join(file).display().to_string();
    let exporter = Binary::start(&[
        "demo",
        &format!("--web.config.file={}", generated("web-config.yml")),
    ]);

    // Prometheus's /etc/prometheus as the overlay mounts it, with the exporter's address.
    let root = std::fs::canonicalize(".").unwrap();
    let etc = temp_dir("compose-secure-prometheus");
    for (source, target) in volumes(&services["prometheus"]) {
        let Some(inside) = target.strip_prefix("/etc/prometheus/") else {
            continue;
        };
        let source = PathBuf::from(source);
        let source = match source.strip_prefix(root.join(COMPOSE).join("web")) {
            Ok(file) => web.join(file),
            Err(_) => source,
        };
        let copy = etc.join(inside);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&source, &copy).unwrap();
    }
    let checked = promtool(&[
        "check",
        "config",
        etc.join("prometheus.yml").to_str().unwrap(),
    ]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let config = std::fs::read_to_string(etc.join("prometheus.yml"))
        .unwrap()
        .replace("exporter:10050", &exporter.address.to_string())
        .replace("scrape_interval: 1m", "scrape_interval: 1s")
        .replace("web/", &format!("{}/web/", etc.display()));
    let prometheus = Prometheus::start(&temp_dir("compose-secure-tsdb"), &config).await;
    let started = std::time::Instant::now();
    loop {
        let up = prometheus
            .value("up{job=\"wechat-miniprogram\"}", prometheus.now().await)
            .await;
        if up == Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "Prometheus never scraped the exporter: up = {up:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let scraped = prometheus
        .value("wechat_miniprogram_exporter_apps", prometheus.now().await)
        .await;
    assert!(scraped.is_some(), "the exporter's own metrics are scraped");
}

/// (source, target) of every volume of a service, in docker-compose's long or short syntax.
fn volumes(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|volume| match volume.as_str() {
            Some(short) => {
                let mut parts = short.split(':');
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                )
            }
            None => (
                volume["source"].as_str().unwrap().to_string(),
                volume["target"].as_str().unwrap().to_string(),
            ),
        })
        .collect()
}

#[test]
fn the_chart_lints_and_renders_valid_manifests_for_every_values_file() {
    helm(&["lint", CHART]);
    let variants = [
        None,
        Some(format!("{CHART}/ci/existing-secret-values.yaml")),
        Some(format!("{CHART}/ci/sharded-values.yaml")),
        Some(format!("{CHART}/ci/monitoring-values.yaml")),
        Some(format!("{CHART}/ci/secure-values.yaml")),
        Some(format!("{CHART}/ci/persistence-values.yaml")),
        Some(format!("{CHART}/ci/persistence-single-values.yaml")),
    ];
    let dir = temp_dir("helm");
    for (n, values) in variants.iter().enumerate() {
        if let Some(values) = values {
            helm(&["lint", CHART, "-f", values]);
        }
        let documents = template(values.as_deref());
        // The core manifests pass the Kubernetes schemas, strictly.
        let core: Vec<String> = documents
            .iter()
            .filter(|doc| {
                !["ServiceMonitor", "PrometheusRule"].contains(&doc["kind"].as_str().unwrap())
            })
            .map(|doc| serde_json::to_string(doc).unwrap())
            .collect();
        let file = dir.join(format!("core-{n}.yaml"));
        std::fs::write(&file, core.join("\n---\n")).unwrap();
        let validated = run(
            ".tools/venv/bin/kubernetes-validate",
            &["--strict", file.to_str().unwrap()],
        );
        assert!(!validated.contains("ERROR"), "{validated}");

        // Secure by default: non-root, read-only root filesystem, probes on /healthz and /readyz.
        let workloads: Vec<&Value> = documents
            .iter()
            .filter(|doc| ["Deployment", "StatefulSet"].contains(&doc["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(workloads.len(), 1);
        let pod = &workloads[0]["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        // The state has its directory, writable under the read-only root filesystem.
        let args = container["args"].to_string();
        assert!(
            args.contains("--storage.path=/var/lib/wechat-miniprogram-exporter"),
            "{args}"
        );
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|mount| mount["name"] == "data"
            && mount["mountPath"] == "/var/lib/wechat-miniprogram-exporter"));
        // Behind basic auth, readiness is asked of /healthz: kubelet cannot authenticate.
        let secure = values
            .as_deref()
            .is_some_and(|v| v.ends_with("secure-values.yaml"));
        let readiness = if secure { "/healthz" } else { "/readyz" };
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], readiness);

        // The rendered exporter configuration is valid for the exporter itself.
        let config = of_kind(&documents, "ConfigMap")
            .into_iter()
            .find_map(|map| map["data"]["config.toml"].as_str())
            .unwrap();
        // With the app secrets where the pod mounts them: one file per app, named after it.
        let secrets = dir.join(format!("secrets-{n}"));
        std::fs::create_dir_all(&secrets).unwrap();
        for line in config.lines() {
            if let Some(name) = line
                .strip_prefix("[apps.")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                std::fs::write(secrets.join(name), "0123456789abcdef").unwrap();
            }
        }
        let config = config.replace(
            "/etc/wechat-miniprogram-exporter/secrets/",
            &format!("{}/", secrets.display()),
        );
        let path = dir.join(format!("config-{n}.toml"));
        std::fs::write(&path, &config).unwrap();
        let checked = Command::new(env!("CARGO_BIN_EXE_wechat-miniprogram-exporter"))
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        // Without apps (the default values) the exporter refuses to start, and says so.
        if values.is_some() {
            assert!(checked.status.success(), "{config}\n{}", text(&checked));
        } else {
            assert!(text(&checked).contains("apps"), "{}", text(&checked));
        }
    }
}

#[test]
fn tls_and_basic_auth_come_from_a_secret_and_the_probes_and_service_monitor_follow() {
    let documents = template(Some(&format!("{CHART}/ci/secure-values.yaml")));
    let deployment = of_kind(&documents, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--web.config.file=/etc/wechat-miniprogram-exporter/web/web-config.yml"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--web.telemetry-path=/wechat/metrics"),
        "{args:?}"
    );
    let web = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == "web")
        .expect("the web configuration's volume");
    assert_eq!(web["secret"]["secretName"], "wme-web");
    let mounted = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|mount| {
            mount["name"] == "web" && mount["mountPath"] == "/etc/wechat-miniprogram-exporter/web"
        });
    assert!(mounted);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    let monitor = of_kind(&documents, "ServiceMonitor")[0];
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["path"], "/wechat/metrics");
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"], "wme-web");
    assert_eq!(endpoint["basicAuth"]["password"]["key"], "password");

    // Without a web configuration: plain HTTP, whatever `tls` says, and /readyz.
    let plain = template(Some(&format!("{CHART}/ci/monitoring-values.yaml")));
    let container = &of_kind(&plain, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert!(container["readinessProbe"]["httpGet"]["scheme"].is_null());
    let endpoint = &of_kind(&plain, "ServiceMonitor")[0]["spec"]["endpoints"][0];
    assert!(endpoint["scheme"].is_null() && endpoint["basicAuth"].is_null());
    assert_eq!(endpoint["path"], "/metrics");
}

#[test]
fn the_state_is_kept_on_an_empty_dir_by_default_and_on_claims_with_persistence() {
    let volume = |documents: &[Value], kind: &str| -> Option<Value> {
        let workload = of_kind(documents, kind)[0];
        let volumes = workload["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        volumes
            .iter()
            .find(|volume| volume["name"] == "data")
            .cloned()
    };
    let default = template(None);
    assert_eq!(
        volume(&default, "Deployment").unwrap()["emptyDir"],
        serde_json::json!({})
    );
    assert!(of_kind(&default, "PersistentVolumeClaim").is_empty());

    let single = template(Some(&format!("{CHART}/ci/persistence-single-values.yaml")));
    let claim = of_kind(&single, "PersistentVolumeClaim")[0];
    let name = claim["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        volume(&single, "Deployment").unwrap()["persistentVolumeClaim"]["claimName"],
        name
    );
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");

    let sharded = template(Some(&format!("{CHART}/ci/persistence-values.yaml")));
    assert!(of_kind(&sharded, "PersistentVolumeClaim").is_empty());
    assert!(
        volume(&sharded, "StatefulSet").is_none(),
        "one claim per pod instead"
    );
    let set = of_kind(&sharded, "StatefulSet")[0];
    let claims = &set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claims["metadata"]["name"], "data");
    assert_eq!(claims["spec"]["storageClassName"], "standard");
    assert_eq!(claims["spec"]["resources"]["requests"]["storage"], "2Gi");
}

#[test]
fn a_sharded_release_is_a_statefulset_taking_its_shard_from_the_pod_ordinal() {
    let documents = template(Some(&format!("{CHART}/ci/sharded-values.yaml")));
    assert!(of_kind(&documents, "Deployment").is_empty());
    let set = of_kind(&documents, "StatefulSet")[0];
    assert_eq!(set["spec"]["replicas"], 3);
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--shard=$(SHARD)") && args.contains(&"--total-shards=3"),
        "{args:?}"
    );
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    // The Service selects every pod: Prometheus scrapes every shard.
    let services = of_kind(&documents, "Service");
    assert_eq!(services.len(), 2);
    assert_eq!(
        services[0]["spec"]["selector"],
        set["spec"]["selector"]["matchLabels"]
    );
    let default = template(None);
    assert_eq!(of_kind(&default, "Deployment")[0]["spec"]["replicas"], 1);
}

#[test]
fn the_chart_ships_the_bundled_rules_and_dashboards_unchanged() {
    // The chart's copies are the bundled files (helm cannot read outside the chart).
    assert_eq!(
        std::fs::read_to_string(format!("{CHART}/files/alerts.yml")).unwrap(),
        std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap(),
        "copy deploy/prometheus/alerts.yml to {CHART}/files/"
    );
    let documents = template(Some(&format!("{CHART}/ci/monitoring-values.yaml")));

    // The PrometheusRule holds rules promtool accepts, the same as the bundled file's.
    let rule = of_kind(&documents, "PrometheusRule")[0];
    let dir = temp_dir("helm-rules");
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    let checked = promtool(&["check", "rules", rules.to_str().unwrap()]);
    let found = format!("SUCCESS: {} rules found", bundled_rules());
    assert!(checked.contains(&found), "{checked}");
    let bundled =
        &yaml_documents(&std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap())[0];
    assert_eq!(&rule["spec"], bundled);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &of_kind(&documents, "ServiceMonitor")[0]["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    // The job the mixin's default selector (job=~"wechat-miniprogram|") reads, as compose's.
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "job");
    assert_eq!(
        endpoint["relabelings"][0]["replacement"],
        "wechat-miniprogram"
    );

    // The dashboards' ConfigMap holds every bundled dashboard, byte for byte.
    let maps = of_kind(&documents, "ConfigMap");
    let dashboards = maps
        .iter()
        .find(|map| map["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap();
    let data = dashboards["data"].as_object().unwrap();
    let bundled = bundled_dashboards();
    assert_eq!(data.len(), bundled.len());
    for (name, content) in bundled {
        assert_eq!(data[&name].as_str(), Some(content.as_str()), "{name}");
        assert_eq!(
            std::fs::read_to_string(Path::new(CHART).join("files/dashboards").join(&name)).unwrap(),
            content,
            "copy dashboards/{name} to {CHART}/files/dashboards/"
        );
    }
}

/// How many rules `deploy/prometheus/alerts.yml` holds.
fn bundled_rules() -> usize {
    std::fs::read_to_string("deploy/prometheus/alerts.yml")
        .unwrap()
        .matches("- alert: ")
        .count()
}
