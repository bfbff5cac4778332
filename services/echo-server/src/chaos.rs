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
//!
//! Any schedule also takes `after=T` (the first event T after start; `P` by
//! default) and `jitter=J` (each event up to J later, drawn from
//! `--chaos-seed`'s generator). Windows apply to every RPC, health checks
//! included, as an instance in trouble fails its checks too; they close when
//! shutdown begins.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use tonic_health::server::HealthReporter;

use crate::layers::{parse_code, parse_duration};

/// One recurring event and when it recurs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    event: Event,
    every: Duration,
    after: Duration,
    jitter: Duration,
}

/// What a schedule does each time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    GoAway,
    Close { fraction: f64 },
    Slow { delay: Duration, window: Duration },
    Errors { code: Code, window: Duration },
    Unhealthy { window: Duration },
}

impl Event {
    /// The name a schedule line, a log line and a metric label give it.
    fn name(&self) -> &'static str {
        match self {
            Self::GoAway => "goaway",
            Self::Close { .. } => "close",
            Self::Slow { .. } => "slow",
            Self::Errors { .. } => "errors",
            Self::Unhealthy { .. } => "unhealthy",
        }
    }

    /// How long the event lasts (none: it is an instant).
    fn window(&self) -> Option<Duration> {
        match *self {
            Self::GoAway | Self::Close { .. } => None,
            Self::Slow { window, .. }
            | Self::Errors { window, .. }
            | Self::Unhealthy { window } => Some(window),
        }
    }
}

impl Schedule {
    /// Parses one schedule line (see the module docs).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let kind = words.next().ok_or("an empty chaos schedule")?;
        let mut settings = std::collections::BTreeMap::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("`{word}` is not KEY=VALUE"))?;
            if settings.insert(key, value).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        let mut take = |key: &str| settings.remove(key);
        let duration = |key: &str, value: Option<&str>| -> Result<Option<Duration>, String> {
            value
                .map(|v| parse_duration(v).map_err(|err| format!("{key}: {err}")))
                .transpose()
        };
        let required = |key: &str, value: Option<Duration>| {
            value.ok_or_else(|| format!("`{kind}` needs {key}=DURATION"))
        };
        let every = required("every", duration("every", take("every"))?)?;
        let after = duration("after", take("after"))?.unwrap_or(every);
        let jitter = duration("jitter", take("jitter"))?.unwrap_or_default();
        let window = duration("for", take("for"))?;
        let event = match kind {
            "goaway" => Event::GoAway,
            "close" => Event::Close {
                fraction: parse_fraction(take("fraction").ok_or("`close` needs fraction=F")?)?,
            },
            "slow" => Event::Slow {
                delay: required(
                    "delay",
                    duration(
                        "delay",
                        Some(take("delay").ok_or("`slow` needs delay=DURATION")?),
                    )?,
                )?,
                window: required("for", window)?,
            },
            "errors" => Event::Errors {
                code: parse_code(take("code").ok_or("`errors` needs code=CODE")?)?,
                window: required("for", window)?,
            },
            "unhealthy" => Event::Unhealthy {
                window: required("for", window)?,
            },
            other => {
                return Err(format!(
                    "unknown chaos event `{other}` (known: goaway, close, slow, errors, unhealthy)"
                ));
            }
        };
        if event.window().is_none() && window.is_some() {
            return Err(format!("`{kind}` is an instant: it takes no for=DURATION"));
        }
        if let Some(key) = settings.keys().next() {
            return Err(format!("`{kind}` takes no `{key}`"));
        }
        if every.is_zero() {
            return Err("every=0 would never stop".to_owned());
        }
        // A window and its jitter fit in a period, so a schedule's windows
        // never overlap each other.
        if event.window().unwrap_or_default() + jitter >= every {
            return Err(format!(
                "for + jitter must be shorter than every (`{}`)",
                text.trim()
            ));
        }
        Ok(Self {
            event,
            every,
            after,
            jitter,
        })
    }

    /// The schedules of a file: one per line; blank lines and `#` comments skipped.
    pub(crate) fn parse_file(text: &str) -> Result<Vec<Self>, String> {
        text.lines()
            .enumerate()
            .map(|(number, line)| (number + 1, line.split('#').next().unwrap_or("").trim()))
            .filter(|(_, line)| !line.is_empty())
            .map(|(number, line)| Self::parse(line).map_err(|err| format!("line {number}: {err}")))
            .collect()
    }
}

/// `25%` or `0.25`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let fraction = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a fraction (25% or 0.25)"))?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!("`{text}` is not between 0 and 100%"));
    }
    Ok(fraction)
}

