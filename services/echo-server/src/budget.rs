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

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::StdError;

use crate::config::LimitsConfig;

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
pub(crate) struct BudgetLabels {
    budget: &'static str,
}

/// Labels of a budget's limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BudgetLimitLabels {
    budget: &'static str,
    scope: &'static str,
}

/// The budgets' metric families; their series are the counters the budgets update.
#[derive(Debug, Default)]
pub(crate) struct BudgetMetrics {
    /// Bytes held, process-wide.
    pub(crate) in_use: Family<BudgetLabels, Gauge>,
    /// Each budget's limit, process-wide and per connection.
    pub(crate) limits: Family<BudgetLimitLabels, Gauge>,
    /// Times a stream waited for room.
    pub(crate) waits: Family<BudgetLabels, Counter>,
    /// Calls failed because waiting could not help.
    pub(crate) rejections: Family<BudgetLabels, Counter>,
}

/// Counters of one kind of budget: series of [`BudgetMetrics`].
#[derive(Debug)]
pub(crate) struct BudgetCounters {
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
    pub(crate) metrics: BudgetMetrics,
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

    /// The budgets of a new connection.
    pub(crate) fn connection(self: &Arc<Self>) -> Arc<ConnectionBudgets> {
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
            close: CancellationToken::new(),
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
                        connection.close.cancel();
                    }
                }
            }
        }
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
    /// Cancelled when the connection is to be closed (its peer does not read).
    pub(crate) close: CancellationToken,
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
        self.answers.used() > 0 && (!self.answers.has_room() || !self.process.answers.has_room())
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

/// Where a body is in its gRPC framing.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// Header bytes of the next message seen so far.
    header: [u8; 5],
    header_seen: usize,
    /// Bytes of the current message's body still to come.
    remaining: usize,
    /// Messages whose header has been seen.
    messages: u64,
}

impl Framing {
    /// Walks `chunk`; returns how many messages begin in it.
    pub(crate) fn messages_in(&mut self, chunk: &[u8]) -> u64 {
        let before = self.messages;
        self.advance(chunk);
        self.messages - before
    }

    /// Walks `chunk`; returns the length of a message it leaves unfinished,
    /// if its header is complete and it began in this chunk.
    fn advance(&mut self, mut chunk: &[u8]) -> Advance {
        let mut started = None;
        loop {
            if self.remaining > 0 {
                let body = self.remaining.min(chunk.len());
                self.remaining -= body;
                chunk = &chunk[body..];
                if self.remaining > 0 {
                    return match started {
                        Some(length) => Advance::Started(length),
                        None => Advance::Continues,
                    };
                }
                started = None;
            }
            if chunk.is_empty() {
                return if self.header_seen > 0 {
                    Advance::InHeader
                } else {
                    Advance::Between
                };
            }
            let wanted = (5 - self.header_seen).min(chunk.len());
            self.header[self.header_seen..self.header_seen + wanted]
                .copy_from_slice(&chunk[..wanted]);
            self.header_seen += wanted;
            chunk = &chunk[wanted..];
            if self.header_seen == 5 {
                self.header_seen = 0;
                self.messages += 1;
                let length = u32::from_be_bytes(self.header[1..5].try_into().expect("4 bytes"));
                self.remaining = length as usize;
                started = Some(self.remaining);
            }
        }
    }
}

/// Where a chunk left the framing.
#[derive(Debug, PartialEq, Eq)]
enum Advance {
    /// At a message boundary.
    Between,
    /// Within a message header.
    InHeader,
    /// Within a message already reserved.
    Continues,
    /// Within a message of this length, begun in this chunk.
    Started(usize),
}

pin_project! {
    /// A request body whose unfinished messages are reserved in the budgets.
    pub(crate) struct BudgetedRequest<B> {
        #[pin]
        inner: B,
        budgets: Arc<ConnectionBudgets>,
        framing: Framing,
        // Bytes reserved for the message in progress.
        reserved: usize,
        // A chunk whose new message waits for its reservation.
        held: Option<(Bytes, usize)>,
        waiting: Option<Waiting>,
        // Ends a reservation that makes no progress.
        stall: Option<Pin<Box<Sleep>>>,
    }

    impl<B> PinnedDrop for BudgetedRequest<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.budgets.release(Holds::Requests, *this.reserved);
        }
    }
}

impl<B> BudgetedRequest<B> {
    pub(crate) fn new(inner: B, budgets: Arc<ConnectionBudgets>) -> Self {
        Self {
            inner,
            budgets,
            framing: Framing::default(),
            reserved: 0,
            held: None,
            waiting: None,
            stall: None,
        }
    }
}

fn exhausted(message: String) -> StdError {
    Box::new(Status::resource_exhausted(message))
}

