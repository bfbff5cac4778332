//! Where calls go, and the one retry every call gets for free.
//!
//! [`Endpoints`] is one server's link, or several servers' links taken
//! among those in rotation (the health watcher in `balance.rs` keeps the
//! rotation) by a [`BalancePolicy`]: round robin, or weighted round robin
//! by the load each server reports (gRFC A58, weights from the ORCA report
//! in each call's trailers; `load_report.rs`). A call the server provably never processed (see
//! `classify.rs`: refused by GOAWAY or REFUSED_STREAM, or never sent) is sent
//! again at once, once, on another connection or another address, whatever
//! the method and whether or not retries are configured, within the call's
//! deadline: gRPC's transparent retry. Its request body is replayed from a
//! recording of what was sent, kept up to [`REPLAY_LIMIT`] bytes; a call
//! that sent more is not retried.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tower_service::Service;

use crate::classify::{self, BoxError};
use crate::deadline::CallDeadline;
use crate::load_report::{self, OrcaLoadReport, Weight, WeightedConfig};
use crate::protocol::Link;
use crate::retry::Retrying;
use crate::stats::CallStats;

/// Request bytes recorded for a transparent retry; a call that sends more
/// before it is refused is not retried (grpc-java buffers similarly).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// One server, or several balanced; cheap to clone.
#[derive(Clone)]
pub struct Endpoints {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = self.shared.members.read().expect("members lock");
        f.debug_struct("Endpoints")
            .field("members", &members.len())
            .finish()
    }
}

/// How a balanced set picks the server of each call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum BalancePolicy {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// In proportion to the weights their load reports give (gRFC A58):
    /// queries per second over utilization.
    Weighted(WeightedConfig),
}

/// What a balanced set knows of one of its servers.
#[derive(Debug, Clone)]
pub struct MemberLoad {
    /// The server's address.
    pub addr: SocketAddr,
    /// Its weight, once it counts (weighted round robin only).
    pub weight: Option<f64>,
    /// The latest load report it sent (weighted round robin only).
    pub report: Option<OrcaLoadReport>,
}

struct Shared {
    members: RwLock<Vec<Member>>,
    next: AtomicUsize,
    policy: BalancePolicy,
    /// Weighted round robin's credit of each member (`load_report::pick`).
    credits: Mutex<Vec<f64>>,
    stats: Arc<CallStats>,
    /// A configured retry policy's budget, which transparent retries count in.
    retrying: Option<Arc<Retrying>>,
}

/// One address's link, and whether it is in the rotation.
struct Member {
    /// `None` for a single endpoint named by the builder.
    addr: Option<SocketAddr>,
    link: Link,
    in_rotation: AtomicBool,
    /// What its load reports make of it, for weighted round robin.
    weight: Arc<Mutex<Weight>>,
}

/// The member a call was sent to.
#[derive(Clone)]
struct Picked {
    addr: Option<SocketAddr>,
    link: Link,
    /// Where its answers' load reports go, under weighted round robin.
    weight: Option<(Arc<Mutex<Weight>>, WeightedConfig)>,
}

/// A handle on an [`Endpoints`] set that does not keep it alive.
pub(crate) struct WeakEndpoints(Weak<Shared>);

impl WeakEndpoints {
    /// The set, if any clone of it is still alive.
    pub(crate) fn upgrade(&self) -> Option<Endpoints> {
        self.0.upgrade().map(|shared| Endpoints { shared })
    }
}

impl Endpoints {
    /// A handle that does not keep the set alive.
    pub(crate) fn downgrade(&self) -> WeakEndpoints {
        WeakEndpoints(Arc::downgrade(&self.shared))
    }

    /// Calls go to `link`.
    pub(crate) fn single(
        link: Link,
        stats: Arc<CallStats>,
        retrying: Option<Arc<Retrying>>,
    ) -> Self {
        Self::new(
            vec![(None, link, true)],
            BalancePolicy::RoundRobin,
            stats,
            retrying,
        )
    }

