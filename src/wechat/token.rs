//! The access-token cache of one app, and how it backs off.
//!
//! A token is cached until shortly before the lifetime its source gave (on the monotonic
//! clock: a step of the wall clock does not keep a dead token or a backoff for days), which
//! is clamped to
//! something sane (a token source may say 0, -1, nothing, or a microsecond timestamp). When a
//! call is refused with 40001/40014/42001, the token is dropped only if it is still the one
//! that failed (compare-and-expire), and the call is retried once with a new one. A source
//! that fails, or whose new token is refused again, is not asked again before a backoff: so
//! many jobs of one app never fetch tokens in a storm. The cache sits behind an async mutex
//! held while a new token is fetched: an app never has two refreshes in flight.
//!
//! The token itself never leaves this module except into a request URL: `Debug` redacts it.

use std::fmt;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use super::WeChatError;
use crate::clock::Moment;
use crate::domain::Polling;

/// How long before its expiry a token is refreshed.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The lifetime of a token whose source gave none, or none that makes sense.
pub const UNTIMED_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The shortest and longest lifetimes believed: WeChat's tokens live 7,200 s at most, and a
/// token refreshed more often than every 30 s would make a storm of fetches.
const LIFETIME: (u64, u64) = (30, 7200);

/// The lifetime to cache a token for, from what its source said (`None`: nothing usable).
pub fn lifetime(expires_in: Option<f64>) -> Duration {
    match expires_in {
        Some(seconds) if seconds.is_finite() && seconds >= 1.0 => {
            Duration::from_secs((seconds as u64).clamp(LIFETIME.0, LIFETIME.1))
        }
        _ => UNTIMED_TOKEN_LIFETIME,
    }
}

/// An access token and when to stop using it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    refresh_at: Moment,
    /// Fetched to replace a token WeChat refused: if WeChat refuses this one too, the token
    /// source is at fault and is not asked again before a backoff.
    replaces_refused: bool,
}

impl Token {
    /// A token fetched at `now` that lives `lifetime` (see [`lifetime`]): it is refreshed a
    /// margin before that, or at half its life for short-lived tokens.
    pub fn new(value: String, now: Moment, lifetime: Duration) -> Token {
        let lifetime = lifetime.min(Duration::from_secs(LIFETIME.1));
        let usable = if lifetime > 2 * REFRESH_MARGIN {
            lifetime - REFRESH_MARGIN
        } else {
            lifetime / 2
        };
        Token {
            value,
            refresh_at: now.after(usable),
            replaces_refused: false,
        }
    }

    /// The token, for the request URL only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the token may still be used at `now`.
    pub fn is_fresh(&self, now: Moment) -> bool {
        now < self.refresh_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, refresh at {:?})", self.refresh_at)
    }
}

/// Why the token source is not asked now, and until when.
#[derive(Clone, Debug)]
struct Failing {
    error: WeChatError,
    until: Moment,
    failures: u32,
}

/// What the cache holds: a token, and the source's last failure.
#[derive(Debug, Default)]
pub struct TokenState {
    token: Option<Token>,
    failing: Option<Failing>,
    /// The next token fetched replaces a refused one.
    after_refusal: bool,
}

impl TokenState {
    /// The cached token, if it may be used at `now`.
    pub fn fresh(&self, now: Moment) -> Option<String> {
        let token = self.token.as_ref().filter(|token| token.is_fresh(now))?;
        Some(token.expose().to_string())
    }

    /// WeChat refused `refused`. Drops it if it is still the cached token (a token already
    /// replaced by a concurrent refresh is kept, so one refusal never causes two refreshes).
    /// If it was itself the replacement of a refused token, the source is at fault: it is
    /// not asked again before a backoff, and the error says so.
    pub fn refused(
        &mut self,
        refused: &str,
        error: &WeChatError,
        now: Moment,
        polling: &Polling,
    ) -> Result<(), WeChatError> {
        let Some(token) = self
            .token
            .as_ref()
            .filter(|token| token.expose() == refused)
        else {
            return Ok(());
        };
        let replaced_refused = token.replaces_refused;
        self.token = None;
        self.after_refusal = true;
        if replaced_refused {
            let error = WeChatError::TokenSource(format!(
                "the new token was refused too ({error}); asking the token source again after a backoff"
            ));
            self.failed(error.clone(), now, polling);
            return Err(error);
        }
        Ok(())
    }

    /// `Err` with the last error while the source is backing off.
    pub fn check_backoff(&self, now: Moment) -> Result<(), WeChatError> {
        match &self.failing {
            Some(failing) if now < failing.until => Err(failing.error.clone()),
            _ => Ok(()),
        }
    }

    /// A new token was fetched. The source's failures are forgotten, unless this token
    /// replaces a refused one: until it is seen to work (it lives to its refresh), a refusal
    /// of it backs off longer than the last one did.
    pub fn store(&mut self, mut token: Token) {
        token.replaces_refused = std::mem::take(&mut self.after_refusal);
        if !token.replaces_refused {
            self.failing = None;
        }
        self.token = Some(token);
    }

