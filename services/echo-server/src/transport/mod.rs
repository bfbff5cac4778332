//! From the socket to a request: connections accepted (and capped, and TLS
//! handshaken), served as HTTP/2 or HTTP/1.1 with hyper or as HTTP/3 with
//! h3 over quinn, and every body counted in the memory budgets.
//!
//! - `accept`: the accept loop (connection caps, TLS handshakes side by
//!   side, the preface deadline, a pause when out of file descriptors).
//! - `tls`: rustls with certificate reload and client certificates.
//! - `conn`: one connection's HTTP: GOAWAY on shutdown, at its age or when a
//!   call or a chaos schedule asks; stream resets; the request's
//!   [`Arrival`](crate::context::Arrival).
//! - `lifetime`: what drains or closes a connection besides its peer (both
//!   `conn` and `h3` watch it).
//! - `h3`: HTTP/3 over QUIC on the same port (UDP), into the same service.
//! - `budget`: the memory budgets, process-wide and per connection, and
//!   (`budget/bodies`) the request and answer bodies they count.
//! - `woken`: every answer's body, polled again only once something it
//!   waits on has woken it.

pub(crate) mod accept;
pub(crate) mod budget;
pub(crate) mod conn;
pub(crate) mod h3;
pub(crate) mod lifetime;
pub(crate) mod tls;
pub(crate) mod woken;
