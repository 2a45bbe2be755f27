//! A simulated WeChat API, for the `demo`, for `simulate`, and for the tests.
//!
//! It follows the real service as `api-notes` describes it: `/cgi-bin/token` (each fetch
//! replaces the previous token, which lives on for five minutes) and `/cgi-bin/stable_token`
//! (the same token until shortly before expiry); datacube calls check the token (41001, 40001,
//! 42001), the date format (61500) and range (61501: one day, a Monday..Sunday week or a whole
//! month, ending yesterday at the latest, Beijing time); a period is published at its app's
//! publication hour the day after it ends, and before that the answer is an empty list or
//! errcode 61503. Retention lists carry every documented key, later keys as 0 until they
//! have elapsed, as the real service does.
//!
//! The numbers are deterministic functions of (appid, date): a weekly rhythm (weekends up),
//! slow growth, a few percent of noise, retention that decays with the lag, and distributions
//! and pages that add up to the day's totals. Tests inject faults (an errcode, an HTTP status,
//! a garbage body) for the next calls of an app, read the log of calls, and move the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::period::{beijing_date, beijing_midnight, Period, PeriodKind};
use crate::wechat::{retention_lags, Report};

/// How long a token lives, as WeChat grants it.
const TOKEN_LIFETIME_SECONDS: i64 = 7200;

/// How an app answers for a period that is not published yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// An empty list and no error.
    EmptyList,
    /// errcode 61503.
    Errcode,
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
        }
    }
}

/// The three Mini Programs of the demo.
pub fn demo_apps() -> Vec<SimApp> {
    let mut shop = SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "demo-secret-shop", 52_000.0);
    shop.not_ready = NotReady::EmptyList;
    let mut news = SimApp::new("news", "wx7c3d9e1f0a2b4c65", "demo-secret-news", 180_000.0);
    news.not_ready = NotReady::Errcode;
    let mut tickets = SimApp::new(
        "tickets",
        "wx0f9e8d7c6b5a4f32",
        "demo-secret-tickets",
        4_800.0,
    );
    tickets.publish_hour = 15;
    vec![shop, news, tickets]
}

