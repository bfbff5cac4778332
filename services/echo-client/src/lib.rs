//! Client library for the grpc-echo server: a builder giving a typed client for
//! all four `echo.v1.EchoService` RPCs and the standard health service, with
//! balancing over several servers, retries, and a lean caller for load.
//!
//! ```no_run
//! use std::time::Duration;
//! use echo_client::{EchoClient, proto::EchoRequest};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = EchoClient::builder("http://127.0.0.1:50051")
//!     .connect_timeout(Duration::from_secs(2))
//!     .timeout(Duration::from_secs(5))
//!     .metadata("x-team", "payments")?
//!     .connect()
//!     .await?;
//! let reply = client
//!     .echo(EchoRequest { message: "hello".into(), ..Default::default() })
//!     .await?;
//! println!("{} (answered by {})", reply.get_ref().message, reply.get_ref().instance);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`client`]: [`ClientBuilder`] and [`EchoClient`].
//! - [`deadline`]: [`CallDeadline`], a call's deadline from the policy to the wire.
//! - [`stats`]: [`CallStats`], how often calls were sent again.
//! - [`endpoints`]: where calls go (one server, or several by round robin
//!   or weighted by their load reports), and the transparent retry of a
//!   call the server never processed.
//! - [`load_report`]: ORCA load reports read from a call's trailers, and the
//!   weights of weighted round robin (gRFC A51, A58).
//! - `balance`: the health watcher that keeps a balanced set's rotation.
//! - `classify`: what a transport failure means (its status, and whether the
//!   call was processed), as the gRPC spec reads HTTP/2 endings.
//! - [`policy`]: the tower layer that applies default metadata and deadlines
//!   to every call and reports transport failures as gRPC statuses.
//! - [`protocol`]: [`Protocol`] and the link to one address that carries
//!   calls in gRPC, gRPC-Web or Connect, over HTTP/2, HTTP/1.1 or HTTP/3.
//! - `http3`: HTTP/3 to one address (quinn's QUIC, hyperium's h3).
//! - [`timing`]: where each call's time goes, phase by phase (resolve, TCP,
//!   TLS, HTTP setup; request, headers, messages, trailers).
//! - [`retry`]: retries of idempotent calls, with backoff and a budget.
//! - [`lean`]: [`LeanUnary`], one unary method called over `h2` directly.
//! - [`error`]: [`ClientError`], for building and connecting.
//! - `telemetry` (feature `otlp`): OpenTelemetry spans over OTLP/gRPC, and
//!   the W3C trace context read from requests and written into calls.
//! - `fuzzing` (feature `fuzzing`): entry points for the fuzz targets in `fuzz/`.
//! - [`proto`] / [`health_proto`]: the generated message types, re-exported.
#![forbid(unsafe_code)]

mod balance;
mod classify;
pub mod client;
pub mod deadline;
pub mod endpoints;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http3;
pub mod lean;
pub mod load_report;
pub mod policy;
pub mod protocol;
pub mod retry;
pub mod stats;
#[cfg(feature = "otlp")]
pub mod telemetry;
pub mod timing;

pub use client::{ClientBuilder, EchoClient, TlsOptions, Transport};
pub use deadline::CallDeadline;
pub use echo_wire::compression::Compression;
pub use endpoints::BalancePolicy;
pub use error::ClientError;
pub use lean::LeanUnary;
pub use protocol::{Codec, Protocol};
pub use retry::RetryPolicy;
pub use stats::CallStats;

/// Compiles the library example of docs/cli.md as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/cli.md")]
pub struct GuideExample;

/// Generated `echo.v1` types and stubs (from the `grpc-echo` contract crate).
pub use grpc_echo::echo::v1 as proto;
/// Generated `grpc.health.v1` types and stubs.
pub use tonic_health::pb as health_proto;
