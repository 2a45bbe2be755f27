//! The state's writer thread: it takes the latest contents of the files handed over, writes
//! them in batches, each file replaced whole and atomically, and keeps what could not be
//! written for the next try.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{own_directory, Shared, LOG_FAILURES_EVERY, RETRY_WRITES};

/// Writes what is handed over, the latest contents of each file, until the directory closes;
/// writes that fail wait in memory and are tried again every minute. What was written is
/// given back to the system ([`crate::heap::release`]) at most every [`RELEASE_EVERY`], and
/// once the writer has nothing left to write.
pub(super) fn write_loop(shared: &Shared) {
    let mut last_logged: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let mut released = Instant::now();
    let mut unreleased = false;
    let mut taken: Option<Instant> = None;
    loop {
        let Some((batch, generation)) = next_batch(shared, &mut retry_at, unreleased, taken) else {
            return;
        };
        taken = Some(Instant::now());
        if batch.is_empty() {
            crate::heap::release();
            (released, unreleased) = (Instant::now(), false);
            continue;
        }
        let Some(failed) = write_batch(shared, batch, &mut last_logged) else {
            return;
        };
        let mut pending = shared.pending();
        if failed.is_empty() {
            pending.written = generation;
            retry_at = None;
        } else {
            for (path, bytes) in failed {
                // A newer version handed over meanwhile wins.
                pending.files.entry(path).or_insert(bytes);
            }
            retry_at = Some(Instant::now() + RETRY_WRITES);
        }
        drop(pending);
        shared.changed.notify_all();
        unreleased = true;
        if released.elapsed() >= RELEASE_EVERY {
            crate::heap::release();
            (released, unreleased) = (Instant::now(), false);
        }
    }
}

/// How often at most the memory of written files is given back to the system.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// How long at least from one batch to the next, unless a flush asks: while a first round
/// hands over a dozen files per app, they gather into batches of hundreds, each costing two
/// syncs of the filesystem, instead of one batch (and two syncs) per file or two.
const GATHER: Duration = Duration::from_millis(100);

/// Waits for the next files to write and takes them, with the generation they bring the disk
/// to; `None` once the directory is closed, no file when `unreleased` memory is to be given
/// back before the writer waits longer. Files are taken [`GATHER`] after the last batch was
/// `taken` at the soonest, or at once when a flush asks.
fn next_batch(
    shared: &Shared,
    retry_at: &mut Option<Instant>,
    unreleased: bool,
    taken: Option<Instant>,
) -> Option<(BTreeMap<PathBuf, Vec<u8>>, u64)> {
    let mut pending = shared.pending();
    let mut asked = false;
    loop {
        if pending.closed {
            return None;
        }
        if std::mem::take(&mut pending.retry_now) {
            *retry_at = None;
            asked = true;
        }
        let waiting = retry_at.is_some_and(|at| Instant::now() < at);
        let gathered = taken.map_or(Duration::ZERO, |at| GATHER.saturating_sub(at.elapsed()));
        if !pending.files.is_empty() && !waiting && (asked || gathered.is_zero()) {
            return Some((std::mem::take(&mut pending.files), pending.queued));
        }
        let wait = retry_at.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        let wait = match unreleased {
            true => wait.min(RELEASE_EVERY),
            false => wait,
        };
        let wait = match pending.files.is_empty() || waiting {
            true => wait,
            false => wait.min(gathered),
        };
        let (guard, timeout) = shared
            .changed
            .wait_timeout(pending, wait.max(Duration::from_millis(1)))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending = guard;
        if unreleased && timeout.timed_out() && pending.files.is_empty() {
            return Some((BTreeMap::new(), pending.queued));
        }
    }
}