    /// The source failed with `error` at `now`: no new attempt before its backoff.
    pub fn failed(&mut self, error: WeChatError, now: Moment, polling: &Polling) {
        let failures = self.failing.as_ref().map_or(0, |failing| failing.failures);
        let delay = polling.backoff(failures, fastrand::f64());
        self.failing = Some(Failing {
            error,
            until: now.after(delay),
            failures: failures.saturating_add(1),
        });
    }
}

/// The cached token of one app.
#[derive(Debug, Default)]
pub struct TokenCache {
    slot: Mutex<TokenState>,
}

impl TokenCache {
    /// Locks the cache; a refresh holds the lock until the new token is stored.
    pub async fn lock(&self) -> MutexGuard<'_, TokenState> {
        self.slot.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Moment {
        Moment::from_start(Duration::from_secs(seconds as u64))
    }

    fn polling() -> Polling {
        // The defaults: retry 30m, backoff 30s doubling to 30m.
        Polling::default()
    }

    fn refused() -> WeChatError {
        WeChatError::Api {
            errcode: 40001,
            errmsg: "invalid credential".into(),
        }
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
    fn any_lifetime_a_source_gives_becomes_a_sane_cache_time() {
        for (expires_in, seconds) in [
            (Some(7200.0), 7200),
            (Some(0.0), 60),
            (Some(-5.0), 60),
            (None, 60),
            (Some(f64::NAN), 60),
            (Some(1.0), 30),
            (Some(8e12), 7200),
            (Some(9.3e15), 7200),
            (Some(1e300), 7200),
        ] {
            assert_eq!(
                lifetime(expires_in),
                Duration::from_secs(seconds),
                "{expires_in:?}"
            );
        }
        // The longest lifetime never overflows, even from the last representable moment.
        let late = Moment::from_start(Duration::MAX - Duration::from_secs(86_400));
        let token = Token::new("t".into(), late, lifetime(Some(1e300)));
        assert!(token.is_fresh(late));
    }

    #[test]
    fn only_the_refused_token_is_forgotten() {
        let mut state = TokenState::default();
        state.store(Token::new("new".into(), at(0), Duration::from_secs(7200)));
        state.refused("old", &refused(), at(1), &polling()).unwrap();
        assert_eq!(state.fresh(at(1)).as_deref(), Some("new"));
        state.refused("new", &refused(), at(1), &polling()).unwrap();
        assert_eq!(state.fresh(at(1)), None);
    }

    #[test]
    fn a_replacement_refused_again_makes_the_source_back_off() {
        let mut state = TokenState::default();
        state.store(Token::new("first".into(), at(0), Duration::from_secs(7200)));
        state
            .refused("first", &refused(), at(10), &polling())
            .unwrap();
        state.store(Token::new(
            "second".into(),
            at(10),
            Duration::from_secs(7200),
        ));
        let error = state
            .refused("second", &refused(), at(11), &polling())
            .unwrap_err();
        assert!(error.to_string().contains("refused too"), "{error}");
        assert!(state.check_backoff(at(12)).is_err());
        assert!(
            state.check_backoff(at(11 + 30)).is_ok(),
            "the initial backoff is 30s"
        );
    }

    #[test]
    fn replacements_refused_again_and_again_back_off_longer_each_time() {
        let mut state = TokenState::default();
        state.store(Token::new("t0".into(), at(0), Duration::from_secs(7200)));
        let mut now = 0;
        let mut waits = Vec::new();
        for round in 1..=4 {
            state
                .refused(&format!("t{}", round - 1), &refused(), at(now), &polling())
                .ok();
            let until = (now..)
                .find(|&second| state.check_backoff(at(second)).is_ok())
                .unwrap();
            waits.push(until - now);
            now = until;
            state.store(Token::new(
                format!("t{round}"),
                at(now),
                Duration::from_secs(7200),
            ));
        }
        assert_eq!(
            waits[0], 0,
            "the first refusal refetches at once: {waits:?}"
        );
        assert!(
            waits[1] >= 30 && waits[2] >= 30 && waits[3] >= 60,
            "{waits:?}"
        );
    }

    #[test]
    fn a_failing_source_backs_off_more_each_time_until_it_succeeds() {
        let mut state = TokenState::default();
        let error = WeChatError::Status(500);
        state.failed(error.clone(), at(0), &polling());
        assert!(state.check_backoff(at(29)).is_err());
        assert!(state.check_backoff(at(30)).is_ok());
        state.failed(error.clone(), at(30), &polling());
        state.failed(error, at(90), &polling());
        assert!(
            state.check_backoff(at(90 + 59)).is_err(),
            "the third failure waits 60s or more"
        );
        state.store(Token::new("t".into(), at(200), Duration::from_secs(7200)));
        assert!(state.check_backoff(at(200)).is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = Token::new("very-secret-token".into(), at(0), Duration::from_secs(7200));
        assert!(!format!("{token:?}").contains("very-secret-token"));
    }
}
