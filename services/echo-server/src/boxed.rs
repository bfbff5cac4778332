//! Bodies boxed as tonic's [`Body`] with their errors as they are (a leaf
//! every folder may import).

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;

/// `body` as tonic's [`Body`], in one box. `Body::new` keeps a body already in
/// tonic's own box (`UnsyncBoxBody<Bytes, Status>`) as it is; handed `body`
/// itself, it would box it inside a `MapErr` that turns errors into a
/// [`Status`] again: one more call for every poll of every body that wraps
/// another (BENCHMARKS.md).
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = Status> + Send + 'static,
{
    Body::new(body.boxed_unsync())
}
