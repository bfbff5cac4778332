//! The protobuf contract of grpc-echo, compiled by `build.rs` from `proto/`.
//!
//! Server and client both use these generated types and stubs, so the two can
//! never disagree about the wire format.
//!
//! # Layout
//!
//! - [`echo::v1`]: messages, the `EchoService` server trait
//!   ([`echo::v1::echo_service_server`]) and client
//!   ([`echo::v1::echo_service_client`]).
//! - [`grpc::testing`]: the standard interop `TestService` (and `UnimplementedService`).
//! - [`grpc::examples::echo`]: grpc-go's example `Echo` service.
//! - [`grpc_timeout`], [`wire`]: the `grpc-timeout` header and gRPC message
//!   framing, which both ends handle below tonic.
//! - [`FILE_DESCRIPTOR_SET`]: every compiled file (with imports and comments),
//!   as served by gRPC reflection.
#![forbid(unsafe_code)]

/// The `echo` protobuf package.
pub mod echo {
    /// Version 1 of the echo contract (`echo.v1`).
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_markdown)]
        tonic::include_proto!("echo.v1");
    }
}

/// The `grpc` protobuf packages served for compatibility with other implementations.
pub mod grpc {
    /// `grpc.testing`: the interop test service of every gRPC implementation.
    pub mod testing {
        #![allow(missing_docs, clippy::doc_markdown)]
        tonic::include_proto!("grpc.testing");
    }

    /// `grpc.examples.echo`: the echo service of grpc-go's examples.
    pub mod examples {
        /// `grpc.examples.echo`.
        pub mod echo {
            #![allow(missing_docs, clippy::doc_markdown)]
            tonic::include_proto!("grpc.examples.echo");
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of everything under `proto/`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/grpc_echo_descriptor.bin"));

pub mod grpc_timeout;
pub mod wire;
