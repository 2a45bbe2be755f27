//! A simulated WeChat API, for the `demo`, for `simulate`, and for the tests.
//!
//! It follows the real service as `api-notes` describes it:
//! - [`tokens`]: `/cgi-bin/token` (each fetch replaces the previous token, which lives on for
//!   five minutes) and `/cgi-bin/stable_token` (the same token until shortly before expiry);
//! - [`answers`]: every report's path, routed through the report registry: the token is
//!   checked (41001, 40001, 42001), then the request (47001, the report's own 61500/61501, a
//!   period ending yesterday at the latest, Beijing time); a period is published at its app's
//!   publication hour the day after it ends, and before that the answer holds nothing or is
//!   errcode 61503; the answer itself comes from the report's module;
//! - [`model`]: the numbers, deterministic functions of (appid, date);
//! - [`faults`]: what only tests use: injected errcodes, HTTP statuses and garbage, latency,
//!   expired tokens and the log of calls. None of it is reachable from the command line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::report::Report;

mod answers;
pub mod faults;
pub mod model;
mod tokens;

pub use faults::{Call, Fault};
pub use model::Model;

/// How an app answers for a period that is not published yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// An answer that holds nothing (an empty list) and no error.
    EmptyList,
    /// errcode 61503.
    Errcode,
}

/// How an app's answers write the `ref_date` of a range of days (the user portrait's 7 and
/// 30 days): WeChat's own example answers the 7-day request 20170611..20170617 with its first
/// day, `"20170611"`; others have seen the last day and the range written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefDateForm {
    /// The range's first day, as the official example (the default).
    FirstDay,
    /// The range's last day.
    LastDay,
    /// The range written out, `20170611-20170617`.
    Range,
}

/// A simulated Mini Program.
#[derive(Clone, Debug)]
pub struct SimApp {
    /// A name for configuration files.
    pub name: String,
    /// Its AppID.
    pub appid: String,
    /// Its AppSecret.
    pub secret: String,
    /// Typical daily visitors.
    pub visitors: f64,
    /// The Beijing hour at which a period is published, the day after it ends.
    pub publish_hour: u32,
    /// The answer before publication.
    pub not_ready: NotReady,
    /// The first day with data; earlier periods answer empty.
    pub since: NaiveDate,
    /// Days whose visitors are multiplied by a factor (a drop, for alert tests).
    pub dips: BTreeMap<NaiveDate, f64>,
    /// Minutes after `publish_hour` at which the app's periods are usually published.
    pub publish_minute: u32,
    /// How much the publication moves from day to day: up to this many minutes earlier or
    /// later, deterministically per day.
    pub publish_spread: u32,
    /// Publication days (the day after a period ends) when WeChat publishes this many
    /// minutes later than usual.
    pub late: BTreeMap<NaiveDate, u32>,
    /// How its portrait answers write the `ref_date` of 7 and 30 days.
    pub portrait_ref_date: RefDateForm,
}

impl SimApp {
    /// A simulated app with data since 2024-01-01, published at 10:00.
    pub fn new(name: &str, appid: &str, secret: &str, visitors: f64) -> SimApp {
        SimApp {
            name: name.into(),
            appid: appid.into(),
            secret: secret.into(),
            visitors,
            publish_hour: 10,
            not_ready: NotReady::EmptyList,
            since: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            dips: BTreeMap::new(),
            publish_minute: 0,
            publish_spread: 0,
            late: BTreeMap::new(),
            portrait_ref_date: RefDateForm::FirstDay,
        }
    }
}

/// The three Mini Programs of the demo.
pub fn demo_apps() -> Vec<SimApp> {
    let mut shop = SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "demo-secret-shop", 52_000.0);
    shop.not_ready = NotReady::EmptyList;
    let mut news = SimApp::new("news", "wx7c3d9e1f0a2b4c65", "demo-secret-news", 180_000.0);
    news.not_ready = NotReady::Errcode;
    news.portrait_ref_date = RefDateForm::Range;
    let mut tickets = SimApp::new(
        "tickets",
        "wx0f9e8d7c6b5a4f32",
        "demo-secret-tickets",
        4_800.0,
    );
    tickets.publish_hour = 15;
    tickets.portrait_ref_date = RefDateForm::LastDay;
    vec![shop, news, tickets]
}

/// `n` more simulated apps, for trying the exporter at scale: `app0000`, `app0001`…, with
/// appids `wx` + 16 hex digits of their number and secrets `demo-secret-<number>`.
pub fn generated_apps(n: usize) -> Vec<SimApp> {
    (0..n)
        .map(|i| {
            let mut app = SimApp::new(
                &format!("app{i:04}"),
                &format!("wx{:016x}", 0x00c0_ffee_0000_u64 + i as u64),
                &format!("demo-secret-{i:04}"),
                500.0 + (i % 97) as f64 * 300.0,
            );
            let forms = [
                RefDateForm::FirstDay,
                RefDateForm::Range,
                RefDateForm::LastDay,
            ];
            app.portrait_ref_date = forms[i % forms.len()];
            app
        })
        .collect()
}

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
}

struct Inner {
    clock: Clock,
    apps: Vec<SimApp>,
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
        Simulation {
            inner: Arc::new(Inner {
                clock,
                apps,
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
            .route("/cgi-bin/stable_token", post(tokens::stable));
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
        self.inner.apps.iter().find(|app| app.appid == appid)
    }
}

/// WeChat's refusal: `{"errcode": N, "errmsg": "... rid: ..."}`.
fn refusal(code: i64, message: &str) -> Json<Value> {
    Json(json!({"errcode": code, "errmsg": format!("{message} rid: 6560c1f2-0a4e1b7c-3d2f5e81")}))
}
