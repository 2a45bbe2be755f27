//! The monitoring mixin (`mixin/`), rendered by the real `jsonnet`: the committed alerts and
//! dashboards are what it renders, and its `_config` reaches every alert and every query.

use std::process::Command;

use serde_json::Value;

/// `jsonnet` evaluating `expr` with `mixin/` on the library path, as JSON.
fn jsonnet(expr: &str) -> Value {
    let output = Command::new("jsonnet")
        .args(["-J", "mixin", "-e", expr])
        .output()
        .expect("jsonnet (scripts/install-tools installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The mixin with `config` merged into its `_config`.
fn mixin(config: &str) -> String {
    format!("(import 'mixin/mixin.libsonnet') + {{ _config+:: {{ {config} }} }}")
}

/// (alert, expr) of every alert the mixin renders with `config`.
fn alert_expressions(config: &str) -> Vec<(String, String)> {
    let alerts = jsonnet(&format!("({}).prometheusAlerts", mixin(config)));
    alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .map(|rule| {
            (
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every query string of a dashboard: targets' exprs and variables' queries.
fn dashboard_queries(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(text) if key == "expr" => found.push(text.clone()),
                    Value::String(text) if key == "query" && text.contains("label_values") => {
                        found.push(text.clone())
                    }
                    _ => dashboard_queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_queries(item, found)),
        _ => {}
    }
}

#[test]
fn the_committed_alerts_and_dashboards_are_what_the_mixin_renders() {
    let output = Command::new("scripts/mixin")
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn another_selector_reaches_every_alert_expression_and_every_dashboard_query() {
    let selector = "wechatMiniProgramSelector: 'cluster=\"cn-east\", job=\"wmp\"'";
    let default = alert_expressions("");
    let other = alert_expressions(selector);
    assert_eq!(default.len(), 11);
    assert_eq!(default.len(), other.len());
    for ((name, before), (_, after)) in default.iter().zip(&other) {
        assert_ne!(before, after, "{name} ignores the selector");
        assert!(after.contains("cluster=\"cn-east\", job=\"wmp\""), "{name}");
        assert!(!after.contains("wechat-miniprogram|"), "{name}: {after}");
        // Every series the expression reads is selected.
        let names = after.matches("wechat_miniprogram_").count();
        assert_eq!(
            after.matches("job=\"wmp\"").count(),
            names,
            "{name}: {after}"
        );
    }
    let dashboards = jsonnet(&format!("({}).grafanaDashboards", mixin(selector)));
    let dashboards = dashboards.as_object().unwrap();
    assert_eq!(dashboards.len(), 7);
    for (file, dashboard) in dashboards {
        let mut queries = Vec::new();
        dashboard_queries(dashboard, &mut queries);
        assert!(!queries.is_empty(), "{file}");
        for query in queries {
            let names =
                query.matches("wechat_miniprogram_").count() + query.matches("process_").count();
            assert!(names > 0, "{file}: {query} reads no series of the exporter");
            assert_eq!(
                query.matches("job=\"wmp\"").count(),
                names,
                "{file}: {query}"
            );
        }
    }
}

#[test]
fn the_thresholds_durations_tags_prefix_and_runbooks_come_from_the_config() {
    let config = "visitUVDropThreshold: 0.5, visitUVDropFor: '1h', exporterDownFor: '2h', \
        dashboardTags: ['mp', 'wechat'], dashboardNamePrefix: 'MP - ', \
        runbookURLPattern: 'https://wiki.example.cn/runbooks/%s'";
    let alerts = jsonnet(&format!("({}).prometheusAlerts", mixin(config)));
    let rules = alerts["groups"][0]["rules"].as_array().unwrap();
    let rule = |name: &str| {
        rules
            .iter()
            .find(|rule| rule["alert"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let drop = rule("WeChatMiniProgramVisitUVDrop");
    assert_eq!(
        drop["expr"].as_str().unwrap().matches(") > 0.5  #").count(),
        3
    );
    assert_eq!(drop["for"], "1h");
    let down = rule("WeChatMiniProgramExporterDown");
    assert_eq!(down["for"], "2h");
    assert!(down["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains("has failed for 2 hours."));
    assert_eq!(
        down["annotations"]["runbook_url"],
        "https://wiki.example.cn/runbooks/wechatminiprogramexporterdown"
    );
    let dashboards = jsonnet(&format!("({}).grafanaDashboards", mixin(config)));
    let overview = &dashboards["overview.json"];
    assert_eq!(overview["title"], "MP - Overview");
    assert_eq!(overview["tags"], serde_json::json!(["mp", "wechat"]));
    assert_eq!(
        overview["links"][0]["tags"],
        serde_json::json!(["mp", "wechat"])
    );
}
