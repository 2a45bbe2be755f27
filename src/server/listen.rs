//! Serving the routes on a socket, as an exporter that faces the network must.
//!
//! - **TLS and basic auth** from the web configuration ([`WebConfig`]), read again when its
//!   files change; everything but `/healthz` needs credentials when users are configured.
//! - **Slow and idle connections** cannot starve scrapes: a connection has
//!   [`Limits::header_timeout`] to send its request head (and to send the next one when kept
//!   alive), and at most [`Limits::max_connections`] are open. When they all are, the one
//!   that has been idle longest is closed for the newcomer: a scrape in progress is never
//!   closed for another connection.
//! - **The drain is bounded**: on shutdown the listener closes, idle connections close, and
//!   requests in progress get [`Limits::drain_timeout`] to finish (a half-sent request or a
//!   scraper reading slowly does not hold the process).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower_service::Service as _;

use super::web_config::WebConfig;

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most connections open at once.
    pub max_connections: usize,
    /// How long a connection has to send a request head (or its TLS handshake).
    pub header_timeout: Duration,
    /// How long requests in progress may take to finish at shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// 512 connections, or fewer when the process may open fewer files: 64 descriptors are kept
/// for the calls to WeChat, the configuration and the runtime.
pub fn default_max_connections() -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits
                .lines()
                .find(|line| line.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match soft_limit {
        Some(limit) => limit.saturating_sub(64).clamp(8, 512),
        None => 512,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains within
/// [`Limits::drain_timeout`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<WebConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry {
        limit: limits.max_connections.max(1),
        next: AtomicU64::new(0),
        live: Mutex::new(Vec::new()),
    });
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(slot) = registry.admit() else { continue };
                    let serving = Serving {
                        router: router.clone(),
                        web: web.clone(),
                        limits,
                        draining: draining.clone(),
                    };
                    connections.spawn(serving.connection(stream, slot));
                }
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a little rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still busy after the drain timeout are closed"
        );
        connections.abort_all();
    }
    Ok(())
}

/// The open connections, to close the idlest when they are too many.
struct Registry {
    limit: usize,
    next: AtomicU64,
    live: Mutex<Vec<Entry>>,
}

struct Entry {
    id: u64,
    /// Requests in progress (a response still being sent counts).
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    last_active: Arc<Mutex<Instant>>,
}

/// One connection's place in the registry, given up when it closes.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    last_active: Arc<Mutex<Instant>>,
}

impl Registry {
    /// A slot for a new connection, closing the idlest one if all are taken; `None` if every
    /// connection is serving a request.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut live = self.live.lock().expect("connections lock");
        if live.len() >= self.limit {
            let idlest = live
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, entry)| *entry.last_active.lock().expect("activity lock"))
                .map(|(index, _)| index)?;
            let entry = live.swap_remove(idlest);
            entry.evict.notify_one();
        }
        let slot = Slot {
            registry: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            busy: Arc::new(AtomicUsize::new(0)),
            evict: Arc::new(Notify::new()),
            last_active: Arc::new(Mutex::new(Instant::now())),
        };
        live.push(Entry {
            id: slot.id,
            busy: slot.busy.clone(),
            evict: slot.evict.clone(),
            last_active: slot.last_active.clone(),
        });
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.registry.live.lock().expect("connections lock");
        live.retain(|entry| entry.id != self.id);
    }
}

/// What every connection needs.
struct Serving {
    router: Router,
    web: Option<Arc<WebConfig>>,
    limits: Limits,
    draining: watch::Receiver<bool>,
}

impl Serving {
    async fn connection(mut self, stream: TcpStream, slot: Slot) {
        let tls = self.web.as_ref().and_then(|web| web.current().tls.clone());
        let Some(acceptor) = tls else {
            return self.http(stream, slot).await;
        };
        let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream));
        let evicted = slot.evict.clone();
        let stream = tokio::select! {
            accepted = handshake => match accepted {
                Ok(Ok(stream)) => stream,
                _ => return,
            },
            _ = evicted.notified() => return,
            _ = self.draining.wait_for(|drain| *drain) => return,
        };
        self.http(stream, slot).await
    }

    async fn http<S>(mut self, stream: S, slot: Slot)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = Handler {
            router: self.router.clone(),
            web: self.web.clone(),
            busy: slot.busy.clone(),
            last_active: slot.last_active.clone(),
        };
        let service = service_fn(move |request| handler.clone().handle(request));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = slot.evict.notified(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = self.draining.wait_for(|drain| *drain), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Handles each request of a connection: credentials, the route, the configured headers.
#[derive(Clone)]
struct Handler {
    router: Router,
    web: Option<Arc<WebConfig>>,
    busy: Arc<AtomicUsize>,
    last_active: Arc<Mutex<Instant>>,
}

impl Handler {
    async fn handle(mut self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let guard = Busy::new(self.busy.clone(), self.last_active.clone());
        let loaded = self.web.as_ref().map(|web| (web.clone(), web.current()));
        let refused = loaded.as_ref().is_some_and(|(web, loaded)| {
            request.uri().path() != "/healthz"
                && loaded.requires_auth()
                && !web.authorized(loaded, request.headers().get(header::AUTHORIZATION))
        });
        let mut response = if refused {
            unauthorized()
        } else {
            match self.router.call(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        if let Some((_, loaded)) = &loaded {
            for (name, value) in &loaded.headers {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
        Ok(response.map(|body| {
            Body::new(Guarded {
                body,
                _guard: guard,
            })
        }))
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = Response::new(Body::from("Unauthorized\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"wechat-miniprogram-exporter\""),
    );
    response
}

/// A request in progress, until its response body is dropped (sent or abandoned).
struct Busy {
    busy: Arc<AtomicUsize>,
    last_active: Arc<Mutex<Instant>>,
}

impl Busy {
    fn new(busy: Arc<AtomicUsize>, last_active: Arc<Mutex<Instant>>) -> Busy {
        busy.fetch_add(1, Ordering::AcqRel);
        Busy { busy, last_active }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.last_active.lock().expect("activity lock") = Instant::now();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
struct Guarded {
    body: Body,
    _guard: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
