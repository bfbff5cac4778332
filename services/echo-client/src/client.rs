//! [`ClientBuilder`] and the typed [`EchoClient`].

use std::sync::Arc;
use std::time::Duration;

use grpc_echo::echo::v1::admin_service_client::AdminServiceClient;
use grpc_echo::echo::v1::echo_service_client::EchoServiceClient;
use grpc_echo::echo::v1::{
    ClientStreamResponse, EchoRequest, EchoResponse, ForwardRequest, ForwardResponse,
};
use grpc_echo::echo::v1::{HealthStatus, SetHealthRequest};
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{IntoRequest, IntoStreamingRequest, Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower_layer::Layer;

use echo_wire::compression::Compression;

use crate::balance;
use crate::endpoints::Endpoints;
use crate::endpoints::{BalancePolicy, MemberLoad};
use crate::error::ClientError;
use crate::policy::{CallPolicy, CallPolicyLayer};
use crate::protocol::{Codec, Link, LinkTls, Protocol};
use crate::retry::{RetryPolicy, Retrying};
use crate::stats::CallStats;
use crate::timing::{TimedConnector, TimedTls, Timeline};

/// What every call goes through: the call policy over one server or several.
pub type Transport = CallPolicy<Endpoints>;

/// Receive window of each call's stream: HTTP/2's default 64 KiB stalls
/// streams of large messages.
pub(crate) const STREAM_WINDOW: u32 = 1 << 20;
/// Receive window of a connection, shared by its streams.
pub(crate) const CONNECTION_WINDOW: u32 = 1 << 23;

/// Configures and connects an [`EchoClient`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: String,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    metadata: MetadataMap,
    compression: Option<CompressionEncoding>,
    /// Whether the echo and health clients ask for compressed answers.
    accept_compression: bool,
    retry: Option<RetryPolicy>,
    keepalive: Option<(Duration, Duration)>,
    tls: Option<ClientTlsConfig>,
    /// The PEM material behind `tls`, for HTTP/1.1 connections.
    tls_options: Option<TlsOptions>,
    balanced: Option<Vec<String>>,
    balance_policy: BalancePolicy,
    stats: Arc<CallStats>,
    protocol: Protocol,
    http: HttpVersion,
    connect_get: bool,
    codec: Codec,
    /// brotli or snappy, which tonic lacks: applied by the link.
    link_compression: Option<Compression>,
    timing: Option<Timeline>,
}

/// The HTTP version calls go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpVersion {
    Http1,
    Http2,
    Http3,
}

/// What every endpoint of a builder shares.
#[derive(Debug, Clone)]
struct EndpointSettings {
    connect_timeout: Option<Duration>,
    tls: Option<ClientTlsConfig>,
    tls_options: Option<TlsOptions>,
    keepalive: Option<(Duration, Duration)>,
    protocol: Protocol,
    http: HttpVersion,
    connect_get: bool,
    codec: Codec,
    link_compression: Option<Compression>,
    timing: Option<Timeline>,
}

