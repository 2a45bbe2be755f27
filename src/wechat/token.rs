//! The access-token cache of one app.
//!
//! A token is cached until shortly before WeChat said it expires, and dropped early when a call
//! is refused with 40001/40014/42001. The cache sits behind an async mutex that is held while a
//! new token is fetched, so an app never has two refreshes in flight. The token itself never
//! leaves this module except into a request URL: `Debug` redacts it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, MutexGuard};

/// How long before WeChat's expiry a token is refreshed.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long a token from an external source is trusted when the source gives no lifetime.
pub const UNTIMED_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// An access token and when to stop using it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    refresh_at: DateTime<Utc>,
}

impl Token {
    /// A token fetched at `now` that WeChat said lives `expires_in`: it is refreshed a margin
    /// before that (or at half its life, for short-lived tokens).
    pub fn new(value: String, now: DateTime<Utc>, expires_in: Duration) -> Token {
        let usable = if expires_in > 2 * REFRESH_MARGIN {
            expires_in - REFRESH_MARGIN
        } else {
            expires_in / 2
        };
        Token {
            value,
            refresh_at: now
                + chrono::Duration::from_std(usable).unwrap_or(chrono::Duration::zero()),
        }
    }

    /// The token, for the request URL only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the token may still be used at `now`.
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        now < self.refresh_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, refresh at {})", self.refresh_at)
    }
}

/// The cached token of one app.
#[derive(Debug, Default)]
pub struct TokenCache {
    slot: Mutex<Option<Token>>,
}

impl TokenCache {
    /// Locks the cache; a refresh holds the lock until the new token is stored.
    pub async fn lock(&self) -> MutexGuard<'_, Option<Token>> {
        self.slot.lock().await
    }
}

/// Drops `cached` if it is the token that WeChat just refused. A token already replaced by a
/// concurrent refresh is kept, so one refusal never causes two refreshes.
pub fn forget_if_refused(cached: &mut Option<Token>, refused: Option<&str>) {
    if let (Some(token), Some(refused)) = (cached.as_ref(), refused) {
        if token.expose() == refused {
            *cached = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn tokens_are_refreshed_five_minutes_before_expiry() {
        let token = Token::new("t".into(), at(0), Duration::from_secs(7200));
        assert!(token.is_fresh(at(6899)));
        assert!(!token.is_fresh(at(6900)));
        let short = Token::new("t".into(), at(0), Duration::from_secs(60));
        assert!(short.is_fresh(at(29)));
        assert!(!short.is_fresh(at(30)));
    }

    #[test]
    fn only_the_refused_token_is_forgotten() {
        let mut cached = Some(Token::new("new".into(), at(0), Duration::from_secs(7200)));
        forget_if_refused(&mut cached, Some("old"));
        assert!(cached.is_some());
        forget_if_refused(&mut cached, Some("new"));
        assert!(cached.is_none());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = Token::new("very-secret-token".into(), at(0), Duration::from_secs(7200));
        assert!(!format!("{token:?}").contains("very-secret-token"));
    }
}
