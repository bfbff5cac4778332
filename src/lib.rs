//! The protobuf contract of grpc-echo, compiled by `build.rs` from `proto/`.
//!
//! Server and client both use these generated types and stubs, so the two can
//! never disagree about the wire format.
//!
//! # Layout
//!
//! - [`echo::v1`]: messages, the `EchoService` server trait
//!   ([`echo::v1::echo_service_server`]) and client
//!   ([`echo::v1::echo_service_client`]), and [`echo::v1::payload`], the
//!   bytes the server generates for `response_size`.
//! - [`grpc::testing`]: the standard interop `TestService` (and
//!   `UnimplementedService`), with the metadata keys its cases echo.
//! - [`grpc::examples::echo`]: grpc-go's example `Echo` service.
//! - [`connectrpc::conformance::v1`]: the Connect conformance suite's
//!   `ConformanceService` and the runner's messages.
//! - [`xds::data::orca::v3`] and [`xds::service::orca::v3`]: ORCA load
//!   reports (gRFC A51) and the out-of-band `OpenRcaService`.
//! - [`grpc::channelz::v1`]: gRPC's channelz service (gRFC A14).
//! - [`FILE_DESCRIPTOR_SET`]: every compiled file (with imports and comments),
//!   as served by gRPC reflection.
#![forbid(unsafe_code)]

/// The `echo` protobuf package.
pub mod echo {
    /// Version 1 of the echo contract (`echo.v1`).
    pub mod v1 {
        #![allow(missing_docs)]
        tonic::include_proto!("echo.v1");

        /// The payload the server generates for `response_size`: `len` bytes of
        /// a pattern that repeats every 251 bytes (a prime, so it lines up with
        /// no buffer size), which clients use for their own payloads too.
        pub fn payload(len: usize) -> bytes::Bytes {
            (0..len).map(|i| (i % 251) as u8).collect()
        }
    }
}

/// The `grpc` protobuf packages served for compatibility with other implementations.
pub mod grpc {
    /// `grpc.testing`: the interop test service of every gRPC implementation.
    pub mod testing {
        #![allow(missing_docs)]
        tonic::include_proto!("grpc.testing");

        /// Request metadata the interop server echoes back as a response header
        /// (the `custom_metadata` case).
        pub const ECHO_INITIAL_METADATA: &str = "x-grpc-test-echo-initial";
        /// Request metadata the interop server echoes back as a trailer.
        pub const ECHO_TRAILING_METADATA: &str = "x-grpc-test-echo-trailing-bin";
    }

    /// `grpc.channelz`: gRPC's live view of servers, channels and sockets.
    pub mod channelz {
        /// `grpc.channelz.v1`.
        pub mod v1 {
            #![allow(missing_docs)]
            tonic::include_proto!("grpc.channelz.v1");
        }
    }

    /// `grpc.examples.echo`: the echo service of grpc-go's examples.
    pub mod examples {
        /// `grpc.examples.echo`.
        pub mod echo {
            #![allow(missing_docs)]
            tonic::include_proto!("grpc.examples.echo");
        }
    }
}

/// The `connectrpc` protobuf packages.
pub mod connectrpc {
    /// The Connect project's conformance suite.
    pub mod conformance {
        /// `connectrpc.conformance.v1` (suite v1.0.5): `ConformanceService`,
        /// which the suite calls on a server under test, and the messages
        /// with which its runner drives servers and clients under test.
        pub mod v1 {
            #![allow(missing_docs)]
            tonic::include_proto!("connectrpc.conformance.v1");
        }
    }
}

/// The `xds` protobuf packages (github.com/cncf/xds): ORCA, the load reports
/// that weighted load-balancing policies read.
pub mod xds {
    /// `xds.data`.
    pub mod data {
        /// `xds.data.orca`.
        pub mod orca {
            /// `xds.data.orca.v3`: `OrcaLoadReport`.
            pub mod v3 {
                #![allow(missing_docs)]
                tonic::include_proto!("xds.data.orca.v3");
            }
        }
    }
    /// `xds.service`.
    pub mod service {
        /// `xds.service.orca`.
        pub mod orca {
            /// `xds.service.orca.v3`: `OpenRcaService`, reports out of band.
            pub mod v3 {
                #![allow(missing_docs)]
                tonic::include_proto!("xds.service.orca.v3");
            }
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of everything under `proto/`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/grpc_echo_descriptor.bin"));
