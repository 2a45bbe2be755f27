//! What only tests use: faults injected into the next answers, latency, expired tokens, and
//! the log of every call answered.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{refusal, Simulation};

/// A fault to answer instead of the real answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `{"errcode": N, "errmsg": ...}` with HTTP 200.
    Errcode(i64),
    /// An HTTP error status with an HTML body.
    Status(u16),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// HTTP 200 with this body (a hostile or odd answer).
    Body(String),
}

/// One call the simulation answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The appid (from the token or the request), if known.
    pub appid: Option<String>,
    /// `token`, `stable_token`, the datacube name or the path of another API.
    pub endpoint: String,
    /// The requested `begin_date`, for datacube calls.
    pub begin_date: Option<String>,
    /// The request body, for report calls.
    pub body: Option<String>,
    /// The errcode answered, 0 for success, or the HTTP status of an injected one.
    pub errcode: i64,
    /// When it was answered, on the simulation's clock.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The answer was "not published yet" (an empty list or 61503).
    pub not_ready: bool,
}

pub(super) struct FaultRule {
    appid: String,
    endpoint: Option<String>,
    fault: Fault,
    times: usize,
}

impl Simulation {
    /// Answers the next `times` calls of `appid` (to `endpoint`, or to any) with `fault`.
    pub fn inject(&self, appid: &str, endpoint: Option<&str>, fault: Fault, times: usize) {
        self.state().faults.push_back(FaultRule {
            appid: appid.into(),
            endpoint: endpoint.map(Into::into),
            fault,
            times,
        });
    }

    /// Makes every token issued so far to `appid` expired (42001 on its next use).
    pub fn expire_tokens(&self, appid: &str) {
        let now = self.inner.clock.now();
        let mut state = self.state();
        for token in state
            .tokens
            .values_mut()
            .filter(|token| token.appid == appid)
        {
            token.expires_at = now;
        }
        state.stable.remove(appid);
    }

    /// Makes every report's answer take `latency` (real time), so that calls overlap.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state().latency = latency;
    }

    /// The most report calls that were in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    /// Every call answered so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().tokens.keys().cloned().collect()
    }

    /// Takes the next injected fault for this call, if any.
    pub(super) fn take_fault(&self, appid: &str, endpoint: &str) -> Option<Fault> {
        let mut state = self.state();
        let position = state.faults.iter().position(|rule| {
            rule.appid == appid && rule.endpoint.as_deref().is_none_or(|e| e == endpoint)
        })?;
        let rule = &mut state.faults[position];
        let fault = rule.fault.clone();
        rule.times -= 1;
        if rule.times == 0 {
            state.faults.remove(position);
        }
        Some(fault)
    }

    /// Logs a call, with the `begin_date` and body of a report's request.
    pub(super) fn record(
        &self,
        appid: Option<&str>,
        endpoint: &str,
        request: Option<(Option<&str>, &str)>,
        errcode: i64,
        not_ready: bool,
    ) {
        let (begin_date, body) = request.unzip();
        let at = self.inner.clock.now();
        self.state().calls.push(Call {
            appid: appid.map(Into::into),
            endpoint: endpoint.into(),
            begin_date: begin_date.flatten().map(Into::into),
            body: body.map(Into::into),
            errcode,
            at,
            not_ready,
        });
    }
}

/// The answer of a fault, and the code it is logged with.
pub(super) fn fault_response(fault: &Fault) -> (i64, Response) {
    match fault {
        Fault::Errcode(code) => (*code, refusal(*code, "injected error").into_response()),
        Fault::Status(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                i64::from(status.as_u16()),
                (status, "<html><body><h1>502 Bad Gateway</h1></body></html>").into_response(),
            )
        }
        Fault::Garbage => (0, "<html>upstream returned garbage".into_response()),
        Fault::Body(body) => (
            0,
            ([("content-type", "application/json")], body.clone()).into_response(),
        ),
    }
}
