//! A hostile WeChat: a proxy in front of the simulated API that answers what a test's rule
//! says for the requests it picks (any status, body, size, redirect, lifetime), forwards the
//! others, and logs every request it saw.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// The path, without the leading slash.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The body as JSON (null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// What the proxy answers instead of what the simulation answered (`upstream`), when it
/// does. Every request is forwarded first, so the simulation sees all of them.
pub type Rule = Arc<dyn Fn(&Seen, &Bytes) -> Option<Response> + Send + Sync>;

#[derive(Clone)]
struct Proxy {
    upstream: SocketAddr,
    rule: Rule,
    seen: Arc<Mutex<Vec<Seen>>>,
    http: reqwest::Client,
}

/// The proxy, serving on a free port.
pub struct Hostile {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hostile {
    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests to `path` were seen.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|seen| seen.path == path).count()
    }
}

/// A proxy to the simulated API at `upstream`, answering with `rule` where it says.
pub async fn spawn_hostile(upstream: SocketAddr, rule: Rule) -> Hostile {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        upstream,
        rule,
        seen: seen.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let router = Router::new().fallback(handle).with_state(proxy);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Hostile { address, seen }
}

async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.clone(),
        path: parts.uri.path().trim_start_matches('/').to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    proxy.seen.lock().unwrap().push(seen.clone());
    let url = format!("http://{}{}", proxy.upstream, parts.uri);
    let mut forward = proxy.http.request(parts.method, url).body(body);
    if let Some(kind) = parts.headers.get("content-type") {
        forward = forward.header("content-type", kind);
    }
    let (status, upstream) = match forward.send().await {
        Ok(answer) => (
            StatusCode::from_u16(answer.status().as_u16()).unwrap(),
            answer.bytes().await.unwrap_or_default(),
        ),
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    };
    match (proxy.rule)(&seen, &upstream) {
        Some(response) => response,
        None => (status, [("content-type", "application/json")], upstream).into_response(),
    }
}

/// A JSON answer with status 200.
pub fn json(value: serde_json::Value) -> Response {
    ([("content-type", "application/json")], value.to_string()).into_response()
}

/// A 200 answer whose body never ends (chunked, no length).
pub fn endless() -> Response {
    Response::new(Body::new(Endless))
}

/// A body of `{"list":[` followed by spaces, forever.
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 65_536] = [b' '; 65_536];
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(&CHUNK)))))
    }
}
