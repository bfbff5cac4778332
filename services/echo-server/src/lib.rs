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
//! One request's way through the server, in the order of the modules:
//!
//! - [`config`]: [`Config`], grouped as `--help` groups it, and its `DEFAULT_*` values.
//! - `server`: [`Server::run`], the named stages: services, layers, side
//!   tasks, serving, drain.
//! - `accept`: the accept loop (connection cap, TLS handshakes, the preface
//!   deadline, a pause when out of file descriptors) and [`PeerInfo`].
//! - `tls`: rustls with certificate reload and client certificates.
//! - `conn`: HTTP/2 over one connection: GOAWAY on shutdown, at its age or
//!   when a call asks; stream resets on request; every request and answer
//!   body counted in the memory budgets; closed when its peer stops reading
//!   while a budget is used up.
//! - `budget`: the memory budgets (unfinished requests, unsent answers),
//!   process-wide and per connection.
//! - `layers`: the tower layers every call passes, in order: recover,
//!   trace (request id, span, metrics), size statuses, wire reflection,
//!   load shedding, concurrency limit, trailers, auth, deadline, faults by
//!   header and chaos windows, per-message compression.
//! - `router`: calls to services by the first segment of their path.
//! - `services`: builds every service into the router, and their health.
//! - `echo`: `echo.v1.EchoService`, thin handlers over `controls` (a request's
//!   controls checked into a plan) and `call` (a handler's view of its call).
//! - `forward`: `Forward`, calls to a downstream on request, behind an
//!   allowlist and a hop limit.
//! - `interop`: `grpc.testing.TestService`, per the interop test descriptions.
//! - `examples`: `grpc.examples.echo.Echo`, grpc-go's example echo service.
//! - `admin`: `echo.v1.AdminService`, run-time health flips (`--admin`).
//! - `error`: [`EchoError`] and its single mapping to `tonic::Status`.
//! - [`stats`] and `metrics`: live counters, and Prometheus metrics over HTTP.
//! - `chaos`: chaos schedules (GOAWAY bursts, closed connections, slow and
//!   error windows, health flips), read by `conn` and the behaviour layer.
//! - `raw_echo`: the RFC 862 Echo Protocol on TCP and UDP.
//! - `fuzzing` (feature `fuzzing`): entry points for the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]

mod accept;
mod admin;
mod budget;
mod call;
mod chaos;
pub mod config;
mod conn;
mod controls;
mod echo;
mod error;
mod examples;
mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod interop;
mod layers;
mod metrics;
mod protocol;
mod raw_echo;
mod router;
mod server;
mod services;
pub mod stats;
mod tls;
mod web;

pub use accept::PeerInfo;
pub use budget::BudgetTooSmall;
pub use config::{Config, LogFormat};
pub use error::{ERROR_DOMAIN, EchoError, ForwardError, REQUESTED_ERROR_REASON};
pub use server::{STREAM_END_FLUSH, ServeError, Server, run};
pub use stats::Stats;
pub use tls::{TlsError, TlsReload};
