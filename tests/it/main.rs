//! grpc-echo's integration tests, one binary with a module per area (as
//! ripgrep's and cargo's are): a real server on a loopback port, the real
//! binaries, and real clients and tools of other implementations. The
//! helpers are the `echo_tests` library (`tests/src`).
//!
//! Modules that call tools from outside the Rust toolchain (grpcurl, Python
//! grpcio, kubernetes-validate, Node, curl, Chromium) are built only with the
//! `external-tools` feature, which `scripts/test.sh` turns on after
//! installing the tools.

mod abuse;
mod admin;
mod architecture;
mod auth;
mod bad_input;
mod balancing;
mod behavior;
mod bench;
mod binaries;
#[cfg(feature = "external-tools")]
mod browser;
mod call;
mod channelz;
mod chaos;
mod client_answers;
mod compression;
mod connection_age;
mod connection_controls;
mod dashboard;
mod deadline;
#[cfg(feature = "external-tools")]
mod deploy;
mod descriptors;
#[cfg(feature = "external-tools")]
mod docs;
mod drain;
mod endings;
mod faults;
mod forward;
#[cfg(feature = "external-tools")]
mod grpcurl;
mod http3;
mod interop;
#[cfg(feature = "external-tools")]
mod interop_python;
mod interop_service;
mod leaks;
mod limits;
mod load_reports;
#[cfg(feature = "external-tools")]
mod metrics;
mod protocols;
#[cfg(feature = "external-tools")]
mod protocols_clients;
mod reflection;
mod rpc;
mod timing;
mod tls;
mod tools;
#[cfg(feature = "external-tools")]
mod tracing;
#[cfg(feature = "external-tools")]
mod universal_client;
mod wire;