    /// Calls go to whichever of `members` are in rotation, as `policy` picks.
    pub(crate) fn balanced(
        members: Vec<(SocketAddr, Link)>,
        policy: BalancePolicy,
        stats: Arc<CallStats>,
        retrying: Option<Arc<Retrying>>,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|(addr, link)| (Some(addr), link, true))
            .collect();
        Self::new(members, policy, stats, retrying)
    }

    fn new(
        members: Vec<(Option<SocketAddr>, Link, bool)>,
        policy: BalancePolicy,
        stats: Arc<CallStats>,
        retrying: Option<Arc<Retrying>>,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|(addr, link, in_rotation)| Member {
                addr,
                link,
                in_rotation: AtomicBool::new(in_rotation),
                weight: Arc::default(),
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                members: RwLock::new(members),
                next: AtomicUsize::new(0),
                policy,
                credits: Mutex::default(),
                stats,
                retrying,
            }),
        }
    }

    /// Each server of a balanced set, with its weight and latest load
    /// report under weighted round robin.
    pub fn loads(&self) -> Vec<MemberLoad> {
        let now = Instant::now();
        let members = self.shared.members.read().expect("members lock");
        members
            .iter()
            .filter_map(|member| {
                let weight = member.weight.lock().expect("weight lock");
                Some(MemberLoad {
                    addr: member.addr?,
                    weight: match self.shared.policy {
                        BalancePolicy::Weighted(config) => weight.current(now, &config),
                        BalancePolicy::RoundRobin => None,
                    },
                    report: weight.last_report.clone(),
                })
            })
            .collect()
    }

    /// The addresses of a balanced set, each with its link.
    pub(crate) fn members(&self) -> Vec<(SocketAddr, Link)> {
        let members = self.shared.members.read().expect("members lock");
        members
            .iter()
            .filter_map(|member| Some((member.addr?, member.link.clone())))
            .collect()
    }

    /// How the set picks a server.
    pub(crate) fn policy(&self) -> BalancePolicy {
        self.shared.policy
    }

    /// What weighted round robin knows of `addr`, for its reports out of band.
    pub(crate) fn weight_of(&self, addr: SocketAddr) -> Option<Arc<Mutex<Weight>>> {
        let members = self.shared.members.read().expect("members lock");
        members
            .iter()
            .find(|member| member.addr == Some(addr))
            .map(|member| Arc::clone(&member.weight))
    }

    /// Adds `addr` (out of rotation until [`Endpoints::set_in_rotation`]).
    pub(crate) fn add(&self, addr: SocketAddr, link: Link) {
        let mut members = self.shared.members.write().expect("members lock");
        if members.iter().all(|member| member.addr != Some(addr)) {
            members.push(Member {
                addr: Some(addr),
                link,
                in_rotation: AtomicBool::new(false),
                weight: Arc::default(),
            });
        }
    }

    /// Puts `addr` in or out of the rotation; whether that changed anything.
    pub(crate) fn set_in_rotation(&self, addr: SocketAddr, in_rotation: bool) -> bool {
        let members = self.shared.members.read().expect("members lock");
        members
            .iter()
            .find(|member| member.addr == Some(addr))
            .is_some_and(|member| {
                member.in_rotation.swap(in_rotation, Ordering::AcqRel) != in_rotation
            })
    }

    /// The next member in rotation, other than `avoid` when there is another;
    /// any member when none is in rotation (the call then fails for a reason).
    fn pick(&self, avoid: Option<SocketAddr>) -> Picked {
        let members = self.shared.members.read().expect("members lock");
        if let BalancePolicy::Weighted(config) = self.shared.policy
            && let Some(index) = self.pick_weighted(&members, avoid, &config)
        {
            let member = &members[index];
            // Out of band, the reports come on streams of their own (balance.rs).
            let per_call = config.out_of_band.is_none();
            return Picked {
                addr: member.addr,
                link: member.link.clone(),
                weight: per_call.then(|| (Arc::clone(&member.weight), config)),
            };
        }
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let count = members.len();
        let choose = |accept: &dyn Fn(&Member) -> bool| {
            (0..count)
                .map(|i| &members[(start + i) % count])
                .find(|member| accept(member))
        };
        let member = choose(&|m| {
            m.in_rotation.load(Ordering::Acquire) && (avoid.is_none() || m.addr != avoid)
        })
        .or_else(|| choose(&|m| m.in_rotation.load(Ordering::Acquire)))
        .or_else(|| choose(&|m| avoid.is_none() || m.addr != avoid))
        .unwrap_or(&members[start % count]);
        Picked {
            addr: member.addr,
            link: member.link.clone(),
            weight: None,
        }
    }

    /// Weighted round robin's pick among the members in rotation (other
    /// than `avoid` when there is another); none when none is in rotation.
    fn pick_weighted(
        &self,
        members: &[Member],
        avoid: Option<SocketAddr>,
        config: &WeightedConfig,
    ) -> Option<usize> {
        let now = Instant::now();
        let weights: Vec<Option<f64>> = members
            .iter()
            .map(|member| {
                member
                    .weight
                    .lock()
                    .expect("weight lock")
                    .current(now, config)
            })
            .collect();
        let in_rotation = |index: usize| members[index].in_rotation.load(Ordering::Acquire);
        let mut credits = self.shared.credits.lock().expect("credits lock");
        credits.resize(members.len(), 0.0);
        load_report::pick(&mut credits, &weights, |index| {
            in_rotation(index) && (avoid.is_none() || members[index].addr != avoid)
        })
        .or_else(|| load_report::pick(&mut credits, &weights, in_rotation))
    }
}

