//! Where calls go, and the one retry every call gets for free.
//!
//! [`Endpoints`] is one server's link, or several servers' links taken
//! round-robin among those in rotation (the health watcher in `balance.rs`
//! keeps the rotation). A call the server provably never processed (see
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

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tower_service::Service;

use crate::classify::{self, BoxError};
use crate::deadline::CallDeadline;
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

struct Shared {
    members: RwLock<Vec<Member>>,
    next: AtomicUsize,
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
}

/// The member a call was sent to.
#[derive(Clone)]
struct Picked {
    addr: Option<SocketAddr>,
    link: Link,
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
        Self::new(vec![(None, link, true)], stats, retrying)
    }

    /// Calls go round-robin to whichever of `members` are in rotation.
    pub(crate) fn balanced(
        members: Vec<(SocketAddr, Link)>,
        stats: Arc<CallStats>,
        retrying: Option<Arc<Retrying>>,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|(addr, link)| (Some(addr), link, true))
            .collect();
        Self::new(members, stats, retrying)
    }

    fn new(
        members: Vec<(Option<SocketAddr>, Link, bool)>,
        stats: Arc<CallStats>,
        retrying: Option<Arc<Retrying>>,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|(addr, link, in_rotation)| Member {
                addr,
                link,
                in_rotation: AtomicBool::new(in_rotation),
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                members: RwLock::new(members),
                next: AtomicUsize::new(0),
                stats,
                retrying,
            }),
        }
    }

    /// The addresses of a balanced set, each with its link.
    pub(crate) fn members(&self) -> Vec<(SocketAddr, Link)> {
        let members = self.shared.members.read().expect("members lock");
        members
            .iter()
            .filter_map(|member| Some((member.addr?, member.link.clone())))
            .collect()
    }

    /// Adds `addr` (out of rotation until [`Endpoints::set_in_rotation`]).
    pub(crate) fn add(&self, addr: SocketAddr, link: Link) {
        let mut members = self.shared.members.write().expect("members lock");
        if members.iter().all(|member| member.addr != Some(addr)) {
            members.push(Member {
                addr: Some(addr),
                link,
                in_rotation: AtomicBool::new(false),
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
        }
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
    link.call(request).await
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
