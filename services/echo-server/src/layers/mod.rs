//! Cross-cutting behaviour of every RPC, as tower layers around the router.
//!
//! Outermost first: [`TraceLayer`] (one span and one closing event per RPC),
//! [`TrailersLayer`] (extra trailers that a handler asked for),
//! [`DeadlineLayer`] (the caller's `grpc-timeout`), [`MessageCompressionLayer`]
//! (per-message compression for the interop service).

mod body;
mod deadline;
mod message_compression;
mod trace;
mod trailers;

pub use deadline::{Deadline, DeadlineLayer};
pub use message_compression::MessageCompressionLayer;
pub use trace::TraceLayer;
pub use trailers::{ExtraTrailers, TrailersLayer};
