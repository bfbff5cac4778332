//! Memory budgets: the bytes of request messages not all arrived yet, and of
//! answers produced but not yet sent, each bounded process-wide and per
//! connection, so that what a peer makes the server hold is a budget and not
//! a consequence of what it sends.
//!
//! A budget is a byte count against a limit. Request bytes are reserved a
//! whole message at a time, when a message's length prefix arrives without
//! all of its body; a reservation that does not fit waits (the stream is not
//! read, so HTTP/2 flow control stops granting it window), and a reserved
//! message can always finish, so waiting cannot deadlock. Answer bytes are
//! counted from when they are produced until hyper takes them for HTTP/2
//! (when it asks for the next chunk); a stream waits before producing more
//! while its connection's or the process's answer budget is used up. A
//! waiting stream holds nothing counted, so waiting cannot deadlock either;
//! HTTP/2 itself holds at most one chunk per stream more, which the gate also
//! bounds (a stream must have been let through to have one), so a peer that
//! reads nothing makes a connection hold at most twice its answer budget. A call fails with RESOURCE_EXHAUSTED
//! only when waiting cannot help: a message larger than the budget itself,
//! or a reservation that makes no progress for `--budget-timeout`. A
//! connection whose peer stops reading its answers while a budget is used up
//! is closed after the same time by a watchdog
//! ([`Budgets::close_stalled_connections`]) that sleeps until an answer
//! budget is used up, so serving a call costs no timer.

pub(crate) mod bodies;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::config::LimitsConfig;
use crate::context::{Ask, ConnectionControl};

/// What a budget holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holds {
    /// Request bytes of messages not all arrived yet.
    Requests,
    /// Answer bytes produced and not yet sent.
    Answers,
}

impl Holds {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Requests => "request",
            Self::Answers => "answer",
        }
    }
}

/// Labels of a budget's metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: &'static str,
}

/// Labels of a budget's limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLimitLabels {
    budget: &'static str,
    scope: &'static str,
}

/// The budgets' metric families; their series are the counters the budgets update.
#[derive(Debug, Default)]
struct BudgetMetrics {
    /// Bytes held, process-wide.
    in_use: Family<BudgetLabels, Gauge>,
    /// Each budget's limit, process-wide and per connection.
    limits: Family<BudgetLimitLabels, Gauge>,
    /// Times a stream waited for room.
    waits: Family<BudgetLabels, Counter>,
    /// Calls failed because waiting could not help.
    rejections: Family<BudgetLabels, Counter>,
}

/// Counters of one kind of budget: series of [`BudgetMetrics`].
#[derive(Debug)]
struct BudgetCounters {
    /// Times a stream waited for room.
    waits: Counter,
    /// Calls failed because waiting could not help.
    rejections: Counter,
}

impl BudgetCounters {
    fn new(metrics: &BudgetMetrics, holds: Holds) -> Self {
        let labels = BudgetLabels {
            budget: holds.label(),
        };
        Self {
            waits: metrics.waits.get_or_create(&labels).clone(),
            rejections: metrics.rejections.get_or_create(&labels).clone(),
        }
    }
}

/// A byte count against a limit, and a way to wait for room.
#[derive(Debug)]
pub(crate) struct Budget {
    holds: Holds,
    scope: &'static str,
    limit: i64,
    /// Bytes held: for a process-wide budget, the exported gauge itself.
    used: Gauge,
    room: Arc<Notify>,
    waiting: AtomicUsize,
    /// Set when the budget is used up, cleared once it is half free again:
    /// one log line and one watchdog wake-up per episode.
    exhausted: AtomicBool,
    /// Told when an answer budget is used up (the stall watchdog).
    on_exhausted: Option<Arc<Notify>>,
}

impl Budget {
    fn new(
        holds: Holds,
        scope: &'static str,
        limit: usize,
        used: Gauge,
        on_exhausted: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            holds,
            scope,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            used,
            room: Arc::new(Notify::new()),
            waiting: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
            on_exhausted,
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.get().max(0) as usize
    }

    /// Whether anything more may be taken.
    fn has_room(&self) -> bool {
        self.used.get() < self.limit
    }

    /// Whether the budget is in a used-up episode: full, or refused a
    /// message that did not fit and not yet half free again. (A refusal can
    /// leave a little room: the watchdog, woken once per episode, must still
    /// see the episode, or it would wait for a wake-up that never comes.)
    fn is_used_up(&self) -> bool {
        !self.has_room() || self.exhausted.load(Ordering::Acquire)
    }

    /// Takes `bytes` whatever the limit (what is already produced is counted).
    fn take(&self, bytes: usize) {
        let bytes = bytes as i64;
        if self.used.inner().fetch_add(bytes, Ordering::AcqRel) + bytes >= self.limit {
            self.used_up();
        }
    }

