//! The exporter's state on disk (`--storage.path`), so that a restart serves at once and asks
//! WeChat nothing it already has.
//!
//! Per app (a directory named after its appid): one file per (report, kind) holding the
//! period held, when it was fetched, and WeChat's answers to each of its calls, as sent; and
//! `publication.json`, what the app learned of publication hours. Answers rather than
//! values: a restart reads them again through the report's own parsing and assembly, the one
//! conversion there is, so a change of settings (`pages_top`, say) applies to them too, and
//! a held period whose calls changed (`portrait_ranges`) is simply fetched again.
//!
//! Writing never holds anyone up. A poller hands the new contents of a file over and goes on:
//! the latest contents of each file wait in memory (one per file, however often it changes, so
//! memory stays bounded by the number of files) for a writer thread, which writes each whole,
//! atomically, a batch at a time (each into a new temporary file of a random name, created
//! exclusively so that no link is followed; the filesystem synced; the temporary files renamed
//! over theirs; synced again). A volume that is slow, full or read-only only delays the
//! writes: they are tried again every minute, and what is on disk is read and served meanwhile.
//! [`StateDir::flush`] waits for them, for a bounded time. A lock file keeps a second exporter
//! off the same directory; temporary files a crash left are removed at start.
//!
//! Each file carries a format version. A file that is missing, truncated, corrupt, larger than
//! [`MAX_FILE`], a link, of a future version, or that names another app, another period kind
//! or a period not yet ended is a warning and is ignored: that job starts afresh. Nothing read
//! from disk is trusted more than an answer from WeChat. A file of a period not yet ended (the
//! wall clock may have been set back) is kept: an older period fetched meanwhile is not
//! written over it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::period::{beijing_date, Period, PeriodKind};
use crate::publication::Habits;
use crate::report::Settings as ReportSettings;
use crate::report::{Held, Report};
use crate::sink::{Answers, Resume};
use crate::wechat::{wire, WeChatError};

mod gaps;
mod writer;
pub use gaps::{read_gaps, record_gap, Gaps, MAX_GAPS};
use writer::{write_atomically, write_loop};

/// The version of the files written; files of a later version are ignored.
pub const FORMAT: u32 = 1;

/// The largest state file read: a held period's answers are far below (a day's 200 pages are
/// some 60 KB).
pub const MAX_FILE: u64 = 4 << 20;

/// How long the writer waits before it tries again writes that failed.
const RETRY_WRITES: Duration = Duration::from_secs(60);

/// How often a failing write is logged, at most.
const LOG_FAILURES_EVERY: Duration = Duration::from_secs(600);

/// One held period as written.
#[derive(Serialize, Deserialize)]
struct HeldFile {
    format: u32,
    appid: String,
    report: String,
    kind: PeriodKind,
    period: String,
    fetched_at: DateTime<Utc>,
    answers: Vec<AnswerFile>,
}

/// One call and WeChat's answer (`null`: an answer that held nothing).
#[derive(Serialize, Deserialize)]
struct AnswerFile {
    path: String,
    part: u32,
    body: String,
    answer: Option<Box<RawValue>>,
}

#[derive(Serialize, Deserialize)]
struct HabitsFile {
    format: u32,
    appid: String,
    habits: Habits,
}

/// What an app had on disk: its held periods, rebuilt, and its habits.
#[derive(Default)]
pub struct Loaded {
    /// The held periods, per (report, kind).
    pub held: BTreeMap<(Report, PeriodKind), Held>,
    /// Periods on disk not yet ended by the wall clock (set back, maybe): not served, and not
    /// written over with an older period.
    pub newer: BTreeMap<(Report, PeriodKind), Period>,
    /// What it learned of publication hours.
    pub habits: Habits,
    /// The periods no running exporter held.
    pub gaps: Gaps,
}

impl Loaded {
    /// What the app's poller starts from.
    pub fn resume(&self) -> Resume {
        Resume {
            held: self
                .held
                .iter()
                .map(|(key, held)| (*key, (held.period, held.fetched_at)))
                .collect(),
            habits: self.habits.clone(),
        }
    }
}

