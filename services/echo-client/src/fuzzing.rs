//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not for
//! other use): how the client reads a server's Connect answers, which it
//! must survive whatever the server sends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::Status;
use tonic::body::Body;

use crate::protocol;

/// The status a Connect error answer (its HTTP status and body) stands for.
pub fn connect_error(http_status: u16, body: &[u8]) -> Status {
    protocol::connect_error(http_status, body)
}

/// The gRPC trailers of a Connect end-of-stream message.
pub fn connect_end_stream(json: &[u8]) -> HeaderMap {
    protocol::end_stream_trailers(json)
}

/// A Connect stream's answer (HTTP status `http_status`, body `chunks`) read
/// as gRPC: its data, then its trailers or the error that ended it.
pub async fn connect_stream(
    http_status: u16,
    chunks: Vec<Bytes>,
) -> Result<(Bytes, Option<HeaderMap>), Status> {
    let response = http::Response::builder()
        .status(http_status)
        .body(Body::new(Chunks(chunks.into())))
        .map_err(|err| Status::internal(err.to_string()))?;
    let answer = protocol::stream_answer(response, protocol::Codec::Proto)
        .await
        .map_err(|err| Status::internal(err.to_string()))?;
    let collected = answer.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// A body of data frames, one a chunk.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}