    /// Takes `bytes` if they fit under the limit.
    fn try_take(&self, bytes: usize) -> bool {
        let bytes = bytes as i64;
        let fitted = self
            .used
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok();
        if !fitted {
            self.used_up();
        }
        fitted
    }

    /// Gives `bytes` back, waking whoever waits for room.
    fn release(&self, bytes: usize) {
        let now = self.used.inner().fetch_sub(bytes as i64, Ordering::AcqRel) - bytes as i64;
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
        if now <= self.limit / 2 && self.exhausted.load(Ordering::Acquire) {
            self.exhausted.store(false, Ordering::Release);
        }
    }

    /// The budget is used up: said once per episode.
    fn used_up(&self) {
        if self.exhausted.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.scope == "process" {
            tracing::warn!(
                budget = self.holds.label(),
                limit = self.limit,
                "memory budget used up: streams wait for room"
            );
        } else {
            tracing::debug!(
                budget = self.holds.label(),
                limit = self.limit,
                "a connection's memory budget is used up: its streams wait for room"
            );
        }
        if let Some(watchdog) = &self.on_exhausted {
            watchdog.notify_one();
        }
    }
}

/// The process's budgets, shared by every connection.
#[derive(Debug)]
pub(crate) struct Budgets {
    requests: Budget,
    answers: Budget,
    connection_requests: usize,
    connection_answers: usize,
    /// How long a reservation or a full budget may go without progress.
    timeout: Duration,
    request_counters: BudgetCounters,
    answer_counters: BudgetCounters,
    /// What the metrics endpoint exports.
    metrics: BudgetMetrics,
    /// Wakes the stall watchdog when an answer budget is used up.
    stall_watch: Arc<Notify>,
    /// Every open connection's budgets, for the stall watchdog.
    connections: Mutex<HashMap<u64, Weak<ConnectionBudgets>>>,
    next_connection: AtomicU64,
}

/// Why the configured budgets cannot work.
#[derive(Debug, thiserror::Error)]
#[error(
    "--{flag} ({budget} bytes) is smaller than --max-message-size ({message} bytes): \
     the largest message could never be received"
)]
pub struct BudgetTooSmall {
    flag: &'static str,
    budget: usize,
    message: usize,
}

impl Budgets {
    pub(crate) fn new(limits: &LimitsConfig) -> Result<Self, BudgetTooSmall> {
        for (flag, budget) in [
            ("request-buffer-budget", limits.request_buffer_budget),
            (
                "connection-request-buffer-budget",
                limits.connection_request_buffer_budget,
            ),
        ] {
            if budget < limits.max_message_size {
                return Err(BudgetTooSmall {
                    flag,
                    budget,
                    message: limits.max_message_size,
                });
            }
        }
        let metrics = BudgetMetrics::default();
        for (holds, scope, bytes) in [
            (Holds::Requests, "process", limits.request_buffer_budget),
            (
                Holds::Requests,
                "connection",
                limits.connection_request_buffer_budget,
            ),
            (Holds::Answers, "process", limits.answer_buffer_budget),
            (
                Holds::Answers,
                "connection",
                limits.connection_answer_buffer_budget,
            ),
        ] {
            let labels = BudgetLimitLabels {
                budget: holds.label(),
                scope,
            };
            metrics.limits.get_or_create(&labels).set(bytes as i64);
        }
        let in_use = |holds: Holds| {
            metrics
                .in_use
                .get_or_create(&BudgetLabels {
                    budget: holds.label(),
                })
                .clone()
        };
        let stall_watch = Arc::new(Notify::new());
        Ok(Self {
            requests: Budget::new(
                Holds::Requests,
                "process",
                limits.request_buffer_budget,
                in_use(Holds::Requests),
                None,
            ),
            answers: Budget::new(
                Holds::Answers,
                "process",
                limits.answer_buffer_budget,
                in_use(Holds::Answers),
                Some(Arc::clone(&stall_watch)),
            ),
            connection_requests: limits.connection_request_buffer_budget,
            connection_answers: limits.connection_answer_buffer_budget,
            timeout: *limits.budget_timeout,
            request_counters: BudgetCounters::new(&metrics, Holds::Requests),
            answer_counters: BudgetCounters::new(&metrics, Holds::Answers),
            metrics,
            stall_watch,
            connections: Mutex::default(),
            next_connection: AtomicU64::new(0),
        })
    }

