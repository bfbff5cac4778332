//! [`LeanUnary`]: one unary method called with a message encoded once, over
//! an HTTP/2 connection of its own, straight through the `h2` crate.
//!
//! tonic's `Channel` hands every call through a buffer task and a stack of
//! tower services; for a load generator that is the measured cost (a tonic
//! client drove a server about 40% as hard as h2load on the same core). This
//! caller speaks gRPC over h2 directly, as h2load does, and still checks
//! every call's status.

use std::sync::Arc;

use bytes::Bytes;
use echo_wire::framing::{self, Message};
use echo_wire::grpc_timeout;
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Uri};
use tokio::net::TcpStream;
use tonic::{Code, Status};

use crate::classify;
use crate::client::{CONNECTION_WINDOW, ClientBuilder, STREAM_WINDOW};
use crate::error::ClientError;
use crate::stats::CallStats;

/// Calls one unary method over one HTTP/2 connection; cheap to clone (clones
/// share the connection until one has to make a new one).
#[derive(Clone)]
pub struct LeanUnary {
    sender: SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
    /// Where to connect again, after a refusal.
    authority: Authority,
    stats: Arc<CallStats>,
}

impl LeanUnary {
    /// Connects to `builder`'s endpoint for calls to `path`
    /// (`/package.Service/Method`) with `message` (already protobuf-encoded),
    /// carrying the builder's metadata and timeout and counting its retries
    /// in the builder's call stats. Only a single plaintext endpoint can be
    /// called this way: TLS and balancing are refused.
    pub async fn connect(
        builder: &ClientBuilder,
        path: &str,
        message: Bytes,
    ) -> Result<Self, ClientError> {
        let base = builder.plaintext_uri().ok_or(ClientError::Unsupported {
            what: "a lean caller",
            needs: "a single plaintext address (no TLS, no balancing)",
        })?;
        let authority = base
            .authority()
            .cloned()
            .ok_or_else(|| ClientError::Connect {
                endpoint: base.to_string(),
                source: format!("{base} has no host:port").into(),
            })?;
        let sender = handshake(&authority)
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: base.to_string(),
                source,
            })?;
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|err| ClientError::InvalidPath {
                path: path.to_owned(),
                source: err,
            })?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .body(())
            .expect("a method, a valid URI and static headers make a request");
        request.headers_mut().extend(builder.metadata_headers());
        if let Some(timeout) = builder.call_timeout() {
            request
                .headers_mut()
                .insert(grpc_timeout::HEADER, grpc_timeout::encode(timeout));
        }
        Ok(Self {
            sender,
            request,
            body: framing::encode(&Message {
                compressed: false,
                bytes: message,
            }),
            authority,
            stats: builder.stats(),
        })
    }

    /// One call: the request, then the answer read to its trailers. A call
    /// the server never processed is sent again once, on a new connection
    /// (the transparent retry of `endpoints.rs`).
    pub async fn call(&mut self) -> Result<(), Status> {
        let error = match self.attempt().await {
            Ok(result) => return result,
            Err(error) => error,
        };
        let failure = classify::before_response(&error);
        if !failure.never_processed {
            return Err(failure.status);
        }
        self.stats.transparently_retried();
        self.sender = handshake(&self.authority)
            .await
            .map_err(|error| Status::unavailable(format!("cannot connect: {error}")))?;
        match self.attempt().await {
            Ok(result) => result,
            Err(error) => Err(classify::before_response(&error).status),
        }
    }

    /// Sends the call; `Err` is a transport failure before the response
    /// headers, `Ok` what the answer says.
    async fn attempt(&mut self) -> Result<Result<(), Status>, h2::Error> {
        let mut sender = self.sender.clone().ready().await?;
        let (response, mut stream) = sender.send_request(self.request.clone(), false)?;
        // The server may answer from the headers alone and close the stream
        // before the body is queued (a trailers-only Unimplemented): then the
        // body is refused as sent on an inactive stream, and the answer, not
        // that refusal, is the call's outcome.
        let sent = stream.send_data(self.body.clone(), true);
        match (response.await, sent) {
            (Ok(response), _) => Ok(read_answer(response).await),
            (Err(error), Ok(())) | (Err(_), Err(error)) => Err(error),
        }
    }
}

/// A new connection to `authority`, its task running.
async fn handshake(
    authority: &Authority,
) -> Result<SendRequest<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    let port = authority.port_u16().unwrap_or(80);
    let socket = TcpStream::connect((authority.host(), port)).await?;
    socket.set_nodelay(true)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(socket)
        .await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            report_connection_end(&err);
        }
    });
    Ok(sender)
}

/// What an answer says: its status, read from trailers-only headers or the
/// trailers after the body.
async fn read_answer(response: http::Response<h2::RecvStream>) -> Result<(), Status> {
    if response.status() != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "HTTP status {}",
            response.status()
        )));
    }
    // A trailers-only answer carries its status in the headers.
    if let Some(status) = grpc_status(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|err| classify::in_body(&err))?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|err| classify::in_body(&err))?;
    match trailers.as_ref().and_then(grpc_status) {
        Some(status) => status,
        None => Err(Status::internal("the answer ended without grpc-status")),
    }
}

/// The call's status, if `headers` carry one.
fn grpc_status(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    Some(match code {
        Code::Ok => Ok(()),
        code => {
            let message = headers
                .get("grpc-message")
                .and_then(|message| message.to_str().ok())
                .unwrap_or_default();
            Err(Status::new(code, message.to_owned()))
        }
    })
}

/// A connection that ends other than by GOAWAY is worth a log line.
fn report_connection_end(err: &h2::Error) {
    if !err.is_go_away() {
        tracing::warn!(cause = %err, "lean caller's connection ended");
    }
}