/// PEM material for a TLS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates to trust for the server's certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The name to expect in the server's certificate [default: the endpoint's host].
    pub server_name: Option<String>,
    /// This client's certificate chain and private key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    /// TLS for HTTP/1.1 and HTTP/3 connections with these options (tonic
    /// builds its own for HTTP/2).
    fn link_tls(&self) -> Result<LinkTls, ClientError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |what| {
            move |source: rustls::Error| ClientError::Tls {
                what,
                source: source.into(),
            }
        };
        let pem = |what| {
            move |source: rustls::pki_types::pem::Error| ClientError::Tls {
                what,
                source: source.into(),
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots
                .add(cert.map_err(pem("CA certificates"))?)
                .map_err(invalid("CA certificates"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(invalid("protocol versions"))?
        .with_root_certificates(roots);
        let config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(pem("certificate chain"))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(pem("private key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(invalid("certificate chain"))?
            }
            None => builder.with_no_client_auth(),
        };
        // No ALPN here: the HTTP/1.1 connector and HTTP/3 set their own.
        let server_name = self
            .server_name
            .clone()
            .map(rustls::pki_types::ServerName::try_from)
            .transpose()
            .map_err(|source| ClientError::Tls {
                what: "server name",
                source: source.into(),
            })?;
        Ok(LinkTls {
            config,
            server_name,
        })
    }
}

impl ClientBuilder {
    /// A builder for `endpoint`: a URI such as `http://127.0.0.1:50051`, or a
    /// bare `host:port` (plaintext HTTP/2 is assumed).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout: None,
            timeout: None,
            metadata: MetadataMap::new(),
            compression: None,
            accept_compression: true,
            retry: None,
            keepalive: None,
            tls: None,
            tls_options: None,
            balanced: None,
            balance_policy: BalancePolicy::RoundRobin,
            stats: Arc::default(),
            protocol: Protocol::Grpc,
            http: HttpVersion::Http2,
            connect_get: false,
            codec: Codec::Proto,
            link_compression: None,
            timing: None,
        }
    }

    /// Make calls in `protocol` (gRPC by default): test a gRPC-Web proxy or
    /// a Connect gateway in front of a server with the same client.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Compress requests with `compression`, any of gzip, zstd, deflate
    /// (tonic's own: as [`compression`](Self::compression)), brotli or snappy
    /// (which tonic lacks: applied to every call of the builder's
    /// transport). Answers come in tonic's compressions.
    pub fn message_compression(mut self, compression: Compression) -> Self {
        self.link_compression = None;
        match compression {
            Compression::Identity => self.compression = None,
            Compression::Gzip => self.compression = Some(CompressionEncoding::Gzip),
            Compression::Zstd => self.compression = Some(CompressionEncoding::Zstd),
            Compression::Deflate => self.compression = Some(CompressionEncoding::Deflate),
            Compression::Brotli | Compression::Snappy => {
                self.compression = None;
                self.link_compression = Some(compression);
            }
        }
        self
    }

    /// Send messages in `codec` (protobuf by default). JSON is for the
    /// methods of the contract and the health service, whose descriptors
    /// the library holds; any other method goes in protobuf.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// In Connect, call methods marked `idempotency_level = NO_SIDE_EFFECTS`
    /// with GET, the message in the query (as caches and CDNs need).
    pub fn connect_get(mut self, get: bool) -> Self {
        self.connect_get = get;
        self
    }

    /// Make calls over HTTP/1.1 instead of HTTP/2 (gRPC-Web and Connect only;
    /// plaintext or TLS).
    pub fn http1(mut self, http1: bool) -> Self {
        self.http = match (http1, self.http) {
            (true, _) => HttpVersion::Http1,
            (false, HttpVersion::Http1) => HttpVersion::Http2,
            (false, other) => other,
        };
        self
    }

    /// Record where each call's time goes in `timeline`: the phases of each
    /// connection (resolve, TCP connect, TLS handshake, HTTP/2 setup; QUIC's
    /// handshake for HTTP/3) and of each call (request sent, response
    /// headers, first and last message, trailers). Connections are then made
    /// by the library's own connector rather than tonic's (same settings).
    pub fn timing(mut self, timeline: Timeline) -> Self {
        self.timing = Some(timeline);
        self
    }

    /// Make calls over HTTP/3 (QUIC) instead of HTTP/2, in any protocol;
    /// needs [`tls`](Self::tls).
    pub fn http3(mut self, http3: bool) -> Self {
        self.http = match (http3, self.http) {
            (true, _) => HttpVersion::Http3,
            (false, HttpVersion::Http3) => HttpVersion::Http2,
            (false, other) => other,
        };
        self
    }

    /// Connect with TLS (the endpoint may then be `https://...` or `host:port`).
    pub fn tls(mut self, options: TlsOptions) -> Self {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&options.ca_pem));
        if let Some(name) = &options.server_name {
            config = config.domain_name(name.clone());
        }
        if let Some((cert, key)) = &options.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        self.tls = Some(config);
        self.tls_options = Some(options);
        self
    }

    /// Send HTTP/2 PINGs every `interval`, even when idle; a server that does
    /// not answer within `timeout` counts as gone and its calls fail with
    /// UNAVAILABLE instead of hanging.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some((interval, timeout));
        self
    }

    /// Retry idempotent calls (`echo`, `health_check`) that fail with
    /// UNAVAILABLE; see [`RetryPolicy`]. Off by default.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Compress every request with `encoding`. Responses are accepted in gzip
    /// and zstd either way (and are compressed when the server chooses to).
    pub fn compression(mut self, encoding: CompressionEncoding) -> Self {
        self.compression = Some(encoding);
        self
    }

    /// Whether to ask servers for compressed answers (gzip and zstd; yes by
    /// default). A load generator turns it off unless it compresses requests
    /// too, so that the server's compression is not measured by accident.
    pub fn accept_compression(mut self, accept: bool) -> Self {
        self.accept_compression = accept;
        self
    }

    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Deadline of each call that does not set its own (`Request::set_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Metadata sent with every call that does not set `key` itself.
    pub fn metadata(mut self, key: &str, value: &str) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidMetadata {
            key: key.to_owned(),
            reason,
        };
        if key.ends_with("-bin") {
            return Err(invalid("binary keys take `binary_metadata`".to_owned()));
        }
        let name =
            AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = AsciiMetadataValue::try_from(value).map_err(|e| invalid(e.to_string()))?;
        self.metadata.append(name, value);
        Ok(self)
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn bearer_token(self, token: &str) -> Result<Self, ClientError> {
        self.metadata("authorization", &format!("Bearer {token}"))
    }

    /// Binary metadata (`key` ends in `-bin`) sent with every call that does not set `key`.
    pub fn binary_metadata(mut self, key: &str, value: &[u8]) -> Result<Self, ClientError> {
        let name = tonic::metadata::BinaryMetadataKey::from_bytes(key.as_bytes()).map_err(|e| {
            ClientError::InvalidMetadata {
                key: key.to_owned(),
                reason: e.to_string(),
            }
        })?;
        self.metadata.append_bin(
            name,
            tonic::metadata::BinaryMetadataValue::from_bytes(value),
        );
        Ok(self)
    }

    /// Balances calls over several servers instead of one endpoint: over every
    /// address that `targets` (`host:port` each) resolve to, taking out the
    /// ones that fail their health checks until they recover.
    pub fn balanced(mut self, targets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.balanced = Some(targets.into_iter().map(Into::into).collect());
        self
    }

    /// How a balanced client picks the server of each call: round robin
    /// (the default), or weighted by the load the servers report.
    pub fn balance_policy(mut self, policy: BalancePolicy) -> Self {
        self.balance_policy = policy;
        self
    }

    /// Counts the client's retries in `stats` (shared with other clients,
    /// for a load generator's report); each builder has its own otherwise.
    pub fn call_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Connects now (a balanced client connects as calls come); fails if the
    /// server cannot be reached.
    pub async fn connect(self) -> Result<EchoClient, ClientError> {
        let retrying = self.retrying();
        let transport = self.connect_with(retrying.clone()).await?;
        Ok(self.client(transport, retrying))
    }

    /// Connects on the first call, and reconnects whenever needed (a
    /// balanced builder connects now to nothing but resolves its targets on
    /// [`connect`](Self::connect) only).
    pub fn connect_lazy(self) -> Result<EchoClient, ClientError> {
        let retrying = self.retrying();
        let link = self.link(self.endpoint()?, &self.settings())?;
        let endpoints = Endpoints::single(link, Arc::clone(&self.stats), retrying.clone());
        let transport = self.transport(endpoints);
        Ok(self.client(transport, retrying))
    }

    /// A transport with this builder's metadata, timeout, balancing and
    /// transparent retries, for any generated client (`FooClient::new(transport)`).
    pub async fn connect_transport(&self) -> Result<Transport, ClientError> {
        self.connect_with(self.retrying()).await
    }

    async fn connect_with(
        &self,
        retrying: Option<Arc<Retrying>>,
    ) -> Result<Transport, ClientError> {
        let endpoints = match self.balanced.clone() {
            Some(targets) => {
                let settings = self.settings();
                let scheme = self.scheme();
                balance::balanced(
                    targets,
                    move |address| {
                        let endpoint = Self::configure(
                            &settings,
                            &address.to_string(),
                            format!("{scheme}://{address}"),
                        )?;
                        Self::link_to(endpoint, &settings)
                    },
                    self.balance_policy,
                    Arc::clone(&self.stats),
                    retrying,
                )
                .await?
            }
            None if self.http == HttpVersion::Http3 => {
                let link = self.link(self.endpoint()?, &self.settings())?;
                // Connected per call otherwise; an unreachable server fails now.
                link.connect_now()
                    .await
                    .map_err(|source| ClientError::Connect {
                        endpoint: self.endpoint.clone(),
                        source,
                    })?;
                Endpoints::single(link, Arc::clone(&self.stats), retrying)
            }
            None if self.http == HttpVersion::Http1 => {
                let endpoint = self.endpoint()?;
                // HTTP/1.1 connections are made as calls need them (and
                // pooled); check the server can be reached now, as an
                // HTTP/2 channel does.
                let authority = endpoint.uri().authority().map(ToString::to_string);
                let reach = tokio::net::TcpStream::connect(authority.unwrap_or_default());
                let reached = match self.connect_timeout {
                    Some(limit) => tokio::time::timeout(limit, reach)
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                    None => reach.await,
                };
                reached.map_err(|source| ClientError::Connect {
                    endpoint: self.endpoint.clone(),
                    source: source.into(),
                })?;
                let link = self.link(endpoint, &self.settings())?;
                Endpoints::single(link, Arc::clone(&self.stats), retrying)
            }
            None => {
                let settings = self.settings();
                let endpoint = self.endpoint()?;
                let connecting = match Self::timed_connector(&endpoint, &settings)? {
                    Some(connector) => endpoint.connect_with_connector(connector).await,
                    None => endpoint.connect().await,
                };
                let channel = connecting.map_err(|source| ClientError::Connect {
                    endpoint: self.endpoint.clone(),
                    source: source.into(),
                })?;
                Endpoints::single(
                    Link::http2(channel, self.protocol)
                        .connect_get(self.connect_get)
                        .codec(self.codec)
                        .compress(self.link_compression)
                        .timing(settings.timing),
                    Arc::clone(&self.stats),
                    retrying,
                )
            }
        };
        Ok(self.transport(endpoints))
    }

    fn retrying(&self) -> Option<Arc<Retrying>> {
        self.retry
            .map(|policy| Arc::new(Retrying::new(policy, self.timeout, Arc::clone(&self.stats))))
    }

    fn transport(&self, endpoints: Endpoints) -> Transport {
        CallPolicyLayer::new(self.metadata.clone().into_headers(), self.timeout).layer(endpoints)
    }

    /// The `http://host:port` URI of a single plaintext gRPC endpoint
    /// (`None` with TLS, balancing, another protocol or timing), for callers
    /// that speak gRPC over HTTP/2 themselves.
    pub(crate) fn plaintext_uri(&self) -> Option<http::Uri> {
        if self.tls.is_some()
            || self.timing.is_some()
            || self.balanced.is_some()
            || self.protocol != Protocol::Grpc
            || self.http != HttpVersion::Http2
        {
            return None;
        }
        let uri = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        };
        uri.parse()
            .ok()
            .filter(|uri: &http::Uri| uri.scheme_str() == Some("http"))
    }

    /// The protocol and HTTP version calls go in, in words ("gRPC over HTTP/3").
    pub fn wire(&self) -> String {
        let protocol = match self.protocol {
            Protocol::Grpc => "gRPC",
            Protocol::GrpcWeb => "gRPC-Web",
            Protocol::Connect => "Connect",
        };
        let http = match self.http {
            HttpVersion::Http1 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
            HttpVersion::Http3 => "HTTP/3",
        };
        format!("{protocol} over {http}")
    }

    /// Whether calls are balanced over several targets.
    pub fn is_balanced(&self) -> bool {
        self.balanced.is_some()
    }

    /// Where this builder's clients count their retries.
    pub(crate) fn stats(&self) -> Arc<CallStats> {
        Arc::clone(&self.stats)
    }

    /// The metadata every call carries, as HTTP headers.
    pub(crate) fn metadata_headers(&self) -> http::HeaderMap {
        self.metadata.clone().into_headers()
    }

    /// The deadline given to each call, if any.
    pub(crate) fn call_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let uri = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("{}://{}", self.scheme(), self.endpoint)
        };
        Self::configure(&self.settings(), &self.endpoint, uri)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn settings(&self) -> EndpointSettings {
        EndpointSettings {
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
            tls_options: self.tls_options.clone(),
            keepalive: self.keepalive,
            protocol: self.protocol,
            http: self.http,
            connect_get: self.connect_get,
            codec: self.codec,
            link_compression: self.link_compression,
            timing: self.timing.clone(),
        }
    }

    fn link(&self, endpoint: Endpoint, settings: &EndpointSettings) -> Result<Link, ClientError> {
        Self::link_to(endpoint, settings)
    }

    /// A lazily connecting link to `endpoint` in the settings' protocol.
    fn link_to(endpoint: Endpoint, settings: &EndpointSettings) -> Result<Link, ClientError> {
        if settings.http == HttpVersion::Http2 {
            let channel = match Self::timed_connector(&endpoint, settings)? {
                Some(connector) => endpoint.connect_with_connector_lazy(connector),
                None => endpoint.connect_lazy(),
            };
            return Ok(Link::http2(channel, settings.protocol)
                .connect_get(settings.connect_get)
                .codec(settings.codec)
                .compress(settings.link_compression)
                .timing(settings.timing.clone()));
        }
        let what = match settings.http {
            HttpVersion::Http3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        if settings.http == HttpVersion::Http1 && !settings.protocol.allows_http1() {
            return Err(ClientError::Unsupported {
                what,
                needs: "gRPC-Web or Connect (gRPC needs HTTP/2)",
            });
        }
        let uri = endpoint.uri();
        let origin = http::Uri::builder()
            .scheme(if settings.tls_options.is_some() {
                "https"
            } else {
                "http"
            })
            .authority(uri.authority().map_or("", |a| a.as_str()))
            .path_and_query("/")
            .build()
            .map_err(|_| ClientError::Unsupported {
                what,
                needs: "an endpoint with a host and port",
            })?;
        let tls = settings
            .tls_options
            .as_ref()
            .map(TlsOptions::link_tls)
            .transpose()?;
        let link = match (settings.http, tls) {
            (HttpVersion::Http3, Some(tls)) => {
                let timing = settings.timing.clone();
                Link::http3(
                    origin,
                    settings.protocol,
                    settings.connect_timeout,
                    tls,
                    timing,
                )
                .map_err(|source| ClientError::Tls {
                    what: "configuration for QUIC",
                    source,
                })?
            }
            (HttpVersion::Http3, None) => {
                return Err(ClientError::Unsupported {
                    what,
                    needs: "TLS (QUIC is always encrypted)",
                });
            }
            (_, tls) => match &settings.timing {
                Some(timeline) => {
                    let connector = TimedConnector {
                        timeline: timeline.clone(),
                        tls: tls
                            .map(|tls| timed_tls(tls, b"http/1.1", &origin))
                            .transpose()?,
                        connect_timeout: settings.connect_timeout,
                        setup: None,
                    };
                    Link::http1_timed(origin, settings.protocol, connector)
                }
                None => Link::http1(origin, settings.protocol, settings.connect_timeout, tls),
            },
        };
        Ok(link
            .connect_get(settings.connect_get)
            .codec(settings.codec)
            .compress(settings.link_compression)
            .timing(settings.timing.clone()))
    }

    /// With timing, HTTP/2's connector: the library's, which records each
    /// phase (its own TLS, with ALPN h2, as tonic's would do).
    fn timed_connector(
        endpoint: &Endpoint,
        settings: &EndpointSettings,
    ) -> Result<Option<TimedConnector>, ClientError> {
        let Some(timeline) = &settings.timing else {
            return Ok(None);
        };
        let tls = settings
            .tls_options
            .as_ref()
            .map(|options| timed_tls(options.link_tls()?, b"h2", endpoint.uri()))
            .transpose()?;
        Ok(Some(TimedConnector {
            timeline: timeline.clone(),
            tls,
            connect_timeout: settings.connect_timeout,
            setup: Some("HTTP/2 setup"),
        }))
    }

    /// The endpoint at `uri` with `settings`; `name` is what errors call it.
    fn configure(
        settings: &EndpointSettings,
        name: &str,
        uri: String,
    ) -> Result<Endpoint, ClientError> {
        let invalid = |source| ClientError::InvalidEndpoint {
            endpoint: name.to_owned(),
            source,
        };
        // With timing, the library's connector does TLS: tonic sees
        // plaintext. (An https address without TLS stays https, and tonic
        // refuses it as it would untimed.)
        let uri = match (
            &settings.timing,
            &settings.tls,
            uri.strip_prefix("https://"),
        ) {
            (Some(_), Some(_), Some(rest)) => format!("http://{rest}"),
            _ => uri,
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(invalid)?;
        if let Some(timeout) = settings.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        endpoint = endpoint
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        if let (Some(config), None) = (&settings.tls, &settings.timing) {
            endpoint = endpoint.tls_config(config.clone()).map_err(invalid)?;
        }
        if let Some((interval, timeout)) = settings.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        Ok(endpoint)
    }

    fn client(self, transport: Transport, retrying: Option<Arc<Retrying>>) -> EchoClient {
        // The server answers in the first accepted encoding it supports: put
        // the request encoding first so both directions match.
        let preferred = self.compression.unwrap_or(CompressionEncoding::Gzip);
        let others = [
            CompressionEncoding::Gzip,
            CompressionEncoding::Zstd,
            CompressionEncoding::Deflate,
        ]
        .into_iter()
        .filter(|encoding| *encoding != preferred);
        let mut echo = EchoServiceClient::new(transport.clone());
        let admin = AdminServiceClient::new(transport.clone());
        let mut health = HealthClient::new(transport.clone());
        if self.accept_compression {
            echo = echo.accept_compressed(preferred);
            health = health.accept_compressed(preferred);
            for encoding in others {
                echo = echo.accept_compressed(encoding);
                health = health.accept_compressed(encoding);
            }
        }
        if let Some(encoding) = self.compression {
            echo = echo.send_compressed(encoding);
            health = health.send_compressed(encoding);
        }
        EchoClient {
            echo,
            health,
            admin,
            transport,
            retrying,
            stats: self.stats,
        }
    }
}

/// A connected client of `echo.v1.EchoService` and `grpc.health.v1.Health`.
///
/// Cheap to clone; clones share one HTTP/2 connection. Each method takes a
/// message or a `tonic::Request` (to add metadata or a timeout to one call).
#[derive(Debug, Clone)]
pub struct EchoClient {
    echo: EchoServiceClient<Transport>,
    health: HealthClient<Transport>,
    admin: AdminServiceClient<Transport>,
    transport: Transport,
    retrying: Option<Arc<Retrying>>,
    stats: Arc<CallStats>,
}

impl EchoClient {
    /// Shorthand for [`ClientBuilder::new`].
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint)
    }

    /// The transport its calls go over, for a client of any other service
    /// (e.g. `TestServiceClient::new(client.transport())`).
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// How often this client's calls were sent again.
    pub fn call_stats(&self) -> &CallStats {
        &self.stats
    }

    /// Each server of a balanced client, with what its load reports say
    /// (empty for a client of one endpoint).
    pub fn loads(&self) -> Vec<MemberLoad> {
        self.transport.get_ref().loads()
    }

    /// Unary `Echo`.
    pub async fn echo(
        &self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let request = request.into_request();
        match &self.retrying {
            Some(retrying) => {
                retrying
                    .call(request, |request| async {
                        self.echo.clone().echo(request).await
                    })
                    .await
            }
            None => self.echo.clone().echo(request).await,
        }
    }

    /// `Forward`: the server calls a downstream as the request says and
    /// answers with each call's result. Never retried: it has side effects.
    pub async fn forward(
        &self,
        request: impl IntoRequest<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        self.echo.clone().forward(request).await
    }

    /// `ServerStream`: one request, a stream of responses.
    pub async fn server_stream(
        &self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<Streaming<EchoResponse>>, Status> {
        self.echo.clone().server_stream(request).await
    }

    /// `ClientStream`: a stream of requests, one summary.
    pub async fn client_stream(
        &self,
        requests: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        self.echo.clone().client_stream(requests).await
    }

    /// `BidiStream`: each request echoed as it arrives.
    pub async fn bidi_stream(
        &self,
        requests: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<Streaming<EchoResponse>>, Status> {
        self.echo.clone().bidi_stream(requests).await
    }

    /// Health of `service` (`""` for the whole server).
    pub async fn health_check(&self, service: &str) -> Result<ServingStatus, Status> {
        let request = Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        let response = match &self.retrying {
            Some(retrying) => {
                retrying
                    .call(request, |request| async {
                        self.health.clone().check(request).await
                    })
                    .await?
            }
            None => self.health.clone().check(request).await?,
        };
        Ok(response.get_ref().status())
    }

    /// A stream of `service`'s health, starting with its current status.
    pub async fn health_watch(
        &self,
        service: &str,
    ) -> Result<Streaming<HealthCheckResponse>, Status> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        Ok(self.health.clone().watch(request).await?.into_inner())
    }

    /// Sets the health `service` (`""`: the whole server) reports, on a server
    /// started with `--admin`.
    pub async fn set_health(&self, service: &str, status: HealthStatus) -> Result<(), Status> {
        let request = SetHealthRequest {
            service: service.to_owned(),
            status: status as i32,
        };
        self.admin.clone().set_health(request).await.map(drop)
    }
}

