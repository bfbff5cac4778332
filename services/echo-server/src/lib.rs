//! The grpc-echo server: `echo.v1.EchoService` with controls that make it
//! misbehave on request, the gRPC interop `TestService`, grpc-go's example echo
//! service, an optional admin service, and the standard health and reflection
//! services; optionally Prometheus metrics and the RFC 862 echo on TCP and UDP.
//!
//! The binary only parses [`Config`], sets up tracing, binds and passes a
//! shutdown signal to [`run`]; tests drive the same [`run`] on port 0.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! echo_server::run(listener, echo_server::Config::default(), async {
//!     tokio::signal::ctrl_c().await.ok();
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: the clap [`Config`] and its `DEFAULT_*` values.
//! - [`server`]: [`Server`] / [`run`]: service assembly, limits and graceful shutdown.
//! - [`connections`]: accepted connections (capped, timed, TLS) and [`PeerInfo`].
//! - [`serve`]: HTTP/2 over each connection: GOAWAY on shutdown, at its age or when a call asks.
//! - [`tls`]: rustls with certificate reload and client certificates.
//! - [`service`]: the `echo.v1.EchoService` handlers, kept thin.
//! - [`interop`]: `grpc.testing.TestService`, per the gRPC interop test descriptions.
//! - [`admin`]: `echo.v1.AdminService`, run-time health flips (`--admin`).
//! - [`examples`]: `grpc.examples.echo.Echo`, grpc-go's example echo service.
//! - `call`: a handler's view of its call (peer, deadline, grace period, echoed metadata).
//! - `controls`: checks request controls into a plan (INVALID_ARGUMENT naming the field).
//! - [`error`]: [`EchoError`] and its single mapping to `tonic::Status`.
//! - [`layers`]: tower layers for tracing and request ids, over-size statuses,
//!   bearer tokens, deadlines, extra trailers and per-message compression.
//! - [`stats`]: live counters (open streams and connections, stream messages).
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - `raw_echo`: the RFC 862 Echo Protocol on TCP and UDP.
//! - `router`: calls to services by path, without axum.
#![forbid(unsafe_code)]

pub mod admin;
mod call;
pub mod config;
pub mod connections;
mod controls;
pub mod error;
pub mod examples;
pub mod interop;
pub mod layers;
pub mod metrics;
mod raw_echo;
mod router;
pub mod serve;
pub mod server;
pub mod service;
pub mod stats;
pub mod tls;

pub use config::{Config, LogFormat};
pub use connections::PeerInfo;
pub use error::EchoError;
pub use server::{ServeError, Server, run};
pub use stats::Stats;
pub use tls::TlsReload;
