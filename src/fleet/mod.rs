//! The running pollers, one per app, kept in step with the configuration.
//!
//! [`Fleet::apply`] takes a configuration (at start, on a reload, when discovery finds more
//! or fewer apps) and changes only what changed: an added app starts polling, a removed one
//! stops and its series disappear, an app whose appid, secret or token source changed starts
//! again with a new token and the periods it held, and every other app keeps running
//! untouched, so it makes no call. A change of an app's report settings (its own, or the
//! `[reports]` it takes) starts that app again from what it holds; a change of the polling
//! settings or of the API starts every app again. The pollers run on a thread of their own
//! (the `thread` module).

mod thread;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{App, Polling};
use crate::poller::{AppPoller, Context, Settings};
use crate::sink::{AppSlot, Sink};
use crate::store::Store;
use crate::supervise::supervise;
use crate::wechat::client::{AppConnection, Client};

use thread::PollingThread;

/// What [`Fleet::apply`] changed, by app name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Apps that started polling.
    pub added: Vec<String>,
    /// Apps that stopped, their series gone.
    pub removed: Vec<String>,
    /// Apps started again with new settings, from what they held.
    pub restarted: Vec<String>,
    /// Apps left running as they were.
    pub kept: usize,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} removed, {} restarted, {} unchanged",
            self.added.len(),
            self.removed.len(),
            self.restarted.len(),
            self.kept
        )
    }
}

/// One app's poller.
struct Task {
    app: App,
    settings: Arc<Settings>,
    slot: AppSlot,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The client the pollers share, and the pollers.
struct Running {
    client: Arc<Client>,
    /// What the client was built from.
    api: (String, Polling),
    tasks: BTreeMap<String, Task>,
}

/// The pollers of every app, over one store.
pub struct Fleet {
    store: Arc<Store>,
    clock: Clock,
    thread: PollingThread,
    running: Mutex<Option<Running>>,
    /// Counts the reloads: each asks the reports WeChat refused again.
    reloads: watch::Sender<u64>,
}

impl Fleet {
    /// A fleet over `store` with no app yet, its pollers' thread started (the error says
    /// why it could not start).
    pub fn new(store: Arc<Store>, clock: Clock) -> Result<Fleet, String> {
        let thread = PollingThread::start()
            .map_err(|error| format!("starting the pollers' thread: {error}"))?;
        Ok(Fleet {
            store,
            clock,
            thread,
            running: Mutex::new(None),
            reloads: watch::channel(0).0,
        })
    }

    /// Every poller asks the reports WeChat refused to its app again at once (a reload: a
    /// person may have granted the permission).
    pub fn ask_unauthorized_again(&self) {
        self.reloads.send_modify(|reloads| *reloads += 1);
    }

    /// Brings the running pollers in step with `config`.
    pub fn apply(&self, config: &Config) -> anyhow::Result<Changes> {
        let mut running = self.running.lock().expect("fleet lock");
        let api = (config.api_base_url.clone(), config.polling.clone());
        let restart_all = match running.as_ref() {
            Some(current) => current.api != api,
            None => true,
        };
        let mut current = match running.take() {
            Some(current) if !restart_all => current,
            previous => {
                let client = Client::new(
                    &config.api_base_url,
                    &config.polling,
                    self.clock.clone(),
                    self.store.self_metrics().clone(),
                )
                .context("building the HTTP client")?;
                Running {
                    client: Arc::new(client),
                    api,
                    tasks: previous.map(|previous| previous.tasks).unwrap_or_default(),
                }
            }
        };
        self.store.set_calendar(&config.calendar);
        let changes = self.reconcile(&mut current, config, restart_all);
        self.store
            .self_metrics()
            .describe_instance(config.shard, current.tasks.len());
        *running = Some(current);
        Ok(changes)
    }

