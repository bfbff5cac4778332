//! What every interop case gets: clients on one shared connection, what it
//! takes to make new ones, and how the soak cases run.

use std::time::Duration;

use clap::Args;
use echo_client::ClientBuilder;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::unimplemented_service_client::UnimplementedServiceClient;
use tonic::codec::CompressionEncoding;
use tower_layer::Layer;

use super::compression::{Interop, PerMessageCompressionLayer};

/// How the soak cases run.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// Iterations of rpc_soak and channel_soak.
    #[arg(long = "soak-iterations", default_value_t = 10)]
    pub(super) iterations: u32,
    /// Failed iterations a soak case tolerates.
    #[arg(long = "soak-max-failures", default_value_t = 0)]
    pub(super) max_failures: u32,
    /// Latency above which a soak iteration counts as failed.
    #[arg(long = "soak-per-iteration-max-latency", value_parser = humantime::parse_duration, default_value = "1s")]
    pub(super) per_iteration_max_latency: Duration,
}

/// What every case gets: clients on one shared connection, and what it takes
/// to make new ones (channel_soak).
pub(crate) struct CaseContext {
    pub(super) clients: Clients,
    pub(super) builder: ClientBuilder,
    pub(super) soak: SoakArgs,
}

/// The clients of one connection.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) test: TestServiceClient<Interop>,
    pub(super) unimplemented: UnimplementedServiceClient<Interop>,
}

impl Clients {
    pub(super) async fn connect(builder: &ClientBuilder) -> anyhow::Result<Self> {
        let transport = PerMessageCompressionLayer.layer(builder.connect_transport().await?);
        Ok(Self {
            test: TestServiceClient::new(transport.clone())
                .accept_compressed(CompressionEncoding::Gzip),
            unimplemented: UnimplementedServiceClient::new(transport),
        })
    }

    pub(super) fn test(&self) -> TestServiceClient<Interop> {
        self.test.clone()
    }
}