/// The windows open right now, read by every call while chaos is on.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// Extra delay of the slow windows open, in nanoseconds.
    slow_nanos: AtomicU64,
    /// The code of the error window open (0: none).
    error: AtomicI32,
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
            _ => {}
        }
        Self { windows, event }
    }
}

impl Drop for OpenWindow<'_> {
    fn drop(&mut self) {
        match self.event {
            Event::Slow { delay, .. } => {
                self.windows
                    .slow_nanos
                    .fetch_sub(delay.as_nanos() as u64, Ordering::Relaxed);
            }
            Event::Errors { code, .. } => {
                // Unless another schedule's window has set its own code since.
                let _ = self.windows.error.compare_exchange(
                    code as i32,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
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
    pub(crate) fn register(&self, registry: &mut Registry) {
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
    pub(crate) metrics: ChaosMetrics,
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

    /// What one connection listens to.
    pub(crate) fn subscribe(&self) -> ConnectionSubscription {
        ConnectionSubscription {
            events: self.connections.subscribe(),
            picks: Arc::clone(&self.picks),
            closed: self.metrics.connections_closed.clone(),
        }
    }

    /// Runs every schedule until the returned set is dropped; `health` and
    /// `served` are what `unhealthy` windows flip.
    pub(crate) fn start(&self, health: HealthReporter, served: Vec<&'static str>) -> JoinSet<()> {
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
                served: served.clone(),
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
    health: HealthReporter,
    served: Vec<&'static str>,
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
                Event::Slow { window, .. } | Event::Errors { window, .. } => {
                    let open = OpenWindow::open(&self.windows, event);
                    tracing::info!(event = name, window = ?window, "chaos window opened");
                    tokio::time::sleep(window).await;
                    drop(open);
                    tracing::info!(event = name, "chaos window closed");
                }
                Event::Unhealthy { window } => {
                    crate::services::set_health(
                        &self.health,
                        &self.served,
                        ServingStatus::NotServing,
                    )
                    .await;
                    tracing::info!(event = name, window = ?window, "chaos window opened");
                    tokio::time::sleep(window).await;
                    crate::services::set_health(&self.health, &self.served, ServingStatus::Serving)
                        .await;
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
    fn schedules_parse_with_their_settings() {
        assert_eq!(
            Schedule::parse("slow delay=200ms for=5s every=1m after=10s jitter=2s").unwrap(),
            Schedule {
                event: Event::Slow {
                    delay: Duration::from_millis(200),
                    window: Duration::from_secs(5),
                },
                every: Duration::from_secs(60),
                after: Duration::from_secs(10),
                jitter: Duration::from_secs(2),
            }
        );
        let close = Schedule::parse("close fraction=25% every=30s").unwrap();
        assert_eq!(close.event, Event::Close { fraction: 0.25 });
        assert_eq!(
            close.after,
            Duration::from_secs(30),
            "after defaults to every"
        );
        assert_eq!(
            Schedule::parse("errors code=unavailable for=1s every=10s")
                .unwrap()
                .event,
            Event::Errors {
                code: Code::Unavailable,
                window: Duration::from_secs(1)
            }
        );
        let file = "# a flaky afternoon\n\ngoaway every=30s\nunhealthy for=5s every=1m # drills\n";
        assert_eq!(Schedule::parse_file(file).unwrap().len(), 2);

        for (bad, why) in [
            ("", "empty"),
            ("storm every=1s", "unknown chaos event"),
            ("goaway", "needs every="),
            ("goaway every=1s for=1s", "is an instant"),
            ("slow for=1s every=10s", "needs delay="),
            (
                "errors code=NOPE for=1s every=10s",
                "not a status code name",
            ),
            ("unhealthy for=10s every=10s", "shorter than every"),
            (
                "slow delay=1s for=5s every=10s jitter=5s",
                "shorter than every",
            ),
            ("close fraction=150% every=1s", "between 0 and 100%"),
            ("goaway every=1s colour=red", "takes no `colour`"),
            ("goaway every=1s every=2s", "given twice"),
            ("goaway every=0s", "never stop"),
            ("goaway every", "not KEY=VALUE"),
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let err = Schedule::parse_file("goaway every=1s\nslow every=1s\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

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
            let _slow = OpenWindow::open(&windows, slow);
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
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_event_picks_connections_by_the_seed() {
        let chaos = Chaos::new(
            vec![Schedule::parse("close fraction=50% every=1s").unwrap()],
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
