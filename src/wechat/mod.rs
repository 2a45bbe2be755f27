//! The WeChat side: access tokens, the datacube API client, and the analytics it returns.
//!
//! This module is the only place that speaks WeChat's wire format. The serde types of the
//! answers stay private in [`model`]; the rest of the exporter sees the domain types below,
//! whose numeric fields are `Option<f64>` because WeChat may leave any of them out, and a
//! missing figure must never turn into a 0.

use std::collections::BTreeMap;
use std::fmt;

use crate::period::PeriodKind;

pub mod client;
mod model;
pub mod token;

/// One analytics report, polled for one or more period kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Report {
    /// Opens, visits, visitors, new visitors, stay time and depth.
    VisitTrend,
    /// New and active user cohorts and how many came back k periods later.
    Retention,
    /// Opens and visitors by source, stay-time and depth distributions (daily).
    VisitDistribution,
    /// The top pages by visits (daily).
    VisitPage,
}

impl Report {
    /// Every report, in the order they are polled and shown.
    pub const ALL: [Report; 4] = [
        Report::VisitTrend,
        Report::Retention,
        Report::VisitDistribution,
        Report::VisitPage,
    ];

    /// The value of the `report` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Report::VisitTrend => "visit_trend",
            Report::Retention => "retention",
            Report::VisitDistribution => "visit_distribution",
            Report::VisitPage => "visit_page",
        }
    }

    /// The period kinds WeChat offers this report for.
    pub fn kinds(self) -> &'static [PeriodKind] {
        match self {
            Report::VisitTrend | Report::Retention => &PeriodKind::ALL,
            Report::VisitDistribution | Report::VisitPage => &[PeriodKind::Daily],
        }
    }

    /// The datacube endpoint name (the path after `/datacube/`), or `None` where WeChat has no
    /// such report for that kind.
    pub fn endpoint(self, kind: PeriodKind) -> Option<&'static str> {
        use PeriodKind::*;
        Some(match (self, kind) {
            (Report::VisitTrend, Daily) => "getweanalysisappiddailyvisittrend",
            (Report::VisitTrend, Weekly) => "getweanalysisappidweeklyvisittrend",
            (Report::VisitTrend, Monthly) => "getweanalysisappidmonthlyvisittrend",
            (Report::Retention, Daily) => "getweanalysisappiddailyretaininfo",
            (Report::Retention, Weekly) => "getweanalysisappidweeklyretaininfo",
            (Report::Retention, Monthly) => "getweanalysisappidmonthlyretaininfo",
            (Report::VisitDistribution, Daily) => "getweanalysisappidvisitdistribution",
            (Report::VisitPage, Daily) => "getweanalysisappidvisitpage",
            _ => return None,
        })
    }

    /// The report and period kind served by a datacube endpoint name.
    pub fn from_endpoint(name: &str) -> Option<(Report, PeriodKind)> {
        Report::ALL.into_iter().find_map(|report| {
            report
                .kinds()
                .iter()
                .find(|kind| report.endpoint(**kind) == Some(name))
                .map(|kind| (report, *kind))
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The retention keys WeChat documents for each kind: days, weeks or months after the cohort.
pub fn retention_lags(kind: PeriodKind) -> &'static [u32] {
    match kind {
        PeriodKind::Daily => &[0, 1, 2, 3, 4, 5, 6, 7, 14, 30],
        PeriodKind::Weekly => &[0, 1, 2, 3, 4],
        PeriodKind::Monthly => &[0, 1],
    }
}

/// A visit trend for one period. Any field WeChat left out is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trend {
    /// `session_cnt`: opens.
    pub session_cnt: Option<f64>,
    /// `visit_pv`: visits.
    pub visit_pv: Option<f64>,
    /// `visit_uv`: visitors (de-duplicated over the period).
    pub visit_uv: Option<f64>,
    /// `visit_uv_new`: new visitors.
    pub visit_uv_new: Option<f64>,
    /// `stay_time_uv`: average stay per visitor, seconds.
    pub stay_time_uv: Option<f64>,
    /// `stay_time_session`: average stay per open, seconds.
    pub stay_time_session: Option<f64>,
    /// `visit_depth`: average pages per visit.
    pub visit_depth: Option<f64>,
}

/// One cohort's retention: key (periods after the cohort) to user count, for new and active
/// users. Key 0 is the cohort itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retention {
    /// `visit_uv_new`: the cohort of new users.
    pub new: BTreeMap<u32, f64>,
    /// `visit_uv`: the cohort of active users.
    pub active: BTreeMap<u32, f64>,
}

/// One item of a distribution: WeChat's key and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct DistributionItem {
    /// WeChat's key (a source group or a bucket number).
    pub key: i64,
    /// The item's value, when WeChat sent one.
    pub value: Option<f64>,
    /// The per-item `access_source_visit_uv` that old documentation describes.
    pub visit_uv: Option<f64>,
}

/// A daily visit distribution: index name (e.g. `access_staytime_info`) to its items.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// The indexes in the order WeChat sent them, unknown ones included.
    pub indexes: BTreeMap<String, Vec<DistributionItem>>,
}

