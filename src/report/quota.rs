//! The API quota (`cgi-bin/openapi/quota/get`), opt-in: for each WeChat path the exporter
//! calls for an app, the daily limit, what is used and what remains.
//!
//! The only way to know the datacube limits: WeChat publishes no number. It is asked every
//! `reports.quota_interval` for the current Beijing day (quotas reset daily), one call per
//! path of the enabled reports. `clear_quota` is never called.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{Family, Publication, Report, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Refusal, Request};
use crate::wechat::wire::{Answer, Num};
use crate::wechat::{Call, WeChatError};

/// The API quota report.
pub struct Quota;

/// The quota of one path: any figure WeChat left out is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// `daily_limit`.
    pub daily_limit: Option<f64>,
    /// `used`.
    pub used: Option<f64>,
    /// `remain`.
    pub remain: Option<f64>,
}

/// What is exported: the usage of each path, by its `endpoint` label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usages {
    /// (endpoint, usage).
    pub endpoints: Vec<(String, Usage)>,
}

#[derive(Deserialize)]
struct QuotaAnswer {
    #[serde(default)]
    quota: Option<QuotaWire>,
}

#[derive(Deserialize)]
struct QuotaWire {
    #[serde(default)]
    daily_limit: Num,
    #[serde(default)]
    used: Num,
    #[serde(default)]
    remain: Num,
}

/// The paths the exporter calls for the enabled reports (this one aside), each once.
fn paths(reports: &Settings) -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = Vec::new();
    let enabled = Report::all().filter(|report| report.is_enabled(reports));
    for report in enabled.filter(|report| report.name() != Quota::NAME) {
        for kind in report.kinds() {
            let path = report.path(*kind);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// The `endpoint` label of a path, as `wechat_miniprogram_api_requests_total` has it.
fn endpoint(path: &str) -> &str {
    path.strip_prefix("datacube/").unwrap_or(path)
}

/// One family per figure, each with `endpoint`.
macro_rules! field {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            samples: |usages: &Usages, _, out: &mut Samples<'_>| {
                for (endpoint, usage) in &usages.endpoints {
                    if let Some(value) = usage.$field {
                        out.sample(&[("endpoint", endpoint)], value);
                    }
                }
            },
        }
    };
}

impl ReportSpec for Quota {
    type Piece = Usage;
    type Snapshot = Usages;

    const NAME: &'static str = "quota";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const OPT_IN: bool = true;
    const HISTORY: bool = false;
    const PUBLICATION: Publication = Publication::AnyCall;
    const FAMILIES: &'static [Family<Usages>] = &[
        field!(
            "wechat_miniprogram_api_quota_daily_limit",
            "Calls a day WeChat allows this app on the endpoint (quota/get daily_limit).",
            daily_limit
        ),
        field!(
            "wechat_miniprogram_api_quota_used",
            "Calls of this app on the endpoint today, Beijing time, by anyone (quota/get used).",
            used
        ),
        field!(
            "wechat_miniprogram_api_quota_remaining",
            "Calls left today for this app on the endpoint (quota/get remain).",
            remain
        ),
    ];

    fn path(&self, _: PeriodKind) -> &'static str {
        "cgi-bin/openapi/quota/get"
    }

    fn max_series(&self, _: PeriodKind, reports: &Settings) -> usize {
        Self::FAMILIES.len() * paths(reports).len()
    }

    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call> {
        let paths = paths(reports).into_iter().enumerate();
        paths
            .map(|(number, path)| Call {
                asks: period,
                path: "cgi-bin/openapi/quota/get",
                part: number as u32,
                body: json!({ "cgi_path": format!("/{path}") }).to_string(),
            })
            .collect()
    }

    fn parse(&self, _: &Call, answer: Answer<'_>) -> Result<Option<Usage>, WeChatError> {
        let answer: QuotaAnswer = answer.read()?;
        let count = |n: Num| n.0.filter(|n| *n >= 0.0);
        Ok(answer.quota.map(|quota| Usage {
            daily_limit: count(quota.daily_limit),
            used: count(quota.used),
            remain: count(quota.remain),
        }))
    }

    fn snapshot(&self, period: Period, pieces: &[Option<&Usage>], reports: &Settings) -> Usages {
        let calls = self.calls(period, reports);
        let endpoints = calls.iter().zip(pieces).filter_map(|(call, usage)| {
            let body: Value = serde_json::from_str(&call.body).ok()?;
            let path = body["cgi_path"].as_str()?.trim_start_matches('/');
            Some((endpoint(path).to_string(), (*usage)?.clone()))
        });
        Usages {
            endpoints: endpoints.collect(),
        }
    }

    fn refresh(&self, reports: &Settings) -> Option<Duration> {
        Some(reports.quota_interval)
    }

    fn history_calls(&self, _: &[Period], _: &Settings) -> Vec<Call> {
        Vec::new()
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let path = request.body.get("cgi_path").and_then(Value::as_str);
        let path = path.ok_or((47001, "data format error"))?;
        if Report::by_path(path.trim_start_matches('/')).is_none() {
            return Err((76021, "cgi_path not found"));
        }
        let today = request.yesterday() + chrono::Days::new(1);
        let limit = 20_000.0;
        let used = (limit * 0.01 * noise(&request.model.app.appid, today, path, 0.5)).round();
        Ok(json!({"errcode": 0, "errmsg": "ok", "quota": {
            "daily_limit": limit as i64, "used": used as i64, "remain": (limit - used) as i64,
        }}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{rendered, ParseJson};

    fn today() -> Period {
        Period::parse_ref_date("20240605").unwrap()
    }

    #[test]
    fn the_documented_answer_is_read() {
        let call = &Quota.calls(today(), &Settings::default())[0];
        let answer = json!({"errcode":0,"quota":{"daily_limit":10000000,"used":1,"remain":9999999},
            "rate_limit":{"call_count":10,"refresh_second":1}});
        assert_eq!(
            Quota.parse_json(call, answer),
            Ok(Some(Usage {
                daily_limit: Some(1e7),
                used: Some(1.0),
                remain: Some(9_999_999.0)
            }))
        );
        assert_eq!(Quota.parse_json(call, json!({"errcode": 0})), Ok(None));
    }

    #[test]
    fn every_path_of_the_enabled_reports_is_asked_once_and_exported_by_endpoint() {
        let reports = Settings::default();
        let calls = Quota.calls(today(), &reports);
        assert!(
            calls[0]
                .body
                .contains("\"cgi_path\":\"/datacube/getweanalysisappiddailyvisittrend\""),
            "{}",
            calls[0].body
        );
        assert!(calls.iter().all(|call| !call.body.contains("quota")));
        let bodies: std::collections::BTreeSet<&str> =
            calls.iter().map(|call| call.body.as_str()).collect();
        assert_eq!(bodies.len(), calls.len());
        let usage = Usage {
            daily_limit: Some(5000.0),
            used: Some(7.0),
            remain: None,
        };
        let pieces = vec![Some(&usage)];
        let usages = Quota.snapshot(today(), &pieces, &reports);
        let text = rendered(&Quota, usages);
        assert!(text.contains("wechat_miniprogram_api_quota_used{appid=\"wx1234567890abcdef\",app=\"shop\",endpoint=\"getweanalysisappiddailyvisittrend\"} 7\n"), "{text}");
        assert!(!text.contains("wechat_miniprogram_api_quota_remaining"));
    }
}
