//! HTTP: `/metrics`, the landing page, `/healthz` and `/readyz`. It sees only the store.
//!
//! [`router`] builds the routes without binding, so tests drive it directly; `main` binds it.
//! `/metrics` serves the store's cached bytes (gzipped when the scraper accepts gzip) and
//! never calls WeChat.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::period::beijing;
use crate::store::Store;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exporter's routes over `store`.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(landing_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(store)
}

async fn metrics(State(store): State<Arc<Store>>, headers: HeaderMap) -> Response {
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            parts
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("gzip"))
                && !parts.any(|param| param.trim().replace(' ', "") == "q=0")
        });
    let body = match tokio::task::spawn_blocking(move || store.metrics(gzip)).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response(),
    };
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
        body,
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

async fn ready(State(store): State<Arc<Store>>) -> (StatusCode, &'static str) {
    if store.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first round of polling not finished\n",
        )
    }
}

async fn landing_page(State(store): State<Arc<Store>>) -> Html<String> {
    let mut page = String::from(concat!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>WeChat Mini Program Exporter</title>\n",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}",
        ".down{color:#b00}.ok{color:#070}</style></head><body>\n",
        "<h1>WeChat Mini Program Exporter</h1>\n",
        "<p><a href=\"/metrics\">Metrics</a> &middot; <a href=\"/healthz\">Health</a> &middot; <a href=\"/readyz\">Readiness</a></p>\n",
    ));
    let _ = writeln!(
        page,
        "<p>Version {}. Times are Beijing time (UTC+8).</p>",
        env!("CARGO_PKG_VERSION")
    );
    page.push_str("<table>\n<tr><th>app</th><th>appid</th><th>report</th><th>period</th><th>held</th><th>last success</th><th>next attempt</th><th>last error</th></tr>\n");
    for app in store.overview() {
        let state = if !app.ready {
            "<span>starting</span>"
        } else if app.up {
            "<span class=\"ok\">up</span>"
        } else {
            "<span class=\"down\">down</span>"
        };
        let rows = app.jobs.len().max(1);
        let _ = write!(
            page,
            "<tr><td rowspan=\"{rows}\">{} ({state})</td><td rowspan=\"{rows}\">{}</td>",
            escape(&app.name),
            escape(&app.appid)
        );
        if app.jobs.is_empty() {
            page.push_str("<td colspan=\"6\">no attempt yet</td></tr>\n");
        }
        for (i, ((report, kind), status)) in app.jobs.iter().enumerate() {
            if i > 0 {
                page.push_str("<tr>");
            }
            let _ = writeln!(
                page,
                "<td>{report}</td><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"down\">{}</td></tr>",
                status.held.map(|p| p.to_string()).unwrap_or_else(|| "none yet".into()),
                time(status.last_success),
                time(status.next_attempt),
                escape(status.last_error.as_deref().unwrap_or("")),
            );
        }
    }
    page.push_str("</table>\n</body></html>\n");
    Html(page)
}

fn time(instant: Option<DateTime<Utc>>) -> String {
    instant
        .map(|t| {
            t.with_timezone(&beijing())
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
