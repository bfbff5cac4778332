//! `echo.v1.EchoService/Forward`: this server calls a downstream as a request
//! asks, as one service calls another: the remaining deadline, cancellation,
//! the request id and the W3C trace context go along. A server that calls
//! addresses on request is an SSRF tool, so it is off unless `--forward-allow`
//! lists the targets; a hop chain header stops loops.

mod metrics;

use std::sync::Arc;
use std::time::Duration;

use echo_client::{EchoClient, Protocol, TlsOptions};
use echo_wire::headers::REQUEST_ID;
use grpc_echo::echo::v1::{
    ForwardMethod, ForwardProtocol, ForwardRequest, ForwardResponse, ForwardResult, StatusCode,
};
use grpc_echo::grpc::testing::SimpleRequest;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use http::{HeaderMap, HeaderName};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Request, Status};
use tracing::Instrument;

use super::call::Call;
use crate::config::ForwardConfig;
use crate::config::allowlist::{AllowedTarget, allows, split_host_port};
use crate::error::{ForwardError, ServeError};
use crate::ops::channelz::Channelz;
use metrics::ClientMetrics;

/// The header that carries the hop chain: the instances a request passed,
/// comma-separated, the latest last.
pub(crate) const HOPS: &str = "x-echo-hops";

/// Request headers every downstream call carries on from its caller.
const PROPAGATED: [HeaderName; 4] = [
    REQUEST_ID,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("baggage"),
];

/// How long connecting to a downstream may take, at most (the call's
/// deadline may cut it shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What Forward may do, from the server's configuration, and the client-side
/// metrics of its downstream calls.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    allow: Vec<AllowedTarget>,
    max_hops: u32,
    max_count: u32,
    /// Trust and identity for TLS downstreams (`--forward-ca-file`).
    tls: Option<TlsOptions>,
    metrics: ClientMetrics,
    /// Where the downstream channels are shown, with `--channelz`.
    channelz: Option<Arc<Channelz>>,
}

/// One Forward, checked: what to call, how often, and with what.
struct Plan {
    client: EchoClient,
    /// Host and port of the target, for the spans.
    host: String,
    port: u16,
    method: Downstream,
    count: u32,
    interval: Duration,
    timeout: Option<Duration>,
}

/// Which method each downstream call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Downstream {
    Echo,
    InteropUnaryCall,
    /// A nested Forward (the request names one).
    Forward,
}

impl Downstream {
    fn service_and_method(self) -> (&'static str, &'static str) {
        match self {
            Self::Echo => ("echo.v1.EchoService", "Echo"),
            Self::InteropUnaryCall => ("grpc.testing.TestService", "UnaryCall"),
            Self::Forward => ("echo.v1.EchoService", "Forward"),
        }
    }
}

impl Forwarder {
    /// Forward as `config` allows it; reads the TLS files it names.
    pub(crate) fn new(config: &ForwardConfig) -> Result<Self, ServeError> {
        Ok(Self {
            allow: config.forward_allow.clone(),
            max_hops: config.forward_max_hops,
            max_count: config.forward_max_count,
            tls: downstream_tls(config)?,
            metrics: ClientMetrics::default(),
            channelz: None,
        })
    }

    /// Shows each downstream target in `channelz` as a channel.
    pub(crate) fn with_channelz(mut self, channelz: Option<Arc<Channelz>>) -> Self {
        self.channelz = channelz;
        self
    }

    /// Registers the `grpc_client_*` series of the downstream calls.
    pub(crate) fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// Carries out `request` for the instance `instance`.
    pub(crate) async fn forward(
        &self,
        instance: &str,
        request: Request<ForwardRequest>,
    ) -> Result<ForwardResponse, ForwardError> {
        let call = Call::unary(&request);
        let (metadata, _, forward) = request.into_parts();
        let headers = metadata.into_headers();
        let hops = self.hops_with(instance, &headers)?;
        let plan = self.plan(&forward)?;
        let carried = carried_metadata(&headers, &forward, &hops)?;
        let started = Instant::now();
        let mut results = Vec::with_capacity(plan.count as usize);
        for index in 0..plan.count {
            tokio::time::sleep_until(started + plan.interval * index).await;
            // The caller's remaining deadline bounds every downstream call.
            let remaining = call
                .deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let timeout = match (plan.timeout, remaining) {
                (Some(timeout), Some(remaining)) => Some(timeout.min(remaining)),
                (timeout, remaining) => timeout.or(remaining),
            };
            let result = self
                .call_once(&plan, &forward, carried.clone(), timeout, &hops)
                .await;
            results.push(result);
        }
        Ok(ForwardResponse {
            instance: instance.to_owned(),
            peer: call.peer,
            results,
        })
    }

