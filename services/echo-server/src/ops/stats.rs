//! Live counters of the server, readable while it runs and exported as
//! Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Counters shared by every call and connection; cheap to read at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) in_flight_calls: Gauge,
    pub(crate) open_streams: Gauge,
    pub(crate) stream_messages_sent: Counter,
    pub(crate) open_connections: Gauge,
    pub(crate) http_requests: HttpRequests,
}

impl Stats {
    /// Calls started and not finished yet (streams until their last message).
    pub fn in_flight_calls(&self) -> u64 {
        self.in_flight_calls.get().max(0) as u64
    }

    /// Streaming calls (any of the three kinds) open right now.
    pub fn open_streams(&self) -> u64 {
        self.open_streams.get().max(0) as u64
    }

    /// Responses produced by ServerStream and BidiStream calls since start.
    pub fn stream_messages_sent(&self) -> u64 {
        self.stream_messages_sent.get()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.get().max(0) as u64
    }

    /// HTTP requests that arrived in `version` (HTTP/1.0 counts as 1.1) since start.
    pub fn http_requests(&self, version: http::Version) -> u64 {
        self.http_requests.of(version).get()
    }

    pub(crate) fn open_stream(&self) -> OpenStream {
        self.open_streams.inc();
        OpenStream {
            open_streams: self.open_streams.clone(),
            messages_sent: self.stream_messages_sent.clone(),
        }
    }

    pub(crate) fn open_connection(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }
}

/// Counts one open stream until dropped, which happens as soon as the call ends
/// or its caller goes away.
#[derive(Debug)]
pub(crate) struct OpenStream {
    open_streams: Gauge,
    messages_sent: Counter,
}

impl OpenStream {
    pub(crate) fn message_sent(&self) {
        self.messages_sent.inc();
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.open_streams.dec();
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `http_version` label of [`HttpRequests`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpVersionLabel {
    http_version: &'static str,
}

/// HTTP requests by HTTP version: one counter each, made at start so that
/// counting a request is one atomic add.
#[derive(Debug)]
pub(crate) struct HttpRequests {
    pub(crate) family: Family<HttpVersionLabel, Counter>,
    by_version: [Counter; 3],
}

impl Default for HttpRequests {
    fn default() -> Self {
        let family = Family::<HttpVersionLabel, Counter>::default();
        let by_version = ["1.1", "2", "3"].map(|http_version| {
            family
                .get_or_create(&HttpVersionLabel { http_version })
                .clone()
        });
        Self { family, by_version }
    }
}

impl HttpRequests {
    /// The counter of requests in `version`.
    pub(crate) fn of(&self, version: http::Version) -> &Counter {
        let index = match version {
            http::Version::HTTP_2 => 1,
            http::Version::HTTP_3 => 2,
            _ => 0,
        };
        &self.by_version[index]
    }
}
