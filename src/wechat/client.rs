//! The one client of the WeChat API: tokens in, analytics out.
//!
//! It holds a single `reqwest::Client` (with timeouts, following no redirect: WeChat never
//! redirects an API call, and a redirect could carry the token or the AppSecret to another
//! host), the base URL and the global limit on requests in flight. For each [`Call`] it takes
//! a cached token (see `tokens`), posts the request, reads at most
//! [`MAX_ANSWER`] bytes of the answer and parses it with the caller's parser; on a refused
//! token (40001/40014/42001) it fetches a new token and retries exactly once. Every request is
//! reported to an [`Observer`] (the exporter's own metrics) with a bounded error label.
//! Errors never carry a URL, a token or a secret: reqwest's URL is stripped and every
//! credential of the app is scrubbed from the messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::token::TokenCache;
use super::wire::{self, Answer, Tally};
use super::{Call, WeChatError};
use crate::clock::Clock;
use crate::domain::{App, Polling};

/// The largest answer read, in bytes: the largest real answer (200 pages) is far below.
pub const MAX_ANSWER: usize = 4 << 20;

/// Receives every request the client makes, for the exporter's own metrics.
pub trait Observer: Send + Sync {
    /// A request to WeChat finished (`endpoint` is [`Call::endpoint`], `stable_token` or `token`).
    fn request(&self, app: &App, endpoint: &str, elapsed: Duration, error: Option<&WeChatError>);
    /// A token was fetched (from WeChat or an external source), successfully or not.
    fn token_fetch(&self, app: &App, ok: bool);
    /// Values of an answer to `endpoint` that were dropped, not exported.
    fn dropped(&self, _app: &App, _endpoint: &str, _tally: Tally) {}
}

/// An app together with its token cache.
#[derive(Debug)]
pub struct AppConnection {
    /// The configured app.
    pub app: App,
    pub(super) tokens: TokenCache,
}

impl AppConnection {
    /// A connection with no token yet.
    pub fn new(app: App) -> AppConnection {
        AppConnection {
            app,
            tokens: TokenCache::default(),
        }
    }
}

/// The WeChat API client, shared by every app.
pub struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base_url: String,
    /// The URL of each API path, parsed once: parsing one is a good part of a request's cost.
    urls: std::sync::Mutex<HashMap<&'static str, Option<reqwest::Url>>>,
    pub(super) clock: Clock,
    pub(super) polling: Polling,
    limiter: Arc<Semaphore>,
    /// Periods being fetched: as many as requests may be in flight (see [`Client::period`]).
    periods: Arc<Semaphore>,
    pub(super) observer: Arc<dyn Observer>,
}

impl Client {
    /// A client for `base_url` with the timeout and concurrency of `polling`.
    pub fn new(
        base_url: &str,
        polling: &Polling,
        clock: Clock,
        observer: Arc<dyn Observer>,
    ) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "wechat-miniprogram-exporter/",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(polling.request_timeout)
            .connect_timeout(polling.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            urls: std::sync::Mutex::default(),
            clock,
            polling: polling.clone(),
            limiter: Arc::new(Semaphore::new(polling.concurrency)),
            periods: Arc::new(Semaphore::new(polling.concurrency)),
            observer,
        })
    }

    /// Makes `call` and reads the answer with `parse` (`Ok(None)`: nothing published yet),
    /// retrying once with a new token if WeChat refuses the cached one.
    pub async fn fetch<T>(
        &self,
        connection: &AppConnection,
        call: &Call,
        mut parse: impl FnMut(Answer<'_>) -> Result<Option<T>, WeChatError>,
    ) -> Result<Option<T>, WeChatError> {
        let token = self.token(connection, None).await?;
        match self.post(connection, &token, call, &mut parse).await {
            Err(error) if error.is_token_rejected() => {
                let token = self.token(connection, Some((&token, &error))).await?;
                self.post(connection, &token, call, &mut parse).await
            }
            answer => answer,
        }
    }

    /// Waits for a turn to fetch the calls of one period one after the other, kept while the
    /// permit lives. With every app asking at once, requests taken in turn would move all
    /// of them through their periods in step, each holding the answers of the calls made
    /// so far while waiting for the next (a thousand portraits' at once); in periods, at
    /// most `polling.concurrency` are partly fetched at a time, and each is done sooner.
    pub async fn period(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.periods
            .acquire()
            .await
            .expect("the period limiter is never closed")
    }

    /// Makes sure the app has a usable token, fetching one if needed.
    pub async fn ensure_token(&self, connection: &AppConnection) -> Result<(), WeChatError> {
        self.token(connection, None).await.map(|_| ())
    }

    async fn post<T>(
        &self,
        connection: &AppConnection,
        token: &str,
        call: &Call,
        parse: &mut impl FnMut(Answer<'_>) -> Result<Option<T>, WeChatError>,
    ) -> Result<Option<T>, WeChatError> {
        let request = match self.url(call.path) {
            Some(mut url) => {
                url.query_pairs_mut().append_pair("access_token", token);
                self.http.post(url)
            }
            // What does not parse fails as the request, and is reported as one.
            None => self
                .http
                .post(format!("{}/{}", self.base_url, call.path))
                .query(&[("access_token", token)]),
        };
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body.clone());
        let app = &connection.app;
        let read = |body: &[u8]| {
            let (found, tally) = wire::tally(|| match wire::answer(body)? {
                Some(answer) => parse(answer),
                None => Ok(None),
            });
            found.map(|found| (found, tally))
        };
        let (found, tally) = self
            .call(app, call.endpoint(), request, token, read)
            .await?;
        if !tally.is_empty() {
            self.observer.dropped(app, call.endpoint(), tally);
        }
        Ok(found)
    }

    /// The URL of the API path `path`, if it parses.
    fn url(&self, path: &'static str) -> Option<reqwest::Url> {
        let mut urls = self.urls.lock().expect("the URL cache lock");
        let url = urls
            .entry(path)
            .or_insert_with(|| reqwest::Url::parse(&format!("{}/{}", self.base_url, path)).ok());
        url.clone()
    }

    /// Sends one request under the concurrency limit, reads and parses the answer, and
    /// reports it. `token` (if not empty) and every credential of `app` are scrubbed from
    /// the error.
    pub(super) async fn call<T>(
        &self,
        app: &App,
        endpoint: &str,
        request: reqwest::RequestBuilder,
        token: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, WeChatError>,
    ) -> Result<T, WeChatError> {
        let _permit = self
            .limiter
            .acquire()
            .await
            .expect("the limiter is never closed");
        let started = Instant::now();
        let result = async {
            let response = request.send().await.map_err(transport_error)?;
            let status = response.status();
            if !status.is_success() {
                return Err(WeChatError::Status(status.as_u16()));
            }
            parse(&read_body(response).await?)
        }
        .await
        .map_err(|error| scrub(error, &app.credentials(), token));
        self.observer
            .request(app, endpoint, started.elapsed(), result.as_ref().err());
        result
    }
}