    /// Stops the pollers of apps no longer wanted, starts those of new apps, and starts
    /// again those whose app changed (or all, with `restart_all`).
    fn reconcile(&self, running: &mut Running, config: &Config, restart_all: bool) -> Changes {
        let apps = &config.apps;
        let mut changes = Changes::default();
        let wanted: BTreeMap<&str, &App> =
            apps.iter().map(|app| (app.name.as_str(), app)).collect();
        let gone: Vec<String> = running
            .tasks
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let task = running.tasks.remove(&name).expect("listed above");
            stop(&task);
            self.store.remove(task.slot);
            changes.removed.push(name);
        }
        for app in apps {
            let settings = Arc::new(Settings {
                polling: config.polling.clone(),
                reports: config.reports_of(&app.name),
            });
            match running.tasks.remove(&app.name) {
                Some(task) if task.app == *app && task.settings == settings && !restart_all => {
                    running.tasks.insert(app.name.clone(), task);
                    changes.kept += 1;
                }
                Some(task) if task.app.appid == app.appid => {
                    stop(&task);
                    self.store.keep_enabled(task.slot, &settings.reports);
                    self.store.relabel(task.slot, app);
                    let task = self.spawn(running, app.clone(), settings, task.slot);
                    running.tasks.insert(app.name.clone(), task);
                    changes.restarted.push(app.name.clone());
                }
                previous => {
                    if let Some(task) = previous {
                        stop(&task);
                        self.store.remove(task.slot);
                    }
                    let now = self.clock.now();
                    let (slot, _) = self.store.add(app, &settings.reports, now);
                    let task = self.spawn(running, app.clone(), settings, slot);
                    running.tasks.insert(app.name.clone(), task);
                    changes.added.push(app.name.clone());
                }
            }
        }
        changes
    }

    /// Starts the supervised poller of `app` in `slot`, from what the store holds of it.
    fn spawn(&self, running: &Running, app: App, settings: Arc<Settings>, slot: AppSlot) -> Task {
        let (stop, stopped) = watch::channel(false);
        let store = self.store.clone();
        let (client, clock) = (running.client.clone(), self.clock.clone());
        let task_settings = settings.clone();
        let reloads = self.reloads.subscribe();
        let poller_stop = stopped.clone();
        let poller_app = app.clone();
        let start = move || {
            let context = Context {
                app: slot,
                connection: AppConnection::new(poller_app.clone()),
                client: client.clone(),
                sink: store.clone() as Arc<dyn Sink>,
                settings: settings.clone(),
                clock: clock.clone(),
            };
            let poller = AppPoller::new(context, store.resume(slot));
            poller.run(poller_stop.clone(), reloads.clone())
        };
        let handle = self.thread.spawn(supervise(
            slot,
            app.name.clone(),
            self.store.clone() as Arc<dyn Sink>,
            self.clock.clone(),
            task_settings.polling.clone(),
            stopped,
            start,
        ));
        Task {
            app,
            settings: task_settings,
            slot,
            stop,
            handle,
        }
    }

    /// The names of the apps polled, in order.
    pub fn apps(&self) -> Vec<String> {
        let running = self.running.lock().expect("fleet lock");
        running
            .as_ref()
            .map(|running| running.tasks.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Tells every poller to stop; they stop at their next await point.
    pub fn signal_stop(&self) {
        let running = self.running.lock().expect("fleet lock");
        for task in running.iter().flat_map(|running| running.tasks.values()) {
            let _ = task.stop.send(true);
        }
    }

    /// Stops every poller and waits for them.
    pub async fn stop(&self) {
        self.signal_stop();
        let handles: Vec<JoinHandle<()>> = {
            let mut running = self.running.lock().expect("fleet lock");
            let tasks = running
                .as_mut()
                .map(|running| std::mem::take(&mut running.tasks));
            tasks
                .into_iter()
                .flatten()
                .map(|(_, task)| task.handle)
                .collect()
        };
        for handle in handles {
            let _ = handle.await;
        }
    }
}

/// Tells a poller to stop; it finishes on its own.
fn stop(task: &Task) {
    let _ = task.stop.send(true);
}
