//! The page `--web` serves on the gRPC port: a person calls EchoService from
//! a browser (Connect or gRPC-Web, with every control) and watches the
//! server's live counters. The assets are embedded; the page loads nothing
//! from anywhere else.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tonic::body::Body;

use crate::ops::stats::Stats;
use crate::protocol::shared::full;

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");

/// The page and its counters.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    stats: Arc<Stats>,
}

impl Page {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self { stats }
    }

    /// The answer to `request` if it asks for the page, its script or its counters.
    pub(crate) fn answer<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return None;
        }
        let (content_type, body) = match request.uri().path() {
            "/" | "/index.html" => (
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX.as_bytes()),
            ),
            "/app.js" => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(APP.as_bytes()),
            ),
            "/stats" => {
                let stats = serde_json::json!({
                    "open_connections": self.stats.open_connections(),
                    "in_flight_calls": self.stats.in_flight_calls(),
                    "open_streams": self.stats.open_streams(),
                    "stream_messages_sent": self.stats.stream_messages_sent(),
                });
                ("application/json", Bytes::from(stats.to_string()))
            }
            _ => return None,
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}