/// The writes waiting for the writer thread, and how far it got.
#[derive(Default)]
struct Pending {
    /// The latest contents of each file to write.
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Writes handed over so far.
    queued: u64,
    /// Every write handed over up to this one is on disk.
    written: u64,
    /// The directory is closed: the writer stops.
    closed: bool,
    /// Writes that failed are to be tried again now, not in a minute.
    retry_now: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    changed: Condvar,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The state directory and its writer thread.
pub struct StateDir {
    root: PathBuf,
    shared: Arc<Shared>,
    /// Held while the directory is in use: a second exporter cannot take it.
    lock: Mutex<Option<File>>,
}

impl StateDir {
    /// Opens (creating) the directory `root`: takes its lock, removes temporary files a crash
    /// left, and starts the writer. A directory that cannot be written is opened all the same
    /// (what is there is read; writes are tried again every minute), with an error logged; a
    /// directory another exporter holds is refused.
    pub fn open(root: &Path) -> Result<StateDir, String> {
        let apps = root.join("apps");
        let created = std::fs::create_dir_all(&apps);
        let lock = lock(root)?;
        remove_temporary_files(root);
        let writable = created.map_err(|error| error.to_string()).and_then(|()| {
            write_atomically(&root.join("format"), format!("{FORMAT}\n").as_bytes())
                .map_err(|error| error.to_string())
        });
        if let Err(error) = writable {
            tracing::error!(storage = %root.display(), problem = %error, "--storage.path cannot be written; what it holds is read and served, and the state is written when it can be (tried every minute)");
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&writer))
            .map_err(|error| format!("cannot start the state writer: {error}"))?;
        Ok(StateDir {
            root: root.to_path_buf(),
            shared,
            lock: Mutex::new(lock),
        })
    }

    fn app_dir(&self, appid: &str) -> PathBuf {
        self.root.join("apps").join(appid)
    }

    /// Hands the new contents of `path` to the writer; never waits for the disk. The writer
    /// is woken by the first file of a batch only: it takes the rest with it.
    fn send(&self, path: PathBuf, bytes: Vec<u8>) {
        let mut pending = self.shared.pending();
        let first = pending.files.is_empty();
        pending.files.insert(path, bytes);
        pending.queued += 1;
        drop(pending);
        if first {
            self.shared.changed.notify_all();
        }
    }

    /// Keeps `held` of `report` and `kind` for `appid`, with the answers it came from.
    pub fn save_held(
        &self,
        appid: &str,
        report: Report,
        kind: PeriodKind,
        held: &Held,
        answers: &Answers,
    ) {
        let file = HeldFile {
            format: FORMAT,
            appid: appid.to_string(),
            report: report.name().to_string(),
            kind,
            period: held.period.ref_date(),
            fetched_at: held.fetched_at,
            answers: answers
                .iter()
                .map(|(call, answer)| AnswerFile {
                    path: call.path.to_string(),
                    part: call.part,
                    body: call.body.clone(),
                    answer: answer.clone(),
                })
                .collect(),
        };
        let Ok(bytes) = serde_json::to_vec(&file) else {
            return;
        };
        let path = self
            .app_dir(appid)
            .join(format!("{}.{}.json", report.name(), kind.as_str()));
        self.send(path, bytes);
    }

    /// Keeps what `appid` learned of publication hours.
    pub fn save_habits(&self, appid: &str, habits: &Habits) {
        let file = HabitsFile {
            format: FORMAT,
            appid: appid.to_string(),
            habits: habits.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&file) {
            let path = self.app_dir(appid).join("publication.json");
            self.send(path, bytes);
        }
    }

    /// Waits until everything saved so far is on disk, for at most `timeout`; `false` if it
    /// is not (a volume that is slow, full or read-only). Writes that failed are tried again
    /// at once.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending = self.shared.pending();
        pending.retry_now = true;
        self.shared.changed.notify_all();
        let target = pending.queued;
        while pending.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = self
                .shared
                .changed
                .wait_timeout(pending, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }

    /// What `appid` had on disk, read with the current `reports` settings at `now`. What
    /// cannot be read is a warning and is left out.
    pub fn load(&self, appid: &str, reports: &ReportSettings, now: DateTime<Utc>) -> Loaded {
        let dir = self.app_dir(appid);
        let mut loaded = Loaded::default();
        if let Err(problem) = own_directory(&dir) {
            tracing::warn!(dir = %dir.display(), problem, "app state ignored; its periods are fetched again");
            return loaded;
        }
        for report in Report::all().filter(|report| report.is_enabled(reports)) {
            for &kind in report.kinds() {
                let path = dir.join(format!("{}.{}.json", report.name(), kind.as_str()));
                let Some(text) = read(&path) else { continue };
                match held_from(&text, appid, report, kind, reports, now) {
                    Ok(held) => {
                        loaded.held.insert((report, kind), held);
                    }
                    Err(Unread::Newer(period)) => {
                        tracing::warn!(file = %path.display(), period = %period, "state file of a period not yet ended (is the clock right?): not served, and kept");
                        loaded.newer.insert((report, kind), period);
                    }
                    Err(Unread::Bad(problem)) => {
                        tracing::warn!(file = %path.display(), problem, "state file ignored; the period is fetched again");
                    }
                }
            }
        }
        loaded.gaps = read_gaps(&self.root, appid);
        let path = dir.join("publication.json");
        if let Some(text) = read(&path) {
            match serde_json::from_slice::<HabitsFile>(&text) {
                Ok(file) if file.format <= FORMAT && file.appid == appid => {
                    loaded.habits = file.habits.sanitized(beijing_date(now));
                }
                Ok(_) => {
                    tracing::warn!(file = %path.display(), "state file of another app or a later version ignored");
                }
                Err(error) => {
                    tracing::warn!(file = %path.display(), problem = %error, "state file ignored");
                }
            }
        }
        loaded
    }
}