impl<B> Body for BudgetedRequest<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    type Data = Bytes;
    /// The inner body's errors, or a RESOURCE_EXHAUSTED [`Status`] (which
    /// tonic finds among them and passes on as the call's status).
    type Error = StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        let mut this = self.project();
        let timeout = this.budgets.timeout();
        // A chunk whose message waits for room: yield it once there is room.
        if let Some((_, length)) = this.held {
            let length = *length;
            loop {
                if this.budgets.try_take(Holds::Requests, length) {
                    *this.reserved = length;
                    *this.waiting = None;
                    *this.stall = None;
                    let (chunk, _) = this.held.take().expect("checked above");
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Waiting::new(this.budgets, Holds::Requests));
                if waiting.poll_released(cx).is_pending() {
                    break;
                }
            }
            let stall = this
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(stall.as_mut().poll(cx));
            this.budgets.pair(Holds::Requests).2.rejections.inc();
            return Poll::Ready(Some(Err(exhausted(format!(
                "no room for a {length}-byte request message within {}",
                humantime::format_duration(timeout)
            )))));
        }

        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // A reservation that makes no progress is given back in time.
                if *this.reserved > 0 {
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.budgets.pair(Holds::Requests).2.rejections.inc();
                        return Poll::Ready(Some(Err(exhausted(format!(
                            "a request message made no progress for {}",
                            humantime::format_duration(timeout)
                        )))));
                    }
                }
                return Poll::Pending;
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        let Some(chunk) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        // Progress: the stall clock starts again.
        if let Some(stall) = this.stall.as_mut() {
            stall.as_mut().reset(Instant::now() + timeout);
        }
        let was_reserved = *this.reserved > 0;
        match this.framing.advance(chunk) {
            Advance::Between | Advance::InHeader => {
                this.budgets.release(Holds::Requests, *this.reserved);
                *this.reserved = 0;
                *this.stall = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Advance::Continues => Poll::Ready(Some(Ok(frame))),
            Advance::Started(length) => {
                // The message before it, if reserved, ended in this chunk.
                if was_reserved {
                    this.budgets.release(Holds::Requests, *this.reserved);
                    *this.reserved = 0;
                }
                if length > this.budgets.largest(Holds::Requests) {
                    this.budgets.pair(Holds::Requests).2.rejections.inc();
                    return Poll::Ready(Some(Err(exhausted(format!(
                        "a {length}-byte request message is larger than the server's buffer budget"
                    )))));
                }
                if this.budgets.try_take(Holds::Requests, length) {
                    *this.reserved = length;
                    return Poll::Ready(Some(Ok(frame)));
                }
                let chunk = frame.into_data().expect("a data frame");
                *this.held = Some((chunk, length));
                *this.stall = None;
                // Poll again now: the wait registers for the next release.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// An answer body whose produced bytes are counted in the budgets until
    /// hyper takes them for HTTP/2, and which waits before producing more
    /// while a budget is used up.
    pub(crate) struct BudgetedAnswer<B> {
        #[pin]
        inner: B,
        budgets: Arc<ConnectionBudgets>,
        // The size of the last chunk, until hyper asks for the next one:
        // it does so once it has handed the last to h2.
        counted: usize,
        waiting: Option<Waiting>,
    }

    impl<B> PinnedDrop for BudgetedAnswer<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.budgets.release(Holds::Answers, *this.counted);
        }
    }
}

impl<B> BudgetedAnswer<B> {
    pub(crate) fn new(inner: B, budgets: Arc<ConnectionBudgets>) -> Self {
        Self {
            inner,
            budgets,
            counted: 0,
            waiting: None,
        }
    }
}

impl<B> Body for BudgetedAnswer<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        // Asked again: the last chunk has been handed to h2.
        this.budgets
            .release(Holds::Answers, std::mem::take(this.counted));
        while !this.budgets.has_room(Holds::Answers) {
            let waiting = this
                .waiting
                .get_or_insert_with(|| Waiting::new(this.budgets, Holds::Answers));
            ready!(waiting.poll_released(cx));
        }
        *this.waiting = None;
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let bytes = data.remaining();
            this.budgets.take(Holds::Answers, bytes);
            *this.counted = bytes;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(length as u32).to_be_bytes());
        framed.resize(5 + length, 7);
        framed
    }

    #[test]
    fn framing_finds_messages_left_unfinished_wherever_chunks_are_cut() {
        let mut stream = message(3);
        stream.extend(message(10));
        stream.extend(message(0));
        for cut in 0..=stream.len() {
            let mut framing = Framing::default();
            let first = framing.advance(&stream[..cut]);
            let second = framing.advance(&stream[cut..]);
            assert_eq!(second, Advance::Between, "cut at {cut}");
            let expected = match cut {
                0 | 8 | 23 | 28 => Advance::Between,
                1..=4 | 9..=12 | 24..=27 => Advance::InHeader,
                5..=7 => Advance::Started(3),
                13..=22 => Advance::Started(10),
                _ => unreachable!("the stream is 28 bytes"),
            };
            assert_eq!(first, expected, "cut at {cut}");
        }
    }
}
