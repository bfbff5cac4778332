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
//! The folders follow one request's way through the server, from the socket
//! to the handler (docs/architecture.md walks it file by file):
//!
//! - [`config`]: [`Config`], grouped as `--help` groups it, each value parsed
//!   once into its type (the grammars of `--fault`, `--chaos`,
//!   `--forward-allow` in its submodules).
//! - `server`: [`Server::run`], the server assembled in named stages:
//!   services, metrics, layers, protocols, side tasks, serving, drain.
//! - `transport`: accepting connections (caps, TLS, the preface deadline),
//!   serving each one's HTTP/2 or HTTP/1.1, and the memory budgets.
//! - `protocol`: gRPC-Web, Connect and JSON translated to gRPC in front of
//!   the layers; the browser page.
//! - `layers`: the tower layers every call passes, in order.
//! - `services`: the router and every service's handlers.
//! - `ops`: live counters, Prometheus metrics, chaos schedules.
//! - `context`: what travels in request and response extensions between
//!   them (a leaf every folder may import).
//! - `health`: the health the server reports (a leaf).
//! - `boxed`: bodies boxed as tonic's `Body` once (a leaf).
//! - `error`: [`ServeError`], [`EchoError`], [`ForwardError`], and the one
//!   mapping of call errors to `tonic::Status`.
//! - `fuzzing` (feature `fuzzing`): entry points for the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]

mod boxed;
pub mod config;
mod context;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod health;
mod layers;
mod ops;
mod protocol;
mod server;
mod services;
#[cfg(test)]
mod test_wakers;
mod transport;

pub use config::{Config, LogFormat};
pub use context::PeerInfo;
pub use error::{ERROR_DOMAIN, EchoError, ForwardError, REQUESTED_ERROR_REASON, ServeError};
pub use ops::stats::Stats;
pub use server::{STREAM_END_FLUSH, Server, run};
pub use transport::budget::BudgetTooSmall;
pub use transport::tls::{TlsError, TlsReload};