impl Service<http::Request<Body>> for Endpoints {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<http::Response<Body>, BoxError>;

    /// Always ready: a call waits for its member's link in its future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let endpoints = self.clone();
        let (parts, body) = request.into_parts();
        // The link writes what is left of it when each attempt is sent.
        let deadline = parts.extensions.get::<CallDeadline>().copied();
        let retry_parts = copy_parts(&parts);
        let replay = Replay::new(body);
        let first = endpoints.pick(None);
        let attempt = http::Request::from_parts(parts, replay.attempt());
        Box::pin(async move {
            let error = match send(&first, attempt).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let failure = classify::before_response(&*error);
            let expired = deadline.is_some_and(CallDeadline::expired);
            if !failure.never_processed || !replay.replayable() || expired {
                return Err(Box::new(failure.status) as BoxError);
            }
            let shared = &endpoints.shared;
            if let Some(addr) = first.addr
                && endpoints.set_in_rotation(addr, false)
            {
                // Back when its health check passes (balance.rs).
                tracing::debug!(%addr, "out of rotation: it refused a call");
            }
            shared.stats.transparently_retried();
            if let Some(retrying) = &shared.retrying {
                retrying.count_retry();
            }
            let parts = retry_parts;
            let second = endpoints.pick(first.addr);
            send(&second, http::Request::from_parts(parts, replay.attempt()))
                .await
                .map_err(|error| Box::new(classify::before_response(&*error).status) as BoxError)
        })
    }
}

async fn send(
    member: &Picked,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let mut link = member.link.clone();
    std::future::poll_fn(|cx| link.poll_ready(cx)).await?;
    let response = link.call(request).await?;
    let Some((weight, config)) = member.weight.clone() else {
        return Ok(response);
    };
    // A trailers-only answer's report is in its headers; any other's in its trailers.
    if let Some(report) = load_report::from_headers(response.headers()) {
        weight
            .lock()
            .expect("weight lock")
            .update(report, Instant::now(), &config);
        return Ok(response);
    }
    Ok(response.map(|body| {
        Body::new(ReportedBody {
            inner: body,
            weight,
            config,
        })
    }))
}

pin_project_lite::pin_project! {
    /// An answer's body whose trailers' load report updates its server's weight.
    struct ReportedBody {
        #[pin]
        inner: Body,
        weight: Arc<Mutex<Weight>>,
        config: WeightedConfig,
    }
}

impl http_body::Body for ReportedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(trailers) = frame.trailers_ref()
            && let Some(report) = load_report::from_headers(trailers)
        {
            this.weight
                .lock()
                .expect("weight lock")
                .update(report, Instant::now(), this.config);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of a request's head, for sending it again.
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy.extensions = parts.extensions.clone();
    copy
}

/// A request body recorded as it is sent, so that it can be sent again.
struct Replay {
    recording: Arc<Mutex<Recording>>,
}

struct Recording {
    inner: Body,
    /// The data sent so far, while within [`REPLAY_LIMIT`].
    frames: Vec<Bytes>,
    bytes: usize,
    overflowed: bool,
    /// The attempt allowed to read; an earlier one's body reads nothing more.
    attempt: u32,
}

impl Replay {
    fn new(inner: Body) -> Self {
        Self {
            recording: Arc::new(Mutex::new(Recording {
                inner,
                frames: Vec::new(),
                bytes: 0,
                overflowed: false,
                attempt: 0,
            })),
        }
    }

    /// The body of the next attempt: what was sent before, then the rest.
    fn attempt(&self) -> Body {
        let attempt = {
            let mut recording = self.recording.lock().expect("replay lock");
            recording.attempt += 1;
            recording.attempt
        };
        Body::new(ReplayBody {
            recording: Arc::clone(&self.recording),
            attempt,
            position: 0,
        })
    }

    /// Whether everything sent so far was recorded.
    fn replayable(&self) -> bool {
        !self.recording.lock().expect("replay lock").overflowed
    }
}

/// One attempt's view of a [`Replay`].
struct ReplayBody {
    recording: Arc<Mutex<Recording>>,
    attempt: u32,
    /// Recorded frames this attempt has sent.
    position: usize,
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let mut recording = this.recording.lock().expect("replay lock");
        if recording.attempt != this.attempt {
            return Poll::Ready(None);
        }
        if let Some(data) = recording.frames.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        let frame = std::task::ready!(Pin::new(&mut recording.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && !recording.overflowed
        {
            if recording.bytes + data.len() > REPLAY_LIMIT {
                recording.overflowed = true;
                recording.frames = Vec::new();
            } else {
                recording.bytes += data.len();
                recording.frames.push(data.clone());
                this.position += 1;
            }
        }
        Poll::Ready(frame)
    }
}
