//! What travels with a call in its request and response extensions: where it
//! came from, what it may do to its connection, its deadline, and what the
//! layers ask of its handler and the handler of its answer. A leaf: it
//! imports nothing of the server, so the transport, the layers and the
//! handlers share these types without importing each other (as hyper's
//! `ext` and tonic's `Connected` do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use grpc_echo::echo::v1::{Header, TlsSession, Wire};
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, PROXY_AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderName};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What handlers and logs know of a connection's peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// `addr` as text, formatted once per connection rather than per call.
    pub addr_text: Arc<str>,
    /// The TLS session, when the connection has one.
    pub tls: Option<Arc<TlsSession>>,
    /// What channelz counts of the connection (with `--channelz`).
    pub(crate) channelz: Option<Arc<SocketCounts>>,
}

impl PeerInfo {
    /// A peer at `addr`, not (yet) over TLS.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            addr_text: addr.to_string().into(),
            tls: None,
            channelz: None,
        }
    }

    /// The subject of its verified client certificate (mTLS only).
    pub fn identity(&self) -> Option<&str> {
        self.tls
            .as_deref()
            .map(|tls| tls.client_subject.as_str())
            .filter(|subject| !subject.is_empty())
    }
}

/// Calls as channelz counts them: a server's, a connection's (its streams)
/// or a downstream channel's.
#[derive(Debug, Default)]
pub(crate) struct CallCounts {
    pub(crate) started: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// When the last one started, in nanoseconds since the Unix epoch (0: none yet).
    pub(crate) last_started: AtomicU64,
}

impl CallCounts {
    /// One more call started.
    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.last_started.store(unix_nanos(), Ordering::Relaxed);
    }

    /// A call ended, with OK or not.
    pub(crate) fn finished(&self, ok: bool) {
        let count = if ok { &self.succeeded } else { &self.failed };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// What channelz counts of one connection, and the counts of its server,
/// which its calls add to.
#[derive(Debug)]
pub(crate) struct SocketCounts {
    pub(crate) streams: CallCounts,
    pub(crate) server: Arc<CallCounts>,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    /// When the last message went, or came, in nanoseconds since the Unix epoch.
    pub(crate) last_message_sent: AtomicU64,
    pub(crate) last_message_received: AtomicU64,
}

impl SocketCounts {
    /// Nothing counted yet, of a connection to the server counted in `server`.
    pub(crate) fn new(server: Arc<CallCounts>) -> Self {
        Self {
            streams: CallCounts::default(),
            server,
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            last_message_sent: AtomicU64::new(0),
            last_message_received: AtomicU64::new(0),
        }
    }

    /// A call arrived on the connection.
    pub(crate) fn call_started(&self) {
        self.streams.started();
        self.server.started();
    }

    /// A call on the connection ended, with OK or not.
    pub(crate) fn call_finished(&self, ok: bool) {
        self.streams.finished(ok);
        self.server.finished(ok);
    }

    /// `count` messages were sent on the connection.
    pub(crate) fn sent(&self, count: u64) {
        self.messages_sent.fetch_add(count, Ordering::Relaxed);
        self.last_message_sent
            .store(unix_nanos(), Ordering::Relaxed);
    }

    /// `count` messages arrived on the connection.
    pub(crate) fn received(&self, count: u64) {
        self.messages_received.fetch_add(count, Ordering::Relaxed);
        self.last_message_received
            .store(unix_nanos(), Ordering::Relaxed);
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// What may be asked of a connection besides by its peer: by a call on it
/// (GOAWAY, a close) or by the memory budgets' watchdog (a close). One record
/// per connection, which its serving loop watches: a cancellation token for
/// each of the three asks cost 336 bytes per connection (BENCHMARKS.md).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionControl(Arc<Asks>);

/// The asks made so far (a set of [`Ask`] bits), and the wake-up of the one
/// task that watches them.
#[derive(Debug, Default)]
struct Asks {
    made: AtomicU8,
    told: Notify,
}

/// One thing asked of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ask {
    /// Send GOAWAY: take no new calls, close once the open calls end.
    GoAway = 1,
    /// Close at once, ending every call on it unanswered: a call asked.
    Close = 2,
    /// Close at once: its peer reads none of its answers while a memory
    /// budget is used up.
    CloseUnread = 4,
}

impl ConnectionControl {
    /// Sends GOAWAY: the connection takes no new calls and closes once its open calls end.
    pub(crate) fn go_away(&self) {
        self.ask(Ask::GoAway);
    }

    /// Closes the connection at once, ending every call on it unanswered.
    pub(crate) fn close(&self) {
        self.ask(Ask::Close);
    }

    /// Asks the connection for `ask`; asks are kept, so one made before its
    /// watcher looks is not lost.
    pub(crate) fn ask(&self, ask: Ask) {
        self.0.made.fetch_or(ask as u8, Ordering::AcqRel);
        // One watcher: a wake-up made while it is not waiting is kept for it.
        self.0.told.notify_one();
    }

    /// The first of `watched` asked (in the order given), once one is.
    /// For the connection's one watcher.
    pub(crate) async fn asked(&self, watched: &[Ask]) -> Ask {
        loop {
            let made = self.0.made.load(Ordering::Acquire);
            if let Some(ask) = watched.iter().find(|ask| made & **ask as u8 != 0) {
                return *ask;
            }
            self.0.told.notified().await;
        }
    }
}

/// Request extension: how a request arrived: its connection's peer, what a
/// call may do to that connection, and the request's HTTP version and
/// `:authority` (tonic's requests keep neither). One extension, so that each
/// request costs one insertion (measured: 700 instructions for a third).
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub(crate) peer: PeerInfo,
    pub(crate) control: ConnectionControl,
    pub(crate) version: http::Version,
    pub(crate) authority: Option<http::uri::Authority>,
}

/// Request extension of a request translated into gRPC: its protocol,
/// headers and URL query as they arrived.
#[derive(Debug, Clone)]
pub(crate) struct Original {
    pub(crate) protocol: &'static str,
    pub(crate) headers: HeaderMap,
    /// The query of the request's URL (a Connect GET carries its message there).
    pub(crate) query: Option<String>,
}

/// Request extension: when the caller stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(pub(crate) Instant);

/// Request extension: the payload size each answer of the call should have
/// (`size=` of a behaviour header), in place of the message's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseSize(pub(crate) u32);

/// Response extension: no service or method answers the call's path (the
/// router's UNIMPLEMENTED), which Connect answers with HTTP 404.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnknownRoute;

/// Response extension: headers to add to the call's trailers (tonic has no
/// way for a successful handler to add trailers).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtraTrailers(pub(crate) HeaderMap);

/// Response extension: end the stream with RST_STREAM carrying this HTTP/2
/// error code where the trailers (and the call's status) would be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetStream(pub(crate) u32);

/// What a call does to its HTTP/2 stream or connection where it would end
/// (a request's `connection` control, or a behaviour's `connection=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionAction {
    /// Answer, then GOAWAY.
    GoAway,
    /// End the stream with RST_STREAM of this code instead of the status.
    ResetStream(u32),
    /// Close the connection, unanswered.
    Close,
}

