//! Chaos on a schedule (`--chaos`, `--chaos-file`, `--chaos-seed`): GOAWAY
//! to every connection in bursts, a fraction of connections closed, slow and
//! error windows, and health flipped to NOT_SERVING for a while, each
//! recurring from the server's start. Each event is logged and counted.
//!
//! A schedule is one line: an event and its settings, `KEY=VALUE` separated
//! by spaces:
//!
//! - `goaway every=P`: GOAWAY on every open connection (their open calls
//!   finish; clients reconnect).
//! - `close fraction=F every=P`: each open connection closed at once with
//!   chance F (`25%` or `0.25`), unanswered calls and all.
//! - `slow delay=D for=W every=P`: every call starting in the window waits D
//!   first.
//! - `errors code=CODE for=W every=P`: every call starting in the window
//!   fails with CODE (a name such as `UNAVAILABLE`, or a number).
//! - `unhealthy for=W every=P`: the health service says NOT_SERVING for the
//!   window (SERVING again after it).
//! - `load report=LOAD for=W every=P`: the instance reports LOAD in its ORCA
//!   load reports for the window (the configured report again after it), so
//!   a test can watch a balancer shift traffic away and back.
//!
//! Any schedule also takes `after=T` (the first event T after start; `P` by
//! default) and `jitter=J` (each event up to J later, drawn from
//! `--chaos-seed`'s generator). The grammar is `config/chaos.rs`'s. Slow and
//! error windows apply to the services under test, as faults do (not to
//! health, reflection or the admin service: `unhealthy` is how a schedule
//! flips health); they close when shutdown begins.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::ServingStatus;

use crate::config::chaos::{Event, Schedule};
use crate::config::load_report::LoadReportSpec;
use crate::health::Health;

/// The windows open right now, read by every call while chaos is on.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// Extra delay of the slow windows open, in nanoseconds.
    slow_nanos: AtomicU64,
    /// The code of the error window open (0: none).
    error: AtomicI32,
    /// The report of the load window open.
    load: RwLock<Option<Arc<LoadReportSpec>>>,
}

impl Windows {
    /// The extra delay and the error code of the windows open right now;
    /// `None` when none is.
    pub(crate) fn open(&self) -> Option<(Duration, Option<Code>)> {
        let delay = self.slow_nanos.load(Ordering::Relaxed);
        let code = self.error.load(Ordering::Relaxed);
        (delay != 0 || code != 0).then(|| {
            (
                Duration::from_nanos(delay),
                (code != 0).then(|| Code::from(code)),
            )
        })
    }
}

impl Windows {
    /// The load report of the load window open right now, if one is.
    pub(crate) fn load(&self) -> Option<Arc<LoadReportSpec>> {
        self.load
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Opens a window on construction and closes it when dropped, so that the
/// window also closes when its task is aborted at shutdown.
struct OpenWindow<'a> {
    windows: &'a Windows,
    event: Event,
}

impl<'a> OpenWindow<'a> {
    fn open(windows: &'a Windows, event: Event) -> Self {
        match event {
            Event::Slow { delay, .. } => {
                windows
                    .slow_nanos
                    .fetch_add(delay.as_nanos() as u64, Ordering::Relaxed);
            }
            Event::Errors { code, .. } => windows.error.store(code as i32, Ordering::Relaxed),
            Event::Load { ref report, .. } => {
                *windows.load.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(report));
            }
            _ => {}
        }
        Self { windows, event }
    }
}

impl Drop for OpenWindow<'_> {
    fn drop(&mut self) {
        match &self.event {
            &Event::Slow { delay, .. } => {
                self.windows
                    .slow_nanos
                    .fetch_sub(delay.as_nanos() as u64, Ordering::Relaxed);
            }
            &Event::Errors { code, .. } => {
                // Unless another schedule's window has set its own code since.
                let _ = self.windows.error.compare_exchange(
                    code as i32,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Event::Load { report, .. } => {
                // Unless another schedule's window has set its own report since.
                let mut load = self
                    .windows
                    .load
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if load.as_ref().is_some_and(|open| Arc::ptr_eq(open, report)) {
                    *load = None;
                }
            }
            _ => {}
        }
    }
}

/// What the schedules ask of every open connection.
#[derive(Debug, Clone, Copy)]
enum ConnectionEvent {
    GoAway,
    Close { fraction: f64 },
}

/// What a connection does about a schedule's event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ConnectionChaos {
    GoAway,
    Close,
}

