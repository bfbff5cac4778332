//! `echo.v1.EchoService/Forward`: this server calls a downstream as a request
//! asks, as one service calls another: the remaining deadline, cancellation,
//! the request id and the W3C trace context go along. A server that calls
//! addresses on request is an SSRF tool, so it is off unless `--forward-allow`
//! lists the targets; a hop chain header stops loops.

use std::net::IpAddr;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use echo_client::{EchoClient, Protocol, TlsOptions};
use grpc_echo::echo::v1::{
    ForwardMethod, ForwardProtocol, ForwardRequest, ForwardResponse, ForwardResult, StatusCode,
};
use grpc_echo::grpc::testing::SimpleRequest;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use http::HeaderMap;
use tokio::time::Instant;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Request, Status};
use tracing::Instrument;

use crate::call::Call;
use crate::error::ForwardError;

/// The header that carries the hop chain: the instances a request passed,
/// comma-separated, the latest last.
pub(crate) const HOPS: &str = "x-echo-hops";

/// Request headers every downstream call carries on from its caller.
const PROPAGATED: [&str; 4] = ["x-request-id", "traceparent", "tracestate", "baggage"];

/// How long connecting to a downstream may take, at most (the call's
/// deadline may cut it shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One `--forward-allow` entry.
#[derive(Debug, Clone, PartialEq)]
enum Allowed {
    /// A host name or address, any port.
    Host(String),
    /// A host name or address and one port.
    HostPort(String, u16),
    /// Addresses in a network (targets given as addresses only).
    Network(IpAddr, u8),
}

/// The targets `--forward-allow` lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Allowlist(Vec<Allowed>);

impl Allowlist {
    /// Parses `--forward-allow` entries: `host`, `host:port`, `[v6]:port`, or
    /// a CIDR network (`10.0.0.0/8`, `fd00::/8`).
    pub(crate) fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| parse_entry(entry.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `host` and `port` may be called.
    fn allows(&self, host: &str, port: u16) -> bool {
        let address = host.parse::<IpAddr>().ok();
        self.0.iter().any(|allowed| match allowed {
            Allowed::Host(name) => name.eq_ignore_ascii_case(host),
            Allowed::HostPort(name, allowed_port) => {
                *allowed_port == port && name.eq_ignore_ascii_case(host)
            }
            Allowed::Network(network, prefix) => {
                address.is_some_and(|address| in_network(address, *network, *prefix))
            }
        })
    }
}

fn parse_entry(entry: &str) -> Result<Allowed, String> {
    if let Some((network, prefix)) = entry.split_once('/') {
        let network: IpAddr = network
            .parse()
            .map_err(|_| format!("`{entry}`: `{network}` is not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|&prefix| prefix <= bits)
            .ok_or_else(|| format!("`{entry}`: the prefix is not 0 to {bits}"))?;
        return Ok(Allowed::Network(network, prefix));
    }
    match split_host_port(entry) {
        Some((host, port)) => Ok(Allowed::HostPort(host.to_owned(), port)),
        None if entry.is_empty() || entry.contains(['/', ' ']) => {
            Err(format!("`{entry}` is not a host, host:port or network"))
        }
        None => Ok(Allowed::Host(
            entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )),
    }
}

/// `host:port` or `[v6]:port` into host and port.
fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        // A bare IPv6 address has more colons, and no port.
        None if host.contains(':') => return None,
        None => host,
    };
    Some((host, port.parse().ok()?))
}

fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What Forward may do, from the server's configuration, and the client-side
/// metrics of its downstream calls.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    pub(crate) allow: Allowlist,
    pub(crate) max_hops: u32,
    pub(crate) max_count: u32,
    /// Trust and identity for TLS downstreams (`--forward-ca-file`).
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) metrics: ClientMetrics,
}

/// Labels of a downstream method's client series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

/// Labels of a downstream method's outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientCodeLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// The grpc-ecosystem client series (`grpc_client_*`) of Forward's
/// downstream calls; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ClientMetrics {
    started: Family<ClientLabels, Counter>,
    handled: Family<ClientCodeLabels, Counter>,
    sent: Family<ClientLabels, Counter>,
    received: Family<ClientLabels, Counter>,
    handling: Family<ClientLabels, Histogram, fn() -> Histogram>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            handled: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            handling: Family::new_with_constructor(crate::metrics::latency_histogram),
        }
    }
}

