//! A lean unary caller for `echo-client bench --method`: HTTP/2 frames
//! straight from the `h2` crate, one shared connection per `--connections`,
//! the request body framed once and shared by every call.
//!
//! tonic's `Channel` hands every call through a buffer task and a stack of
//! tower services; for a load generator that is the measured cost (a tonic
//! client drove a server about 40% as hard as h2load on the same core), so the
//! bench speaks gRPC over h2 directly, as h2load does, and checks the status.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, Method, Request, Uri};
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// Calls one unary method over one HTTP/2 connection; cheap to clone.
#[derive(Clone)]
pub struct LeanUnary {
    sender: SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
}

impl LeanUnary {
    /// Connects to `base` (an `http://host:port` URI) for calls to `path`
    /// with `message` (already protobuf-encoded), `headers` and `timeout`.
    pub async fn connect(
        base: &Uri,
        path: &str,
        message: &[u8],
        headers: &HeaderMap,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let authority = base
            .authority()
            .ok_or_else(|| anyhow::anyhow!("{base} has no host:port"))?;
        let port = authority.port_u16().unwrap_or(80);
        let socket = TcpStream::connect((authority.host(), port)).await?;
        socket.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(socket)
            .await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                report_connection_end(&err);
            }
        });
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .body(())?;
        request.headers_mut().extend(headers.clone());
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", grpc_echo::grpc_timeout::encode(timeout));
        }
        let mut body = BytesMut::with_capacity(5 + message.len());
        body.put_u8(0);
        body.put_u32(message.len() as u32);
        body.put_slice(message);
        Ok(Self {
            sender,
            request,
            body: body.freeze(),
        })
    }

    /// One call: the request, then the answer read to its trailers.
    pub async fn call(&mut self) -> Result<(), Status> {
        let mut sender = self.sender.clone().ready().await.map_err(transport)?;
        let (response, mut stream) = sender
            .send_request(self.request.clone(), false)
            .map_err(transport)?;
        stream
            .send_data(self.body.clone(), true)
            .map_err(transport)?;
        let response = response.await.map_err(transport)?;
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
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(status) => status,
            None => Err(Status::internal("the answer ended without grpc-status")),
        }
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

fn transport(err: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {err}"))
}

/// A connection that ends other than by GOAWAY is worth a line on stderr.
fn report_connection_end(err: &h2::Error) {
    if !err.is_go_away() {
        eprintln!("bench connection ended: {err}");
    }
}