/// Label of the chaos series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// The chaos counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChaosMetrics {
    events: Family<EventLabels, Counter>,
    connections_closed: Counter,
}

impl ChaosMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_chaos_events",
            "Chaos schedule events: GOAWAY bursts, closing rounds, windows opened",
            self.events.clone(),
        );
        registry.register(
            "grpc_server_chaos_connections_closed",
            "Connections closed by a chaos schedule",
            self.connections_closed.clone(),
        );
    }
}

/// The server's chaos schedules, and what calls and connections read of them.
#[derive(Debug)]
pub(crate) struct Chaos {
    schedules: Vec<Schedule>,
    seed: u64,
    pub(crate) windows: Arc<Windows>,
    connections: broadcast::Sender<ConnectionEvent>,
    /// Which connections a `close` event picks.
    picks: Arc<Mutex<fastrand::Rng>>,
    metrics: ChaosMetrics,
}

impl Chaos {
    /// Chaos with `schedules` (none: off), its draws seeded by `seed`.
    pub(crate) fn new(schedules: Vec<Schedule>, seed: Option<u64>) -> Option<Self> {
        if schedules.is_empty() {
            return None;
        }
        let seed = seed.unwrap_or_else(|| fastrand::u64(..));
        Some(Self {
            schedules,
            seed,
            windows: Arc::default(),
            // A connection that misses events while busy needs only the latest.
            connections: broadcast::channel(16).0,
            picks: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            metrics: ChaosMetrics::default(),
        })
    }

    /// Registers the chaos counters.
    pub(crate) fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// What one connection listens to.
    pub(crate) fn subscribe(&self) -> ConnectionSubscription {
        ConnectionSubscription {
            events: self.connections.subscribe(),
            picks: Arc::clone(&self.picks),
            closed: self.metrics.connections_closed.clone(),
        }
    }

    /// Runs every schedule until the returned set is dropped; `health` is
    /// what `unhealthy` windows flip.
    pub(crate) fn start(&self, health: &Health) -> JoinSet<()> {
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (index, schedule) in self.schedules.iter().enumerate() {
            let runner = Runner {
                schedule: schedule.clone(),
                // One generator per schedule, so each one's jitter repeats
                // whatever the others do.
                jitter: fastrand::Rng::with_seed(self.seed.wrapping_add(index as u64)),
                windows: Arc::clone(&self.windows),
                connections: self.connections.clone(),
                events: self
                    .metrics
                    .events
                    .get_or_create(&EventLabels {
                        event: schedule.event.name(),
                    })
                    .clone(),
                health: health.clone(),
            };
            tasks.spawn(runner.run(start));
        }
        tracing::info!(
            schedules = self.schedules.len(),
            seed = self.seed,
            "chaos schedules on"
        );
        tasks
    }
}

/// One schedule's task.
struct Runner {
    schedule: Schedule,
    jitter: fastrand::Rng,
    windows: Arc<Windows>,
    connections: broadcast::Sender<ConnectionEvent>,
    events: Counter,
    health: Health,
}

