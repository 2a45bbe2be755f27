//! The simulated token endpoints: `GET /cgi-bin/token` and `POST /cgi-bin/stable_token`, and
//! the tokens they issued.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::faults::fault_response;
use super::{refusal, Simulation};
use crate::simulated::model::Refusal;

/// How long a token lives, as WeChat grants it.
const TOKEN_LIFETIME_SECONDS: i64 = 7200;

pub(super) struct IssuedToken {
    pub(super) appid: String,
    pub(super) expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
pub(super) struct ClassicTokenQuery {
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
}

/// `GET /cgi-bin/token`: a new token each time; the previous ones live five more minutes.
pub(super) async fn classic(
    State(sim): State<Simulation>,
    Query(query): Query<ClassicTokenQuery>,
) -> Response {
    if let Some(fault) = sim.take_fault(&query.appid, "token") {
        let (code, response) = fault_response(&fault);
        sim.record(Some(&query.appid), "token", None, code, false);
        return response;
    }
    if let Err((code, message)) = sim.check_credentials(&query.appid, &query.secret) {
        sim.record(Some(&query.appid), "token", None, code, false);
        return refusal(code, message).into_response();
    }
    let now = sim.inner.clock.now();
    {
        let mut state = sim.state();
        for token in state
            .tokens
            .values_mut()
            .filter(|token| token.appid == query.appid)
        {
            token.expires_at = token.expires_at.min(now + chrono::Duration::minutes(5));
        }
    }
    let (token, expires_in) = sim.issue_token(&query.appid);
    sim.record(Some(&query.appid), "token", None, 0, false);
    Json(json!({"access_token": token, "expires_in": expires_in})).into_response()
}

#[derive(Deserialize)]
pub(super) struct StableTokenBody {
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

/// `POST /cgi-bin/stable_token`: the same token until its last five minutes.
pub(super) async fn stable(
    State(sim): State<Simulation>,
    body: Option<Json<StableTokenBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        sim.record(None, "stable_token", None, 47001, false);
        return refusal(47001, "data format error").into_response();
    };
    if let Some(fault) = sim.take_fault(&body.appid, "stable_token") {
        let (code, response) = fault_response(&fault);
        sim.record(Some(&body.appid), "stable_token", None, code, false);
        return response;
    }
    if let Err((code, message)) = sim.check_credentials(&body.appid, &body.secret) {
        sim.record(Some(&body.appid), "stable_token", None, code, false);
        return refusal(code, message).into_response();
    }
    let (token, expires_in) = match sim.current_stable_token(&body.appid, body.force_refresh) {
        Some(current) => current,
        None => {
            let (token, expires_in) = sim.issue_token(&body.appid);
            sim.state().stable.insert(body.appid.clone(), token.clone());
            (token, expires_in)
        }
    };
    sim.record(Some(&body.appid), "stable_token", None, 0, false);
    Json(json!({"access_token": token, "expires_in": expires_in})).into_response()
}

impl Simulation {
    fn current_stable_token(&self, appid: &str, force_refresh: bool) -> Option<(String, i64)> {
        let now = self.inner.clock.now();
        let state = self.state();
        let token = state.stable.get(appid)?;
        let left = (state.tokens.get(token)?.expires_at - now).num_seconds();
        (left > 300 && !force_refresh).then(|| (token.clone(), left))
    }

    fn issue_token(&self, appid: &str) -> (String, i64) {
        let now = self.inner.clock.now();
        let mut state = self.state();
        state.issued += 1;
        let mut rng = fastrand::Rng::with_seed(state.issued ^ 0x5eed_7045);
        let token: String = std::iter::repeat_with(|| rng.alphanumeric())
            .take(96)
            .collect();
        let token = format!("{}_{token}", state.issued);
        state.tokens.insert(
            token.clone(),
            IssuedToken {
                appid: appid.into(),
                expires_at: now + chrono::Duration::seconds(TOKEN_LIFETIME_SECONDS),
            },
        );
        (token, TOKEN_LIFETIME_SECONDS)
    }

    /// Checks appid and secret; the errcode if they are wrong.
    fn check_credentials(&self, appid: &str, secret: &str) -> Result<(), Refusal> {
        match self.app_by_appid(appid) {
            None => Err((40013, "invalid appid")),
            Some(app) if app.secret != secret => Err((40125, "invalid appsecret")),
            Some(_) => Ok(()),
        }
    }

    /// The app a token was issued to, and when it expires.
    pub(super) fn token_owner(&self, token: &str) -> Option<(String, DateTime<Utc>)> {
        let state = self.state();
        let issued = state.tokens.get(token)?;
        Some((issued.appid.clone(), issued.expires_at))
    }
}
