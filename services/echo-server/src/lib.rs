//! The grpc-echo server: `echo.v1.EchoService` with controls that make it
//! misbehave on request, plus the standard health and reflection services.
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
//! - [`server`]: [`Server`] / [`run`]: service assembly and graceful shutdown.
//! - [`service`]: the `EchoService` handlers, kept thin.
//! - `controls`: checks request controls into a plan (INVALID_ARGUMENT naming the field).
//! - [`error`]: [`EchoError`] and its single mapping to `tonic::Status`.
//! - [`layers`]: tower layers for tracing, deadlines and extra trailers.
//! - [`stats`]: live counters (open streams, stream messages).
#![forbid(unsafe_code)]

pub mod config;
mod controls;
pub mod error;
pub mod layers;
pub mod server;
pub mod service;
pub mod stats;

pub use config::{Config, LogFormat};
pub use error::EchoError;
pub use server::{ServeError, Server, run};
pub use stats::Stats;
