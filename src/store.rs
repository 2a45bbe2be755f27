//! The latest snapshot of every app, and `/metrics` rendered from it once per change.
//!
//! The poller writes through [`Sink`]; each write bumps a generation. A scrape asks for the
//! bytes: if nothing changed since the last render (neither a snapshot nor a counter), it gets
//! the same `Bytes` again, gzipped ones too, so scrapes cost a clone however many apps there
//! are. Nothing here calls WeChat.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::config::App;
use crate::metrics::{render, SelfMetrics};
use crate::period::PeriodKind;
use crate::report::{AppData, Held, Report};
use crate::sink::{JobStatus, Sink};

/// Every app's data and status, and the last rendering.
pub struct Store {
    state: RwLock<State>,
    generation: AtomicU64,
    self_metrics: Arc<SelfMetrics>,
    rendered: Mutex<Option<Rendered>>,
}

#[derive(Default)]
struct State {
    apps: Vec<AppData>,
    statuses: Vec<BTreeMap<(Report, PeriodKind), JobStatus>>,
    first_round_done: Vec<bool>,
    crashes: Vec<Option<String>>,
}

struct Rendered {
    version: (u64, u64),
    text: Bytes,
    gzip: Option<crate::gzip::Head>,
}

/// One app as the landing page shows it.
#[derive(Clone, Debug)]
pub struct AppOverview {
    /// The `app` label.
    pub name: String,
    /// The appid.
    pub appid: String,
    /// Whether the last attempt succeeded.
    pub up: bool,
    /// Whether the first round is over.
    pub ready: bool,
    /// Status per (report, kind).
    pub jobs: BTreeMap<(Report, PeriodKind), JobStatus>,
    /// The last unexpected failure of the app's poller, until a report succeeds again.
    pub crash: Option<String>,
}

impl Store {
    /// A store for `apps` (in this order: the poller refers to them by index).
    pub fn new(apps: &[App], self_metrics: Arc<SelfMetrics>) -> Store {
        let state = State {
            apps: apps
                .iter()
                .map(|app| AppData {
                    name: app.name.clone(),
                    appid: app.appid.clone(),
                    up: true,
                    held: BTreeMap::new(),
                })
                .collect(),
            statuses: vec![BTreeMap::new(); apps.len()],
            first_round_done: vec![false; apps.len()],
            crashes: vec![None; apps.len()],
        };
        Store {
            state: RwLock::new(state),
            generation: AtomicU64::new(1),
            self_metrics,
            rendered: Mutex::new(None),
        }
    }

    fn write(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.write().expect("store lock"));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The exposition in parts, gzipped if asked: the text rendered once per change (data,
    /// health, the exporter's counters), then the process metrics read now. Gzipped, the
    /// first part is compressed once per change and the second appended to the same stream.
    pub fn exposition(&self, gzip: bool) -> Vec<Bytes> {
        let version = (
            self.generation.load(Ordering::Acquire),
            self.self_metrics.changes(),
        );
        let mut rendered = self.rendered.lock().expect("render lock");
        if rendered.as_ref().is_none_or(|r| r.version != version) {
            let mut text =
                String::with_capacity(rendered.as_ref().map_or(4096, |r| r.text.len() + 1024));
            render(
                &self.state.read().expect("store lock").apps,
                &self.self_metrics,
                &mut text,
            );
            *rendered = Some(Rendered {
                version,
                text: Bytes::from(text),
                gzip: None,
            });
        }
        let rendered = rendered.as_mut().expect("rendered above");
        let mut tail = String::new();
        self.self_metrics.render_process(&mut tail);
        if !gzip {
            return vec![rendered.text.clone(), Bytes::from(tail)];
        }
        let head = rendered
            .gzip
            .get_or_insert_with(|| crate::gzip::head(&rendered.text));
        let end = crate::gzip::finish(head, tail.as_bytes());
        vec![head.bytes.clone(), Bytes::from(end)]
    }

    /// The whole exposition in one piece (see [`Store::exposition`]).
    pub fn metrics(&self, gzip: bool) -> Bytes {
        Bytes::from(self.exposition(gzip).concat())
    }

    /// True once every app has finished its first round of polling.
    pub fn is_ready(&self) -> bool {
        self.state
            .read()
            .expect("store lock")
            .first_round_done
            .iter()
            .all(|done| *done)
    }

    /// Every app's status, for the landing page.
    pub fn overview(&self) -> Vec<AppOverview> {
        let state = self.state.read().expect("store lock");
        state
            .apps
            .iter()
            .zip(&state.statuses)
            .zip(&state.first_round_done)
            .zip(&state.crashes)
            .map(|(((app, jobs), ready), crash)| AppOverview {
                name: app.name.clone(),
                appid: app.appid.clone(),
                up: app.up,
                ready: *ready,
                jobs: jobs.clone(),
                crash: crash.clone(),
            })
            .collect()
    }
}

impl Sink for Store {
    fn held(&self, app: usize, report: Report, kind: PeriodKind, held: Held) {
        self.write(|state| {
            state.apps[app].held.insert((report, kind), held);
        });
    }

    fn status(&self, app: usize, report: Report, kind: PeriodKind, status: JobStatus) {
        self.write(|state| {
            state.statuses[app].insert((report, kind), status);
        });
    }

    fn up(&self, app: usize, up: bool) {
        self.write(|state| {
            state.apps[app].up = up;
            if up {
                state.crashes[app] = None;
            }
        });
    }

    fn first_round_done(&self, app: usize) {
        self.write(|state| state.first_round_done[app] = true);
    }

    fn crashed(&self, app: usize, message: &str) {
        self.write(|state| {
            state.apps[app].up = false;
            state.crashes[app] = Some(message.to_string());
            state.first_round_done[app] = true;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenSource};

    fn store() -> Store {
        let app = App {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            token: TokenSource::StableToken(Secret::new("s")),
        };
        Store::new(&[app], Arc::new(SelfMetrics::new()))
    }

    #[test]
    fn scrapes_reuse_one_rendering_until_something_changes() {
        let store = store();
        let first = store.exposition(false)[0].clone();
        assert_eq!(first.as_ptr(), store.exposition(false)[0].as_ptr());
        let gzipped = store.exposition(true)[0].clone();
        assert_eq!(gzipped.as_ptr(), store.exposition(true)[0].as_ptr());

        store.up(0, false);
        assert_ne!(first.as_ptr(), store.exposition(false)[0].as_ptr());
        let changed = store.metrics(false);
        assert!(String::from_utf8_lossy(&changed)
            .contains("wechat_miniprogram_up{appid=\"wx1234567890abcdef\",app=\"shop\"} 0"));
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&store.metrics(true)[..]),
            &mut text,
        )
        .unwrap();
        // The same exposition, but for the process metrics, read anew for each.
        let without_process = |text: &str| -> String {
            text.lines()
                .filter(|line| !line.contains("process_"))
                .map(|line| format!("{line}\n"))
                .collect()
        };
        assert_eq!(
            without_process(&text),
            without_process(&String::from_utf8_lossy(&changed))
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }

    #[test]
    fn ready_only_after_every_first_round() {
        let store = store();
        assert!(!store.is_ready());
        store.first_round_done(0);
        assert!(store.is_ready());
    }
}