    /// Registers each budget's bytes in use, limits, waits and rejections.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let metrics = &self.metrics;
        registry.register(
            "grpc_server_budget_in_use_bytes",
            "Bytes held against each memory budget, process-wide",
            metrics.in_use.clone(),
        );
        registry.register(
            "grpc_server_budget_limit_bytes",
            "Each memory budget's limit, process-wide and per connection",
            metrics.limits.clone(),
        );
        registry.register(
            "grpc_server_budget_waits",
            "Times a stream waited for room in a memory budget",
            metrics.waits.clone(),
        );
        registry.register(
            "grpc_server_budget_rejections",
            "Calls failed with RESOURCE_EXHAUSTED because waiting for a budget could not help",
            metrics.rejections.clone(),
        );
    }

    /// The budgets of a new connection, made when it first counts something.
    pub(crate) fn connection(self: &Arc<Self>, control: ConnectionControl) -> Arc<LazyBudgets> {
        Arc::new(LazyBudgets {
            process: Arc::clone(self),
            control,
            made: OnceLock::new(),
        })
    }

    /// The budgets of a connection that counts its first request or answer.
    fn make_connection(self: &Arc<Self>, control: ConnectionControl) -> Arc<ConnectionBudgets> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let budgets = Arc::new(ConnectionBudgets {
            id,
            requests: Budget::new(
                Holds::Requests,
                "connection",
                self.connection_requests,
                Gauge::default(),
                None,
            ),
            answers: Budget::new(
                Holds::Answers,
                "connection",
                self.connection_answers,
                Gauge::default(),
                Some(Arc::clone(&self.stall_watch)),
            ),
            answers_released: AtomicU64::new(0),
            control,
            process: Arc::clone(self),
        });
        self.connections
            .lock()
            .expect("connections lock")
            .insert(id, Arc::downgrade(&budgets));
        budgets
    }

    /// Closes the connections whose peers read none of their answers for
    /// `--budget-timeout` while their own or the process's answer budget is
    /// used up. Sleeps until an answer budget is used up; runs until dropped.
    pub(crate) async fn close_stalled_connections(self: Arc<Self>) {
        loop {
            self.stall_watch.notified().await;
            loop {
                // Connections holding answers while a budget they count in
                // is used up, and how much each had given back by now.
                let suspects: Vec<(Arc<ConnectionBudgets>, u64)> = self
                    .connections
                    .lock()
                    .expect("connections lock")
                    .values()
                    .filter_map(Weak::upgrade)
                    .filter(|connection| connection.stuck_candidate())
                    .map(|connection| {
                        let released = connection.answers_released();
                        (connection, released)
                    })
                    .collect();
                if suspects.is_empty() {
                    break;
                }
                tokio::time::sleep(self.timeout).await;
                for (connection, released) in suspects {
                    if connection.stuck_candidate() && connection.answers_released() == released {
                        tracing::warn!(
                            held = connection.answers.used(),
                            timeout = %humantime::format_duration(self.timeout),
                            "the peer reads none of its answers while a budget is used up: closing the connection"
                        );
                        connection.control.ask(Ask::CloseUnread);
                    }
                }
            }
        }
    }
}

/// A connection's budgets, made at its first request or answer: an idle
/// connection holds only this handle, not the budgets' counters, wake-ups and
/// watchdog entry (BENCHMARKS.md).
#[derive(Debug)]
pub(crate) struct LazyBudgets {
    process: Arc<Budgets>,
    control: ConnectionControl,
    made: OnceLock<Arc<ConnectionBudgets>>,
}

impl LazyBudgets {
    /// The connection's budgets, made by the first `get`.
    pub(crate) fn get(&self) -> &Arc<ConnectionBudgets> {
        self.made
            .get_or_init(|| self.process.make_connection(self.control.clone()))
    }
}

/// One connection's budgets, with the process's behind them (request extension).
#[derive(Debug)]
pub(crate) struct ConnectionBudgets {
    id: u64,
    requests: Budget,
    answers: Budget,
    /// Answer bytes given back so far: whether the peer reads at all.
    answers_released: AtomicU64,
    /// Where the watchdog asks for the connection's close.
    control: ConnectionControl,
    process: Arc<Budgets>,
}

impl Drop for ConnectionBudgets {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.process.connections.lock() {
            connections.remove(&self.id);
        }
    }
}

impl ConnectionBudgets {
    fn pair(&self, holds: Holds) -> (&Budget, &Budget, &BudgetCounters) {
        match holds {
            Holds::Requests => (
                &self.requests,
                &self.process.requests,
                &self.process.request_counters,
            ),
            Holds::Answers => (
                &self.answers,
                &self.process.answers,
                &self.process.answer_counters,
            ),
        }
    }

    fn answers_released(&self) -> u64 {
        self.answers_released.load(Ordering::Acquire)
    }

    /// Holds answers while its own or the process's answer budget is used up.
    fn stuck_candidate(&self) -> bool {
        self.answers.used() > 0 && (self.answers.is_used_up() || self.process.answers.is_used_up())
    }

    /// How long holding without progress may last.
    fn timeout(&self) -> Duration {
        self.process.timeout
    }

