//! HTTP/3 (`--http3`): quinn's QUIC endpoint on the TLS listener's port
//! (UDP), hyperium's `h3` on each connection; every request enters the same
//! service as HTTP/1.1 and HTTP/2 requests ([`PerConnection`]), under the
//! same connection caps, budgets, drain, maximum age and chaos schedules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use echo_wire::http3::{self, ReceivedBody};
use h3::error::Code;
use h3::server::RequestResolver;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::task::JoinSet;
use tower_service::Service;

use super::accept::{Admission, Slot};
use super::conn::{AnswerBody, HttpSettings, PerConnection, Shared, Stack};
use super::lifetime::{Lifetime, Turn};
use super::tls::{self, Tls};
use crate::context::{ConnectionControl, PeerInfo, ResetStream};
use crate::error::ServeError;
use crate::ops::chaos::Chaos;

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// HTTP/3's "no error" (RFC 9114, 8.1) as QUIC's close code.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

/// Unidirectional streams a peer may open: HTTP/3 needs three (control and
/// QPACK's two); a few more for extensions and grease, no more.
const MAX_UNI_STREAMS: u32 = 8;

/// The QUIC endpoint on `addr` (UDP), with `tls`'s certificate (reloads
/// included), client verifier and ALPN `h3`, and `settings`' limits.
pub(crate) fn endpoint(
    addr: SocketAddr,
    tls: &Tls,
    settings: &HttpSettings,
) -> Result<quinn::Endpoint, ServeError> {
    let crypto =
        QuicServerConfig::try_from(tls.quic_config()).map_err(|err| ServeError::Http3 {
            addr,
            reason: err.to_string(),
        })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let (stream_window, connection_window) = settings.windows();
    let (keepalive_interval, keepalive_timeout) = settings.keepalive();
    transport
        .max_concurrent_bidi_streams(settings.max_concurrent_streams().into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(stream_window.into())
        .receive_window(connection_window.into())
        // A silent peer is let go as an HTTP/2 one is: pinged every
        // interval, closed when nothing came back within the timeout.
        .keep_alive_interval(Some(keepalive_interval))
        .max_idle_timeout(Some(
            (keepalive_interval + keepalive_timeout)
                .try_into()
                .map_err(|_| ServeError::Http3 {
                    addr,
                    reason: "keepalive interval and timeout too long for QUIC".to_owned(),
                })?,
        ));
    config.transport_config(Arc::new(transport));
    let socket = std::net::UdpSocket::bind(addr).map_err(|err| ServeError::Http3 {
        addr,
        reason: err.to_string(),
    })?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|err| ServeError::Http3 {
        addr,
        reason: err.to_string(),
    })
}

/// The value of `Alt-Svc` that points HTTP/1.1 and HTTP/2 clients at HTTP/3
/// on `port`.
pub(crate) fn alt_svc(port: u16) -> http::HeaderValue {
    http::HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400"))
        .expect("an Alt-Svc value of digits is a header value")
}

/// Serves every QUIC connection of `endpoint` that `admission` lets in with
/// `service` until `shared.stop`, then sends each GOAWAY and returns once
/// all are closed. Dropping the returned future drops every connection.
pub(crate) async fn serve<S, B>(
    endpoint: quinn::Endpoint,
    admission: Admission,
    service: S,
    shared: Shared,
) where
    S: Stack<B>,
    B: AnswerBody,
{
    let handshake_timeout = admission.limits().handshake_timeout;
    let port = endpoint.local_addr().map_or(0, |addr| addr.port());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some(slot) = admission.admit(incoming.remote_address()) else {
                    incoming.refuse();
                    continue;
                };
                let control = ConnectionControl::default();
                let service = PerConnection {
                    inner: service.clone(),
                    peer: PeerInfo::new(incoming.remote_address()),
                    control: control.clone(),
                    flushes: None,
                    budgets: shared.budgets.connection(control),
                    served: Arc::clone(&shared.served),
                };
                let local = incoming.local_ip().map(|ip| SocketAddr::new(ip, port));
                connections.spawn(serve_connection(
                    incoming,
                    local,
                    slot,
                    handshake_timeout,
                    service,
                    shared.clone(),
                ));
            }
            Some(_) = connections.join_next() => {}
        }
    }
    // No new connections: those not accepted yet are refused.
    endpoint.set_server_config(None);
    while connections.join_next().await.is_some() {}
    endpoint.close(H3_NO_ERROR, b"");
    // The closes reach the peers before the socket goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// One QUIC connection: the handshake (bounded in time), then its requests,
