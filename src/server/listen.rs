//! Serving the routes on a socket, as an exporter that faces the network must.
//!
//! - **TLS and basic auth** from the web configuration ([`WebConfig`]), read again when its
//!   files change; everything but `/healthz` needs credentials when users are configured.
//! - **Slow and idle connections** cannot starve scrapes: a connection has
//!   [`Limits::header_timeout`] to send its request head (and to send the next one when kept
//!   alive), a response has [`Limits::write_timeout`] to be read (a client that stops reading
//!   a large `/metrics` loses its connection), and at most [`Limits::max_connections`] are
//!   open. When they all are, the one that has been idle longest is closed for the newcomer;
//!   when every one is busy, a few more ([`RESERVE`]) are let in for `/healthz` and `/readyz`
//!   alone, so that liveness probes always get an answer.
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
    /// How long a response may take to be read by the client.
    pub write_timeout: Duration,
    /// How long requests in progress may take to finish at shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Connections let in beyond the limit, when every connection is busy, for the probes
/// (`/healthz`, `/readyz`) alone.
pub const RESERVE: usize = 8;

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
        reserved: AtomicUsize::new(0),
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
    /// Connections let in beyond the limit, for the probes.
    reserved: AtomicUsize,
}

/// What a connection is doing, shared with the registry.
#[derive(Default)]
struct Activity {
    /// Requests in progress (a response still being sent counts).
    busy: AtomicUsize,
    /// The last time a request ended, or the connection opened.
    last_active: Mutex<Option<Instant>>,
    /// Since when a request has been in progress.
    busy_since: Mutex<Option<Instant>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            last_active: Mutex::new(Some(Instant::now())),
            ..Activity::default()
        }
    }

    fn last_active(&self) -> Option<Instant> {
        *self.last_active.lock().expect("activity lock")
    }

    /// Whether a response has been in progress for longer than `timeout`.
    fn stalled(&self, timeout: Duration) -> bool {
        let since = *self.busy_since.lock().expect("activity lock");
        since.is_some_and(|since| since.elapsed() > timeout)
    }
}

struct Entry {
    id: u64,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

/// One connection's place in the registry, given up when it closes.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
    /// Let in beyond the limit: the probes alone are served.
    reserve: bool,
}

impl Registry {
    /// A slot for a new connection, closing the idlest one if all are taken; when every
    /// connection is serving a request, one of the reserve for the probes, if any is left.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut live = self.live.lock().expect("connections lock");
        let mut reserve = false;
        if live.len() >= self.limit {
            let idlest = live
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.activity.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, entry)| entry.activity.last_active())
                .map(|(index, _)| index);
            match idlest {
                Some(index) => live.swap_remove(index).evict.notify_one(),
                None => {
                    let reserved = self.reserved.fetch_add(1, Ordering::AcqRel);
                    if reserved >= RESERVE {
                        self.reserved.fetch_sub(1, Ordering::AcqRel);
                        return None;
                    }
                    reserve = true;
                }
            }
        }
        let slot = Slot {
            registry: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            activity: Arc::new(Activity::new()),
            evict: Arc::new(Notify::new()),
            reserve,
        };
        if !reserve {
            live.push(Entry {
                id: slot.id,
                activity: slot.activity.clone(),
                evict: slot.evict.clone(),
            });
        }
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.reserve {
            self.registry.reserved.fetch_sub(1, Ordering::AcqRel);
            return;
        }
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
        // As Go's servers (the official exporters') do: a response's last small piece (the
        // process metrics after a cached exposition) goes at once, instead of waiting for the
        // client to acknowledge everything sent before it.
        let _ = stream.set_nodelay(true);
        let tls = self.web.as_ref().and_then(|web| web.current().tls.clone());
        let Some(acceptor) = tls else {
            return self
                .http(super::sendfile::Connection::new(stream), slot)
                .await;
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
            activity: slot.activity.clone(),
            probes_only: slot.reserve,
        };
        let service = service_fn(move |request| handler.clone().handle(request));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing = false;
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                // A response the client does not read in time: the connection goes.
                _ = check.tick() => {
                    if slot.activity.stalled(self.limits.write_timeout) {
                        return;
                    }
                }
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
    activity: Arc<Activity>,
    /// A connection of the reserve: the probes alone.
    probes_only: bool,
}

impl Handler {
    async fn handle(mut self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let guard = Busy::new(self.activity.clone());
        let path = request.uri().path();
        if self.probes_only && !matches!(path, "/healthz" | "/readyz") {
            return Ok(busy());
        }
        let loaded = self.web.as_ref().map(|web| (web.clone(), web.current()));
        let mut refused = false;
        if let Some((web, loaded)) = &loaded {
            if path != "/healthz" && loaded.requires_auth() {
                let authorization = request.headers().get(header::AUTHORIZATION).cloned();
                refused = !web.authorized(loaded, authorization.as_ref()).await;
            }
        }
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

/// The answer on a connection of the reserve to anything but a probe.
fn busy() -> Response<Body> {
    let mut response = Response::new(Body::from("Too many connections at once; try again\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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
    activity: Arc<Activity>,
}

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        if activity.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            *activity.busy_since.lock().expect("activity lock") = Some(Instant::now());
        }
        Busy { activity }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.activity;
        *activity.last_active.lock().expect("activity lock") = Some(Instant::now());
        if activity.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *activity.busy_since.lock().expect("activity lock") = None;
        }
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
