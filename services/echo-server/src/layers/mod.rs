//! Cross-cutting behaviour of every RPC, as tower layers around the router.
//!
//! Outermost first: [`TraceLayer`] (request id, one span and one closing
//! event per RPC),
//! [`MessageSizeStatusLayer`] (over-size messages as RESOURCE_EXHAUSTED),
//! load shedding (tower's, past `--max-concurrent-calls`), [`TrailersLayer`]
//! (extra trailers that a handler asked for), [`AuthLayer`] (bearer tokens,
//! when configured),
//! [`DeadlineLayer`] (the caller's `grpc-timeout`), [`MessageCompressionLayer`]
//! (per-message compression for the interop service).

mod auth;
mod body;
mod deadline;
mod message_compression;
mod size_status;
mod trace;
mod trailers;

pub use auth::{AuthLayer, Tokens};
pub use deadline::{Deadline, DeadlineLayer};
pub use message_compression::MessageCompressionLayer;
pub use size_status::MessageSizeStatusLayer;
pub use trace::{REQUEST_ID, TraceLayer};
pub use trailers::{ExtraTrailers, TrailersLayer};
