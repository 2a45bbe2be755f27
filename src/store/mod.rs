//! The latest snapshot of every app, and `/metrics` rendered from it once per change.
//!
//! The poller writes through [`Sink`]; each write bumps a generation. A scrape asks for the
//! bytes: if nothing changed since the last render (neither a snapshot nor a counter), it gets
//! the same `Bytes` again, gzipped ones too, so scrapes cost a clone however many apps there
//! are. Nothing here calls WeChat.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::calendar::Calendar;
use crate::domain::App;
use crate::metrics::{render_spilling, SelfMetrics};
use crate::period::PeriodKind;
use crate::publication::Habits;
use crate::report::Settings as ReportSettings;
use crate::report::{AppData, Held, Report, ReportSet};
use crate::sink::{Answers, AppSlot, JobStatus, Resume, Sink};
use crate::state::{record_gap, Gaps, StateDir};

/// Every app's data and status, and the last rendering.
pub struct Store {
    state: RwLock<State>,
    generation: AtomicU64,
    self_metrics: Arc<SelfMetrics>,
    rendered: Mutex<Option<Rendered>>,
    /// The newest compressed rendering and its version, readable while the next one is
    /// being rendered (see [`Store::exposition_now`]).
    last_gzip: Mutex<Option<((u64, u64), crate::gzip::Head)>>,
    /// A large exposition is being rendered off the scrape path.
    rendering_aside: AtomicBool,
    /// From what size an outdated gzip rendering is served ([`RENDER_ASIDE`]).
    render_aside: std::sync::atomic::AtomicUsize,
    /// Where the state is kept across restarts, if anywhere.
    disk: Option<StateDir>,
    next_slot: AtomicU64,
}

/// The apps by name, and the name of the app in each slot.
#[derive(Default)]
struct State {
    apps: BTreeMap<String, Entry>,
    names: HashMap<AppSlot, String>,
    /// The calendar the kind of each exported day is told from.
    calendar: Arc<Calendar>,
}

/// One app: what is exported, and beside it what the pages show and the poller resumes from.
struct Entry {
    data: AppData,
    meta: Meta,
}

impl State {
    /// The app in `slot`, if it is still there.
    fn get(&self, slot: AppSlot) -> Option<&Entry> {
        self.apps.get(self.names.get(&slot)?)
    }

    fn get_mut(&mut self, slot: AppSlot) -> Option<&mut Entry> {
        self.apps.get_mut(self.names.get(&slot)?)
    }
}

struct Meta {
    slot: AppSlot,
    statuses: BTreeMap<(Report, PeriodKind), JobStatus>,
    /// The first round is over, or the app's state was read from disk.
    ready: bool,
    crash: Option<String>,
    habits: Habits,
    /// Periods on disk not yet ended when they were read: not written over by older ones.
    newer_on_disk: BTreeMap<(Report, PeriodKind), crate::period::Period>,
    /// The reports the app polls: what a stopping poller hands on of another is dropped.
    enabled: ReportSet,
    /// The periods no running exporter held.
    gaps: Gaps,
}

/// The exposition of one version of the state: compressed (what Prometheus asks for), and
/// as text only while some scraper asks for text.
struct Rendered {
    version: (u64, u64),
    text: Option<(Bytes, Instant)>,
    gzip: Option<crate::gzip::Head>,
    tail: Option<Tail>,
}

/// The process metrics, read at most once a second (a scraper under load would otherwise
/// read `/proc` for each scrape), as text and as the end of the gzip stream.
struct Tail {
    read: Instant,
    text: Bytes,
    gzip_end: Option<Bytes>,
}

/// How long the process metrics are reused.
const TAIL_KEPT: Duration = Duration::from_secs(1);

impl Rendered {
    /// The sizes of the text and of the compressed head, for the next buffers.
    fn sizes(&self) -> (usize, usize) {
        let text = self.text.as_ref().map_or(0, |(text, _)| text.len());
        let gzip = self.gzip.as_ref().map_or(0, |head| head.bytes.len());
        (text, gzip)
    }
}

/// The uncompressed size from which an outdated exposition is served while the new one is
/// rendered off the scrape path (about 20 apps with every report; rendering this much takes
/// a few milliseconds).
pub const RENDER_ASIDE: usize = 1 << 20;

