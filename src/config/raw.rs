//! The configuration as written (TOML and environment), before validation, with the
//! documented defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// An AppSecret as written in the configuration: a string, or digits (a TOML number); never
/// echoed in an error.
#[derive(Clone, Default, Serialize)]
#[serde(transparent)]
pub(super) struct SecretText(pub(super) String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretText, E> {
                Ok(SecretText(text.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<SecretText, E> {
                Ok(SecretText(number.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<SecretText, E> {
                Ok(SecretText(number.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(E::custom("must be a string (write the secret in quotes)"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(E::custom("must be a string (write the secret in quotes)"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen_address: String,
    pub(super) api_base_url: String,
    pub(super) polling: RawPolling,
    pub(super) reports: RawReports,
    pub(super) discovery: RawDiscovery,
    pub(super) calendar: RawCalendar,
    pub(super) apps: BTreeMap<String, RawApp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCalendar {
    pub(super) file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub(super) files: Vec<String>,
    pub(super) url: String,
    pub(super) bearer_token_file: String,
    pub(super) refresh_interval: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolling {
    pub(super) not_ready_retry: String,
    pub(super) error_backoff_initial: String,
    pub(super) error_backoff_max: String,
    pub(super) concurrency: i64,
    pub(super) request_timeout: String,
    pub(super) first_attempt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    pub(super) enabled: Vec<String>,
    pub(super) pages_top: i64,
    pub(super) portrait_top: i64,
    pub(super) portrait_ranges: Vec<String>,
    pub(super) js_errors_top: i64,
    pub(super) quota_interval: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) secret: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reports: Option<RawReportOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) labels: Option<BTreeMap<String, String>>,
}

/// An app's own `reports` table: any key of `[reports]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReportOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) enabled: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pages_top: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) portrait_top: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) portrait_ranges: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) js_errors_top: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) quota_interval: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen_address: "0.0.0.0:10050".into(),
            api_base_url: "https://api.weixin.qq.com".into(),
            polling: RawPolling {
                not_ready_retry: "30m".into(),
                error_backoff_initial: "30s".into(),
                error_backoff_max: "30m".into(),
                concurrency: 4,
                request_timeout: "30s".into(),
                first_attempt: "06:00".into(),
            },
            reports: RawReports {
                enabled: Report::all()
                    .filter(|report| !report.opt_in())
                    .map(|report| report.name().to_string())
                    .collect(),
                pages_top: 20,
                portrait_top: 30,
                portrait_ranges: vec!["1d".into(), "7d".into(), "30d".into()],
                js_errors_top: 10,
                quota_interval: "6h".into(),
            },
            discovery: RawDiscovery {
                files: Vec::new(),
                url: String::new(),
                bearer_token_file: String::new(),
                refresh_interval: "5m".into(),
            },
            calendar: RawCalendar::default(),
            apps: BTreeMap::new(),
        }
    }
}
