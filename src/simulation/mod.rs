//! A simulated WeChat API, for the `demo`, for `simulate`, and for the tests.
//!
//! It follows the real service as `api-notes` describes it:
//! - `tokens`: `/cgi-bin/token` (each fetch replaces the previous token, which lives on for
//!   five minutes) and `/cgi-bin/stable_token` (the same token until shortly before expiry);
//! - `answers`: every report's path, routed through the report registry: the token is
//!   checked (41001, 40001, 42001), then the request (47001, the report's own 61500/61501, a
//!   period ending yesterday at the latest, Beijing time); a period is published at its app's
//!   publication hour the day after it ends, and before that the answer holds nothing or is
//!   errcode 61503; the answer itself comes from the report's module;
//! - the numbers, deterministic functions of (appid, date), are [`crate::simulated`]'s, which
//!   the reports also use for their simulated answers;
//! - [`faults`]: what only tests use: injected errcodes, HTTP statuses and garbage, latency,
//!   expired tokens and the log of calls. None of it is reachable from the command line;
//! - [`Served`], on `GET /-/served`: the report calls answered and the time the simulation
//!   took to answer them, for a benchmark to set the exporter against the service it met.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::report::Report;

mod answers;
pub mod faults;
mod tokens;

pub use crate::simulated::model::{self, Model};
pub use crate::simulated::{demo_apps, generated_apps, NotReady, Profile, RefDateForm, SimApp};
pub use faults::{Call, Fault};

/// The exporter's configuration for `apps` behind the simulated API at `api`.
pub fn config_for(apps: &[SimApp], api: &str) -> String {
    let mut toml = format!("api_base_url = \"{api}\"\n");
    for app in apps {
        toml.push_str(&format!(
            "\n[apps.{}]\nappid = \"{}\"\nsecret = \"{}\"\n",
            app.name, app.appid, app.secret
        ));
    }
    toml
}

/// `simulate`: serves the simulated API for the demo apps and `extra` generated ones on
/// `listen` (each report answer taking `latency`) until `shutdown` completes, first writing
/// the exporter's configuration for them to `config_out` if given, and saying where it serves.
pub async fn standalone(
    listen: SocketAddr,
    extra: usize,
    latency: std::time::Duration,
    config_out: Option<&std::path::Path>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut all = demo_apps();
    all.extend(generated_apps(extra));
    let simulation = Simulation::new(all, Clock::system());
    simulation.set_latency(latency);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    if let Some(path) = config_out {
        std::fs::write(
            path,
            config_for(simulation.apps(), &format!("http://{address}")),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "Simulated WeChat API for {} Mini Programs at http://{address}",
        simulation.apps().len(),
    );
    for app in simulation.apps().iter().take(3) {
        println!(
            "  {:8} appid {}  publishes at {:02}:00 Beijing time",
            app.name, app.appid, app.publish_hour
        );
    }
    if extra > 0 {
        println!("  and {extra} generated apps (app0000...)");
    }
    tokio::select! {
        result = simulation.serve(listener) => result?,
        _ = shutdown => {}
    }
    Ok(())
}

#[derive(Default)]
struct Mutable {
    tokens: HashMap<String, tokens::IssuedToken>,
    stable: HashMap<String, String>,
    faults: VecDeque<faults::FaultRule>,
    calls: Vec<Call>,
    issued: u64,
    latency: std::time::Duration,
    in_flight: usize,
    max_in_flight: usize,
    served: Serving,
}

/// The report calls answered so far, as they are counted.
#[derive(Default)]
struct Serving {
    calls: u64,
    busy: std::time::Duration,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

/// The report calls the simulation answered: how many, the mean time it took to answer one
/// (from the call's arrival to its answer, the set latency included), and the time from the
/// first call's arrival to the last answer.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Served {
    /// Report calls answered (token calls are not counted).
    pub calls: u64,
    /// The mean time to answer one, in seconds.
    pub service_seconds: f64,
    /// From the first call's arrival to the last answer, in seconds.
    pub first_to_last_seconds: f64,
}

struct Inner {
    clock: Clock,
    apps: Vec<SimApp>,
    /// The index in `apps` of each appid.
    by_appid: HashMap<String, usize>,
    state: Mutex<Mutable>,
}

/// The simulated API; clones share one state.
#[derive(Clone)]
pub struct Simulation {
    inner: Arc<Inner>,
}

impl Simulation {
    /// A simulation of `apps` on `clock`.
    pub fn new(apps: Vec<SimApp>, clock: Clock) -> Simulation {
        let by_appid = apps
            .iter()
            .enumerate()
            .map(|(index, app)| (app.appid.clone(), index))
            .collect();
        Simulation {
            inner: Arc::new(Inner {
                clock,
                apps,
                by_appid,
                state: Mutex::new(Mutable::default()),
            }),
        }
    }

    /// The simulated apps.
    pub fn apps(&self) -> &[SimApp] {
        &self.inner.apps
    }

    /// Serves the simulation on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds `address` (port 0 for any) and serves in the background; returns the address.
    pub async fn spawn(self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(bound)
    }

    /// The routes of the simulated API: the token endpoints, and every report's paths.
    pub fn router(self) -> Router {
        let mut router = Router::new()
            .route("/cgi-bin/token", get(tokens::classic))
            .route("/cgi-bin/stable_token", post(tokens::stable))
            .route(
                "/-/served",
                get(|State(sim): State<Simulation>| async move { Json(sim.served()) }),
            );
        for report in Report::all() {
            for &kind in report.kinds() {
                let path = format!("/{}", report.path(kind));
                let answer =
                    move |sim, query, body| answers::answer(sim, report, kind, query, body);
                router = router.route(&path, post(answer));
            }
        }
        router
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such API") })
            .with_state(self)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.inner.state.lock().expect("simulation lock")
    }

    fn app_by_appid(&self, appid: &str) -> Option<&SimApp> {
        let index = *self.inner.by_appid.get(appid)?;
        self.inner.apps.get(index)
    }

    /// The report calls answered so far.
    pub fn served(&self) -> Served {
        let state = self.state();
        let served = &state.served;
        let span = served
            .first
            .zip(served.last)
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        Served {
            calls: served.calls,
            service_seconds: served.busy.as_secs_f64() / served.calls.max(1) as f64,
            first_to_last_seconds: span,
        }
    }

    /// Counts a report call that arrived at `arrived` and was answered at `answered`.
    fn answered(&self, arrived: std::time::Instant, answered: std::time::Instant) {
        let mut state = self.state();
        state.in_flight -= 1;
        let served = &mut state.served;
        served.calls += 1;
        served.busy += answered - arrived;
        served.first = Some(served.first.map_or(arrived, |first| first.min(arrived)));
        served.last = Some(served.last.map_or(answered, |last| last.max(answered)));
    }
}

/// WeChat's refusal: `{"errcode": N, "errmsg": "... rid: ..."}`.
fn refusal(code: i64, message: &str) -> Json<Value> {
    Json(json!({"errcode": code, "errmsg": format!("{message} rid: 6560c1f2-0a4e1b7c-3d2f5e81")}))
}