impl StateDir {
    /// Stops writing (what is not written yet is lost, as in a crash) and gives up the lock,
    /// as the exporter's exit does.
    pub fn close(&self) {
        self.shared.pending().closed = true;
        self.shared.changed.notify_all();
        let mut lock = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(lock.take());
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        self.close();
    }
}

/// How long the lock of a storage is waited for before another exporter is said to hold it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the lock of the directory `root`, or says which exporter holds it. A directory where
/// no lock file can be made (read-only) is used without one: nothing is written there anyway.
fn lock(root: &Path) -> Result<Option<File>, String> {
    let path = root.join("lock");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(file = %path.display(), problem = %error, "no lock file: another exporter on this storage would not be noticed");
            return Ok(None);
        }
    };
    // An exporter that is just exiting (or a process forked at that moment, holding the
    // descriptor until it runs its program) gives the lock up within moments.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut locked = file.try_lock();
    while matches!(locked, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {
            let mut file = file;
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(format!(
                "{} is in use by another exporter (pid {}); give each exporter its own --storage.path",
                root.display(),
                holder.trim()
            ))
        }
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(file = %path.display(), problem = %error, "the storage cannot be locked: another exporter on it would not be noticed");
            Ok(None)
        }
    }
}

/// Removes the temporary files (`*.tmp`) a crash left in `root` and its app directories.
fn remove_temporary_files(root: &Path) {
    let dirs = std::fs::read_dir(root.join("apps"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .chain([root.to_path_buf()]);
    for dir in dirs {
        if own_directory(&dir).is_err() {
            continue;
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `Ok` if `dir` is a directory of its own (or does not exist yet), not a link that would send
/// reads and writes elsewhere.
fn own_directory(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            Err("a link, not a directory of the storage".into())
        }
        Ok(metadata) if !metadata.is_dir() => Err("not a directory".into()),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// The bytes of `path`, if it is a file (not a link, a directory or a FIFO) of at most
/// [`MAX_FILE`] bytes.
fn read(path: &Path) -> Option<Vec<u8>> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() || metadata.len() > MAX_FILE {
        tracing::warn!(file = %path.display(), "state file ignored: a link, not a file, or too large");
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() as u64 <= MAX_FILE => Some(bytes),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "state file ignored: too large");
            None
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), problem = %error, "state file unreadable");
            None
        }
    }
}

/// Why a held period was not read back.
enum Unread {
    /// The file does not read, or is not one the exporter would write.
    Bad(String),
    /// It holds a period not yet ended.
    Newer(Period),
}

impl From<&str> for Unread {
    fn from(problem: &str) -> Unread {
        Unread::Bad(problem.to_string())
    }
}

impl From<String> for Unread {
    fn from(problem: String) -> Unread {
        Unread::Bad(problem)
    }
}

/// Rebuilds a held period from its file: its calls as the report makes them now, each
/// answer read again by the report, the pieces assembled.
fn held_from(
    text: &[u8],
    appid: &str,
    report: Report,
    kind: PeriodKind,
    reports: &ReportSettings,
    now: DateTime<Utc>,
) -> Result<Held, Unread> {
    let file: HeldFile = serde_json::from_slice(text).map_err(|error| error.to_string())?;
    if file.format > FORMAT {
        return Err(Unread::Bad(format!(
            "format {} is newer than this exporter's ({FORMAT})",
            file.format
        )));
    }
    if file.appid != appid || file.report != report.name() || file.kind != kind {
        return Err("the file is of another app, report or period kind".into());
    }
    let period = Period::parse_ref_date(&file.period)
        .filter(|period| period.kind() == kind)
        .ok_or("the period is not one of the file's kind")?;
    let newest = report.newest(kind, now, reports);
    if file.fetched_at > now && period <= newest {
        return Err("the fetch time is in the future".into());
    }
    if period > newest {
        return Err(Unread::Newer(period));
    }
    let mut pieces = report.pieces();
    for call in report.calls(period, reports) {
        let answer = file
            .answers
            .iter()
            .find(|kept| kept.path == call.path && kept.part == call.part && kept.body == call.body)
            .ok_or("an answer is missing (the settings changed)")?;
        if let Some(raw) = &answer.answer {
            let read = match wire::answer(raw.get().as_bytes()) {
                Ok(Some(answer)) => pieces.read(0, &call, answer),
                Ok(None) => Err(WeChatError::Decode("it says \"not ready\"".into())),
                Err(error) => Err(error),
            };
            read.map_err(|error| format!("an answer does not read: {error}"))?;
        }
    }
    let snapshot = pieces
        .assemble(0, period, reports)
        .ok_or("the answers hold no published period")?;
    Ok(Held {
        period,
        fetched_at: file.fetched_at,
        snapshot,
    })
}