/// One page of the daily visit-page report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// `page_path`.
    pub path: String,
    /// `page_visit_pv`: visits.
    pub visit_pv: Option<f64>,
    /// `page_visit_uv`: visitors.
    pub visit_uv: Option<f64>,
    /// `page_staytime_pv`: average stay per visit, seconds.
    pub staytime_pv: Option<f64>,
    /// `entrypage_pv`: visits that entered on this page.
    pub entry_pv: Option<f64>,
    /// `exitpage_pv`: visits that left from this page.
    pub exit_pv: Option<f64>,
    /// `page_share_pv`: shares.
    pub share_pv: Option<f64>,
    /// `page_share_uv`: sharing users.
    pub share_uv: Option<f64>,
}

/// What one datacube call returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// A visit trend.
    Trend(Trend),
    /// One cohort's retention.
    Retention(Retention),
    /// A visit distribution.
    Distribution(Distribution),
    /// The pages, in WeChat's order (by visits, descending).
    Pages(Vec<Page>),
}

/// WeChat's answer to a datacube call that did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The period is published.
    Ready(Data),
    /// Not published yet (an empty list or errcode 61503): ask again later. Never a zero.
    NotReady,
}

/// How the poller should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Busy, 5xx, timeouts, undecodable bodies, a token that stayed invalid: back off.
    Transient,
    /// 45011: the per-minute quota; wait for the next minute.
    MinuteQuota,
    /// 45009: the daily quota; nothing more for this app until the next Beijing day.
    DailyQuota,
    /// The configuration is wrong (appid, secret, IP whitelist, authorization): a person must
    /// fix it; retried rarely.
    Config,
}

/// A failed WeChat call. The text never holds a secret or an access token.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WeChatError {
    /// WeChat answered with a non-zero errcode.
    #[error("WeChat errcode {errcode}: {errmsg}")]
    Api {
        /// The errcode.
        errcode: i64,
        /// WeChat's errmsg, with any credential removed.
        errmsg: String,
    },
    /// The HTTP status was not 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request timed out.
    #[error("request timed out")]
    Timeout,
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The body was not the JSON expected.
    #[error("undecodable answer: {0}")]
    Decode(String),
    /// The configured external token source failed (a URL or a file).
    #[error("token source failed: {0}")]
    TokenSource(String),
}

impl WeChatError {
    /// The bounded `errcode` label of `wechat_miniprogram_api_errors_total`.
    pub fn label(&self) -> String {
        match self {
            WeChatError::Api { errcode, .. } => errcode.to_string(),
            WeChatError::Status(status) => format!("http_{status}"),
            WeChatError::Timeout => "timeout".into(),
            WeChatError::Connect(_) | WeChatError::TokenSource(_) => "connect".into(),
            WeChatError::Decode(_) => "decode".into(),
        }
    }

    /// The errcode WeChat answered, if it answered one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WeChatError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// Whether the access token was rejected (40001, 40014, 42001): drop it and retry once.
    pub fn is_token_rejected(&self) -> bool {
        matches!(self.errcode(), Some(40001 | 40014 | 42001))
    }

    /// How the poller reacts to this error.
    pub fn class(&self) -> ErrorClass {
        match self.errcode() {
            Some(45011) => ErrorClass::MinuteQuota,
            Some(45009) => ErrorClass::DailyQuota,
            Some(40013 | 40125 | 40164 | 41001 | 48001 | 61007 | 61502) => ErrorClass::Config,
            _ => ErrorClass::Transient,
        }
    }

    /// What a person should do about a configuration error, for the log line.
    pub fn remedy(&self) -> Option<&'static str> {
        Some(match self.errcode()? {
            40013 => "the appid is not a valid Mini Program AppID: check apps.<name>.appid",
            40125 => "the AppSecret is wrong: check apps.<name>.secret or secret_file (reset it in the Mini Program admin console if unsure)",
            40164 => "this host's public IP is not on the Mini Program's IP whitelist: add it under Development > Development Settings > IP whitelist",
            41001 => "no access token was sent: check the token source of this app (token_source, token_url, token_file)",
            48001 => "this Mini Program is not authorized for the datacube API: check its permissions (or the third-party platform's authorization)",
            61007 => "the third-party platform is not authorized for this Mini Program's analytics: ask the Mini Program to grant the permission set",
            61502 => "this is a mini game: the datacube API does not support mini games; remove the app from the configuration",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_maps_back_to_its_report() {
        for report in Report::ALL {
            for kind in report.kinds() {
                let name = report.endpoint(*kind).unwrap();
                assert_eq!(Report::from_endpoint(name), Some((report, *kind)));
            }
        }
        assert_eq!(Report::VisitPage.endpoint(PeriodKind::Weekly), None);
    }

    #[test]
    fn errors_are_classified_as_the_api_notes_say() {
        let api = |errcode| WeChatError::Api {
            errcode,
            errmsg: String::new(),
        };
        assert!(api(40001).is_token_rejected());
        assert!(api(42001).is_token_rejected());
        assert!(!api(-1).is_token_rejected());
        assert_eq!(api(-1).class(), ErrorClass::Transient);
        assert_eq!(api(45009).class(), ErrorClass::DailyQuota);
        assert_eq!(api(45011).class(), ErrorClass::MinuteQuota);
        assert_eq!(api(40164).class(), ErrorClass::Config);
        assert!(api(40164).remedy().unwrap().contains("whitelist"));
        assert_eq!(WeChatError::Status(502).label(), "http_502");
        assert_eq!(WeChatError::Timeout.class(), ErrorClass::Transient);
    }
}