    /// The hop chain with `instance` added, unless the chain is already as
    /// long as allowed.
    fn hops_with(&self, instance: &str, headers: &HeaderMap) -> Result<Vec<String>, ForwardError> {
        let mut hops: Vec<String> = headers
            .get(HOPS)
            .and_then(|value| value.to_str().ok())
            .map(|chain| chain.split(',').map(|hop| hop.trim().to_owned()).collect())
            .unwrap_or_default();
        if hops.len() >= self.max_hops as usize {
            return Err(ForwardError::HopLimit {
                limit: self.max_hops,
                chain: hops.join(" -> "),
            });
        }
        hops.push(instance.to_owned());
        Ok(hops)
    }

    /// Checks every field of `forward` against what the server allows.
    fn plan(&self, forward: &ForwardRequest) -> Result<Plan, ForwardError> {
        if self.allow.is_empty() {
            return Err(ForwardError::Off);
        }
        let (host, port) = split_host_port(&forward.target).ok_or_else(|| {
            ForwardError::Invalid(format!("target `{}` is not host:port", forward.target))
        })?;
        if !allows(&self.allow, host, port) {
            return Err(ForwardError::NotAllowed(forward.target.clone()));
        }
        let count = forward.count.unwrap_or(1);
        if count > self.max_count {
            return Err(ForwardError::Invalid(format!(
                "count {count} exceeds the server maximum of {}",
                self.max_count
            )));
        }
        let interval = match forward.rate {
            None => Duration::ZERO,
            Some(rate) if rate.is_finite() && rate > 0.0 => Duration::from_secs_f64(1.0 / rate),
            Some(rate) => {
                return Err(ForwardError::Invalid(format!(
                    "rate {rate} is not a positive number of calls per second"
                )));
            }
        };
        let timeout = forward
            .timeout
            .map(|timeout| {
                Duration::try_from(timeout)
                    .map_err(|_| ForwardError::Invalid("timeout is negative".to_owned()))
            })
            .transpose()?;
        let method = match ForwardMethod::try_from(forward.method) {
            Ok(_) if forward.forward.is_some() => Downstream::Forward,
            Ok(ForwardMethod::Echo) => Downstream::Echo,
            Ok(ForwardMethod::InteropUnaryCall) => Downstream::InteropUnaryCall,
            Err(_) => {
                return Err(ForwardError::Invalid(format!(
                    "unknown method {}",
                    forward.method
                )));
            }
        };
        Ok(Plan {
            client: self.client(forward)?,
            host: host.to_owned(),
            port,
            method,
            count,
            interval,
            timeout,
        })
    }

    /// A client of the target, in the protocol and with the TLS asked for.
    fn client(&self, forward: &ForwardRequest) -> Result<EchoClient, ForwardError> {
        let protocol = match ForwardProtocol::try_from(forward.protocol) {
            Ok(ForwardProtocol::Grpc) => Protocol::Grpc,
            Ok(ForwardProtocol::GrpcWeb) => Protocol::GrpcWeb,
            Ok(ForwardProtocol::Connect) => Protocol::Connect,
            Err(_) => {
                return Err(ForwardError::Invalid(format!(
                    "unknown protocol {}",
                    forward.protocol
                )));
            }
        };
        let scheme = if forward.tls { "https" } else { "http" };
        let mut builder = EchoClient::builder(format!("{scheme}://{}", forward.target))
            .protocol(protocol)
            .connect_timeout(CONNECT_TIMEOUT);
        if forward.tls {
            let mut tls = self.tls.clone().ok_or(ForwardError::NoTls)?;
            if !forward.server_name.is_empty() {
                tls.server_name = Some(forward.server_name.clone());
            }
            builder = builder.tls(tls);
        }
        builder
            .connect_lazy()
            .map_err(|err| ForwardError::Invalid(err.to_string()))
    }

    /// One downstream call, counted and traced as a client span.
    async fn call_once(
        &self,
        plan: &Plan,
        forward: &ForwardRequest,
        carried: tonic::metadata::MetadataMap,
        timeout: Option<Duration>,
        hops: &[String],
    ) -> ForwardResult {
        let (service, method) = plan.method.service_and_method();
        self.metrics.started(service, method);
        let channel = self
            .channelz
            .as_ref()
            .and_then(|channelz| channelz.channel(&forward.target));
        if let Some(channel) = &channel {
            channel.calls.started();
        }
        // The client span of the call, whose context the client library
        // sends downstream (exported when tracing is on).
        let span = tracing::debug_span!(
            "forward call",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            server.address = plan.host.as_str(),
            server.port = plan.port,
        );
        let result = downstream(&plan.client, plan.method, forward, carried, timeout, hops)
            .instrument(span.clone())
            .await;
        span.record("rpc.grpc.status_code", result.code);
        if result.code != StatusCode::Ok as i32 {
            span.record("otel.status_code", "ERROR");
        }
        let elapsed = result
            .latency
            .and_then(|latency| Duration::try_from(latency).ok())
            .unwrap_or_default();
        self.metrics
            .handled(service, method, Code::from(result.code), elapsed);
        if let Some(channel) = &channel {
            channel.calls.finished(result.code == StatusCode::Ok as i32);
        }
        result
    }
}

