//! The thread the pollers run on: a runtime of their own, with one thread.
//!
//! A poller mostly waits for WeChat: an answer arrives, is read and stored in well under a
//! millisecond, and the poller waits again. On the multi-threaded runtime of the server,
//! each arrival woke one worker to read the socket and another to look for work to steal,
//! then both parked again: at 1,000 apps, the futexes and context switches of those hand-offs
//! were about a tenth of the first round's CPU. Here the sockets, the timers and the pollers
//! share one thread and one event loop, and the server's workers stay free for scrapes (a
//! scrape never waits for a poller, nor a poller for a scrape).

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A thread running a current-thread runtime until this handle is dropped; its tasks are
/// then cancelled at their next await point.
pub struct PollingThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl PollingThread {
    /// Starts the thread, named `pollers`; what it logs goes where the caller's logs go.
    pub fn start() -> std::io::Result<PollingThread> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let logs = tracing::dispatcher::get_default(tracing::Dispatch::clone);
        std::thread::Builder::new()
            .name("pollers".to_string())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&logs);
                // Ends when the sender is sent to or dropped; the runtime, dropped here on its
                // own thread, cancels what still runs.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(PollingThread {
            handle,
            stop: Some(stop),
        })
    }

    /// Runs `future` on the thread.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for PollingThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_runs_on_the_pollers_thread_and_its_result_comes_back() {
        let thread = PollingThread::start().unwrap();
        let name = thread
            .spawn(async { std::thread::current().name().map(String::from) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("pollers"));
    }

    #[tokio::test]
    async fn what_the_pollers_log_goes_where_the_starters_logs_go() {
        let starters = tracing::Dispatch::new(tracing_subscriber::registry());
        let thread = tracing::dispatcher::with_default(&starters, PollingThread::start).unwrap();
        let logs_there = thread
            .spawn(async {
                tracing::dispatcher::get_default(|logs| logs.is::<tracing_subscriber::Registry>())
            })
            .await
            .unwrap();
        assert!(logs_there);
    }

    #[tokio::test]
    async fn dropping_the_thread_cancels_the_tasks_still_running() {
        let thread = PollingThread::start().unwrap();
        let task = thread.spawn(std::future::pending::<()>());
        drop(thread);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the task ends when the thread stops");
        assert!(outcome.unwrap_err().is_cancelled());
    }
}
