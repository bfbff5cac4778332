//! The services the server serves, built into one [`Router`], and the health
//! every one of them reports. Handlers stay thin: what they share is in
//! `call` (a handler's view of its call) and `controls` (a request's
//! controls checked into a plan).
//!
//! - `router`: calls to services by the first segment of their path.
//! - `echo`: `echo.v1.EchoService`.
//! - `forward`: `Forward`, calls to a downstream on request.
//! - `interop`: `grpc.testing.TestService`, per the interop test descriptions.
//! - `conformance`: `connectrpc.conformance.v1.ConformanceService`, per the
//!   Connect conformance suite.
//! - `examples`: `grpc.examples.echo.Echo`, grpc-go's example echo service.
//! - `admin`: `echo.v1.AdminService`, run-time health flips (`--admin`).
//! - `orca`: `xds.service.orca.v3.OpenRcaService`, load reports out of band.
//! - `channelz`: `grpc.channelz.v1.Channelz` (`--channelz`).
//! - `raw_echo`: the RFC 862 Echo Protocol on TCP and UDP.

mod admin;
mod call;
mod channelz;
mod conformance;
mod controls;
mod echo;
mod examples;
pub(crate) mod forward;
mod interop;
mod orca;
pub(crate) mod raw_echo;
pub(crate) mod router;

use std::sync::Arc;

use grpc_echo::connectrpc::conformance::v1::conformance_service_server::ConformanceServiceServer;
use grpc_echo::echo::v1::admin_service_server::AdminServiceServer;
use grpc_echo::echo::v1::echo_service_server::EchoServiceServer;
use grpc_echo::grpc::channelz::v1::channelz_server::ChannelzServer;
use grpc_echo::grpc::examples::echo::echo_server::EchoServer as ExampleEchoServer;
use grpc_echo::grpc::testing::test_service_server::TestServiceServer;
use grpc_echo::xds::service::orca::v3::open_rca_service_server::OpenRcaServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::health::Health;
use crate::ops::channelz::Channelz;
use crate::ops::load_report::LoadReports;
use crate::ops::stats::Stats;
use admin::AdminService;
use channelz::ChannelzService;
use conformance::ConformanceService;
use echo::EchoService;
use examples::ExampleEchoService;
use forward::Forwarder;
use interop::TestService;
use orca::OrcaService;
use router::Router;

/// Descriptors of every service the server can serve, for reflection and
/// for the method names metrics know, and of the `google.rpc` error details
/// its errors carry (ErrorInfo, BadRequest, RetryInfo), so that grpcurl,
/// grpcui and buf curl resolve and print them.
pub(crate) const DESCRIPTOR_SETS: [&[u8]; 5] = [
    grpc_echo::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    tonic_types::pb::FILE_DESCRIPTOR_SET,
];

/// Limits messages received and sent, accepts gzip, zstd and deflate
/// requests, and answers compressed in whichever of them the client accepts
/// (tonic's generated servers share no trait for this).
macro_rules! compressed {
    ($service:expr, $limits:expr) => {
        $service
            .max_decoding_message_size($limits.max_message_size)
            .max_encoding_message_size($limits.max_send_message_size())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Deflate)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Deflate)
    };
}

/// Every service, routed; and what the rest of the server needs to know of them.
pub(crate) struct Services {
    /// Calls to each service by its name.
    pub(crate) router: Router,
    /// Sets what the health service reports, for each service served.
    pub(crate) health: Health,
}