/// each in a task of its own, until it ends, is cut, or has drained.
async fn serve_connection<S, B>(
    incoming: quinn::Incoming,
    local: Option<SocketAddr>,
    _slot: Slot,
    handshake_timeout: Duration,
    mut service: PerConnection<S>,
    shared: Shared,
) where
    S: Stack<B>,
    B: AnswerBody,
{
    let addr = incoming.remote_address();
    let connection = match tokio::time::timeout(handshake_timeout, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            tracing::debug!(peer = %addr, cause = %err, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "QUIC handshake timed out");
            return;
        }
    };
    service.peer.tls = Some(Arc::new(session(&connection)));
    // Listed while the connection is served.
    let _channelz = shared
        .channelz
        .as_ref()
        .map(|channelz| channelz.open_socket(local, &mut service.peer, "QUIC"));
    let settings = shared.settings;
    let mut h3: H3Connection = match h3::server::builder()
        .max_field_section_size(settings.max_header_list_size().into())
        .build(h3_quinn::Connection::new(connection.clone()))
        .await
    {
        Ok(h3) => h3,
        Err(err) => {
            tracing::debug!(peer = %addr, cause = %err, "HTTP/3 set-up failed");
            return;
        }
    };
    let mut lifetime = Lifetime::new(
        service.control.clone(),
        shared.chaos.as_deref().map(Chaos::subscribe),
        shared.stop,
        settings.max_age(),
    );
    let close = |reason: &str| {
        tracing::debug!(peer = %addr, reason, "closing the QUIC connection");
        connection.close(H3_NO_ERROR, b"");
    };
    let mut requests = JoinSet::new();
    let mut accepting = true;
    loop {
        let turn = tokio::select! {
            accepted = h3.accept(), if accepting => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(answer(resolver, service.clone()));
                    continue;
                }
                // The peer's GOAWAY, its requests done.
                Ok(None) => {
                    accepting = false;
                    if requests.is_empty() {
                        return close("the peer went away");
                    }
                    continue;
                }
                Err(err) => {
                    if !err.is_h3_no_error() {
                        tracing::debug!(peer = %addr, cause = %err, "HTTP/3 connection ended with an error");
                    }
                    return;
                }
            },
            Some(_) = requests.join_next() => {
                if (lifetime.draining() || !accepting) && requests.is_empty() {
                    return close("drained");
                }
                continue;
            }
            turn = lifetime.next() => turn,
        };
        match turn {
            Turn::Close(reason) => return close(reason),
            Turn::Drain(reason) => {
                tracing::debug!(peer = %addr, reason, "GOAWAY: draining the HTTP/3 connection");
                if let Err(err) = h3.shutdown(0).await {
                    tracing::debug!(peer = %addr, cause = %err, "HTTP/3 GOAWAY not sent");
                    return;
                }
                if requests.is_empty() {
                    return close("drained");
                }
            }
        }
    }
}

/// What the QUIC handshake agreed (QUIC is always TLS 1.3).
fn session(connection: &quinn::Connection) -> grpc_echo::echo::v1::TlsSession {
    let handshake = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok());
    let certificates = connection.peer_identity().and_then(|identity| {
        identity
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    tls::session(
        Some(rustls::ProtocolVersion::TLSv1_3),
        // quinn does not say which suite was agreed.
        String::new(),
        handshake
            .as_ref()
            .and_then(|handshake| handshake.protocol.as_deref()),
        handshake
            .as_ref()
            .and_then(|handshake| handshake.server_name.as_deref()),
        certificates.as_deref().map(Vec::as_slice),
    )
}

/// One request: read, served, and its answer written (headers, data,
/// trailers), or its stream reset as the call asked.
async fn answer<S, B>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    mut service: PerConnection<S>,
) where
    S: Stack<B>,
    B: AnswerBody,
{
    let (request, stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(err) => {
            tracing::debug!(cause = %err, "HTTP/3 request unreadable");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    if std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .is_err()
    {
        send.stop_stream(Code::H3_INTERNAL_ERROR);
        return;
    }
    let request = request.map(|()| ReceivedBody::new(recv));
    let response = match service.call_with(request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(cause = %err.into(), "HTTP/3 request failed");
            send.stop_stream(Code::H3_INTERNAL_ERROR);
            return;
        }
    };
    let reset = response.extensions().get::<ResetStream>().copied();
    let (parts, body) = response.into_parts();
    if let Err(err) = send
        .send_response(http::Response::from_parts(parts, ()))
        .await
    {
        tracing::debug!(cause = %err, "HTTP/3 answer headers not sent");
        return;
    }
    match http3::send_body(&mut send, body, reset.is_none()).await {
        Ok(()) => {
            if let Some(ResetStream(code)) = reset {
                send.stop_stream(h3_code(code));
            }
        }
        Err(err) => {
            tracing::debug!(cause = %err, "HTTP/3 answer not sent");
            send.stop_stream(err.code());
        }
    }
}

/// The HTTP/3 error code of an HTTP/2 stream reset (RFC 9114, appendix A.4).
fn h3_code(h2_code: u32) -> Code {
    match h2::Reason::from(h2_code) {
        h2::Reason::NO_ERROR => Code::H3_NO_ERROR,
        h2::Reason::PROTOCOL_ERROR => Code::H3_GENERAL_PROTOCOL_ERROR,
        h2::Reason::REFUSED_STREAM => Code::H3_REQUEST_REJECTED,
        h2::Reason::CANCEL => Code::H3_REQUEST_CANCELLED,
        h2::Reason::ENHANCE_YOUR_CALM => Code::H3_EXCESSIVE_LOAD,
        h2::Reason::CONNECT_ERROR => Code::H3_CONNECT_ERROR,
        h2::Reason::HTTP_1_1_REQUIRED => Code::H3_VERSION_FALLBACK,
        _ => Code::H3_INTERNAL_ERROR,
    }
}
