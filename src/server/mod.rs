//! HTTP: the telemetry path (`/metrics`), the status pages, `/healthz` and `/readyz`. It sees
//! only the store.
//!
//! [`router`] builds the routes without binding, so tests drive it directly; [`listen`]
//! serves them as the official exporters do (TLS, basic auth and headers from an
//! exporter-toolkit web configuration, [`web_config`]), keeping slow or idle connections
//! from starving scrapes and bounding the drain at shutdown. The telemetry path serves the
//! store's cached bytes (gzipped when the scraper accepts gzip) and never calls WeChat.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body::Frame;

use crate::store::Store;

mod certificate;
pub mod listen;
mod pages;
mod sendfile;
pub mod web_config;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The default telemetry path.
pub const METRICS_PATH: &str = "/metrics";

/// The exporter's routes over `store`, with the exposition on `/metrics`.
pub fn router(store: Arc<Store>) -> Router {
    router_with(store, METRICS_PATH)
}

/// The exporter's routes over `store`, with the exposition on `telemetry_path`.
pub fn router_with(store: Arc<Store>, telemetry_path: &str) -> Router {
    let links = Arc::new(pages::Links {
        metrics: telemetry_path.to_string(),
    });
    Router::new()
        .route("/", get(pages::landing))
        .route("/apps/{name}", get(pages::app))
        .route(telemetry_path, get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state((store, links))
}

type Shared = (Arc<Store>, Arc<pages::Links>);

/// What `POST /-/reload` runs: a summary of what changed, or why the configuration was
/// refused.
pub type Reload = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// `router` with `POST /-/reload`, as Prometheus has it with `--web.enable-lifecycle`: 200
/// and what changed, or 500 and every problem of a configuration that was refused (the
/// running one stays); `None` (the flag not given) answers 403. A request sent by a page of
/// another site (an `Origin` that is not this host) is refused: a form on any web page could
/// otherwise make a browser on the operator's desk post it.
pub fn with_reload(router: Router, reload: Option<Reload>) -> Router {
    let route = Router::new()
        .route("/-/reload", post(reload_now))
        .with_state(reload);
    router.merge(route)
}

/// Whether `headers` carry an `Origin` of another host than the `Host` asked.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    origin_host.is_none() || origin_host != host
}

async fn reload_now(
    State(reload): State<Option<Reload>>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let Some(reload) = reload else {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled: start with --web.enable-lifecycle (SIGHUP reloads as well)\n".into(),
        );
    };
    if cross_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "a reload from another site's page is refused\n".into(),
        );
    }
    match reload().await {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(problems) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("configuration refused, the running one stays: {problems}\n"),
        ),
    }
}

async fn metrics(State((store, _)): State<Shared>, headers: HeaderMap) -> Response {
    let gzip = accepts_gzip(&headers);
    let kept = store.exposition_kept(gzip);
    let parts = match kept {
        Some(parts) => parts,
        None => match tokio::task::spawn_blocking(move || store.exposition_now(gzip)).await {
            Ok(parts) => parts,
            Err(_) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
            }
        },
    };
    let mut response = Response::new(Body::new(Parts(parts.into())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// Whether the client accepts gzip: `gzip` or `*` listed with a quality above 0 (`gzip;q=0`
/// refuses it, whatever the case and spacing).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let codings = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|parameter| {
                    let (key, value) = parameter.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse::<f32>().ok())
                })
                .next()
                .map_or(Some(1.0), |quality| quality);
            Some((name, quality.unwrap_or(0.0)))
        })
        .collect::<Vec<(String, f32)>>();
    let quality = |name: &str| {
        codings
            .iter()
            .find(|(coding, _)| coding == name)
            .map(|(_, quality)| *quality)
    };
    quality("gzip")
        .or_else(|| quality("*"))
        .is_some_and(|quality| quality > 0.0)
}

async fn ready(State((store, _)): State<Shared>) -> (StatusCode, &'static str) {
    if store.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first round of polling not finished\n",
        )
    }
}

/// A body sent as the chunks it is made of, without copying them into one.
struct Parts(std::collections::VecDeque<Bytes>);

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|part| part.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        accepts_gzip(&headers)
    }

    #[test]
    fn a_reload_from_another_sites_page_is_told_apart_from_curl_and_the_same_host() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            headers
        };
        assert!(!cross_origin(&headers(&[("host", "127.0.0.1:10050")])));
        assert!(!cross_origin(&headers(&[
            ("host", "127.0.0.1:10050"),
            ("origin", "http://127.0.0.1:10050")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:10050"),
            ("origin", "https://evil.example")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:10050"),
            ("origin", "null")
        ])));
    }

    #[test]
    fn gzip_is_sent_only_to_whoever_accepts_it() {
        for (value, gzip) in [
            ("gzip", true),
            ("GZIP", true),
            ("identity, gzip;q=0.5", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip; q=0", false),
            ("gzip;Q=0.000", false),
            ("gzip;q=0, *;q=1", false),
            ("*;q=0", false),
            ("deflate, br", false),
            ("gzip;q=nonsense", false),
            ("", false),
        ] {
            assert_eq!(accepts(value), gzip, "{value:?}");
        }
    }
}
