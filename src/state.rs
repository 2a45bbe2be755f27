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
//! Each file is written whole after each change, atomically (a temporary file, fsync,
//! rename, fsync of the directory), by one writer thread; a poller waits only when 64 writes
//! are already queued (a thousand apps' first round), so memory stays bounded.
//! Each carries a format version. A file that is missing, truncated, corrupt, of a future
//! version, or that names another app, another period kind or a period not yet ended is a
//! warning and is ignored: that job starts afresh. Nothing read from disk is trusted more
//! than an answer from WeChat.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Reports;
use crate::period::{beijing_date, Period, PeriodKind};
use crate::publication::Habits;
use crate::report::{Held, Piece, Report};
use crate::sink::{Answers, Resume};

/// The version of the files written; files of a later version are ignored.
pub const FORMAT: u32 = 1;

/// The largest state file read: a held period's answers are far below.
const MAX_FILE: u64 = 16 << 20;

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
    /// What it learned of publication hours.
    pub habits: Habits,
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

enum Message {
    Write(PathBuf, Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// How many writes may wait for the writer: a poller that hands on more waits (a short
/// back-pressure at the first round of a thousand apps), so memory stays bounded.
const QUEUE: usize = 64;

/// The state directory and its writer thread.
pub struct StateDir {
    root: PathBuf,
    writer: Mutex<mpsc::SyncSender<Message>>,
}

impl StateDir {
    /// Opens (creating) the directory `root` and checks that it can be written.
    pub fn open(root: &Path) -> Result<StateDir, String> {
        let apps = root.join("apps");
        std::fs::create_dir_all(&apps)
            .map_err(|error| format!("cannot create {}: {error}", apps.display()))?;
        write_atomically(&root.join("format"), format!("{FORMAT}\n").as_bytes())
            .map_err(|error| format!("cannot write in {}: {error}", root.display()))?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(receiver))
            .map_err(|error| format!("cannot start the state writer: {error}"))?;
        Ok(StateDir {
            root: root.to_path_buf(),
            writer: Mutex::new(sender),
        })
    }

    fn app_dir(&self, appid: &str) -> PathBuf {
        self.root.join("apps").join(appid)
    }

    fn send(&self, message: Message) {
        let writer = self.writer.lock().expect("state writer lock").clone();
        let _ = writer.send(message);
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
        self.send(Message::Write(path, bytes));
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
            self.send(Message::Write(path, bytes));
        }
    }

    /// Waits until everything saved so far is on disk.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        self.send(Message::Flush(done));
        let _ = wait.recv();
    }

    /// What `appid` had on disk, read with the current `reports` settings at `now`. What
    /// cannot be read is a warning and is left out.
    pub fn load(&self, appid: &str, reports: &Reports, now: DateTime<Utc>) -> Loaded {
        let dir = self.app_dir(appid);
        let mut loaded = Loaded::default();
        for report in Report::all().filter(|report| report.is_enabled(reports)) {
            for &kind in report.kinds() {
                let path = dir.join(format!("{}.{}.json", report.name(), kind.as_str()));
                let Some(text) = read(&path) else { continue };
                match held_from(&text, appid, report, kind, reports, now) {
                    Ok(held) => {
                        loaded.held.insert((report, kind), held);
                    }
                    Err(problem) => {
                        tracing::warn!(file = %path.display(), problem, "state file ignored; the period is fetched again");
                    }
                }
            }
        }
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

/// The bytes of `path`, if it exists and is not absurdly large.
fn read(path: &Path) -> Option<Vec<u8>> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() || metadata.len() > MAX_FILE {
        tracing::warn!(file = %path.display(), "state file ignored: not a file or too large");
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(file = %path.display(), problem = %error, "state file unreadable");
            None
        }
    }
}

/// Rebuilds a held period from its file: its calls as the report makes them now, each
/// answer read again by the report, the pieces assembled.
fn held_from(
    text: &[u8],
    appid: &str,
    report: Report,
    kind: PeriodKind,
    reports: &Reports,
    now: DateTime<Utc>,
) -> Result<Held, String> {
    let file: HeldFile = serde_json::from_slice(text).map_err(|error| error.to_string())?;
    if file.format > FORMAT {
        return Err(format!(
            "format {} is newer than this exporter's ({FORMAT})",
            file.format
        ));
    }
    if file.appid != appid || file.report != report.name() || file.kind != kind {
        return Err("the file is of another app, report or period kind".into());
    }
    let period = Period::parse_ref_date(&file.period)
        .filter(|period| period.kind() == kind)
        .ok_or("the period is not one of the file's kind")?;
    let newest = match report.refresh(reports) {
        None => Period::latest_completed(kind, now),
        Some(_) => Period::containing(kind, beijing_date(now)),
    };
    if period > newest || file.fetched_at > now {
        return Err("the period or the fetch time is in the future".into());
    }
    let mut pieces: Vec<Option<Piece>> = Vec::new();
    for call in report.calls(period, reports) {
        let answer = file
            .answers
            .iter()
            .find(|kept| kept.path == call.path && kept.part == call.part && kept.body == call.body)
            .ok_or("an answer is missing (the settings changed)")?;
        let piece = match &answer.answer {
            None => None,
            Some(raw) => {
                let value = serde_json::from_str(raw.get())
                    .map_err(|error| format!("an answer does not read: {error}"))?;
                report
                    .parse(&call, value)
                    .map_err(|error| format!("an answer does not read: {error}"))?
            }
        };
        pieces.push(piece);
    }
    let slots: Vec<Option<&Piece>> = pieces.iter().map(Option::as_ref).collect();
    let snapshot = report
        .assemble(period, &slots, reports)
        .ok_or("the answers hold no published period")?;
    Ok(Held {
        period,
        fetched_at: file.fetched_at,
        snapshot,
    })
}

/// Writes what is sent, the latest version of each file first come, until the sender goes.
fn write_loop(receiver: mpsc::Receiver<Message>) {
    while let Ok(first) = receiver.recv() {
        let mut pending: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Write(path, bytes) => {
                    pending.insert(path, bytes);
                }
                Message::Flush(done) => flushes.push(done),
            }
            next = receiver.try_recv().ok();
        }
        for (path, bytes) in pending {
            if let Err(error) = write_atomically(&path, &bytes) {
                tracing::warn!(file = %path.display(), problem = %error, "cannot write the state; it will be fetched again after a restart");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}