impl Runner {
    async fn run(mut self, start: Instant) {
        let Schedule {
            event,
            every,
            after,
            jitter,
        } = self.schedule;
        let name = event.name();
        for period in 0u32.. {
            let jitter = jitter.mul_f64(self.jitter.f64());
            tokio::time::sleep_until(start + after + every * period + jitter).await;
            self.events.inc();
            match event {
                Event::GoAway => {
                    tracing::info!(event = name, "chaos event: GOAWAY to every connection");
                    let _ = self.connections.send(ConnectionEvent::GoAway);
                }
                Event::Close { fraction } => {
                    tracing::info!(event = name, fraction, "chaos event: closing connections");
                    let _ = self.connections.send(ConnectionEvent::Close { fraction });
                }
                Event::Slow { window, .. }
                | Event::Errors { window, .. }
                | Event::Load { window, .. } => {
                    let open = OpenWindow::open(&self.windows, event.clone());
                    tracing::info!(event = name, window = ?window, "chaos window opened");
                    tokio::time::sleep(window).await;
                    drop(open);
                    tracing::info!(event = name, "chaos window closed");
                }
                Event::Unhealthy { window } => {
                    self.health.set_all(ServingStatus::NotServing).await;
                    tracing::info!(event = name, window = ?window, "chaos window opened");
                    tokio::time::sleep(window).await;
                    self.health.set_all(ServingStatus::Serving).await;
                    tracing::info!(event = name, "chaos window closed");
                }
            }
        }
    }
}

/// A connection's view of the schedules.
#[derive(Debug)]
pub(crate) struct ConnectionSubscription {
    events: broadcast::Receiver<ConnectionEvent>,
    picks: Arc<Mutex<fastrand::Rng>>,
    closed: Counter,
}

impl ConnectionSubscription {
    /// The next event this connection acts on (a `close` that did not pick
    /// it is skipped).
    pub(crate) async fn next(mut self) -> (ConnectionChaos, Self) {
        loop {
            match self.events.recv().await {
                Ok(ConnectionEvent::GoAway) => return (ConnectionChaos::GoAway, self),
                Ok(ConnectionEvent::Close { fraction }) => {
                    let roll = self.picks.lock().unwrap_or_else(|p| p.into_inner()).f64();
                    if roll < fraction {
                        self.closed.inc();
                        return (ConnectionChaos::Close, self);
                    }
                }
                // Events missed while busy: wait for the next.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_when_dropped_and_keep_a_later_code() {
        let windows = Windows::default();
        let slow = Event::Slow {
            delay: Duration::from_millis(300),
            window: Duration::from_secs(1),
        };
        let unavailable = Event::Errors {
            code: Code::Unavailable,
            window: Duration::from_secs(1),
        };
        let internal = Event::Errors {
            code: Code::Internal,
            window: Duration::from_secs(1),
        };
        {
            let _slow = OpenWindow::open(&windows, slow.clone());
            let _slower = OpenWindow::open(&windows, slow);
            assert_eq!(windows.open(), Some((Duration::from_millis(600), None)));
            let first = OpenWindow::open(&windows, unavailable);
            let _second = OpenWindow::open(&windows, internal);
            drop(first);
            assert_eq!(
                windows.open(),
                Some((Duration::from_millis(600), Some(Code::Internal)))
            );
        }
        assert_eq!(windows.open(), None);

        // A load window closes unless a later one replaced it.
        let load = |spec: &str| Event::Load {
            report: Arc::new(spec.parse().unwrap()),
            window: Duration::from_secs(1),
        };
        let first = OpenWindow::open(&windows, load("cpu=0.9"));
        let second = OpenWindow::open(&windows, load("cpu=0.1"));
        drop(first);
        assert_eq!(windows.load(), Some(Arc::new("cpu=0.1".parse().unwrap())));
        drop(second);
        assert_eq!(windows.load(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_event_picks_connections_by_the_seed() {
        let chaos = Chaos::new(
            vec!["close fraction=50% every=1s".parse().unwrap()],
            Some(7),
        )
        .unwrap();
        let subscriptions: Vec<_> = (0..200).map(|_| chaos.subscribe()).collect();
        chaos
            .connections
            .send(ConnectionEvent::Close { fraction: 0.5 })
            .unwrap();
        chaos.connections.send(ConnectionEvent::GoAway).unwrap();
        let mut closed = 0;
        for subscription in subscriptions {
            // Those the close left alone act on the GOAWAY next.
            match subscription.next().await.0 {
                ConnectionChaos::Close => closed += 1,
                ConnectionChaos::GoAway => {}
            }
        }
        assert!((70..=130).contains(&closed), "{closed} of 200 closed");
        assert_eq!(chaos.metrics.connections_closed.get(), closed);
    }
}
