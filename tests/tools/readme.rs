//! The Chinese README (`README.zh-CN.md`) against the English one: linked both ways, and
//! naming every metric, configuration key and flag the English one names, so that neither
//! falls behind the other unnoticed.

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Every word of `text` that starts with `prefix` and goes on with `[a-z0-9_]`, at a word start.
fn words_starting(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        found.insert(rest[..end].to_string());
    }
    found
}

/// The metric names of a README: the exporter's families and the process metrics.
fn metrics(text: &str) -> BTreeSet<String> {
    let mut names = words_starting(text, "wechat_miniprogram_");
    names.extend(words_starting(text, "process_"));
    names
}

/// The flags of a README: `--name`, `--web.name`, `--dry-run`, after a space, a backtick, a
/// bracket or a line start.
fn flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let before = text[..at].chars().next_back();
        if !before.is_none_or(|c| " `[(\n".contains(c)) {
            continue;
        }
        let rest = &text[at + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        let name = rest[..end].trim_end_matches(['.', '-']);
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(format!("--{name}"));
        }
    }
    found
}

/// The keys of the configuration table: the first column of the rows under "## Configuration".
fn configuration_keys(text: &str) -> BTreeSet<String> {
    let section = text.split("\n## Configuration\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .map(String::from)
        .collect()
}

#[test]
fn the_readmes_link_to_each_other_at_their_top() {
    let english = read("README.md");
    let chinese = read("README.zh-CN.md");
    let top = |text: &str| text.lines().take(5).collect::<Vec<_>>().join("\n");
    assert!(top(&english).contains("](README.zh-CN.md)"), "README.md");
    assert!(top(&chinese).contains("](README.md)"), "README.zh-CN.md");
}

#[test]
fn the_chinese_readme_names_every_metric_configuration_key_and_flag_of_the_english_one() {
    let english = read("README.md");
    let chinese = read("README.zh-CN.md");
    let keys = configuration_keys(&english);
    assert!(keys.len() >= 25, "{keys:?}");
    let names = metrics(&english);
    assert!(names.len() >= 60, "{names:?}");
    let english_flags = flags(&english);
    assert!(
        english_flags.contains("--web.listen-address"),
        "{english_flags:?}"
    );
    let (chinese_metrics, chinese_flags) = (metrics(&chinese), flags(&chinese));
    let missing_metrics: Vec<&String> = names.difference(&chinese_metrics).collect();
    let missing_flags: Vec<&String> = english_flags.difference(&chinese_flags).collect();
    let missing_keys: Vec<&String> = keys
        .iter()
        .filter(|key| !chinese.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing_metrics.is_empty() && missing_flags.is_empty() && missing_keys.is_empty(),
        "README.zh-CN.md lacks metrics {missing_metrics:?}, flags {missing_flags:?}, \
         configuration keys {missing_keys:?}"
    );
}

#[test]
fn the_chinese_readme_has_every_section_a_user_needs() {
    let chinese = read("README.zh-CN.md");
    for heading in [
        "## 快速开始",
        "## 配置",
        "## 指标",
        "## 状态、重新加载与发现",
        "## TLS 与 basic auth",
        "## 导入历史数据",
        "## 看板",
        "## 告警",
        "## 监控 mixin",
        "## VictoriaMetrics",
        "## Docker",
        "## Helm",
        "## 故障排查：按 errcode",
    ] {
        assert!(chinese.contains(&format!("\n{heading}\n")), "no {heading}");
    }
    // Every alert has its runbook section, as in the English README.
    for alert in words_starting(&read("README.md"), "WeChatMiniProgram") {
        assert!(
            chinese.contains(&format!("\n### {alert}\n")),
            "no section {alert}"
        );
    }
}