/// `n` more simulated apps, for trying the exporter at scale: `app0000`, `app0001`…, with
/// appids `wx` + 16 hex digits of their number and secrets `demo-secret-<number>`.
pub fn generated_apps(n: usize) -> Vec<SimApp> {
    (0..n)
        .map(|i| {
            SimApp::new(
                &format!("app{i:04}"),
                &format!("wx{:016x}", 0x00c0_ffee_0000_u64 + i as u64),
                &format!("demo-secret-{i:04}"),
                500.0 + (i % 97) as f64 * 300.0,
            )
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

/// A fault to answer instead of the real answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `{"errcode": N, "errmsg": ...}` with HTTP 200.
    Errcode(i64),
    /// An HTTP error status with an HTML body.
    Status(u16),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
}

/// One call the simulation answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The appid (from the token or the request), if known.
    pub appid: Option<String>,
    /// `token`, `stable_token` or the datacube name.
    pub endpoint: String,
    /// The requested `begin_date`, for datacube calls.
    pub begin_date: Option<String>,
    /// The errcode answered, 0 for success, or the HTTP status of an injected one.
    pub errcode: i64,
}

struct FaultRule {
    appid: String,
    endpoint: Option<String>,
    fault: Fault,
    times: usize,
}

struct IssuedToken {
    appid: String,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct Mutable {
    tokens: HashMap<String, IssuedToken>,
    stable: HashMap<String, String>,
    faults: VecDeque<FaultRule>,
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

    /// The routes of the simulated API.
    pub fn router(self) -> Router {
        Router::new()
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/datacube/{name}", post(datacube))
            .with_state(self)
    }

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

    /// Makes every datacube answer take `latency` (real time), so that calls overlap.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state().latency = latency;
    }

    /// The most datacube calls that were in progress at once.
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

    fn state(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.inner.state.lock().expect("simulation lock")
    }

    fn app_by_appid(&self, appid: &str) -> Option<&SimApp> {
        self.inner.apps.iter().find(|app| app.appid == appid)
    }

    /// Takes the next injected fault for this call, if any.
    fn take_fault(&self, appid: &str, endpoint: &str) -> Option<Fault> {
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

    fn record(&self, appid: Option<&str>, endpoint: &str, begin_date: Option<&str>, errcode: i64) {
        self.state().calls.push(Call {
            appid: appid.map(Into::into),
            endpoint: endpoint.into(),
            begin_date: begin_date.map(Into::into),
            errcode,
        });
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
    fn check_credentials(&self, appid: &str, secret: &str) -> Result<(), (i64, &'static str)> {
        match self.app_by_appid(appid) {
            None => Err((40013, "invalid appid")),
            Some(app) if app.secret != secret => Err((40125, "invalid appsecret")),
            Some(_) => Ok(()),
        }
    }
}

fn errcode(code: i64, message: &str) -> Json<Value> {
    Json(json!({"errcode": code, "errmsg": format!("{message} rid: 6560c1f2-0a4e1b7c-3d2f5e81")}))
}

fn fault_response(fault: &Fault) -> (i64, Response) {
    match fault {
        Fault::Errcode(code) => (*code, errcode(*code, "injected error").into_response()),
        Fault::Status(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                i64::from(status.as_u16()),
                (status, "<html><body><h1>502 Bad Gateway</h1></body></html>").into_response(),
            )
        }
        Fault::Garbage => (0, "<html>upstream returned garbage".into_response()),
    }
}

#[derive(Deserialize)]
struct ClassicTokenQuery {
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
}

async fn classic_token(
    State(sim): State<Simulation>,
    Query(query): Query<ClassicTokenQuery>,
) -> Response {
    if let Some(fault) = sim.take_fault(&query.appid, "token") {
        let (code, response) = fault_response(&fault);
        sim.record(Some(&query.appid), "token", None, code);
        return response;
    }
    if let Err((code, message)) = sim.check_credentials(&query.appid, &query.secret) {
        sim.record(Some(&query.appid), "token", None, code);
        return errcode(code, message).into_response();
    }
    // A new token replaces the previous ones, which stay valid for five more minutes.
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
    sim.record(Some(&query.appid), "token", None, 0);
    Json(json!({"access_token": token, "expires_in": expires_in})).into_response()
}

#[derive(Deserialize)]
struct StableTokenBody {
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(
    State(sim): State<Simulation>,
    body: Option<Json<StableTokenBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        sim.record(None, "stable_token", None, 47001);
        return errcode(47001, "data format error").into_response();
    };
    if let Some(fault) = sim.take_fault(&body.appid, "stable_token") {
        let (code, response) = fault_response(&fault);
        sim.record(Some(&body.appid), "stable_token", None, code);
        return response;
    }
    if let Err((code, message)) = sim.check_credentials(&body.appid, &body.secret) {
        sim.record(Some(&body.appid), "stable_token", None, code);
        return errcode(code, message).into_response();
    }
    let now = sim.inner.clock.now();
    let current = {
        let state = sim.state();
        state.stable.get(&body.appid).and_then(|token| {
            let issued = state.tokens.get(token)?;
            let left = (issued.expires_at - now).num_seconds();
            (left > 300 && !body.force_refresh).then(|| (token.clone(), left))
        })
    };
    let (token, expires_in) = match current {
        Some(current) => current,
        None => {
            let (token, expires_in) = sim.issue_token(&body.appid);
            sim.state().stable.insert(body.appid.clone(), token.clone());
            (token, expires_in)
        }
    };
    sim.record(Some(&body.appid), "stable_token", None, 0);
    Json(json!({"access_token": token, "expires_in": expires_in})).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct DateRange {
    #[serde(default)]
    begin_date: Value,
    #[serde(default)]
    end_date: Value,
}

async fn datacube(
    State(sim): State<Simulation>,
    Path(name): Path<String>,
    Query(query): Query<TokenQuery>,
    body: Option<Json<DateRange>>,
) -> Response {
    let latency = {
        let mut state = sim.state();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = answer_datacube(&sim, name, query, body);
    sim.state().in_flight -= 1;
    response
}

fn answer_datacube(
    sim: &Simulation,
    name: String,
    query: TokenQuery,
    body: Option<Json<DateRange>>,
) -> Response {
    let Some((report, kind)) = Report::from_endpoint(&name) else {
        return (StatusCode::NOT_FOUND, "no such API").into_response();
    };
    let now = sim.inner.clock.now();
    let token = query.access_token.unwrap_or_default();
    let appid = sim
        .state()
        .tokens
        .get(&token)
        .map(|issued| (issued.appid.clone(), issued.expires_at));
    let begin = body
        .as_ref()
        .and_then(|Json(range)| range.begin_date.as_str().map(String::from));
    let answer = |code: i64, response: Response, appid: Option<&str>| {
        sim.record(appid, &name, begin.as_deref(), code);
        response
    };
    let (appid, expires_at) = match appid {
        _ if token.is_empty() => {
            return answer(
                41001,
                errcode(41001, "access_token missing").into_response(),
                None,
            )
        }
        None => {
            return answer(
                40001,
                errcode(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                )
                .into_response(),
                None,
            )
        }
        Some(found) => found,
    };
    if let Some(fault) = sim.take_fault(&appid, &name) {
        let (code, response) = fault_response(&fault);
        return answer(code, response, Some(&appid));
    }
    if expires_at <= now {
        return answer(
            42001,
            errcode(42001, "access_token expired").into_response(),
            Some(&appid),
        );
    }
    let Some(Json(range)) = body else {
        return answer(
            47001,
            errcode(47001, "data format error").into_response(),
            Some(&appid),
        );
    };
    let date = |value: &Value| {
        value
            .as_str()
            .filter(|text| text.len() == 8)
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y%m%d").ok())
    };
    let (Some(begin_date), Some(end_date)) = (date(&range.begin_date), date(&range.end_date))
    else {
        return answer(
            61500,
            errcode(61500, "date format error").into_response(),
            Some(&appid),
        );
    };
    let period = Period::containing(kind, begin_date);
    let yesterday = beijing_date(now) - Days::new(1);
    if period.start() != begin_date || period.end() != end_date || end_date > yesterday {
        return answer(
            61501,
            errcode(61501, "date range error").into_response(),
            Some(&appid),
        );
    }
    let app = sim
        .app_by_appid(&appid)
        .expect("tokens are issued to known apps")
        .clone();
    let published_at = beijing_midnight(period.end() + Days::new(1))
        + chrono::Duration::hours(i64::from(app.publish_hour));
    if now < published_at {
        let response = match app.not_ready {
            NotReady::Errcode => errcode(61503, "data not ready"),
            NotReady::EmptyList => Json(empty_answer(report, period)),
        };
        let code = if app.not_ready == NotReady::Errcode {
            61503
        } else {
            0
        };
        return answer(code, response.into_response(), Some(&appid));
    }
    if period.start() < app.since {
        return answer(
            0,
            Json(empty_answer(report, period)).into_response(),
            Some(&appid),
        );
    }
    let model = Model { app: &app };
    let latest_published = Period::latest_completed(
        PeriodKind::Daily,
        now - chrono::Duration::hours(i64::from(app.publish_hour)),
    );
    let body = match report {
        Report::VisitTrend => json!({"list": [model.trend_json(period)]}),
        Report::Retention => model.retention_json(period, latest_published.start()),
        Report::VisitDistribution => model.distribution_json(period),
        Report::VisitPage => model.pages_json(period),
    };
    answer(0, Json(body).into_response(), Some(&appid))
}

fn empty_answer(report: Report, period: Period) -> Value {
    match report {
        Report::VisitTrend => json!({"list": []}),
        Report::Retention => {
            json!({"ref_date": period.ref_date(), "visit_uv_new": [], "visit_uv": []})
        }
        Report::VisitDistribution | Report::VisitPage => {
            json!({"ref_date": period.ref_date(), "list": []})
        }
    }
}

/// The deterministic numbers of one app.
pub struct Model<'a> {
    /// The app.
    pub app: &'a SimApp,
}

/// A number in [0, 1) from the app, a date and a salt: the same inputs, the same number.
fn unit(appid: &str, date: NaiveDate, salt: &str) -> f64 {
    // FNV-1a, then a final mix so that neighbouring dates differ well.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in appid
        .bytes()
        .chain(date.to_string().bytes())
        .chain(salt.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// 1 plus or minus `spread`, deterministically.
fn noise(appid: &str, date: NaiveDate, salt: &str, spread: f64) -> f64 {
    1.0 + spread * (2.0 * unit(appid, date, salt) - 1.0)
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// A day's figures before rounding.
struct Day {
    sessions: f64,
    visits: f64,
    visitors: f64,
    new_visitors: f64,
    stay_per_visitor: f64,
}

impl Model<'_> {
    fn day(&self, date: NaiveDate) -> Day {
        let appid = self.app.appid.as_str();
        let weekday = match date.weekday() {
            Weekday::Mon => 0.94,
            Weekday::Tue => 0.96,
            Weekday::Wed => 0.98,
            Weekday::Thu => 1.0,
            Weekday::Fri => 1.06,
            Weekday::Sat => 1.22,
            Weekday::Sun => 1.16,
        };
        let days = (date - self.app.since).num_days().max(0) as f64;
        let growth = 1.0 + 0.0008 * days;
        let dip = self.app.dips.get(&date).copied().unwrap_or(1.0);
        let visitors =
            (self.app.visitors * weekday * growth * dip * noise(appid, date, "uv", 0.04)).round();
        let sessions = (visitors * 2.4 * noise(appid, date, "sessions", 0.05)).round();
        Day {
            sessions,
            visits: (sessions * 3.1 * noise(appid, date, "pv", 0.05)).round(),
            visitors,
            new_visitors: (visitors * 0.11 * noise(appid, date, "new", 0.08)).round(),
            stay_per_visitor: 150.0 * noise(appid, date, "stay", 0.1),
        }
    }

    fn days(&self, period: Period) -> Vec<Day> {
        let mut days = Vec::new();
        let mut date = period.start();
        while date <= period.end() {
            days.push(self.day(date));
            date = date + Days::new(1);
        }
        days
    }

    /// Opens, visits, visitors and new visitors of a period (visitors de-duplicated).
    fn totals(&self, period: Period) -> (f64, f64, f64, f64, f64) {
        let days = self.days(period);
        let sum = |f: fn(&Day) -> f64| days.iter().map(f).sum::<f64>();
        let overlap = match period.kind() {
            PeriodKind::Daily => 1.0,
            PeriodKind::Weekly => 0.42,
            PeriodKind::Monthly => 0.21,
        };
        let visitors = (sum(|d| d.visitors) * overlap).round();
        let new_visitors =
            (sum(|d| d.new_visitors) * if overlap < 1.0 { 0.93 } else { 1.0 }).round();
        let stay = sum(|d| d.stay_per_visitor * d.visitors) / sum(|d| d.visitors);
        (
            sum(|d| d.sessions),
            sum(|d| d.visits),
            visitors,
            new_visitors,
            stay,
        )
    }

    /// The visit trend item of a period.
    pub fn trend_json(&self, period: Period) -> Value {
        let (sessions, visits, visitors, new_visitors, stay_per_day_visitor) = self.totals(period);
        let day_visitors: f64 = self.days(period).iter().map(|d| d.visitors).sum();
        let stay_time_uv = round4(stay_per_day_visitor * day_visitors / visitors);
        json!({
            "ref_date": period.ref_date(),
            "session_cnt": sessions as i64,
            "visit_pv": visits as i64,
            "visit_uv": visitors as i64,
            "visit_uv_new": new_visitors as i64,
            "stay_time_uv": stay_time_uv,
            "stay_time_session": round4(stay_per_day_visitor * day_visitors / sessions),
            "visit_depth": round4(visits / sessions),
        })
    }

    /// The retention answer of a cohort, knowing the data up to `last_day`: keys that have
    /// not elapsed by then are sent as 0, as the real service does.
    pub fn retention_json(&self, cohort: Period, last_day: NaiveDate) -> Value {
        let (_, _, visitors, new_visitors, _) = self.totals(cohort);
        let appid = self.app.appid.as_str();
        let keys = |size: f64, base: f64, decay: f64, salt: &str| -> Vec<Value> {
            retention_lags(cohort.kind())
                .iter()
                .map(|&key| {
                    // Key k counts returns in the period k after the cohort, known once it is published.
                    let returns_period = (0..key).fold(cohort, |period, _| period.next());
                    let elapsed = returns_period.end() <= last_day;
                    let value = if key == 0 {
                        size
                    } else if elapsed {
                        let share = base
                            * f64::from(key).powf(-decay)
                            * noise(appid, cohort.start(), &format!("{salt}{key}"), 0.06);
                        (size * share).round()
                    } else {
                        0.0
                    };
                    json!({"key": key, "value": value as i64})
                })
                .collect()
        };
        json!({
            "ref_date": cohort.ref_date(),
            "visit_uv_new": keys(new_visitors, 0.28, 0.45, "new"),
            "visit_uv": keys(visitors, 0.46, 0.3, "active"),
        })
    }

    /// The visit distribution of a day.
    pub fn distribution_json(&self, period: Period) -> Value {
        let day = self.day(period.start());
        let appid = self.app.appid.as_str();
        let date = period.start();
        let split = |total: f64, weights: &[(i64, f64)], salt: &str| -> Vec<Value> {
            let raw: Vec<(i64, f64)> = weights
                .iter()
                .map(|(key, weight)| {
                    (
                        *key,
                        weight * noise(appid, date, &format!("{salt}{key}"), 0.15),
                    )
                })
                .collect();
            let sum: f64 = raw.iter().map(|(_, w)| w).sum();
            raw.iter()
                .map(|(key, weight)| json!({"key": key, "value": (total * weight / sum).round() as i64}))
                .collect()
        };
        const SOURCES: [(i64, f64); 14] = [
            (1, 38.0),
            (2, 9.0),
            (3, 14.0),
            (4, 6.0),
            (5, 2.5),
            (6, 5.0),
            (7, 4.0),
            (8, 1.5),
            (10, 2.0),
            (11, 1.2),
            (14, 3.0),
            (18, 4.5),
            (22, 2.2),
            (33, 6.0),
        ];
        const STAY: [(i64, f64); 8] = [
            (1, 8.0),
            (2, 11.0),
            (3, 15.0),
            (4, 19.0),
            (5, 14.0),
            (6, 13.0),
            (7, 11.0),
            (8, 9.0),
        ];
        const DEPTH: [(i64, f64); 7] = [
            (1, 36.0),
            (2, 27.0),
            (3, 16.0),
            (4, 9.0),
            (5, 5.0),
            (6, 5.0),
            (7, 2.0),
        ];
        json!({
            "ref_date": period.ref_date(),
            "list": [
                {"index": "access_source_session_cnt", "item_list": split(day.sessions, &SOURCES, "src")},
                {"index": "access_staytime_info", "item_list": split(day.sessions, &STAY, "stay")},
                {"index": "access_depth_info", "item_list": split(day.sessions, &DEPTH, "depth")},
                {"index": "access_source_visit_uv", "item_list": split(day.visitors, &SOURCES, "srcuv")},
            ]
        })
    }

    /// The top pages of a day, by visits.
    pub fn pages_json(&self, period: Period) -> Value {
        let day = self.day(period.start());
        let appid = self.app.appid.as_str();
        let date = period.start();
        const PAGES: [&str; 12] = [
            "pages/index/index",
            "pages/goods/detail",
            "pages/search/search",
            "pages/cart/cart",
            "pages/order/confirm",
            "pages/user/center",
            "pages/category/list",
            "pages/order/list",
            "pages/coupon/list",
            "pages/address/edit",
            "pages/article/detail",
            "pages/help/faq",
        ];
        let mut pages: Vec<(String, f64)> = PAGES
            .iter()
            .enumerate()
            .map(|(rank, path)| {
                let weight = 1.0 / (rank as f64 + 1.0).powf(1.1) * noise(appid, date, path, 0.1);
                (path.to_string(), weight)
            })
            .collect();
        let sum: f64 = pages.iter().map(|(_, w)| w).sum();
        for (_, weight) in &mut pages {
            *weight /= sum;
        }
        pages.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<Value> = pages
            .iter()
            .enumerate()
            .map(|(rank, (path, share))| {
                let visits = (day.visits * share).round();
                let entry = if rank == 0 { 0.7 } else { 0.3 / PAGES.len() as f64 };
                json!({
                    "page_path": path,
                    "page_visit_pv": visits as i64,
                    "page_visit_uv": (visits * 0.42).round() as i64,
                    "page_staytime_pv": round4(20.0 * noise(appid, date, &format!("{path}stay"), 0.5)),
                    "entrypage_pv": (day.sessions * entry).round() as i64,
                    "exitpage_pv": (visits * 0.31).round() as i64,
                    "page_share_pv": (visits * 0.004).round() as i64,
                    "page_share_uv": (visits * 0.003).round() as i64,
                })
            })
            .collect();
        json!({"ref_date": period.ref_date(), "list": list})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> SimApp {
        SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "s", 10_000.0)
    }

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn numbers_are_deterministic_and_follow_the_weekly_rhythm() {
        let app = app();
        let model = Model { app: &app };
        assert_eq!(
            model.trend_json(day("20240601")),
            model.trend_json(day("20240601"))
        );
        // Saturday above Monday, every week of a quarter.
        let mut saturday = NaiveDate::from_ymd_opt(2024, 4, 6).unwrap();
        for _ in 0..12 {
            let uv = |date: NaiveDate| {
                model.trend_json(Period::containing(PeriodKind::Daily, date))["visit_uv"]
                    .as_i64()
                    .unwrap()
            };
            assert!(uv(saturday) > uv(saturday - Days::new(5)), "{saturday}");
            saturday = saturday + Days::new(7);
        }
    }

    #[test]
    fn retention_keys_not_yet_elapsed_are_sent_as_zero() {
        let app = app();
        let model = Model { app: &app };
        let cohort = day("20240601");
        let answer = model.retention_json(cohort, NaiveDate::from_ymd_opt(2024, 6, 3).unwrap());
        let values: Vec<i64> = answer["visit_uv_new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["value"].as_i64().unwrap())
            .collect();
        assert!(
            values[0] > 0 && values[1] > 0 && values[2] > 0,
            "{values:?}"
        );
        assert_eq!(&values[3..], [0, 0, 0, 0, 0, 0, 0]);
        assert!(values[1] < values[0] && values[2] < values[1]);
    }

    #[test]
    fn a_dip_reduces_that_day_only() {
        let mut dipped = app();
        let date = NaiveDate::from_ymd_opt(2024, 6, 5).unwrap();
        dipped.dips.insert(date, 0.5);
        let plain = app();
        let uv = |app: &SimApp, date| {
            Model { app }.trend_json(Period::containing(PeriodKind::Daily, date))["visit_uv"]
                .as_f64()
                .unwrap()
        };
        assert!((uv(&dipped, date) / uv(&plain, date) - 0.5).abs() < 0.01);
        assert_eq!(
            uv(&dipped, date + Days::new(1)),
            uv(&plain, date + Days::new(1))
        );
    }
}