/// How long the text of the exposition is kept after the last scrape that asked for it
/// uncompressed: scrapers that ask for gzip alone never make the exporter hold it.
const TEXT_KEPT: Duration = Duration::from_secs(60);

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
    /// A store for `apps` in memory, in slots 0, 1, ... in this order.
    pub fn new(apps: &[App], self_metrics: Arc<SelfMetrics>) -> Store {
        let store = Store::empty(self_metrics, None);
        for app in apps {
            store.add(app, &ReportSettings::default(), DateTime::<Utc>::MIN_UTC);
        }
        store
    }

    /// A store with no app yet, keeping its state in `disk` if given.
    pub fn empty(self_metrics: Arc<SelfMetrics>, disk: Option<StateDir>) -> Store {
        Store {
            state: RwLock::new(State::default()),
            generation: AtomicU64::new(1),
            self_metrics,
            rendered: Mutex::new(None),
            last_gzip: Mutex::new(None),
            rendering_aside: AtomicBool::new(false),
            render_aside: std::sync::atomic::AtomicUsize::new(RENDER_ASIDE),
            disk,
            next_slot: AtomicU64::new(0),
        }
    }

    fn write(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.write().expect("store lock"));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes the app in `slot`, if it is still there (a removed app's poller may still be
    /// finishing an attempt: what it hands on is dropped).
    fn write_app(&self, slot: AppSlot, change: impl FnOnce(&mut AppData, &mut Meta)) {
        self.write(|state| {
            if let Some(entry) = state.get_mut(slot) {
                change(&mut entry.data, &mut entry.meta);
            }
        });
    }

    /// Adds `app`, with what it had on disk (read with `reports` at `now`): its poller starts
    /// from the returned [`Resume`]. An app whose periods were read from disk is ready at once.
    pub fn add(
        &self,
        app: &App,
        reports: &ReportSettings,
        now: DateTime<Utc>,
    ) -> (AppSlot, Resume) {
        let loaded = match &self.disk {
            Some(disk) => disk.load(&app.appid, reports, now),
            None => Default::default(),
        };
        let resume = loaded.resume();
        if !loaded.held.is_empty() {
            tracing::info!(app = %app.name, periods = loaded.held.len(), "state read from disk");
        }
        let slot = AppSlot(self.next_slot.fetch_add(1, Ordering::Relaxed));
        let data = AppData {
            name: app.name.clone(),
            appid: app.appid.to_string(),
            labels: app.labels.clone(),
            up: true,
            held: loaded.held,
            states: BTreeMap::new(),
        };
        let meta = Meta {
            slot,
            statuses: BTreeMap::new(),
            ready: !data.held.is_empty(),
            crash: None,
            habits: loaded.habits,
            newer_on_disk: loaded.newer,
            enabled: reports.enabled,
            gaps: loaded.gaps,
        };
        self.write(|state| {
            state.names.insert(slot, app.name.clone());
            state.apps.insert(app.name.clone(), Entry { data, meta });
        });
        (slot, resume)
    }

    /// Removes the app in `slot`: its series disappear with the next scrape.
    pub fn remove(&self, slot: AppSlot) {
        self.write(|state| {
            if let Some(name) = state.names.remove(&slot) {
                state.apps.remove(&name);
            }
        });
    }

    /// Tells the kind of each exported day from `calendar` (the configuration's).
    pub fn set_calendar(&self, calendar: &Arc<Calendar>) {
        let same = *self.state.read().expect("store lock").calendar == **calendar;
        if !same {
            self.write(|state| state.calendar = calendar.clone());
        }
    }

    /// Gives the app in `slot` the labels of `app` (changed by a reload).
    pub fn relabel(&self, slot: AppSlot, app: &App) {
        self.write_app(slot, |data, _| data.labels = app.labels.clone());
    }

    /// Forgets what the app in `slot` holds of reports `reports` no longer enables, and
    /// their statuses: a report switched off by a reload is no longer exported.
    pub fn keep_enabled(&self, slot: AppSlot, reports: &ReportSettings) {
        self.write_app(slot, |data, meta| {
            meta.enabled = reports.enabled;
            data.held
                .retain(|(report, _), _| report.is_enabled(reports));
            data.states
                .retain(|(report, _), _| report.is_enabled(reports));
            meta.statuses
                .retain(|(report, _), _| report.is_enabled(reports));
            meta.newer_on_disk
                .retain(|(report, _), _| report.is_enabled(reports));
        });
    }

    /// What the app in `slot` holds, for a poller that starts again (after a reload or a
    /// crash) without asking WeChat for it again.
    pub fn resume(&self, slot: AppSlot) -> Resume {
        let state = self.state.read().expect("store lock");
        let Some(entry) = state.get(slot) else {
            return Resume::default();
        };
        Resume {
            held: entry
                .data
                .held
                .iter()
                .map(|(key, held)| (*key, (held.period, held.fetched_at)))
                .collect(),
            habits: entry.meta.habits.clone(),
        }
    }

    /// The slots of the apps, in the order of their names.
    pub fn slots(&self) -> Vec<AppSlot> {
        let state = self.state.read().expect("store lock");
        state.apps.values().map(|entry| entry.meta.slot).collect()
    }

    /// Waits until the state written so far is on disk, for at most `timeout`; `false` if it
    /// is not.
    pub fn flush(&self, timeout: Duration) -> bool {
        match &self.disk {
            Some(disk) => disk.flush(timeout),
            None => true,
        }
    }

    /// Stops writing the state (what is not on disk yet is lost, as in a crash) and gives up
    /// the storage's lock, as the process's exit does.
    pub fn close(&self) {
        if let Some(disk) = &self.disk {
            disk.close();
        }
    }

    /// The exporter's own metrics.
    pub fn self_metrics(&self) -> &Arc<SelfMetrics> {
        &self.self_metrics
    }

    /// As [`Store::exposition`], never waiting for a large rendering: when the state changed
    /// since the last gzip rendering and that one is over [`RENDER_ASIDE`] (a large fleet
    /// while a round fills the store), the scrape gets it, with the process metrics read
    /// now, and the new one is rendered off the scrape path, one at a time (renders are
    /// coalesced: changes that come meanwhile go into the next). A small exposition is
    /// rendered at once, as are text scrapes.
    pub fn exposition_now(self: &Arc<Self>, gzip: bool) -> Vec<Bytes> {
        if let Some(parts) = self.exposition_kept(gzip) {
            return parts;
        }
        if gzip {
            if let Some(parts) = self.gzip_aside() {
                return parts;
            }
        }
        self.exposition(gzip)
    }

    /// The exposition as it was last served, if serving it again needs no rendering and no
    /// reading (the state unchanged, the process metrics read within a second, the form asked
    /// for kept) and no rendering holds it: what a scrape is answered with at once, without
    /// waiting for a thread that may render.
    pub fn exposition_kept(&self, gzip: bool) -> Option<Vec<Bytes>> {
        let version = (
            self.generation.load(Ordering::Acquire),
            self.self_metrics.changes(),
        );
        let mut rendered = self.rendered.try_lock().ok()?;
        let kept = rendered.as_mut().filter(|kept| kept.version == version)?;
        let tail = kept
            .tail
            .as_ref()
            .filter(|tail| tail.read.elapsed() < TAIL_KEPT)?;
        if gzip {
            let head = kept.gzip.as_ref()?;
            return Some(vec![head.bytes.clone(), tail.gzip_end.clone()?]);
        }
        let (text, used) = kept.text.as_mut()?;
        *used = Instant::now();
        Some(vec![text.clone(), tail.text.clone()])
    }

    /// The last gzip rendering with a fresh tail, if it is large and outdated; a rendering
    /// of the new version is started off the scrape path if none is under way.
    fn gzip_aside(self: &Arc<Self>) -> Option<Vec<Bytes>> {
        let version = (
            self.generation.load(Ordering::Acquire),
            self.self_metrics.changes(),
        );
        let (kept, head) = self.last_gzip.lock().expect("render lock").clone()?;
        let aside = self.render_aside.load(Ordering::Relaxed);
        if kept == version || (head.text_length() as usize) < aside {
            return None;
        }
        if !self.rendering_aside.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            std::thread::spawn(move || {
                store.exposition(true);
                store.rendering_aside.store(false, Ordering::Release);
            });
        }
        let mut tail = String::new();
        self.self_metrics.render_process(&mut tail);
        let end = crate::gzip::finish(&head, tail.as_bytes());
        Some(vec![head.bytes.clone(), Bytes::from(end)])
    }

    /// The exposition in parts, gzipped if asked: the data, health and the exporter's
    /// counters rendered once per change, then the process metrics read now. Gzipped, the
    /// first part is compressed as it is rendered (the text is never held whole) and the
    /// second appended to the same stream. As text, it is rendered once per change and kept
    /// while scrapers keep asking for text.
    pub fn exposition(&self, gzip: bool) -> Vec<Bytes> {
        let version = (
            self.generation.load(Ordering::Acquire),
            self.self_metrics.changes(),
        );
        let mut rendered = self.rendered.lock().expect("render lock");
        let previous = rendered.take();
        let sizes = previous.as_ref().map_or((0, 0), Rendered::sizes);
        let fresh = !matches!(&previous, Some(kept) if kept.version == version);
        let mut current = match previous {
            Some(kept) if kept.version == version => kept,
            _ => Rendered {
                version,
                text: None,
                gzip: None,
                tail: None,
            },
        };
        let mut tail = self.tail(current.tail.take());
        let parts = if gzip {
            self.gzipped(&mut current, &mut tail, sizes.1)
        } else {
            let known = current
                .gzip
                .as_ref()
                .map_or(0, |head| head.text_length() as usize);
            let text = match current.text.take() {
                Some((text, _)) => text,
                None => self.text(sizes.0.max(known)),
            };
            current.text = Some((text.clone(), Instant::now()));
            vec![text, tail.text.clone()]
        };
        current.tail = Some(tail);
        let text = current
            .gzip
            .as_ref()
            .map_or(0, |head| head.text_length() as usize);
        let large = text.max(current.sizes().0) >= RENDER_ASIDE;
        *rendered = Some(current);
        drop(rendered);
        if fresh && large {
            // What the rendering copied and buffered is freed; its pages go back.
            crate::heap::release();
        }
        parts
    }

    /// The process metrics: `kept` if read within a second, else read now.
    fn tail(&self, kept: Option<Tail>) -> Tail {
        match kept {
            Some(tail) if tail.read.elapsed() < TAIL_KEPT => tail,
            _ => {
                let mut text = String::new();
                self.self_metrics.render_process(&mut text);
                Tail {
                    read: Instant::now(),
                    text: Bytes::from(text),
                    gzip_end: None,
                }
            }
        }
    }

    /// The gzip stream of `current` and `tail`: the head compressed once (from the text if it
    /// is kept, else as it is rendered, into about `size` bytes), the end per tail. Text no
    /// longer asked for is dropped.
    fn gzipped(&self, current: &mut Rendered, tail: &mut Tail, size: usize) -> Vec<Bytes> {
        if current
            .text
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() > TEXT_KEPT)
        {
            current.text = None;
        }
        let head = match (current.gzip.take(), &current.text) {
            (Some(head), _) => head,
            (None, Some((text, _))) => crate::gzip::head(text),
            (None, None) => self.compress(size),
        };
        let end = tail
            .gzip_end
            .get_or_insert_with(|| Bytes::from(crate::gzip::finish(&head, &tail.text)));
        let parts = vec![head.bytes.clone(), end.clone()];
        *self.last_gzip.lock().expect("render lock") = Some((current.version, head.clone()));
        current.gzip = Some(head);
        parts
    }

    /// A copy of what is rendered, taken under the lock and rendered after it: the pollers
    /// (on the runtime's threads) never wait for a rendering to hand on what they fetched.
    /// The snapshots themselves are shared, not copied.
    fn copy(&self) -> (Vec<AppData>, Arc<Calendar>) {
        let state = self.state.read().expect("store lock");
        let apps = state
            .apps
            .values()
            .map(|entry| entry.data.clone())
            .collect();
        (apps, state.calendar.clone())
    }

    /// The exposition as text, in a buffer of about `size` bytes: a large one in a sealed
    /// memory file, which plain scrapes are sent from with `sendfile` as the gzip stream is.
    fn text(&self, size: usize) -> Bytes {
        let mut writer = crate::sealed::Writer::with_capacity(size + 4096);
        self.render_to(&mut |text| writer.append(text));
        writer.finish()
    }

    /// The exposition compressed as it is rendered, into a buffer of about `size` bytes.
    fn compress(&self, size: usize) -> crate::gzip::Head {
        let mut builder = crate::gzip::Builder::new(size);
        self.render_to(&mut |text| builder.write(text));
        builder.head()
    }

    /// Renders a copy of the state, handing the text to `write` piece by piece.
    fn render_to(&self, write: &mut dyn FnMut(&[u8])) {
        let mut spill = |text: &mut String| {
            write(text.as_bytes());
            text.clear();
        };
        let (apps, calendar) = self.copy();
        let apps: Vec<&AppData> = apps.iter().collect();
        render_spilling(&apps, &calendar, &self.self_metrics, &mut spill);
    }

    /// The whole exposition in one piece (see [`Store::exposition`]).
    pub fn metrics(&self, gzip: bool) -> Bytes {
        Bytes::from(self.exposition(gzip).concat())
    }

    /// True once every app has finished its first round of polling or read its state.
    pub fn is_ready(&self) -> bool {
        let state = self.state.read().expect("store lock");
        state.apps.values().all(|entry| entry.meta.ready)
    }

    /// Every app's status, for the landing page.
    pub fn overview(&self) -> Vec<AppOverview> {
        let state = self.state.read().expect("store lock");
        state
            .apps
            .values()
            .map(|Entry { data, meta }| AppOverview {
                name: data.name.clone(),
                appid: data.appid.clone(),
                up: data.up,
                ready: meta.ready,
                jobs: meta.statuses.clone(),
                crash: meta.crash.clone(),
            })
            .collect()
    }
}