/// The body of an answer, at most [`MAX_ANSWER`] bytes: a longer one (an endless chunked
/// answer, say) is a decode error, and is not read further. An answer that comes in one
/// piece is kept as it came; one in pieces is gathered into a buffer of its announced length.
pub(super) async fn read_body(
    mut response: reqwest::Response,
) -> Result<bytes::Bytes, WeChatError> {
    let too_long = || {
        WeChatError::Decode(format!(
            "the answer is longer than {} MiB; not read further",
            MAX_ANSWER >> 20
        ))
    };
    let announced = response.content_length();
    if announced.is_some_and(|length| length > MAX_ANSWER as u64) {
        return Err(too_long());
    }
    let mut next = async || response.chunk().await.map_err(transport_error);
    let Some(first) = next().await? else {
        return Ok(bytes::Bytes::new());
    };
    if first.len() > MAX_ANSWER {
        return Err(too_long());
    }
    let Some(second) = next().await? else {
        return Ok(first);
    };
    let announced = announced.map_or(0, |length| length as usize);
    let mut body = Vec::with_capacity(announced.max(first.len() + second.len()));
    body.extend_from_slice(&first);
    let mut chunk = Some(second);
    while let Some(piece) = chunk {
        if body.len() + piece.len() > MAX_ANSWER {
            return Err(too_long());
        }
        body.extend_from_slice(&piece);
        chunk = next().await?;
    }
    Ok(body.into())
}

/// Maps a transport failure to an error without the request URL (which holds the token).
pub(super) fn transport_error(error: reqwest::Error) -> WeChatError {
    if error.is_timeout() {
        WeChatError::Timeout
    } else if error.is_decode() || error.is_body() {
        WeChatError::Decode(describe(&error.without_url()))
    } else {
        WeChatError::Connect(describe(&error.without_url()))
    }
}

/// An error and its causes on one line.
pub(super) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes every credential from an error's text, whatever produced it: the app's
/// `credentials`, the `token` of the call, and any `access_token=` parameter.
pub(super) fn scrub(error: WeChatError, credentials: &[String], token: &str) -> WeChatError {
    let clean = |mut text: String| {
        let secrets = credentials.iter().map(String::as_str).chain([token]);
        for secret in secrets.filter(|secret| !secret.is_empty()) {
            text = text.replace(secret, "<redacted>");
        }
        let mut from = 0;
        while let Some(at) = text[from..].find("access_token=").map(|at| from + at) {
            let value = at + "access_token=".len();
            let end = text[value..]
                .find(['&', ' ', ')', '"', '\''])
                .map_or(text.len(), |n| value + n);
            text.replace_range(value..end, "<redacted>");
            from = value;
        }
        text
    };
    match error {
        WeChatError::Api { errcode, errmsg } => WeChatError::Api {
            errcode,
            errmsg: clean(errmsg),
        },
        WeChatError::Connect(text) => WeChatError::Connect(clean(text)),
        WeChatError::Decode(text) => WeChatError::Decode(clean(text)),
        WeChatError::TokenSource(text) => WeChatError::TokenSource(clean(text)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_tokens_secrets_and_token_parameters() {
        let error = WeChatError::Api {
            errcode: 40001,
            errmsg: "invalid credential TOKEN123 for https://x/?access_token=OTHER&y=1 secret S3 \
                     and ?access_token=AGAIN"
                .into(),
        };
        let WeChatError::Api { errmsg, .. } = scrub(error, &["S3".to_string()], "TOKEN123") else {
            panic!()
        };
        assert_eq!(
            errmsg,
            "invalid credential <redacted> for https://x/?access_token=<redacted>&y=1 secret <redacted> \
             and ?access_token=<redacted>"
        );
    }
}
