//! What the core knows of the Mini Programs it polls and how it polls them, whatever
//! configured them: [`App`] (its [`AppId`], parsed once, and its [`TokenSource`]), [`Secret`],
//! the [`Shard`] of the apps this instance polls, and the [`Polling`] settings. `config`
//! builds them from TOML and the environment, discovery from its lists; the rest of the crate
//! imports them from here and never `config`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A Mini Program's AppID: `wx` and 16 letters or digits, checked once where it is read.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// `text` (trimmed) as an AppID, if it is one.
    pub fn parse(text: &str) -> Option<AppId> {
        let text = text.trim();
        let valid = text.len() == 18
            && text.starts_with("wx")
            && text.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| AppId(text.to_string()))
    }

    /// The AppID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AppId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for AppId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AppId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One Mini Program, from `[apps.NAME]` or from discovery.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// The table name, exported as the label `app`.
    pub name: String,
    /// The Mini Program's AppID, exported as the label `appid`.
    pub appid: AppId,
    /// Where its access tokens come from.
    pub token: TokenSource,
    /// Labels of its own (`[apps.NAME.labels]`: a team, a brand), by name, exported on
    /// `wechat_miniprogram_app_info`.
    pub labels: Vec<(String, String)>,
}

/// Where an app's access token comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenSource {
    /// `POST /cgi-bin/stable_token` (the default): safe to share between replicas.
    StableToken(Secret),
    /// `GET /cgi-bin/token`: each fetch invalidates the previous token of this appid.
    Token(Secret),
    /// A central token service answering `{"access_token": ..., "expires_in": ...}` at this
    /// URL (`{appid}` is replaced by the app's appid).
    Url(String),
    /// A file holding the token, or the JSON a token service answers; re-read regularly.
    File(PathBuf),
}

impl App {
    /// Every credential of the app, to scrub from any text that leaves the process: the
    /// AppSecret, or the token URL and each of its query values.
    pub fn credentials(&self) -> Vec<String> {
        match &self.token {
            TokenSource::StableToken(secret) | TokenSource::Token(secret) => {
                vec![secret.expose().to_string()]
            }
            TokenSource::Url(url) => {
                let query = url.split_once('?').map_or("", |(_, query)| query);
                let values = query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(_, value)| value);
                let mut credentials: Vec<String> = values
                    .filter(|value| value.len() >= 4)
                    .map(String::from)
                    .collect();
                credentials.insert(0, url.clone());
                credentials
            }
            TokenSource::File(_) => Vec::new(),
        }
    }
}

impl TokenSource {
    /// The value of `token_source` that selects this source.
    pub fn name(&self) -> &'static str {
        match self {
            TokenSource::StableToken(_) => "stable_token",
            TokenSource::Token(_) => "token",
            TokenSource::Url(_) => "url",
            TokenSource::File(_) => "file",
        }
    }
}

/// A secret (an AppSecret): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One of `total` exporters that split the apps between them, each polling the apps whose
/// appid hashes to its `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This instance's shard, `0..total`.
    pub index: u32,
    /// How many shards there are.
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, total: 1 }
    }
}

impl Shard {
    /// A shard, checked: `index` must be below `total`.
    pub fn new(index: u32, total: u32) -> Result<Shard, String> {
        if total == 0 {
            return Err("--total-shards must be at least 1".into());
        }
        if index >= total {
            return Err(format!(
                "--shard {index} is not below --total-shards {total}; shards are numbered 0 to {}",
                total - 1
            ));
        }
        Ok(Shard { index, total })
    }

    /// Whether this shard polls the app with `appid`: FNV-1a of the appid, modulo `total`.
    /// Stable across versions, hosts and restarts, and independent of the other apps.
    pub fn owns(self, appid: &str) -> bool {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in appid.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash % u64::from(self.total) == u64::from(self.index)
    }
}

/// How the pollers schedule and retry (the `[polling]` table).
#[derive(Clone, Debug, PartialEq)]
pub struct Polling {
    /// How long to wait before asking again for a period WeChat has not published yet.
    pub not_ready_retry: Duration,
    /// The first delay after a transient error.
    pub error_backoff_initial: Duration,
    /// The longest delay after errors; also the retry delay of configuration errors.
    pub error_backoff_max: Duration,
    /// The most requests to WeChat in flight at once, over all apps.
    pub concurrency: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// The earliest time of day (Beijing, from midnight) to ask for a newly ended period.
    pub first_attempt: Duration,
}

impl Default for Polling {
    /// The documented defaults.
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Polling {
            not_ready_retry: 30 * minute,
            error_backoff_initial: Duration::from_secs(30),
            error_backoff_max: 30 * minute,
            concurrency: 4,
            request_timeout: Duration::from_secs(30),
            first_attempt: 6 * 60 * minute,
        }
    }
}

impl Polling {
    /// The delay after `failures` consecutive failures: doubling from the initial backoff,
    /// capped at the maximum, then scaled by 0.5 + 0.5 × `jitter`, never below the initial
    /// backoff.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let base = self
            .error_backoff_initial
            .saturating_mul(1u32 << failures.min(20))
            .min(self.error_backoff_max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
            .max(self.error_backoff_initial)
            .min(self.error_backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds_whatever_the_jitter() {
        let polling = Polling::default();
        for _ in 0..100 {
            let jitter = fastrand::f64();
            assert_eq!(polling.backoff(0, jitter), Duration::from_secs(30));
            let third = polling.backoff(2, jitter);
            assert!(
                (Duration::from_secs(60)..=Duration::from_secs(120)).contains(&third),
                "{third:?}"
            );
            let late = polling.backoff(40, jitter);
            assert!(
                (Duration::from_secs(900)..=Duration::from_secs(1800)).contains(&late),
                "{late:?}"
            );
        }
    }

    #[test]
    fn an_appid_is_wx_and_sixteen_letters_or_digits() {
        assert_eq!(
            AppId::parse(" wx1234567890abcdef ").map(|id| id.to_string()),
            Some("wx1234567890abcdef".to_string())
        );
        for wrong in [
            "",
            "wx123",
            "xx1234567890abcdef",
            "wx1234567890abcde!",
            "wx1234567890abcdef0",
        ] {
            assert_eq!(AppId::parse(wrong), None, "{wrong}");
        }
    }
}
