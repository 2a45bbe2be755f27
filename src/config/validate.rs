//! Turning the tables as written into typed settings: the whole configuration, polling,
//! discovery and reports.

use std::path::PathBuf;
use std::time::Duration;

use crate::calendar::Calendar;
use crate::domain::{Polling, Shard};
use crate::report::{Report, ReportSet, Settings as ReportSettings};

use super::*;

impl RawConfig {
    pub(super) fn validate(self, shard: Shard) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let listen_address = problems.listen_address(&self.listen_address);
        let api_base_url = problems.api_base_url(&self.api_base_url);
        let polling = self.polling.validate(&mut problems);
        let reports = self.reports.validate(&mut problems);
        let discovery = self.discovery.validate(&mut problems);
        let calendar = self.calendar.validate(&mut problems);
        if self.apps.is_empty() && !discovery.is_configured() {
            problems.add(
                "apps",
                format!("no Mini Program is configured; add an [apps.NAME] table with appid and secret_file (see config/example.toml), set {ENV_PREFIX}APPS__NAME__APPID and {ENV_PREFIX}APPS__NAME__SECRET, or list apps with [discovery]"),
            );
        }
        let Listed {
            mut apps,
            reports: app_reports,
        } = validate_apps(self.apps, &mut problems);
        if !problems.0.is_empty() {
            return Err(ConfigError {
                problems: problems.0,
            });
        }
        apps.retain(|app| shard.owns(&app.appid));
        Ok(Config {
            listen_address,
            api_base_url,
            polling,
            reports,
            apps,
            app_reports,
            calendar,
            shard,
            web: Web::default(),
            discovery,
            storage: None,
        })
    }
}

impl RawCalendar {
    /// The built-in calendar, with the days of `calendar.file` over it.
    pub(super) fn validate(&self, problems: &mut Problems) -> std::sync::Arc<Calendar> {
        let file = self.file.trim();
        if file.is_empty() {
            return std::sync::Arc::new(Calendar::default());
        }
        let text = match std::fs::metadata(file) {
            Ok(metadata) if metadata.len() > 4 << 20 => Err("is larger than 4 MiB".to_string()),
            Ok(_) => std::fs::read_to_string(file)
                .map_err(|error| format!("cannot read {file}: {error}")),
            Err(error) => Err(format!("cannot read {file}: {error}")),
        };
        let calendar = text.and_then(|text| {
            Calendar::with_file(&text).map_err(|found| format!("{file}: {}", found.join("; ")))
        });
        match calendar {
            Ok(calendar) => std::sync::Arc::new(calendar),
            Err(problem) => {
                problems.add("calendar.file", problem);
                std::sync::Arc::new(Calendar::default())
            }
        }
    }
}

impl RawPolling {
    pub(super) fn validate(&self, problems: &mut Problems) -> Polling {
        let hour = 60 * MINUTE;
        let polling = Polling {
            not_ready_retry: problems.duration_in(
                "polling.not_ready_retry",
                &self.not_ready_retry,
                MINUTE,
                DAY,
            ),
            error_backoff_initial: problems.duration_in(
                "polling.error_backoff_initial",
                &self.error_backoff_initial,
                SECOND / 10,
                hour,
            ),
            error_backoff_max: problems.duration_in(
                "polling.error_backoff_max",
                &self.error_backoff_max,
                SECOND,
                DAY,
            ),
            concurrency: usize::try_from(self.concurrency.clamp(0, MAX_CONCURRENCY)).unwrap_or(0),
            request_timeout: problems.duration_in(
                "polling.request_timeout",
                &self.request_timeout,
                SECOND,
                10 * MINUTE,
            ),
            first_attempt: time_of_day(&self.first_attempt).unwrap_or_else(|| {
                problems.add(
                    "polling.first_attempt",
                    format!(
                        "{:?} is not a time of day; write HH:MM (Beijing time), e.g. \"06:00\"",
                        self.first_attempt
                    ),
                );
                Duration::ZERO
            }),
        };
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.add(
                "polling.concurrency",
                format!(
                    "{} must be between 1 and {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            );
        }
        if polling.error_backoff_initial > polling.error_backoff_max {
            problems.add(
                "polling.error_backoff_initial",
                "must not be longer than polling.error_backoff_max",
            );
        }
        polling
    }
}

impl RawDiscovery {
    pub(super) fn validate(&self, problems: &mut Problems) -> Discovery {
        let url = self.url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            problems.add("discovery.url", format!("{url:?} is not an http(s) URL"));
        }
        for file in &self.files {
            let (dir, name) = file.rsplit_once('/').unwrap_or((".", file));
            if file.trim().is_empty() || dir.contains(['*', '?', '[']) || name.is_empty() {
                problems.add(
                    "discovery.files",
                    format!("{file:?} is not a file path; `*`, `?` and `[...]` may match only in the file name, e.g. \"/etc/apps/*.yaml\""),
                );
            }
        }
        let token = self.bearer_token_file.trim();
        if !token.is_empty() && url.is_empty() {
            problems.add(
                "discovery.bearer_token_file",
                "is only used with discovery.url; set it or remove this",
            );
        }
        Discovery {
            files: self.files.clone(),
            url: (!url.is_empty()).then(|| url.to_string()),
            bearer_token_file: (!token.is_empty()).then(|| PathBuf::from(token)),
            refresh_interval: problems.duration_in(
                "discovery.refresh_interval",
                &self.refresh_interval,
                10 * SECOND,
                DAY,
            ),
        }
    }
}

