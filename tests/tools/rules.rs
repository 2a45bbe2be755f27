//! The bundled alert rules, checked and unit-tested by the real `promtool`: every alert firing
//! and not firing, in `deploy/prometheus/alerts.test.yml`.

use crate::common;

use common::prometheus::promtool;

#[test]
fn the_alert_rules_are_valid() {
    let output = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(output.contains("SUCCESS: 11 rules found"), "{output}");
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    let output = promtool(&["test", "rules", "deploy/prometheus/alerts.test.yml"]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() {
    let rules = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    let file: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    let alerts = file["groups"][0]["rules"].as_sequence().unwrap();
    assert_eq!(alerts.len(), 11);
    for rule in alerts {
        let alert = rule["alert"].as_str().unwrap();
        for key in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][key].is_string(), "{alert} has no {key}");
        }
        assert!(
            rule["labels"]["severity"].is_string(),
            "{alert} has no severity"
        );
        let text = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = format!("README.md#{}", alert.to_lowercase());
        assert!(text.contains(&anchor), "{alert} points at {anchor}");
        assert!(
            readme.contains(&format!("### {alert}\n")),
            "the README has no section {alert}"
        );
    }
}