/// The TLS material of `--forward-ca-file` and `--forward-cert-file`.
fn downstream_tls(config: &ForwardConfig) -> Result<Option<TlsOptions>, ServeError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::ForwardTls {
            path: path.clone(),
            source,
        })
    };
    let Some(ca) = &config.forward_ca_file else {
        return Ok(None);
    };
    let identity = match (&config.forward_cert_file, &config.forward_key_file) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Some(TlsOptions {
        ca_pem: read(ca)?,
        server_name: None,
        identity,
    }))
}

/// The metadata every downstream call carries: the propagated headers, the
/// request's own, and the hop chain so far.
fn carried_metadata(
    headers: &HeaderMap,
    forward: &ForwardRequest,
    hops: &[String],
) -> Result<tonic::metadata::MetadataMap, ForwardError> {
    let mut carried = HeaderMap::new();
    for name in PROPAGATED {
        if let Some(value) = headers.get(&name) {
            carried.insert(name, value.clone());
        }
    }
    let mut metadata = tonic::metadata::MetadataMap::from_headers(carried);
    for (name, value) in &forward.headers {
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| ForwardError::Invalid(format!("`{name}` is not a header name")))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| ForwardError::Invalid(format!("header `{name}`: not a header value")))?;
        metadata.insert(key, value);
    }
    let chain = MetadataValue::try_from(hops.join(","))
        .map_err(|_| ForwardError::Invalid("an instance name is not a header value".to_owned()))?;
    metadata.insert(HOPS, chain);
    Ok(metadata)
}

/// One downstream call, as its result.
async fn downstream(
    client: &EchoClient,
    method: Downstream,
    forward: &ForwardRequest,
    metadata: tonic::metadata::MetadataMap,
    timeout: Option<Duration>,
    hops: &[String],
) -> ForwardResult {
    let start = Instant::now();
    if timeout.is_some_and(|timeout| timeout.is_zero()) {
        return failed(
            Status::deadline_exceeded("no time left for the call"),
            start,
        );
    }
    let attempt = async {
        match &forward.forward {
            Some(nested) => client
                .forward(timed(metadata, (**nested).clone(), timeout))
                .await
                .map(|response| {
                    let forwarded = response.into_inner();
                    (
                        forwarded.instance.clone(),
                        forwarded.peer.clone(),
                        None,
                        Some(forwarded),
                    )
                }),
            None if method == Downstream::InteropUnaryCall => {
                let message = SimpleRequest {
                    response_size: forward
                        .request
                        .as_ref()
                        .and_then(|request| request.response_size)
                        .map_or(0, |size| i32::try_from(size).unwrap_or(i32::MAX)),
                    fill_server_id: true,
                    ..Default::default()
                };
                TestServiceClient::new(client.transport())
                    .unary_call(timed(metadata, message, timeout))
                    .await
                    .map(|response| {
                        let answer = response.into_inner();
                        let instance = if answer.server_id.is_empty() {
                            answer.hostname
                        } else {
                            answer.server_id
                        };
                        (instance, String::new(), None, None)
                    })
            }
            None => {
                let message = forward.request.clone().unwrap_or_default();
                client
                    .echo(timed(metadata, message, timeout))
                    .await
                    .map(|response| {
                        let echo = response.into_inner();
                        (echo.instance.clone(), echo.peer.clone(), Some(echo), None)
                    })
            }
        }
    };
    // The client ends a call at its deadline; this bounds a connection
    // attempt that never completes as well.
    let outcome = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("downstream deadline exceeded"))),
        None => attempt.await,
    };
    match outcome {
        Ok((instance, peer, echo, forwarded)) => {
            let mut chain = hops.to_vec();
            chain.push(instance.clone());
            ForwardResult {
                code: StatusCode::Ok as i32,
                message: String::new(),
                latency: prost_types::Duration::try_from(start.elapsed()).ok(),
                instance,
                peer,
                hops: chain,
                echo,
                forwarded,
            }
        }
        Err(status) => failed(status, start),
    }
}

/// A downstream request of `message`, carrying `metadata` and `timeout`.
fn timed<M>(
    metadata: tonic::metadata::MetadataMap,
    message: M,
    timeout: Option<Duration>,
) -> Request<M> {
    let mut request = Request::from_parts(metadata, Default::default(), message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

fn failed(status: Status, start: Instant) -> ForwardResult {
    ForwardResult {
        code: status_code(status.code()) as i32,
        message: status.message().to_owned(),
        latency: prost_types::Duration::try_from(start.elapsed()).ok(),
        ..Default::default()
    }
}

fn status_code(code: Code) -> StatusCode {
    StatusCode::try_from(code as i32).unwrap_or(StatusCode::Unknown)
}
