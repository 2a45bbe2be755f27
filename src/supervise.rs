//! Keeping every app's poller alive: a panic in one app's task is an error of that app,
//! visible in `wechat_miniprogram_up`, on the status page and in a log line, and the task is
//! started again after a backoff. Other apps never notice.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::Polling;
use crate::sink::{AppSlot, Sink};

/// Runs the task that `start` makes for the app in `app` (named `name`) until `shutdown`
/// turns true; when it panics, reports it to `sink` and starts a new one after a backoff.
pub async fn supervise<F, T>(
    app: AppSlot,
    name: String,
    sink: Arc<dyn Sink>,
    clock: Clock,
    polling: Polling,
    mut shutdown: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut() -> T,
    T: Future<Output = ()> + Send + 'static,
{
    let mut panics = 0;
    loop {
        let outcome = tokio::spawn(start()).await;
        let Err(error) = outcome else { return };
        if !error.is_panic() || *shutdown.borrow() {
            return;
        }
        let payload = error.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let delay = polling.backoff(panics, fastrand::f64());
        panics = panics.saturating_add(1);
        tracing::error!(app = %name, panic = %message, restart_in = %humantime::format_duration(delay), "the app's poller failed; it restarts");
        sink.crashed(
            app,
            &format!("internal error: {message}; the poller restarts"),
        );
        tokio::select! {
            _ = clock.sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::period::PeriodKind;
    use crate::publication::Habits;
    use crate::report::{Held, Report};
    use crate::sink::{Answers, JobStatus};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl Sink for Recorded {
        fn held(&self, _: AppSlot, _: Report, _: PeriodKind, _: Held, _: Answers) {}
        fn status(&self, _: AppSlot, _: Report, _: PeriodKind, _: JobStatus) {}
        fn up(&self, _: AppSlot, _: bool) {}
        fn first_round_done(&self, _: AppSlot) {}
        fn crashed(&self, app: AppSlot, message: &str) {
            self.0.lock().unwrap().push(format!("{}: {message}", app.0));
        }
        fn learned(&self, _: AppSlot, _: &Habits) {}
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_started_again() {
        let start = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let clock = Clock::manual(start);
        let sink = Arc::new(Recorded::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        // The defaults: the first backoff is 30s.
        let polling = Polling::default();
        let counter = runs.clone();
        let task = tokio::spawn(supervise(
            AppSlot(3),
            "shop".into(),
            sink.clone(),
            clock.clone(),
            polling,
            stopped,
            move || {
                let run = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run == 0 {
                        panic!("date out of range");
                    }
                    std::future::pending::<()>().await
                }
            },
        ));
        while sink.0.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            sink.0.lock().unwrap().as_slice(),
            ["3: internal error: date out of range; the poller restarts"]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not before the backoff");
        clock.advance(Duration::from_secs(30));
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        stop.send(true).unwrap();
        task.abort();
    }
}
