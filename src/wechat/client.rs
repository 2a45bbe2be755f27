//! The one client of the WeChat API: tokens in, analytics out.
//!
//! It holds a single `reqwest::Client` (with timeouts), the base URL and the global limit on
//! requests in flight. For each [`Call`] it takes a cached token (fetching one if needed),
//! posts the request, reads the answer with the caller's parser, and on a refused token
//! (40001/40014/42001) fetches a new token and retries exactly once. Every request is reported to an [`Observer`] (the exporter's own
//! metrics) with a bounded error label. Errors never carry a URL, a token or a secret:
//! reqwest's URL is stripped and any credential text is scrubbed from the messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use serde_json::Value;

use super::token::{forget_if_refused, Token, TokenCache, UNTIMED_TOKEN_LIFETIME};
use super::wire::{self, parse_token, TokenAnswer};
use super::{Call, WeChatError};
use crate::clock::Clock;
use crate::config::{App, Polling, TokenSource};

/// Receives every request the client makes, for the exporter's own metrics.
pub trait Observer: Send + Sync {
    /// A request to WeChat finished (`endpoint` is [`Call::endpoint`], `stable_token` or `token`).
    fn request(&self, app: &App, endpoint: &str, elapsed: Duration, error: Option<&WeChatError>);
    /// A token was fetched (from WeChat or an external source), successfully or not.
    fn token_fetch(&self, app: &App, ok: bool);
}

/// An app together with its token cache.
#[derive(Debug)]
pub struct AppConnection {
    /// The configured app.
    pub app: App,
    tokens: TokenCache,
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
    http: reqwest::Client,
    base_url: String,
    clock: Clock,
    limiter: Arc<Semaphore>,
    observer: Arc<dyn Observer>,
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
            .build()?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            clock,
            limiter: Arc::new(Semaphore::new(polling.concurrency)),
            observer,
        })
    }

    /// Makes `call` and reads the answer with `parse` (`Ok(None)`: nothing published yet),
    /// retrying once with a new token if WeChat refuses the cached one.
    pub async fn fetch<T>(
        &self,
        connection: &AppConnection,
        call: &Call,
        parse: impl Fn(Value) -> Result<Option<T>, WeChatError>,
    ) -> Result<Option<T>, WeChatError> {
        let token = self.token(connection, None).await?;
        match self.post(connection, &token, call, &parse).await {
            Err(error) if error.is_token_rejected() => {
                let token = self.token(connection, Some(&token)).await?;
                self.post(connection, &token, call, &parse).await
            }
            answer => answer,
        }
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
        parse: &impl Fn(Value) -> Result<Option<T>, WeChatError>,
    ) -> Result<Option<T>, WeChatError> {
        let request = self
            .http
            .post(format!("{}/{}", self.base_url, call.path))
            .query(&[("access_token", token)])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body.clone());
        let secrets = [token];
        self.call(
            &connection.app,
            call.endpoint(),
            request,
            &secrets,
            |body| match wire::answer(body)? {
                Some(answer) => parse(answer),
                None => Ok(None),
            },
        )
        .await
    }

    /// A usable token: the cached one, or a new one when there is none, it is about to
    /// expire, or it is the one WeChat just refused.
    async fn token(
        &self,
        connection: &AppConnection,
        refused: Option<&str>,
    ) -> Result<String, WeChatError> {
        let mut cached = connection.tokens.lock().await;
        forget_if_refused(&mut cached, refused);
        if let Some(token) = cached
            .as_ref()
            .filter(|token| token.is_fresh(self.clock.now()))
        {
            return Ok(token.expose().to_string());
        }
        let fetched = self.fetch_token(&connection.app).await;
        self.observer.token_fetch(&connection.app, fetched.is_ok());
        let token = fetched?;
        let value = token.expose().to_string();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(&self, app: &App) -> Result<Token, WeChatError> {
        let answer = self.token_answer(app).await?;
        let lifetime = answer
            .expires_in()
            .map(Duration::from_secs)
            .unwrap_or(UNTIMED_TOKEN_LIFETIME);
        match answer.access_token.filter(|token| !token.trim().is_empty()) {
            Some(token) => Ok(Token::new(token, self.clock.now(), lifetime)),
            None => Err(WeChatError::Decode(
                "token answer without access_token".into(),
            )),
        }
    }

    /// Asks the app's token source.
    async fn token_answer(&self, app: &App) -> Result<TokenAnswer, WeChatError> {
        Ok(match &app.token {
            TokenSource::StableToken(secret) => {
                let request = self
                    .http
                    .post(format!("{}/cgi-bin/stable_token", self.base_url))
                    .json(&serde_json::json!({
                        "grant_type": "client_credential",
                        "appid": app.appid,
                        "secret": secret.expose(),
                        "force_refresh": false,
                    }));
                self.call(
                    app,
                    "stable_token",
                    request,
                    &[secret.expose()],
                    parse_token,
                )
                .await?
            }
            TokenSource::Token(secret) => {
                let request = self
                    .http
                    .get(format!("{}/cgi-bin/token", self.base_url))
                    .query(&[
                        ("grant_type", "client_credential"),
                        ("appid", app.appid.as_str()),
                        ("secret", secret.expose()),
                    ]);
                self.call(app, "token", request, &[secret.expose()], parse_token)
                    .await?
            }
            TokenSource::Url(url) => {
                self.token_from_url(&url.replace("{appid}", &app.appid))
                    .await?
            }
            TokenSource::File(path) => token_from_file(path).await?,
        })
    }

    async fn token_from_url(&self, url: &str) -> Result<TokenAnswer, WeChatError> {
        let failed = |what: String| WeChatError::TokenSource(format!("token URL: {what}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| failed(describe(&error.without_url())))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "HTTP status {}",
                response.status().as_u16()
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| failed(describe(&error.without_url())))?;
        parse_token(&body).map_err(|error| failed(error.to_string()))
    }

    /// Sends one request under the concurrency limit, parses the answer and reports it.
    async fn call<T>(
        &self,
        app: &App,
        endpoint: &str,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
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
            let body = response.bytes().await.map_err(transport_error)?;
            if !status.is_success() {
                return Err(WeChatError::Status(status.as_u16()));
            }
            parse(&body)
        }
        .await
        .map_err(|error| scrub(error, secrets));
        self.observer
            .request(app, endpoint, started.elapsed(), result.as_ref().err());
        result
    }
}