/// `tls` for a timed connection with `alpn`, naming the server as `uri`'s
/// host when no name was given.
fn timed_tls(tls: LinkTls, alpn: &[u8], uri: &http::Uri) -> Result<TimedTls, ClientError> {
    let mut config = tls.config;
    config.alpn_protocols = vec![alpn.to_vec()];
    let server_name = match tls.server_name {
        Some(name) => name,
        None => {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|source| {
                ClientError::Tls {
                    what: "server name",
                    source: source.into(),
                }
            })?
        }
    };
    Ok(TimedTls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_http_version_flag_turned_off_leaves_the_other_on() {
        let wire = |builder: ClientBuilder| builder.protocol(Protocol::Connect).wire();
        let builder = || ClientBuilder::new("127.0.0.1:1");
        assert_eq!(wire(builder()), "Connect over HTTP/2");
        assert_eq!(
            wire(builder().http1(true).http3(false)),
            "Connect over HTTP/1.1"
        );
        assert_eq!(
            wire(builder().http3(true).http1(false)),
            "Connect over HTTP/3"
        );
        assert_eq!(
            wire(builder().http1(true).http1(false)),
            "Connect over HTTP/2"
        );
        assert_eq!(
            wire(builder().http3(true).http3(false)),
            "Connect over HTTP/2"
        );
        assert_eq!(
            wire(builder().http1(true).http3(true)),
            "Connect over HTTP/3"
        );
    }
}