impl Sink for Store {
    fn held(&self, app: AppSlot, report: Report, kind: PeriodKind, held: Held, answers: Answers) {
        let mut appid = None;
        let mut gaps = None;
        let kept = held.clone();
        self.write_app(app, |data, meta| {
            if !meta.enabled.contains(report) {
                return;
            }
            let newer = meta.newer_on_disk.get(&(report, kind));
            if newer.is_none_or(|newer| *newer <= held.period) {
                appid = Some(data.appid.clone());
            }
            let previous = data.held.get(&(report, kind)).map(|held| held.period);
            if let Some(previous) = previous.filter(|_| report.has_history()) {
                if record_gap(&mut meta.gaps, (report, kind), previous, held.period) {
                    gaps = Some(meta.gaps.clone());
                }
            }
            data.held.insert((report, kind), held);
        });
        if let (Some(disk), Some(appid)) = (&self.disk, appid) {
            disk.save_held(&appid, report, kind, &kept, &answers);
            if let Some(gaps) = gaps {
                disk.save_gaps(&appid, &gaps);
            }
        }
    }

    fn status(&self, app: AppSlot, report: Report, kind: PeriodKind, status: JobStatus) {
        // `/metrics` shows the job's state alone: it is rendered again only when that changes.
        let mut state = self.state.write().expect("store lock");
        let Some(entry) = state
            .get_mut(app)
            .filter(|entry| entry.meta.enabled.contains(report))
        else {
            return;
        };
        let previous = entry.data.states.insert((report, kind), status.state);
        let changed = previous != Some(status.state);
        entry.meta.statuses.insert((report, kind), status);
        drop(state);
        if changed {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    fn up(&self, app: AppSlot, up: bool) {
        self.write_app(app, |data, meta| {
            data.up = up;
            if up {
                meta.crash = None;
            }
        });
    }

    fn first_round_done(&self, app: AppSlot) {
        self.write_app(app, |_, meta| meta.ready = true);
    }

    fn crashed(&self, app: AppSlot, message: &str) {
        self.write_app(app, |data, meta| {
            data.up = false;
            meta.crash = Some(message.to_string());
            meta.ready = true;
        });
    }

    fn learned(&self, app: AppSlot, habits: &Habits) {
        let mut appid = None;
        self.write_app(app, |data, meta| {
            appid = Some(data.appid.clone());
            meta.habits = habits.clone();
        });
        if let (Some(disk), Some(appid)) = (&self.disk, appid) {
            disk.save_habits(&appid, habits);
        }
    }
}

#[cfg(test)]
mod tests;
