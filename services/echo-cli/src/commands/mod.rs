//! One module per command.

pub(crate) mod any;
pub(crate) mod bidi;
pub(crate) mod client_stream;
pub(crate) mod echo;
pub(crate) mod forward;
pub(crate) mod health;
pub(crate) mod interop;
pub(crate) mod raw_echo;
pub(crate) mod server_stream;
