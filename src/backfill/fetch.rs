//! Making the calls of a plan: a few workers (as many as `polling.concurrency`) share the
//! queue, each call with the agent's client and error policy.
//!
//! A transient error is retried up to [`ATTEMPTS`] times, at the policy's backoff; the
//! per-minute quota is waited out (up to [`MINUTE_QUOTA_WAITS`] times). A configuration error
//! or the daily quota stops the app: its remaining calls fail without being made.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::history::History;
use super::plan::{Plan, Unit};
use super::progress::Progress;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{App, Polling};
use crate::policy::react;
use crate::report::{Pieces, Report};
use crate::wechat::client::{AppConnection, Client, Observer};
use crate::wechat::wire::Answer;
use crate::wechat::{ErrorClass, WeChatError};

/// Attempts at one call before it is reported as failed (transient errors only; a
/// configuration error or the daily quota stops the app at once).
pub const ATTEMPTS: u32 = 5;

/// Waits for the per-minute quota (45011) before a call is given up.
pub const MINUTE_QUOTA_WAITS: u32 = 10;

/// Counts the calls the client makes.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) datacube: AtomicU64,
    pub(super) other: AtomicU64,
    pub(super) token: AtomicU64,
}

impl Observer for Calls {
    fn request(&self, _: &App, endpoint: &str, _: Duration, _: Option<&WeChatError>) {
        // Datacube endpoints are labelled by their name, the other APIs by their path.
        let counter = if endpoint.contains("token") {
            &self.token
        } else if endpoint.contains('/') {
            &self.other
        } else {
            &self.datacube
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn token_fetch(&self, _: &App, _: bool) {}
}

/// The end of one call.
#[derive(Debug)]
pub(super) enum Fetched {
    /// The report read pieces from the answer (kept in the report's [`Pieces`]).
    Data,
    /// WeChat has nothing for the call (an answer that holds nothing, or 61503).
    Empty,
    /// Given up, after this many attempts (0: not attempted, the app was stopped).
    Failed(WeChatError, u32),
}

/// Makes every call of `plan`, at most `polling.concurrency` at a time, counting each
/// finished one in `progress`.
pub async fn fetch(
    config: &Config,
    plan: Plan,
    clock: Clock,
    progress: Arc<Progress>,
) -> Result<History, reqwest::Error> {
    let calls = Arc::new(Calls::default());
    let client = Arc::new(Client::new(
        &config.api_base_url,
        &config.polling,
        clock.clone(),
        calls.clone(),
    )?);
    let shared = Arc::new(Shared {
        client,
        polling: config.polling.clone(),
        clock,
        connections: plan
            .apps
            .iter()
            .map(|app| AppConnection::new(app.clone()))
            .collect(),
        stopped: Mutex::new(vec![None; plan.apps.len()]),
        queue: Mutex::new(plan.units.iter().cloned().collect()),
        results: Mutex::new(HashMap::new()),
        pieces: Report::all()
            .map(|report| (report, Mutex::new(report.pieces())))
            .collect(),
        progress,
    });
    let mut workers = JoinSet::new();
    for _ in 0..config.polling.concurrency.min(plan.units.len()).max(1) {
        workers.spawn(work(shared.clone()));
    }
    while workers.join_next().await.is_some() {}
    let results = std::mem::take(&mut *shared.results.lock().expect("not poisoned"));
    let pieces = Report::all()
        .map(|report| {
            let pieces = &shared.pieces[&report];
            let pieces =
                std::mem::replace(&mut *pieces.lock().expect("not poisoned"), report.pieces());
            (report, pieces)
        })
        .collect();
    Ok(History::new(plan, results, pieces, calls))
}

/// What the workers share.
struct Shared {
    client: Arc<Client>,
    polling: Polling,
    clock: Clock,
    connections: Vec<AppConnection>,
    /// Per app, the error that stopped it (a configuration error or the daily quota).
    stopped: Mutex<Vec<Option<WeChatError>>>,
    queue: Mutex<VecDeque<Unit>>,
    results: Mutex<HashMap<Unit, Fetched>>,
    /// What each report read of the answers, by app.
    pieces: HashMap<Report, Mutex<Pieces>>,
    progress: Arc<Progress>,
}

async fn work(shared: Arc<Shared>) {
    loop {
        let next = shared.queue.lock().expect("not poisoned").pop_front();
        let Some(unit) = next else { return };
        let fetched = fetch_unit(&shared, &unit).await;
        if let Fetched::Failed(error, attempts) = &fetched {
            tracing::debug!(app = %shared.connections[unit.app].app.name, report = %unit.report, period = %unit.call.asks, attempts, error = %error, "call failed");
            shared.progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .results
            .lock()
            .expect("not poisoned")
            .insert(unit, fetched);
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One call with the agent's reactions: back off on transient errors, wait out the minute
/// quota, and stop the app on a configuration error or the daily quota.
async fn fetch_unit(shared: &Shared, unit: &Unit) -> Fetched {
    let connection = &shared.connections[unit.app];
    let pieces = &shared.pieces[&unit.report];
    let parse = |answer: Answer<'_>| {
        let read = pieces
            .lock()
            .expect("not poisoned")
            .read_history(unit.app, &unit.call, answer)?;
        Ok((read > 0).then_some(()))
    };
    let mut attempts = 0;
    let mut minute_waits = 0;
    loop {
        if let Some(error) = shared.stopped.lock().expect("not poisoned")[unit.app].clone() {
            return Fetched::Failed(error, 0);
        }
        attempts += 1;
        let error = match shared.client.fetch(connection, &unit.call, parse).await {
            Ok(Some(())) => return Fetched::Data,
            Ok(None) => return Fetched::Empty,
            Err(error) => error,
        };
        let class = error.class();
        match class {
            ErrorClass::Transient if attempts < ATTEMPTS => {}
            ErrorClass::MinuteQuota if minute_waits < MINUTE_QUOTA_WAITS => {
                minute_waits += 1;
                attempts -= 1;
            }
            ErrorClass::Config | ErrorClass::DailyQuota => {
                shared.stopped.lock().expect("not poisoned")[unit.app] = Some(error.clone());
                return Fetched::Failed(error, attempts);
            }
            _ => return Fetched::Failed(error, attempts),
        }
        let now = shared.clock.now();
        let failures = attempts.saturating_sub(1);
        let reaction = react(class, failures, now, &shared.polling, fastrand::f64());
        tracing::debug!(app = %connection.app.name, report = %unit.report, period = %unit.call.asks, error = %error, "retrying");
        let deadline = reaction.retry.deadline(shared.clock.moment());
        shared.clock.sleep_until_deadline(deadline).await;
    }
}