    fn take(&self, holds: Holds, bytes: usize) {
        let (own, process, _) = self.pair(holds);
        own.take(bytes);
        process.take(bytes);
    }

    /// Takes `bytes` from both budgets if they fit in both.
    fn try_take(&self, holds: Holds, bytes: usize) -> bool {
        let (own, process, _) = self.pair(holds);
        if !own.try_take(bytes) {
            return false;
        }
        if !process.try_take(bytes) {
            own.release(bytes);
            return false;
        }
        true
    }

    fn release(&self, holds: Holds, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let (own, process, _) = self.pair(holds);
        own.release(bytes);
        process.release(bytes);
        if holds == Holds::Answers {
            self.answers_released
                .fetch_add(bytes as u64, Ordering::AcqRel);
        }
    }

    /// Whether more of `holds` may be produced.
    fn has_room(&self, holds: Holds) -> bool {
        let (own, process, _) = self.pair(holds);
        own.has_room() && process.has_room()
    }

    /// The largest message either budget could ever hold.
    fn largest(&self, holds: Holds) -> usize {
        let (own, process, _) = self.pair(holds);
        own.limit.min(process.limit) as usize
    }
}

/// Waits for room in a connection's budgets; made only when a stream has to wait.
struct Waiting {
    budgets: Arc<ConnectionBudgets>,
    holds: Holds,
    own: Pin<Box<OwnedNotified>>,
    process: Pin<Box<OwnedNotified>>,
}

impl Waiting {
    fn new(budgets: &Arc<ConnectionBudgets>, holds: Holds) -> Self {
        let (own, process, counters) = budgets.pair(holds);
        counters.waits.inc();
        own.waiting.fetch_add(1, Ordering::AcqRel);
        process.waiting.fetch_add(1, Ordering::AcqRel);
        let mut waiting = Self {
            budgets: Arc::clone(budgets),
            holds,
            own: Box::pin(Arc::clone(&own.room).notified_owned()),
            process: Box::pin(Arc::clone(&process.room).notified_owned()),
        };
        // Registered before the caller checks again, so no release is missed.
        waiting.own.as_mut().enable();
        waiting.process.as_mut().enable();
        waiting
    }

    /// Ready when either budget gave something back since the last call.
    fn poll_released(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let own = self.own.as_mut().poll(cx).is_ready();
        let process = self.process.as_mut().poll(cx).is_ready();
        if !(own || process) {
            return Poll::Pending;
        }
        let (own_budget, process_budget, _) = self.budgets.pair(self.holds);
        if own {
            self.own = Box::pin(Arc::clone(&own_budget.room).notified_owned());
            self.own.as_mut().enable();
        }
        if process {
            self.process = Box::pin(Arc::clone(&process_budget.room).notified_owned());
            self.process.as_mut().enable();
        }
        Poll::Ready(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let (own, process, _) = self.budgets.pair(self.holds);
        own.waiting.fetch_sub(1, Ordering::AcqRel);
        process.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's budgets are made at its first use, and only then does
    /// the watchdog list them.
    #[test]
    fn a_connection_s_budgets_are_made_at_first_use() {
        let budgets = Arc::new(Budgets::new(&LimitsConfig::default()).expect("default budgets"));
        let connection = budgets.connection(ConnectionControl::default());
        let listed = || budgets.connections.lock().expect("connections lock").len();
        assert_eq!(listed(), 0, "an unused connection has no budgets yet");
        let made = Arc::clone(connection.get());
        assert!(Arc::ptr_eq(&made, connection.get()), "made once");
        assert_eq!(listed(), 1);
        drop((made, connection));
        assert_eq!(listed(), 0, "dropped with the connection");
    }

    /// A message refused with a little room left begins a used-up episode
    /// that the watchdog sees, woken once, until the budget is half free.
    #[test]
    fn a_refusal_with_room_left_is_a_used_up_episode() {
        let watchdog = Arc::new(Notify::new());
        let budget = Budget::new(
            Holds::Answers,
            "connection",
            100,
            Gauge::default(),
            Some(Arc::clone(&watchdog)),
        );
        budget.take(60);
        assert!(!budget.is_used_up());
        assert!(!budget.try_take(50), "50 more do not fit under 100");
        assert!(budget.has_room(), "40 bytes of room are left");
        assert!(budget.is_used_up());
        budget.release(5);
        assert!(budget.is_used_up(), "55 held: not yet half free");
        budget.release(10);
        assert!(
            !budget.is_used_up(),
            "45 held: half free again, the episode ends"
        );
        // The watchdog was told, once: its permit is waiting.
        let told = watchdog.notified();
        tokio::pin!(told);
        assert!(told.as_mut().enable(), "the watchdog was told");
    }
}
