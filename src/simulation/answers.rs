//! The simulated answers to every report's path: the token and the body checked as WeChat
//! checks them, then the report's own answer (from its module).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::faults::fault_response;
use super::{refusal, Simulation};
use crate::period::PeriodKind;
use crate::report::Report;
use crate::simulated::model::Model;
use crate::simulated::model::Refusal;

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    access_token: Option<String>,
}

/// One request to a report's path, as the simulation logs it.
struct Request<'a> {
    sim: &'a Simulation,
    report: Report,
    kind: PeriodKind,
    endpoint: &'static str,
    begin_date: Option<String>,
    body: Option<String>,
    /// The answer was "not published yet".
    not_ready: std::cell::Cell<bool>,
}

impl Request<'_> {
    /// Logs the call with `code` and returns `response`.
    fn answer(&self, code: i64, response: Response, appid: Option<&str>) -> Response {
        let request = self
            .body
            .as_deref()
            .map(|body| (self.begin_date.as_deref(), body));
        let not_ready = self.not_ready.get();
        self.sim
            .record(appid, self.endpoint, request, code, not_ready);
        response
    }

    fn refuse(&self, (code, message): Refusal, appid: Option<&str>) -> Response {
        self.answer(code, refusal(code, message).into_response(), appid)
    }
}

/// Answers a call to `report` for `kind`, counting the calls in progress.
pub(super) async fn answer(
    State(sim): State<Simulation>,
    report: Report,
    kind: PeriodKind,
    Query(query): Query<TokenQuery>,
    body: Option<Json<Value>>,
) -> Response {
    let arrived = tokio::time::Instant::now();
    let latency = {
        let mut state = sim.state();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.latency
    };
    let body = body.map(|Json(body)| body).filter(Value::is_object);
    let request = Request {
        sim: &sim,
        report,
        kind,
        endpoint: report
            .path(kind)
            .strip_prefix("datacube/")
            .unwrap_or(report.path(kind)),
        begin_date: body
            .as_ref()
            .and_then(|body| body.get("begin_date")?.as_str().map(String::from)),
        body: body.as_ref().map(Value::to_string),
        not_ready: std::cell::Cell::new(false),
    };
    let response = respond(&request, query.access_token.unwrap_or_default(), body);
    // The answer leaves `latency` after the call came, the time taken to make it included:
    // a benchmark's service time is what it was set to, not that plus the simulation's work.
    if !latency.is_zero() {
        tokio::time::sleep_until(arrived + latency).await;
    }
    sim.answered(arrived.into_std(), tokio::time::Instant::now().into_std());
    response
}

fn respond(request: &Request<'_>, token: String, body: Option<Value>) -> Response {
    let sim = request.sim;
    let now = sim.inner.clock.now();
    let (appid, expires_at) = match sim.token_owner(&token) {
        _ if token.is_empty() => return request.refuse((41001, "access_token missing"), None),
        None => {
            let invalid = "invalid credential, access_token is invalid or not latest";
            return request.refuse((40001, invalid), None);
        }
        Some(found) => found,
    };
    if let Some(fault) = sim.take_fault(&appid, request.endpoint) {
        let (code, response) = fault_response(&fault);
        return request.answer(code, response, Some(&appid));
    }
    if expires_at <= now {
        return request.refuse((42001, "access_token expired"), Some(&appid));
    }
    let Some(body) = body else {
        return request.refuse((47001, "data format error"), Some(&appid));
    };
    let app = sim
        .app_by_appid(&appid)
        .expect("tokens are issued to known apps");
    let simulated = super::model::Request {
        model: Model { app },
        kind: request.kind,
        body: &body,
        now,
    };
    let (answer, not_ready) =
        super::model::noting_not_ready(|| request.report.simulate(&simulated));
    request.not_ready.set(not_ready);
    match answer {
        Ok(answer) => request.answer(0, as_wechat_writes(&answer), Some(&appid)),
        Err(refused) => request.refuse(refused, Some(&appid)),
    }
}

/// `answer` as WeChat writes JSON: every `/` escaped as `\/` (`"pages\/index\/index"`), as
/// PHP's `json_encode` does and live answers show. Outside strings JSON has no `/`.
fn as_wechat_writes(answer: &Value) -> Response {
    let text = answer.to_string().replace('/', "\\/");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
