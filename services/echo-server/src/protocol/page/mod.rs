//! The page `--web` serves on the gRPC port: a person calls EchoService from
//! a browser (Connect or gRPC-Web, with every control), calls any served
//! method from the console, and watches the server's live counters. The
//! assets are embedded; the page loads nothing from anywhere else.

mod console;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use tonic::body::Body;

pub(crate) use console::Console;
use console::ConsoleError;

use crate::ops::stats::Stats;
use crate::protocol::shared::{full, plain};
use echo_wire::schemas::{JsonError, json_to_proto, proto_to_json};

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const CONSOLE: &str = include_str!("console.js");

/// The page, its console and its counters.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    stats: Arc<Stats>,
    console: Arc<Console>,
    /// The largest message the console carries (`--max-message-size`).
    max_message_size: usize,
}

impl Page {
    pub(crate) fn new(stats: Arc<Stats>, console: Console, max_message_size: usize) -> Self {
        Self {
            stats,
            console: Arc::new(console),
            max_message_size,
        }
    }

    /// The answer to `request` if it asks for the page, a script, the
    /// counters or the console; else `request`, untouched.
    pub(crate) async fn answer(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, Request<Body>> {
        let path = request.uri().path();
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        let post = request.method() == Method::POST;
        let (content_type, body) = match path {
            "/" | "/index.html" if get => (
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX.as_bytes()),
            ),
            "/app.js" if get => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(APP.as_bytes()),
            ),
            "/console.js" if get => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(CONSOLE.as_bytes()),
            ),
            "/stats" if get => {
                let stats = serde_json::json!({
                    "open_connections": self.stats.open_connections(),
                    "in_flight_calls": self.stats.in_flight_calls(),
                    "open_streams": self.stats.open_streams(),
                    "stream_messages_sent": self.stats.stream_messages_sent(),
                });
                ("application/json", Bytes::from(stats.to_string()))
            }
            "/console/methods" if get => (
                "application/json",
                Bytes::from(self.console.methods().to_string()),
            ),
            "/console/encode" | "/console/decode" if post => {
                let encode = path == "/console/encode";
                return Ok(match self.convert(request, encode).await {
                    Ok(body) if encode => answer("application/octet-stream", body),
                    Ok(body) => answer("application/json", body),
                    Err(error) => error_answer(&error),
                });
            }
            _ => return Err(request),
        };
        Ok(answer(content_type, body))
    }

    /// The body of `request` carried from proto3 JSON to protobuf (`encode`)
    /// or back, as the message type its query names.
    async fn convert(&self, request: Request<Body>, encode: bool) -> Result<Bytes, ConsoleError> {
        let message = self.console.message(request.uri().query())?;
        let limit = self.max_message_size;
        let body = Limited::new(request.into_body(), limit)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    ConsoleError::TooLarge(limit)
                } else {
                    ConsoleError::Body(error.to_string())
                }
            })?
            .to_bytes();
        let converted = if encode {
            json_to_proto(&message, &body)
        } else {
            proto_to_json(&message, &body)
        };
        Ok(converted?)
    }
}

fn answer(content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The console's failures as HTTP statuses, with the cause as plain text.
fn error_answer(error: &ConsoleError) -> Response<Body> {
    let status = match error {
        ConsoleError::Json(JsonError::Serialize { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
        ConsoleError::NoType | ConsoleError::Json(_) | ConsoleError::Body(_) => {
            StatusCode::BAD_REQUEST
        }
        ConsoleError::UnknownType(_) => StatusCode::NOT_FOUND,
        ConsoleError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    plain(status, &format!("{error}\n"))
}
