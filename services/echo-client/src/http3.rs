//! HTTP/3 to one address: a QUIC connection (quinn, with the link's rustls
//! configuration and ALPN `h3`) made on the first call and again once it
//! closes, each request on a stream of its own (hyperium's `h3`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_wire::http3::{self, ReceivedBody};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::body::Body;

use crate::classify::BoxError;
use crate::timing::{Phase, Timeline};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// How long a connection may stay idle (QUIC's idle timeout), kept alive
/// by pings meanwhile.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// HTTP/3 to one origin (`https://host:port`).
pub(crate) struct Http3 {
    origin: Uri,
    config: quinn::ClientConfig,
    /// The name the server's certificate must show.
    server_name: String,
    connect_timeout: Option<Duration>,
    /// Where each connection's phases go, when timed.
    timing: Option<Timeline>,
    /// The open connection, if any: its QUIC side (to tell whether it closed)
    /// and its request sender.
    /// (Behind an `Arc` that a timeline may watch, to read its bytes while it lives.)
    open: Mutex<Option<(Arc<quinn::Connection>, SendRequest)>>,
}

impl std::fmt::Debug for Http3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http3")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Http3 {
    /// HTTP/3 to `origin` with `rustls`'s configuration, expecting
    /// `server_name` in the certificate (the origin's host when none).
    pub(crate) fn new(
        origin: Uri,
        mut rustls: rustls::ClientConfig,
        server_name: Option<rustls::pki_types::ServerName<'static>>,
        connect_timeout: Option<Duration>,
        timing: Option<Timeline>,
    ) -> Result<Self, BoxError> {
        rustls.alpn_protocols = vec![b"h3".to_vec()];
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(rustls)?));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(IDLE_TIMEOUT.try_into()?))
            .keep_alive_interval(Some(KEEPALIVE_INTERVAL));
        config.transport_config(Arc::new(transport));
        let server_name = match server_name {
            Some(name) => name.to_str().into_owned(),
            None => origin.host().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            origin,
            config,
            server_name,
            connect_timeout,
            timing,
            open: Mutex::new(None),
        })
    }

    /// The open connection's request sender, connecting first if there is none.
    pub(crate) async fn sender(&self) -> Result<SendRequest, BoxError> {
        self.sender_not_on(None).await
    }

    /// [`sender`](Self::sender), but not on the connection `refused` (by its
    /// `stable_id`): one that took no new request.
    async fn sender_not_on(&self, refused: Option<usize>) -> Result<SendRequest, BoxError> {
        let mut open = self.open.lock().await;
        if let Some((connection, sender)) = open.as_ref()
            && connection.close_reason().is_none()
            && Some(connection.stable_id()) != refused
        {
            return Ok(sender.clone());
        }
        let connecting = self.connect();
        let (connection, sender) = match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connecting)
                .await
                .map_err(|_| "connecting over QUIC timed out")??,
            None => connecting.await?,
        };
        let connection = Arc::new(connection);
        if let Some(timeline) = &self.timing {
            timeline.quic_opened(&connection);
        }
        if let Some((replaced, _)) = open.replace((connection, sender.clone())) {
            self.let_go(&replaced);
        }
        Ok(sender)
    }

    /// Gives the timeline, if any, the final bytes of a connection no longer used.
    fn let_go(&self, connection: &quinn::Connection) {
        if let Some(timeline) = &self.timing {
            timeline.quic_closed(connection);
        }
    }

    async fn connect(&self) -> Result<(quinn::Connection, SendRequest), BoxError> {
        let authority = self.origin.authority().ok_or("the endpoint has no host")?;
        let port = authority.port_u16().unwrap_or(443);
        let mut phases = Vec::new();
        let start = Instant::now();
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await?
            .next()
            .ok_or("the endpoint's host has no address")?;
        phases.push(Phase {
            name: "resolve",
            start,
            end: Instant::now(),
            detail: format!("{} -> {addr}", authority.host()),
        });
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(local)?;
        let start = Instant::now();
        let connection = endpoint
            .connect_with(self.config.clone(), addr, &self.server_name)?
            .await?;
        let alpn = connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol)
            .map_or_else(
                || "none".to_owned(),
                |alpn| String::from_utf8_lossy(&alpn).into_owned(),
            );
        phases.push(Phase {
            name: "QUIC handshake",
            start,
            end: Instant::now(),
            detail: format!("{addr}, TLS 1.3, ALPN {alpn}"),
        });
        let start = Instant::now();
        let (mut driver, sender) =
            h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
        phases.push(Phase {
            name: "HTTP/3 setup",
            start,
            end: Instant::now(),
            detail: "control stream and SETTINGS sent".to_owned(),
        });
        if let Some(timeline) = &self.timing {
            timeline.connection_opened(phases);
        }
        // The connection's own work (its control stream, the peer's GOAWAY)
        // runs until it closes.
        tokio::spawn(async move {
            let _closed = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok((connection, sender))
    }

    /// Sends `request` on a new stream: its body from a task of its own (so
    /// that the answer can stream while the request does), the answer's
    /// body read as it comes.
    pub(crate) async fn send(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (mut parts, body) = request.into_parts();
        let mut uri = self.origin.clone().into_parts();
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        parts.uri = Uri::from_parts(uri)?;
        parts.version = http::Version::HTTP_3;
        // Connection-specific headers have no place in HTTP/3 (RFC 9114, 4.2).
        parts.headers.remove(http::header::TE);
        let head = || {
            let mut head = Request::new(());
            *head.method_mut() = parts.method.clone();
            *head.uri_mut() = parts.uri.clone();
            *head.version_mut() = parts.version;
            *head.headers_mut() = parts.headers.clone();
            head
        };
        let mut sender = self.sender().await?;
        let stream = match sender.send_request(head()).await {
            Ok(stream) => stream,
            // The server said GOAWAY on this connection (its age, a drain):
            // the request was not sent, and goes on a new connection.
            Err(err) => {
                tracing::debug!(cause = %err, "HTTP/3 connection took no new request: reconnecting");
                let refused = self.open.lock().await.as_ref().map(|(c, _)| c.stable_id());
                sender = self.sender_not_on(refused).await?;
                sender.send_request(head()).await?
            }
        };
        let (mut send, mut receive) = stream.split();
        let sending = AbortOnDrop(tokio::spawn(async move {
            if let Err(err) = http3::send_body(&mut send, body, true).await {
                tracing::debug!(cause = %err, "HTTP/3 request not sent");
                send.stop_stream(err.code());
            }
        }));
        let response = receive.recv_response().await?;
        Ok(response.map(|()| {
            Body::new(Answer {
                body: ReceivedBody::new(receive),
                _sending: sending,
                _connection: sender,
            })
        }))
    }
}

/// Aborts the task sending a request when its answer is dropped (the call
/// ended or was cancelled).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for Http3 {
    fn drop(&mut self) {
        if let Some((connection, _)) = self.open.get_mut().take() {
            self.let_go(&connection);
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An answer's body, which keeps its request's sending task and its
/// connection (h3 closes one when its last sender goes) while read.
/// Dropped before its end, quinn stops the stream (STOP_SENDING); asking
/// h3 to do it while a read is pending panics in h3-quinn 0.0.10.
struct Answer {
    body: ReceivedBody<h3::client::RequestStream<h3_quinn::RecvStream, Bytes>>,
    _sending: AbortOnDrop,
    _connection: SendRequest,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}