impl Services {
    /// Builds every service `config` asks for, all reporting SERVING.
    /// Streams end when `streams_end` is cancelled (the end of the shutdown
    /// grace period); load report streams as soon as `shutdown` is (when
    /// shutdown begins).
    pub(crate) async fn build(
        config: &Config,
        stats: &Arc<Stats>,
        shutdown: &CancellationToken,
        streams_end: &CancellationToken,
        forwarder: Forwarder,
        observed: Observed,
    ) -> Self {
        let limits = config.limits.clone();
        let served = served_services(config, &observed);
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::new(reporter, &served);
        health.set_all(ServingStatus::Serving).await;

        let echo = EchoServiceServer::new(EchoService::new(
            config,
            Arc::clone(stats),
            streams_end.clone(),
            forwarder,
        ));
        let example_echo = ExampleEchoServer::new(ExampleEchoService::new(streams_end.clone()));
        // Reflection decodes every descriptor into its index: built on its
        // first call, that is start-up time and memory a server that nobody
        // asks spares (BENCHMARKS.md).
        let (v1_served, v1alpha_served) = (served.clone(), served.clone());
        let (v1_limits, v1alpha_limits) = (limits.clone(), limits.clone());
        let mut router = Router::default()
            .add(compressed!(health_service, limits))
            .add_lazy(move || {
                reflection(&v1_served)
                    .build_v1()
                    .map(|service| compressed!(service, v1_limits))
            })
            .add_lazy(move || {
                reflection(&v1alpha_served)
                    .build_v1alpha()
                    .map(|service| compressed!(service, v1alpha_limits))
            })
            .add(compressed!(echo, limits))
            .add(compressed!(example_echo, limits));
        if config.services.interop {
            // TestService compresses per message itself (MessageCompressionLayer).
            let interop = TestServiceServer::new(TestService::new(
                config,
                Arc::clone(stats),
                streams_end.clone(),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Deflate)
            .max_decoding_message_size(limits.max_message_size)
            .max_encoding_message_size(limits.max_send_message_size());
            router = router.add(interop);
        }
        if config.services.conformance {
            let conformance =
                ConformanceServiceServer::new(ConformanceService::new(streams_end.clone()));
            router = router.add(compressed!(conformance, limits));
        }
        if config.services.admin {
            router = router.add(AdminServiceServer::new(AdminService::new(health.clone())));
        }
        if observed.load_reports.reporting() {
            router = router.add(compressed!(
                OpenRcaServiceServer::new(OrcaService::new(
                    observed.load_reports,
                    *config.load.orca_min_interval,
                    shutdown.clone(),
                )),
                limits
            ));
        }
        if let Some(channelz) = observed.channelz {
            router = router.add(compressed!(
                ChannelzServer::new(ChannelzService::new(channelz)),
                limits
            ));
        }
        Self { router, health }
    }
}

/// What the load-balancing services show: the load reports, and channelz's
/// registry when it is on.
pub(crate) struct Observed {
    pub(crate) load_reports: Arc<LoadReports>,
    pub(crate) channelz: Option<Arc<Channelz>>,
}

/// What each RPC makes of `request`'s controls: a plan, or the status its
/// caller would get (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn plan_controls(
    request: &grpc_echo::echo::v1::EchoRequest,
) -> Vec<Result<(), tonic::Status>> {
    use controls::{Limits, Rpc};
    let limits = Limits::from(&crate::config::ControlLimits::default());
    [
        Rpc::Echo,
        Rpc::ServerStream,
        Rpc::ClientStream,
        Rpc::BidiStream,
    ]
    .into_iter()
    .map(|rpc| match limits.plan(request, rpc) {
        // A requested error becomes the status the handler answers with.
        Ok(plan) => plan.error.map_or(Ok(()), |error| Err(error.into())),
        Err(error) => Err(error.into()),
    })
    .collect()
}

/// The services that are not under test: health, reflection and the admin
/// service answer as themselves whatever faults, fault headers and chaos
/// windows ask, so a flaky instance still looks healthy to its probes and
/// tools can still read its descriptors.
const INFRASTRUCTURE: [&str; 6] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    <AdminServiceServer<AdminService> as NamedService>::NAME,
    <OpenRcaServiceServer<OrcaService> as NamedService>::NAME,
    <ChannelzServer<ChannelzService> as NamedService>::NAME,
];

/// Whether a call to `path` (`/package.Service/Method`) is to a service
/// under test: echo.v1, the interop and example services, and any other.
pub(crate) fn under_test(path: &str) -> bool {
    let service = path
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .map_or("", |(service, _)| service);
    !INFRASTRUCTURE.contains(&service)
}

/// The full names of the services served.
fn served_services(config: &Config, observed: &Observed) -> Vec<&'static str> {
    let mut served = vec![
        <EchoServiceServer<EchoService> as NamedService>::NAME,
        <ExampleEchoServer<ExampleEchoService> as NamedService>::NAME,
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ];
    if config.services.interop {
        served.push(<TestServiceServer<TestService> as NamedService>::NAME);
    }
    if config.services.conformance {
        served.push(<ConformanceServiceServer<ConformanceService> as NamedService>::NAME);
    }
    if config.services.admin {
        served.push(<AdminServiceServer<AdminService> as NamedService>::NAME);
    }
    if observed.load_reports.reporting() {
        served.push(<OpenRcaServiceServer<OrcaService> as NamedService>::NAME);
    }
    if observed.channelz.is_some() {
        served.push(<ChannelzServer<ChannelzService> as NamedService>::NAME);
    }
    served
}

/// Both reflection versions list exactly the services served (each other
/// included), and describe them from every descriptor set compiled in.
fn reflection(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = DESCRIPTOR_SETS.iter().fold(
        tonic_reflection::server::Builder::configure().include_reflection_service(false),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    );
    served
        .iter()
        .fold(builder, |builder, name| builder.with_service_name(*name))
}
