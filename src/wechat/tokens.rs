//! Where tokens come from: `stable_token`, the classic `token` endpoint, a token service's
//! URL or a file, through the app's [`TokenCache`](super::token::TokenCache).
//!
//! A failed fetch is remembered: until its backoff has passed, the next call gets the same
//! error without asking the source again (a token service answering 500, or a wrong
//! secret, is asked once per backoff, not once per call).

use std::path::Path;

use super::client::{describe, read_body, scrub, AppConnection, Client};
use super::token::{lifetime, Token};
use super::wire::{parse_token, TokenAnswer};
use super::WeChatError;
use crate::domain::{App, TokenSource};

impl Client {
    /// A usable token: the cached one, or a new one when there is none, it is about to
    /// expire, or `refused` (the token WeChat just refused, and its error) is it.
    pub(super) async fn token(
        &self,
        connection: &AppConnection,
        refused: Option<(&str, &WeChatError)>,
    ) -> Result<String, WeChatError> {
        let mut state = connection.tokens.lock().await;
        let now = self.clock.moment();
        if let Some((token, error)) = refused {
            state.refused(token, error, now, &self.polling)?;
        }
        if let Some(token) = state.fresh(now) {
            return Ok(token);
        }
        state.check_backoff(now)?;
        let fetched = self.fetch_token(&connection.app).await;
        self.observer.token_fetch(&connection.app, fetched.is_ok());
        match fetched {
            Ok(token) => {
                let value = token.expose().to_string();
                state.store(token);
                Ok(value)
            }
            Err(error) => {
                state.failed(error.clone(), self.clock.moment(), &self.polling);
                Err(error)
            }
        }
    }

    async fn fetch_token(&self, app: &App) -> Result<Token, WeChatError> {
        let answer = self.token_answer(app).await?;
        let lifetime = lifetime(answer.expires_in());
        Ok(Token::new(answer.token()?, self.clock.moment(), lifetime))
    }

    /// Asks the app's token source.
    async fn token_answer(&self, app: &App) -> Result<TokenAnswer, WeChatError> {
        match &app.token {
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
                self.call(app, "stable_token", request, "", parse_token)
                    .await
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
                self.call(app, "token", request, "", parse_token).await
            }
            TokenSource::Url(url) => {
                self.token_from_url(app, &url.replace("{appid}", &app.appid))
                    .await
            }
            TokenSource::File(path) => token_from_file(path).await,
        }
    }

    /// A token service: its answer, read as WeChat's; any failure is the source's.
    async fn token_from_url(&self, app: &App, url: &str) -> Result<TokenAnswer, WeChatError> {
        let failed = |what: String| WeChatError::TokenSource(format!("token URL: {what}"));
        let answer = async {
            let response = self.http.get(url).send().await;
            let response = response.map_err(|error| failed(describe(&error.without_url())))?;
            if !response.status().is_success() {
                return Err(failed(format!(
                    "HTTP status {}",
                    response.status().as_u16()
                )));
            }
            let body = read_body(response)
                .await
                .map_err(|error| failed(error.to_string()))?;
            parse_token(&body).map_err(|error| failed(error.to_string()))
        };
        answer
            .await
            .map_err(|error| scrub(error, &app.credentials(), ""))
    }
}

/// A token file: the JSON a token service answers, or the bare token.
async fn token_from_file(path: &Path) -> Result<TokenAnswer, WeChatError> {
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
