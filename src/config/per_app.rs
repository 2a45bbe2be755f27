//! What one app sets of its own: `[apps.NAME.reports]` over `[reports]` (checked as
//! `[reports]` is, under the app's key) and `[apps.NAME.labels]`, the labels of
//! `wechat_miniprogram_app_info`.

use std::collections::BTreeMap;

use crate::report::Overrides as ReportOverrides;

use super::*;

/// The longest value of an app's own label.
pub const MAX_LABEL_VALUE: usize = 256;

/// The most labels an app may have of its own.
pub const MAX_LABELS: usize = 32;

/// Label names the exporter's own families use: an app's labels may not take them, so that
/// a join on `wechat_miniprogram_app_info` never shadows one.
pub const RESERVED_LABELS: &[&str] = &[
    "app",
    "appid",
    "bucket",
    "cohort",
    "dimension",
    "endpoint",
    "errcode",
    "holiday",
    "error_id",
    "error_type",
    "indicator",
    "instance",
    "job",
    "key",
    "kind",
    "lag",
    "le",
    "message",
    "module",
    "name",
    "outcome",
    "page",
    "period",
    "phase",
    "quantile",
    "range",
    "reason",
    "report",
    "shard",
    "source",
    "status",
    "total_shards",
    "version",
    "year",
];

/// `raw` (the app's `reports` table, under `key`) as overrides: each key it sets, checked
/// with the same bounds as in `[reports]`.
pub(super) fn report_overrides(
    raw: &RawReportOverrides,
    key: &str,
    problems: &mut Problems,
) -> ReportOverrides {
    let defaults = RawConfig::default().reports;
    let merged = RawReports {
        enabled: raw.enabled.clone().unwrap_or(defaults.enabled),
        pages_top: raw.pages_top.unwrap_or(defaults.pages_top),
        portrait_top: raw.portrait_top.unwrap_or(defaults.portrait_top),
        portrait_ranges: raw
            .portrait_ranges
            .clone()
            .unwrap_or(defaults.portrait_ranges),
        js_errors_top: raw.js_errors_top.unwrap_or(defaults.js_errors_top),
        quota_interval: raw
            .quota_interval
            .clone()
            .unwrap_or(defaults.quota_interval),
    };
    let settings = merged.validate_at(key, problems);
    ReportOverrides {
        enabled: raw.enabled.as_ref().map(|_| settings.enabled),
        pages_top: raw.pages_top.map(|_| settings.pages_top),
        portrait_top: raw.portrait_top.map(|_| settings.portrait_top),
        portrait_ranges: raw
            .portrait_ranges
            .as_ref()
            .map(|_| settings.portrait_ranges.clone()),
        js_errors_top: raw.js_errors_top.map(|_| settings.js_errors_top),
        quota_interval: raw.quota_interval.as_ref().map(|_| settings.quota_interval),
    }
}

/// The app's labels (`raw`, under `key`), sorted by name: Prometheus label names that none
/// of the exporter's families uses, values of at most [`MAX_LABEL_VALUE`] characters.
pub(super) fn labels(
    raw: &BTreeMap<String, String>,
    key: &str,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    if raw.len() > MAX_LABELS {
        problems.add(
            key,
            format!("{} labels; an app has at most {MAX_LABELS}", raw.len()),
        );
        return Vec::new();
    }
    let mut labels = Vec::new();
    for (name, value) in raw {
        let shown = bounded_name(name);
        let at = format!("{key}.{shown}");
        if !is_label_name(name) {
            problems.add(&at, format!("{shown:?} is not a Prometheus label name (letters, digits and '_', not starting with a digit)"));
        } else if name.starts_with("__") {
            problems.add(&at, "names starting with \"__\" are reserved to Prometheus");
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            problems.add(&at, format!("{name:?} is a label of the exporter's own series; choose another name (e.g. \"team\", \"brand\", \"owner\")"));
        } else if value.chars().count() > MAX_LABEL_VALUE {
            problems.add(
                &at,
                format!("the value is longer than {MAX_LABEL_VALUE} characters"),
            );
        } else {
            labels.push((name.clone(), value.clone()));
        }
    }
    labels
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
