//! gRPC on the wire, below tonic, shared by the server, the client library and
//! the CLI.
//!
//! # Layout
//!
//! - [`framing`]: the 5-byte message header, a splitter that cuts a byte
//!   stream into messages, a walker that follows one without holding it, and body wrappers that observe or change each
//!   message's compression (tonic decides compression per call; the interop
//!   tests decide it per message).
//! - [`compression`]: message compressions by name, and decompression with a
//!   limit.
//! - [`codes`]: gRPC status codes by name: parsed from text, and spelled.
//! - [`connect`]: the Connect protocol's headers, flags and code names.
//! - [`grpc_timeout`]: the `grpc-timeout` header, parsed and encoded.
//! - [`headers`]: the names of the other gRPC headers and trailers.
//! - [`h2_frames`]: hand-made HTTP/2 frames (tests, fuzzing) and the preface.
//! - [`http3`] (feature `http3`): HTTP messages over `h3` request streams,
//!   read as bodies and written from them (server and client).
//! - [`runtime`] (feature `runtime`): the tokio runtime both binaries start.
//! - [`schemas`] (feature `schemas`): the methods of descriptor sets by path,
//!   and their messages' proto3 JSON mapping.
#![forbid(unsafe_code)]

pub mod codes;
pub mod compression;
pub mod connect;
pub mod framing;
pub mod grpc_timeout;
pub mod h2_frames;
pub mod headers;
#[cfg(feature = "http3")]
pub mod http3;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "schemas")]
pub mod schemas;
