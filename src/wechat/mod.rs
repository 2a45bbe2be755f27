//! The WeChat side: access tokens, the API client, errors, and the wire format all answers
//! share.
//!
//! [`client`] makes every call (one `reqwest::Client`, tokens, the concurrency limit, the
//! retry on a refused token); [`wire`] reads what every answer has in common (a JSON object,
//! an errcode, lenient numbers). What a report's answer holds is read by that report's own
//! module (`crate::report`), with private serde types whose numeric fields are `Option<f64>`:
//! WeChat may leave any of them out, and a missing figure must never turn into a 0.

use crate::period::Period;

pub mod client;
mod lenient;
pub mod token;
mod tokens;
pub mod wire;

/// One request to WeChat.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Call {
    /// The period the call asks about (for retention, a cohort): the answer must be for it.
    pub asks: Period,
    /// The path after the base URL, e.g. `datacube/getweanalysisappiddailyvisittrend`.
    pub path: &'static str,
    /// Which part of its report the call fetches, in the report's own numbering (a
    /// retention lag, a portrait range in days, a launch phase, a performance module...).
    pub part: u32,
    /// The JSON body.
    pub body: String,
}

impl Call {
    /// The `endpoint` label of the exporter's own metrics: a datacube name, or the path.
    pub fn endpoint(&self) -> &'static str {
        self.path.strip_prefix("datacube/").unwrap_or(self.path)
    }
}

/// The errcodes the exporter knows (api-notes.md): each is its own `errcode` label value;
/// any other is `other`, so that an answer cannot make the label unbounded.
pub const KNOWN_ERRCODES: [i64; 28] = [
    -1, 40001, 40002, 40013, 40014, 40097, 40125, 40164, 41001, 41002, 41004, 42001, 43002, 45009,
    45011, 47001, 48001, 61007, 61023, 61500, 61501, 61502, 61503, 76021, 76022, 89503, 89506,
    89507,
];

/// How the poller should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Busy, 5xx, timeouts, undecodable bodies, a token that stayed invalid: back off.
    Transient,
    /// 45011: the per-minute quota; wait for the next minute.
    MinuteQuota,
    /// 45009: the daily quota; nothing more for this app until the next Beijing day.
    DailyQuota,
    /// The configuration is wrong (appid, secret, IP whitelist): a person must fix it;
    /// retried rarely.
    Config,
    /// WeChat refuses this API to this app (48001, 61007, 76022): only a person granting the
    /// permission fixes it, so the report is asked again once a day and at every reload; the
    /// app's other reports go on.
    Unauthorized,
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
    /// The bounded `errcode` label of `wechat_miniprogram_api_errors_total`: an errcode
    /// WeChat documents (see [`KNOWN_ERRCODES`]) or `other`, `http_<status>` for a status
    /// from 300 to 599 (`http_other` else), `timeout`, `decode` or `connect`.
    pub fn label(&self) -> String {
        match self {
            WeChatError::Api { errcode, .. } if KNOWN_ERRCODES.contains(errcode) => {
                errcode.to_string()
            }
            WeChatError::Api { .. } => "other".into(),
            WeChatError::Status(status @ 300..=599) => format!("http_{status}"),
            WeChatError::Status(_) => "http_other".into(),
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
            Some(48001 | 61007 | 76022) => ErrorClass::Unauthorized,
            Some(40013 | 40125 | 40164 | 41001 | 61502) => ErrorClass::Config,
            _ => ErrorClass::Transient,
        }
    }

    /// What a person should do about a configuration error of the app named `app` calling
    /// for the report named `report`, for the log line and the status page.
    pub fn remedy(&self, app: &str, report: &str) -> Option<String> {
        let fix = Self::remedy_template(self.errcode()?)?;
        Some(fix.replace("<name>", app).replace("<report>", report))
    }

    fn remedy_template(errcode: i64) -> Option<&'static str> {
        Some(match errcode {
            40013 => "the appid is not a valid Mini Program AppID: check apps.<name>.appid",
            40125 => "the AppSecret is wrong: check apps.<name>.secret or secret_file (reset it in the Mini Program admin console if unsure)",
            40164 => "this host's public IP is not on the Mini Program's IP whitelist: add it under Development > Development Settings > IP whitelist",
            41001 => "no access token was sent: check the token source of this app (token_source, token_url, token_file)",
            48001 => "this Mini Program is not authorized for the API of the <report> report: grant the permission in the admin console (or the third-party platform's authorization), or remove <report> from reports.enabled",
            61007 => "the third-party platform is not authorized for this Mini Program's <report> report: ask the Mini Program to grant the permission set, or remove <report> from reports.enabled",
            61502 => "this is a mini game: the datacube API does not support mini games; remove the app from the configuration",
            76022 => "the quota can only be asked with the app's own token: check the token source of apps.<name>, or remove quota from reports.enabled",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(api(48001).class(), ErrorClass::Unauthorized);
        assert_eq!(api(61007).class(), ErrorClass::Unauthorized);
        assert_eq!(api(76022).class(), ErrorClass::Unauthorized);
        assert!(api(40164)
            .remedy("shop", "retention")
            .unwrap()
            .contains("whitelist"));
        assert!(api(40125)
            .remedy("shop", "retention")
            .unwrap()
            .contains("apps.shop.secret"));
        let denied = api(48001).remedy("shop", "performance").unwrap();
        assert!(
            denied.contains("remove performance from reports.enabled"),
            "{denied}"
        );
        assert_eq!(api(-1).remedy("shop", "retention"), None);
        assert_eq!(WeChatError::Status(502).label(), "http_502");
        assert_eq!(WeChatError::Status(999).label(), "http_other");
        assert_eq!(api(40164).label(), "40164");
        assert_eq!(api(123_456).label(), "other");
        assert_eq!(api(i64::MAX).label(), "other");
        assert_eq!(WeChatError::Timeout.class(), ErrorClass::Transient);
    }
}
