//! What runs beside the calls: live counters, Prometheus metrics, and the
//! chaos schedules.
//!
//! - `stats`: [`Stats`](crate::Stats), counters readable while the server runs.
//! - `metrics`: the RPC metrics in the grpc-ecosystem dialect, the registry
//!   the other components register in, and its HTTP endpoint.
//! - `chaos`: the chaos schedules at run time (GOAWAY bursts, closed
//!   connections, slow and error windows, health flips, load windows).
//! - `load_report`: the ORCA load reports the instance gives.
//! - `channelz`: what channelz shows of the server, its sockets and
//!   Forward's channels.

pub(crate) mod channelz;
pub(crate) mod chaos;
pub(crate) mod load_report;
pub(crate) mod metrics;
pub(crate) mod stats;