/// Headers never reflected: they carry credentials.
const NEVER_REFLECTED: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// What a call's `headers` and `extensions` (at any layer, or in a handler)
/// say arrived: the headers before any protocol translation, and the
/// connection's TLS session; never a credential.
pub(crate) fn reflect_wire(headers: &HeaderMap, extensions: &http::Extensions) -> Wire {
    let original = extensions.get::<Original>();
    let headers = original.map_or(headers, |original| &original.headers);
    let arrival = extensions.get::<Arrival>();
    let text = |name: &str| {
        headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let first = |names: &[&str]| {
        names
            .iter()
            .map(|name| text(name))
            .find(|value| !value.is_empty())
            .unwrap_or_default()
    };
    Wire {
        protocol: original
            .map_or("grpc", |original| original.protocol)
            .to_owned(),
        content_type: text(CONTENT_TYPE.as_str()),
        http_version: arrival
            .map(|arrival| format!("{:?}", arrival.version))
            .unwrap_or_default(),
        authority: arrival
            .and_then(|arrival| arrival.authority.as_ref())
            .map_or_else(|| text(HOST.as_str()), ToString::to_string),
        user_agent: text(USER_AGENT.as_str()),
        timeout: first(&["grpc-timeout", "connect-timeout-ms"]),
        compression: first(&[
            "grpc-encoding",
            "connect-content-encoding",
            "content-encoding",
        ]),
        accept_compression: first(&[
            "grpc-accept-encoding",
            "connect-accept-encoding",
            "accept-encoding",
        ]),
        tls: arrival.and_then(|arrival| arrival.peer.tls.as_deref().cloned()),
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
        baggage: text("baggage"),
        headers: headers
            .iter()
            .filter(|(name, _)| !NEVER_REFLECTED.contains(name))
            .map(|(name, value)| Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn credentials_are_never_reflected() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.insert(COOKIE, HeaderValue::from_static("session=secret"));
        headers.insert("grpc-timeout", HeaderValue::from_static("5S"));
        headers.insert("x-name", HeaderValue::from_static("value"));
        let wire = reflect_wire(&headers, &http::Extensions::new());
        assert_eq!(wire.timeout, "5S");
        assert_eq!(wire.protocol, "grpc");
        let names: Vec<&str> = wire.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["grpc-timeout", "x-name"]);
    }
}