impl RawReports {
    pub(super) fn validate(&self, problems: &mut Problems) -> ReportSettings {
        self.validate_at("reports", problems)
    }

    /// As [`RawReports::validate`], each problem under `prefix` (`apps.NAME.reports` for an
    /// app's own table).
    pub(super) fn validate_at(&self, prefix: &str, problems: &mut Problems) -> ReportSettings {
        let mut count =
            |key: &str, value: i64, range: std::ops::RangeInclusive<usize>, why: &str| {
                let count = usize::try_from(value).unwrap_or(0);
                if !range.contains(&count) {
                    let (low, high) = (range.start(), range.end());
                    problems.add(
                        key,
                        format!("{value} must be between {low} and {high}{why}"),
                    );
                }
                count
            };
        let key = |name: &str| format!("{prefix}.{name}");
        let pages_top = count(
            &key("pages_top"),
            self.pages_top,
            1..=200,
            " (WeChat answers the top 200 pages)",
        );
        let portrait_top = count(&key("portrait_top"), self.portrait_top, 1..=500, "");
        let js_errors_top = count(
            &key("js_errors_top"),
            self.js_errors_top,
            1..=100,
            " (WeChat answers 30 groups per call)",
        );
        ReportSettings {
            enabled: self.enabled(&key("enabled"), problems),
            pages_top,
            portrait_top,
            portrait_ranges: self.portrait_ranges(&key("portrait_ranges"), problems),
            js_errors_top,
            quota_interval: problems.duration_in(
                &key("quota_interval"),
                &self.quota_interval,
                10 * MINUTE,
                DAY,
            ),
        }
    }

    /// Every name must be a report of the registry.
    pub(super) fn enabled(&self, key: &str, problems: &mut Problems) -> ReportSet {
        let mut enabled = ReportSet::default();
        for name in &self.enabled {
            let name = name.trim();
            match Report::by_name(name) {
                Some(report) => enabled = enabled.with(report),
                None => {
                    let known: Vec<&str> = Report::all().map(|report| report.name()).collect();
                    problems.add(
                        key,
                        format!(
                            "{name:?} is not a report; the reports are {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        enabled
    }

    pub(super) fn portrait_ranges(&self, key: &str, problems: &mut Problems) -> Vec<u32> {
        let mut ranges: Vec<u32> = Vec::new();
        for range in &self.portrait_ranges {
            let days = match range.trim() {
                "1d" => 1,
                "7d" => 7,
                "30d" => 30,
                other => {
                    problems.add(
                        key,
                        format!("{other:?} is not a portrait range; WeChat offers \"1d\", \"7d\" and \"30d\""),
                    );
                    continue;
                }
            };
            if !ranges.contains(&days) {
                ranges.push(days);
            }
        }
        if ranges.is_empty() && self.enabled.iter().any(|name| name == "user_portrait") {
            problems.add(
                key,
                "is empty; list at least one of \"1d\", \"7d\" and \"30d\", or remove user_portrait from reports.enabled",
            );
        }
        ranges
    }
}