impl ClientMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_client_started",
            "Downstream RPCs started by Forward",
            self.started.clone(),
        );
        registry.register(
            "grpc_client_handled",
            "Downstream RPCs of Forward completed, by status code",
            self.handled.clone(),
        );
        registry.register(
            "grpc_client_msg_sent",
            "Messages sent downstream by Forward",
            self.sent.clone(),
        );
        registry.register(
            "grpc_client_msg_received",
            "Messages received from downstream by Forward",
            self.received.clone(),
        );
        registry.register(
            "grpc_client_handling_seconds",
            "Downstream RPC duration, as Forward saw it",
            self.handling.clone(),
        );
    }

    /// A downstream call to `method` (unary) is starting: its request is sent.
    fn started(&self, service: &'static str, method: &'static str) {
        let labels = client_labels(service, method);
        self.started.get_or_create(&labels).inc();
        self.sent.get_or_create(&labels).inc();
    }

    /// A downstream call to `method` ended with `code` after `elapsed`.
    fn handled(&self, service: &'static str, method: &'static str, code: Code, elapsed: Duration) {
        let labels = client_labels(service, method);
        if code == Code::Ok {
            self.received.get_or_create(&labels).inc();
        }
        self.handling
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.handled
            .get_or_create(&ClientCodeLabels {
                grpc_type: labels.grpc_type,
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: crate::metrics::code_name(code),
            })
            .inc();
    }
}

fn client_labels(service: &'static str, method: &'static str) -> ClientLabels {
    ClientLabels {
        grpc_type: "unary",
        grpc_service: service,
        grpc_method: method,
    }
}

impl Forwarder {
    /// Carries out `request` for the instance `instance`.
    pub(crate) async fn forward(
        &self,
        instance: &str,
        request: Request<ForwardRequest>,
    ) -> Result<ForwardResponse, ForwardError> {
        let call = Call::unary(&request);
        let (metadata, _, forward) = request.into_parts();
        let headers = metadata.into_headers();
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
        if self.allow.0.is_empty() {
            return Err(ForwardError::Off);
        }
        let (host, port) = split_host_port(&forward.target).ok_or_else(|| {
            ForwardError::Invalid(format!("target `{}` is not host:port", forward.target))
        })?;
        if !self.allow.allows(host, port) {
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
        let client = builder
            .connect_lazy()
            .map_err(|err| ForwardError::Invalid(err.to_string()))?;
        let interop = match ForwardMethod::try_from(forward.method) {
            Ok(ForwardMethod::Echo) => false,
            Ok(ForwardMethod::InteropUnaryCall) => true,
            Err(_) => {
                return Err(ForwardError::Invalid(format!(
                    "unknown method {}",
                    forward.method
                )));
            }
        };
        let carried = carried_metadata(&headers, &forward, &hops)?;

        let started = Instant::now();
        let mut results = Vec::with_capacity(count as usize);
        for index in 0..count {
            tokio::time::sleep_until(started + interval * index).await;
            // The caller's remaining deadline bounds every downstream call.
            let remaining = call
                .deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let timeout = match (timeout, remaining) {
                (Some(timeout), Some(remaining)) => Some(timeout.min(remaining)),
                (timeout, remaining) => timeout.or(remaining),
            };
            let (service, method) = if forward.forward.is_some() {
                ("echo.v1.EchoService", "Forward")
            } else if interop {
                ("grpc.testing.TestService", "UnaryCall")
            } else {
                ("echo.v1.EchoService", "Echo")
            };
            self.metrics.started(service, method);
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
                server.address = host,
                server.port = port,
            );
            let result = downstream(&client, interop, &forward, carried.clone(), timeout, &hops)
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
            results.push(result);
        }
        Ok(ForwardResponse {
            instance: instance.to_owned(),
            peer: call.peer,
            results,
        })
    }
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
        if let Some(value) = headers.get(name) {
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
    interop: bool,
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
            None if interop => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_takes_hosts_ports_and_networks() {
        let allow = Allowlist::parse(
            &[
                "echo-b",
                "echo-c:50051",
                "10.1.0.0/16",
                "[::1]:7000",
                "fd00::/8",
            ]
            .map(str::to_owned),
        )
        .unwrap();
        assert!(allow.allows("echo-b", 1));
        assert!(allow.allows("ECHO-B", 50051));
        assert!(allow.allows("echo-c", 50051));
        assert!(!allow.allows("echo-c", 50052));
        assert!(allow.allows("10.1.255.3", 80));
        assert!(!allow.allows("10.2.0.1", 80));
        assert!(allow.allows("::1", 7000));
        assert!(!allow.allows("::1", 7001));
        assert!(allow.allows("fd12::1", 1));
        assert!(!allow.allows("169.254.169.254", 80), "not listed");
        assert!(
            Allowlist::parse(&["0.0.0.0/0".to_owned()])
                .unwrap()
                .allows("8.8.8.8", 53)
        );
        for bad in ["10.0.0.0/33", "nope/8", "", "a b"] {
            assert!(Allowlist::parse(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
        assert_eq!(split_host_port("[::1]:50051"), Some(("::1", 50051)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("host"), None);
    }
}
