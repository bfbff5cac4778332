//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not for
//! other use): the parsers of untrusted input one by one, and the whole
//! server, with its default layers, on in-memory connections.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use grpc_echo::echo::v1::EchoRequest;
use prost::Message as _;
use prost_reflect::MessageDescriptor;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::config::Config;
use crate::error::ServeError;
use crate::layers::{BehaviorLayer, Tokens};
use crate::ops::stats::Stats;
use echo_wire::compression::DecompressError;

use crate::protocol::envelope::{self, Compression};
use crate::protocol::json::{json_to_proto, pool, proto_to_json};
use crate::server::{Incoming, Server};
use crate::services::{DESCRIPTOR_SETS, plan_controls as plan};
use crate::transport::accept::{Connection, ConnectionLimits};

/// Bytes in flight each way of an in-memory connection, as a socket buffer would hold.
const DUPLEX_BUFFER: usize = 64 * 1024;

/// Checks an `echo.v1.EchoRequest`'s controls for each RPC: a plan, or the
/// status a caller would get (INVALID_ARGUMENT for a request that does not
/// decode or asks for too much).
pub fn plan_controls(request: &[u8]) -> Vec<Result<(), Status>> {
    match EchoRequest::decode(request) {
        Ok(request) => plan(&request),
        Err(err) => vec![Err(Status::invalid_argument(err.to_string()))],
    }
}

/// The number of tokens in an `--auth-token-file`'s text.
pub fn parse_tokens(text: &str) -> usize {
    Tokens::parse(text).len()
}

/// The fault that `x-echo-behavior` and `rpc-behavior` (with the other
/// `headers`) ask of an instance named `fuzz`: whether there is one, or the
/// INVALID_ARGUMENT a malformed header gets.
pub fn behavior_fault(headers: &http::HeaderMap) -> Result<bool, Status> {
    static LAYER: OnceLock<BehaviorLayer> = OnceLock::new();
    LAYER
        .get_or_init(|| BehaviorLayer::new("fuzz", u32::MAX, None, Some(0), None))
        .fault_of(headers)
}

/// `bytes` decompressed with gzip (`zstd` false) or zstd, refused past `max`
/// bytes, as a message is read.
pub fn decompress(zstd: bool, bytes: &[u8], max: usize) -> Result<Bytes, DecompressError> {
    let compression = if zstd {
        Compression::Zstd
    } else {
        Compression::Gzip
    };
    compression.decompress(bytes, max)
}

/// The enveloped messages of a whole body (Connect and gRPC-Web unary
/// answers, a message stream read at once), with their flags.
pub fn split_envelopes(body: Bytes) -> Result<Vec<(u8, Bytes)>, Status> {
    envelope::split_all(body)
}

/// Every message type the server knows, by full name, in name order.
pub fn message_types() -> &'static [MessageDescriptor] {
    static TYPES: OnceLock<Vec<MessageDescriptor>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let pool = pool(&DESCRIPTOR_SETS).expect("the compiled-in descriptor sets decode");
        let mut types: Vec<_> = pool.all_messages().collect();
        types.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        types
    })
}

/// Proto3 JSON to protobuf for `message`, as JSON calls are read, and back.
pub fn json_to_proto_and_back(message: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    let proto = json_to_proto(message, json)?;
    proto_to_json(message, &proto)
}

/// Protobuf to proto3 JSON for `message`, as JSON answers are written.
pub fn proto_to_json_text(message: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, Status> {
    proto_to_json(message, proto)
}

/// Starts a server with `config` on in-memory connections and shuts it down
/// at once: its start-up checks, then its drain.
pub async fn start_and_stop(config: Config) -> Result<(), ServeError> {
    let (_connections, incoming) = mpsc::channel(1);
    Server::new(config)
        .serve(Incoming::InMemory(incoming), std::future::ready(()))
        .await
}

/// A server with its default layers, run on the current tokio runtime, that
/// takes connections in memory.
#[derive(Debug)]
pub struct InMemoryServer {
    connections: mpsc::Sender<Connection>,
    stats: Arc<Stats>,
    limits: ConnectionLimits,
}

impl InMemoryServer {
    /// Starts a server with `config` (its `listen` is not used); it runs
    /// until the runtime ends.
    pub fn start(config: Config) -> Self {
        let (connections, incoming) = mpsc::channel(1);
        let limits = ConnectionLimits::from((&config.limits, &config.http2));
        let server = Server::new(config);
        let stats = server.stats();
        tokio::spawn(async move {
            if let Err(err) = server
                .serve(Incoming::InMemory(incoming), std::future::pending())
                .await
            {
                panic!("the in-memory server did not start: {err}");
            }
        });
        Self {
            connections,
            stats,
            limits,
        }
    }

    /// A new connection to the server; the caller has the client's end.
    pub async fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(DUPLEX_BUFFER);
        let connection = Connection::in_memory(server, &self.stats, self.limits);
        self.connections
            .send(connection)
            .await
            .unwrap_or_else(|_| panic!("the in-memory server stopped"));
        client
    }

    /// Live counters of the server.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