/// Writes `batch`, each file replaced whole, with two syncs of the filesystem in all rather
/// than two per file (a first round writes a dozen files per app, and each sync is a round
/// trip to the device): every new contents goes into a temporary file beside its file, the
/// filesystem is synced, the temporary files are renamed over their files, and it is synced
/// again. A crash leaves each file old or new, never half. A sync of the filesystem also
/// writes what other programs left unwritten there: on a volume of its own (the chart's claim)
/// that is nothing, and elsewhere it is the writer's time, which holds no one up. The files that
/// could not be written, to be tried again; `None` when the directory closed meanwhile.
fn write_batch(
    shared: &Shared,
    batch: BTreeMap<PathBuf, Vec<u8>>,
    last_logged: &mut Option<Instant>,
) -> Option<Vec<(PathBuf, Vec<u8>)>> {
    let mut failed = Vec::new();
    let mut fail = |path: PathBuf, bytes: Vec<u8>, error: &std::io::Error| {
        let quiet = last_logged.is_some_and(|at| at.elapsed() < LOG_FAILURES_EVERY);
        if !quiet {
            tracing::warn!(file = %path.display(), problem = %error, "cannot write the state; it is kept in memory and written when it can be (tried every minute)");
            *last_logged = Some(Instant::now());
        }
        failed.push((path, bytes));
    };
    let mut staged: Vec<(PathBuf, PathBuf, Vec<u8>)> = Vec::new();
    let mut ready = None;
    for (path, bytes) in batch {
        if shared.pending().closed {
            staged
                .iter()
                .for_each(|(_, temporary, _)| remove_quietly(temporary));
            return None;
        }
        match stage_app_file(&path, &bytes, &mut ready) {
            Ok(temporary) => staged.push((path, temporary, bytes)),
            Err(error) => fail(path, bytes, &error),
        }
    }
    if let Err(error) = sync_filesystems(staged.iter().map(|(path, ..)| path.as_path())) {
        for (path, temporary, bytes) in staged {
            remove_quietly(&temporary);
            fail(path, bytes, &error);
        }
        return Some(failed);
    }
    let mut renamed: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for (path, temporary, bytes) in staged {
        match std::fs::rename(&temporary, &path) {
            Ok(()) => renamed.push((path, bytes)),
            Err(error) => {
                remove_quietly(&temporary);
                fail(path, bytes, &error);
            }
        }
    }
    if let Err(error) = sync_filesystems(renamed.iter().map(|(path, _)| path.as_path())) {
        for (path, bytes) in renamed {
            fail(path, bytes, &error);
        }
    }
    Some(failed)
}

/// Syncs, once each, the filesystems that hold `paths` (their directories): what was
/// written there, renames included, is on the device. Paths in order (a batch's) have those
/// of a directory together, and each directory is looked at once, by its metadata alone: only
/// the first directory of each filesystem is opened, to sync it (a first round's batch spans
/// hundreds of app directories, nearly always on one filesystem).
fn sync_filesystems<'a>(paths: impl Iterator<Item = &'a Path>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let mut synced = std::collections::BTreeSet::new();
    let mut seen = None;
    for path in paths {
        let dir = path.parent().unwrap_or(Path::new("."));
        if seen.replace(dir) == Some(dir) {
            continue;
        }
        if synced.insert(std::fs::metadata(dir)?.dev()) {
            rustix::fs::syncfs(File::open(dir)?)?;
        }
    }
    Ok(())
}

/// Writes `bytes` into a new temporary file beside `path`, in an app's directory, which must
/// be one of the storage's own (created if missing), not a link that would send the state
/// elsewhere; the temporary file's path. `ready` is the last directory found so, which the
/// next file of a batch, beside it, need not look at again.
fn stage_app_file(
    path: &Path,
    bytes: &[u8],
    ready: &mut Option<PathBuf>,
) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if ready.as_deref() != Some(dir) {
        own_directory(dir).map_err(std::io::Error::other)?;
        match std::fs::create_dir(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        *ready = Some(dir.to_path_buf());
    }
    stage(path, bytes).map(|(temporary, _)| temporary)
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never half:
/// [`replace`], and the directory synced.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes)?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// Replaces `path` by `bytes` through a new temporary file ([`stage`]), synced and renamed
/// over `path`. The rename is durable once the directory is synced ([`sync_directory`]).
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (temporary, file) = stage(path, bytes)?;
    let written = file
        .sync_data()
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        remove_quietly(&temporary);
    }
    written
}

/// Writes `bytes` into a new temporary file of a random name beside `path`, created
/// exclusively (no link followed, nothing else written to); its path and the file, not synced.
fn stage(path: &Path, bytes: &[u8]) -> std::io::Result<(PathBuf, File)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(
        ".{name}.{}-{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    match file.write_all(bytes) {
        Ok(()) => Ok((temporary, file)),
        Err(error) => {
            drop(file);
            remove_quietly(&temporary);
            Err(error)
        }
    }
}

/// Makes the renames in `dir` durable.
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