/// A token file: the JSON a token service answers, or the bare token.
async fn token_from_file(path: &std::path::Path) -> Result<TokenAnswer, WeChatError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|error| {
        WeChatError::TokenSource(format!(
            "cannot read token file {}: {error}",
            path.display()
        ))
    })?;
    Ok(match parse_token(text.trim().as_bytes()) {
        Ok(answer) => answer,
        Err(_) => TokenAnswer::bare(text.trim()),
    })
}

/// Maps a transport failure to an error without the request URL (which holds the token).
fn transport_error(error: reqwest::Error) -> WeChatError {
    if error.is_timeout() {
        WeChatError::Timeout
    } else if error.is_decode() || error.is_body() {
        WeChatError::Decode(describe(&error.without_url()))
    } else {
        WeChatError::Connect(describe(&error.without_url()))
    }
}

/// An error and its causes on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes every credential from an error's text, whatever produced it.
fn scrub(error: WeChatError, secrets: &[&str]) -> WeChatError {
    let clean = |mut text: String| {
        for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
            text = text.replace(secret, "<redacted>");
        }
        if let Some(at) = text.find("access_token=") {
            let end = text[at..]
                .find(['&', ' ', ')', '"'])
                .map_or(text.len(), |n| at + n);
            text.replace_range(at..end, "access_token=<redacted>");
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
            errmsg: "invalid credential TOKEN123 for https://x/?access_token=OTHER&y=1 secret S"
                .into(),
        };
        let WeChatError::Api { errmsg, .. } = scrub(error, &["TOKEN123", "S3"]) else {
            panic!()
        };
        assert_eq!(
            errmsg,
            "invalid credential <redacted> for https://x/?access_token=<redacted>&y=1 secret S"
        );
    }
}
