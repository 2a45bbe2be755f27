//! How a backfill is getting on: counts shared between the workers and whoever draws them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a backfill is getting on, shared with whoever draws it.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    pub(super) done: AtomicUsize,
    pub(super) failed: AtomicUsize,
    started: Instant,
}

impl Progress {
    /// Progress of `total` fetches, none done.
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// Fetches finished (fetched, skipped or failed).
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Fetches to make in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// One line of progress: a bar `width` wide (none if 0), periods done / total, failures
    /// and the estimated time left.
    pub fn line(&self, width: usize) -> String {
        let done = self.done();
        let total = self.total.max(1);
        let elapsed = self.started.elapsed();
        let mut line = String::new();
        if width > 0 {
            let filled = width * done / total;
            line.push('[');
            line.extend(std::iter::repeat_n('#', filled));
            line.extend(std::iter::repeat_n('-', width - filled));
            line.push_str("] ");
        }
        line.push_str(&format!(
            "{done}/{} periods ({}%)",
            self.total,
            100 * done / total
        ));
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        if done > 0 && done < self.total {
            let left = elapsed.mul_f64((self.total - done) as f64 / done as f64);
            line.push_str(&format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ));
        } else if done == self.total {
            line.push_str(&format!(
                ", took {}",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_a_bar_and_the_time_left() {
        let progress = Progress::new(200);
        assert_eq!(progress.line(10), "[----------] 0/200 periods (0%)");
        progress.done.store(50, Ordering::Relaxed);
        progress.failed.store(2, Ordering::Relaxed);
        let line = progress.line(10);
        assert!(
            line.starts_with("[##--------] 50/200 periods (25%), 2 failed, ETA "),
            "{line}"
        );
        progress.done.store(200, Ordering::Relaxed);
        assert!(progress
            .line(0)
            .starts_with("200/200 periods (100%), 2 failed, took "));
    }
}
