//! Faults asked for by header, for every RPC of every served service and every
//! protocol (they reach this layer as gRPC): `x-echo-behavior` in this
//! server's vocabulary, `rpc-behavior` in that of gRPC's xDS interop test
//! servers (accepted verbatim), and the server's `--fault` default. Weighted
//! alternatives are drawn per request from one generator, seeded by
//! `--fault-seed` for reproducible runs. A call with neither header nor
//! default costs two header lookups.
//!
//! The grammar of both headers (and of `--fault`) is `config/behaviors.rs`'s.
//!
//! They act on the services under test only (echo.v1, the interop and
//! example services, any other), never on health, reflection or the admin
//! service, as gRPC's xDS test servers apply `rpc-behavior` in their
//! handlers: a flaky instance still looks healthy to its probes, and
//! grpcurl, which sends its `-H` headers with its reflection requests too,
//! can still read the descriptors. The same goes for `--fault` and the chaos
//! schedules' slow and error windows.
//!
//! Both act before the handler, so before any message control: a header's
//! error ends the call before the request is read, a header's delay comes
//! before the message's. A call with a behaviour header is answered with a
//! `hostname` header naming the instance, as the xDS test servers do, and
//! `x-echo-attempt`: the attempts before this one (as the client said, or as
//! counted by request id for `fail-attempts`).

use std::collections::HashMap;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderName, HeaderValue};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::behaviors::{Behaviors, RpcBehavior};
use crate::context::{Arrival, ConnectionAction, ResetStream, ResponseSize};
use crate::ops::chaos::Windows;
use crate::services::under_test;

/// This server's behaviour header (a `HeaderName`: looked up on every call,
/// without parsing a name each time).
const ECHO_BEHAVIOR: HeaderName = HeaderName::from_static("x-echo-behavior");
/// The xDS interop test servers' behaviour header.
const RPC_BEHAVIOR: HeaderName = HeaderName::from_static("rpc-behavior");
/// The response header saying how many attempts of the call came before.
const ATTEMPT: &str = "x-echo-attempt";
/// Calls whose attempts are counted by request id, at most; then counting
/// starts over (a bound on memory, whatever clients send).
const MAX_COUNTED_CALLS: usize = 10_000;
/// Generators kept for header seeds, at most; then they start over.
const MAX_SEEDS: usize = 1_000;

/// Where a call's error came from: its status message and the server's log
/// line name it, so that a failure is traced to what asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultSource {
    /// The server's `--fault`.
    Flag,
    /// The call's `x-echo-behavior` header.
    EchoHeader,
    /// The call's `rpc-behavior` header.
    RpcHeader,
    /// A chaos schedule's error window.
    ChaosWindow,
}

impl std::fmt::Display for FaultSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("--fault"),
            Self::EchoHeader => f.write_str(ECHO_BEHAVIOR.as_str()),
            Self::RpcHeader => f.write_str(RPC_BEHAVIOR.as_str()),
            Self::ChaosWindow => f.write_str("a chaos error window"),
        }
    }
}

/// What the layer does to one call.
#[derive(Debug, Default)]
struct Fault {
    delay: Duration,
    keep_open: bool,
    /// The error to answer with, and what asked for it.
    error: Option<(Status, FaultSource)>,
    connection: Option<ConnectionAction>,
    size: Option<u32>,
    /// Attempts of this call before this one.
    attempt: u32,
}

/// The server's fault settings, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct BehaviorLayer {
    inner: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    instance: String,
    /// The largest `size=` a call may ask for.
    max_payload_size: u32,
    hostname: HeaderValue,
    defaults: Option<Behaviors>,
    /// Draws for weighted alternatives, in request order.
    rng: Mutex<fastrand::Rng>,
    /// Draws for the calls whose header names a seed, by seed.
    seeded: Mutex<HashMap<u64, fastrand::Rng>>,
    /// Attempts seen per request id, for clients that retry without
    /// `grpc-previous-rpc-attempts`.
    attempts: Mutex<HashMap<String, u32>>,
    /// The chaos schedules' windows, when there are schedules.
    windows: Option<Arc<Windows>>,
}

impl BehaviorLayer {
    /// For the instance named `instance`, with `defaults` for calls without an
    /// `x-echo-behavior` header, drawing from a generator seeded by `seed`,
    /// and the chaos schedules' `windows` for every call.
    pub(crate) fn new(
        instance: &str,
        max_payload_size: u32,
        defaults: Option<Behaviors>,
        seed: Option<u64>,
        windows: Option<Arc<Windows>>,
    ) -> Self {
        Self {
            inner: Arc::new(Settings {
                instance: instance.to_owned(),
                max_payload_size,
                hostname: HeaderValue::from_str(instance)
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                defaults,
                rng: Mutex::new(seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)),
                seeded: Mutex::new(HashMap::new()),
                attempts: Mutex::new(HashMap::new()),
                windows,
            }),
        }
    }
}

#[cfg(feature = "fuzzing")]
impl BehaviorLayer {
    /// Whether `headers` ask for a fault, or the status of a malformed behaviour header.
    pub(crate) fn fault_of(&self, headers: &http::HeaderMap) -> Result<bool, Status> {
        self.inner.fault(headers).map(|fault| fault.is_some())
    }
}

impl Settings {
    /// The fault `headers` ask for; `None` when they ask for none.
    fn fault(&self, headers: &http::HeaderMap) -> Result<Option<Fault>, Status> {
        let echo = headers.get(&ECHO_BEHAVIOR);
        let rpc = headers.get(&RPC_BEHAVIOR);
        let window = self.windows.as_deref().and_then(Windows::open);
        if echo.is_none() && rpc.is_none() && self.defaults.is_none() && window.is_none() {
            return Ok(None);
        }
        fn text<'a>(value: &'a HeaderValue, name: &HeaderName) -> Result<&'a str, Status> {
            value
                .to_str()
                .map_err(|_| Status::invalid_argument(format!("{name} is not text")))
        }
        let mut fault = Fault {
            attempt: previous_attempts(headers).unwrap_or(0),
            ..Fault::default()
        };
        if let Some(rpc) = rpc {
            let rpc = RpcBehavior::parse(text(rpc, &RPC_BEHAVIOR)?, &self.instance)
                .map_err(|err| Status::invalid_argument(format!("{RPC_BEHAVIOR}: {err}")))?;
            if rpc.succeed_on_attempt == Some(fault.attempt) {
                return Ok(Some(fault));
            }
            fault.delay = fault.delay.saturating_add(rpc.sleep);
            fault.keep_open = rpc.keep_open;
            let source = FaultSource::RpcHeader;
            fault.error = rpc
                .error
                .map(|code| (Status::new(code, format!("{source} asked for it")), source));
        }
        let parsed;
        let (behaviors, source) = match echo {
            Some(echo) => {
                parsed = text(echo, &ECHO_BEHAVIOR)?
                    .parse::<Behaviors>()
                    .map_err(|err| Status::invalid_argument(format!("{ECHO_BEHAVIOR}: {err}")))?;
                (Some(&parsed), FaultSource::EchoHeader)
            }
            None => (self.defaults.as_ref(), FaultSource::Flag),
        };
        if let Some(behaviors) = behaviors.filter(|b| b.apply_on(&self.instance)) {
            let [delay_roll, error_roll, connection_roll, size_roll] = if behaviors.is_random() {
                self.draw(behaviors.seed)
            } else {
                [0.0; 4]
            };
            fault.size = behaviors.size.as_ref().and_then(|s| s.pick(size_roll));
            if let Some(size) = fault.size.filter(|&size| size > self.max_payload_size) {
                return Err(Status::invalid_argument(format!(
                    "{ECHO_BEHAVIOR}: size={size} exceeds the server maximum of {}",
                    self.max_payload_size
                )));
            }
            fault.connection = behaviors
                .connection
                .as_ref()
                .and_then(|c| c.pick(connection_roll));
            if let Some(delay) = behaviors.delay.as_ref().and_then(|d| d.pick(delay_roll)) {
                fault.delay = fault.delay.saturating_add(delay);
            }
            // The call's own header comes before the server's --fault.
            let headers_failed = source == FaultSource::Flag && fault.error.is_some();
            let error = |code| {
                let message = behaviors
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{source} asked for it"));
                (Status::new(code, message), source)
            };
            match behaviors.fail_attempts {
                // Only the first attempts fail, with the error asked for.
                Some(failing) => {
                    // Counted by request id only here, where it matters: a
                    // lock and a map entry, not for every call under --fault.
                    if previous_attempts(headers).is_none() {
                        fault.attempt = self.attempts_by_request_id(headers);
                    }
                    if fault.attempt < failing && !headers_failed {
                        let code = behaviors
                            .error
                            .as_ref()
                            .and_then(|e| e.alternatives.first())
                            .map_or(Code::Unavailable, |&(code, _)| code);
                        fault.error = Some(error(code));
                    }
                }
                None => {
                    if let Some(code) = behaviors.error.as_ref().and_then(|e| e.pick(error_roll))
                        && !headers_failed
                    {
                        fault.error = Some(error(code));
                    }
                }
            }
        }
        // A chaos window adds its delay, and fails calls the headers let through.
        if let Some((delay, error)) = window {
            fault.delay = fault.delay.saturating_add(delay);
            if fault.error.is_none() {
                fault.error = error.map(|code| {
                    let message = format!("chaos: an error window on {}", self.instance);
                    (Status::new(code, message), FaultSource::ChaosWindow)
                });
            }
        }
        Ok(Some(fault))
    }

    /// Four draws, for the delay, the error, the connection action and the
    /// size: from the generator of `seed` if the header names one, else the
    /// server's.
    fn draw(&self, seed: Option<u64>) -> [f64; 4] {
        let four = |rng: &mut fastrand::Rng| [rng.f64(), rng.f64(), rng.f64(), rng.f64()];
        match seed {
            Some(seed) => {
                let mut seeded = self.seeded.lock().unwrap_or_else(|p| p.into_inner());
                if seeded.len() >= MAX_SEEDS && !seeded.contains_key(&seed) {
                    seeded.clear();
                }
                four(
                    seeded
                        .entry(seed)
                        .or_insert_with(|| fastrand::Rng::with_seed(seed)),
                )
            }
            None => four(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Attempts of this call before this one, as counted by its request id
    /// (none: a first attempt).
    fn attempts_by_request_id(&self, headers: &http::HeaderMap) -> u32 {
        let Some(id) = headers
            .get(echo_wire::headers::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
        else {
            return 0;
        };
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() >= MAX_COUNTED_CALLS && !attempts.contains_key(id) {
            attempts.clear();
        }
        let seen = attempts.entry(id.to_owned()).or_insert(0);
        *seen += 1;
        *seen - 1
    }
}

/// Attempts of this call before this one, as the client says
/// (`grpc-previous-rpc-attempts`).
fn previous_attempts(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get(echo_wire::headers::PREVIOUS_RPC_ATTEMPTS)
        .and_then(|value| value.to_str().ok()?.parse::<u32>().ok())
}

impl<S> Layer<S> for BehaviorLayer {
    type Service = BehaviorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BehaviorService {
            inner,
            settings: Arc::clone(&self.inner),
        }
    }
}

/// The service made by [`BehaviorLayer`].
#[derive(Debug, Clone)]
pub(crate) struct BehaviorService<S> {
    inner: S,
    settings: Arc<Settings>,
}

type Faulted<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for BehaviorService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Either<Ready<Result<S::Response, S::Error>>, Faulted<S::Response, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if !under_test(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let fault = match self.settings.fault(request.headers()) {
            Ok(None) => return Either::Left(self.inner.call(request)),
            Ok(Some(fault)) => fault,
            Err(status) => return Either::Right(Either::Left(ready(Ok(status.into_http())))),
        };
        let hostname = self.settings.hostname.clone();
        // The service polled ready is the one that takes the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Either::Right(Box::pin(async move {
            if !fault.delay.is_zero() {
                tokio::time::sleep(fault.delay).await;
            }
            if fault.keep_open {
                // Ended by the deadline layer outside, or by the caller leaving.
                std::future::pending::<()>().await;
            }
            let control = fault
                .connection
                .and_then(|_| request.extensions().get::<Arrival>())
                .map(|arrival| arrival.control.clone());
            if let (Some(ConnectionAction::Close), Some(control)) = (fault.connection, &control) {
                // Unanswered, as the message control closes.
                control.close();
                std::future::pending::<()>().await;
            }
            if let Some(size) = fault.size {
                request.extensions_mut().insert(ResponseSize(size));
            }
            let mut response = match fault.error {
                Some((status, source)) => {
                    tracing::debug!(
                        %source,
                        code = ?status.code(),
                        path = request.uri().path(),
                        "failing the call as {source} asks"
                    );
                    status.into_http()
                }
                None => inner.call(request).await?,
            };
            if let (Some(ConnectionAction::GoAway), Some(control)) = (fault.connection, &control) {
                control.go_away();
            }
            if let Some(ConnectionAction::ResetStream(code)) = fault.connection {
                response.extensions_mut().insert(ResetStream(code));
            }
            let headers = response.headers_mut();
            headers.insert(echo_wire::headers::HOSTNAME, hostname);
            headers.insert(ATTEMPT, HeaderValue::from(fault.attempt));
            Ok(response)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `behavior` fuzz target: a sleep too long for a
    /// `Duration` panicked the call's task instead of answering.
    #[test]
    fn sleeps_too_long_for_a_duration_are_refused_and_sums_are_capped() {
        let layer = BehaviorLayer::new("pod", u32::MAX, None, Some(1), None);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            RPC_BEHAVIOR,
            HeaderValue::from_static("sleep-1e19,sleep-1e19"),
        );
        headers.insert(
            ECHO_BEHAVIOR,
            HeaderValue::from_static("delay=500000000years"),
        );
        let fault = layer.inner.fault(&headers).unwrap().unwrap();
        assert_eq!(fault.delay, Duration::MAX);
        headers.insert(RPC_BEHAVIOR, HeaderValue::from_static("sleep-1e300"));
        let status = layer.inner.fault(&headers).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    /// A header's seed draws from its own generator: the same outcomes in
    /// the same order, whatever other calls the server draws for between them.
    #[test]
    fn a_header_seed_repeats_its_draws_whatever_else_is_drawn() {
        let header = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(ECHO_BEHAVIOR, HeaderValue::from_static(value));
            headers
        };
        let seeded = header("error=UNAVAILABLE:50%; seed=9");
        let unseeded = header("error=UNAVAILABLE:50%");
        let outcomes = |layer: &BehaviorLayer, interleave: bool| {
            (0..100)
                .map(|_| {
                    if interleave {
                        layer.inner.fault(&unseeded).unwrap();
                    }
                    layer.inner.fault(&seeded).unwrap().unwrap().error.is_some()
                })
                .collect::<Vec<bool>>()
        };
        let alone = outcomes(&BehaviorLayer::new("a", u32::MAX, None, None, None), false);
        let busy = outcomes(
            &BehaviorLayer::new("b", u32::MAX, None, Some(5), None),
            true,
        );
        assert_eq!(alone, busy);
        let failed = alone.iter().filter(|&&failed| failed).count();
        assert!((20..=80).contains(&failed), "{failed} of 100 failed at 50%");
    }

    #[test]
    fn a_seed_makes_the_draws_repeat() {
        let headers = {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                ECHO_BEHAVIOR,
                HeaderValue::from_static("error=UNAVAILABLE:30%"),
            );
            headers
        };
        let outcomes = |seed| {
            let layer = BehaviorLayer::new("pod", u32::MAX, None, Some(seed), None);
            (0..200)
                .map(|_| {
                    layer
                        .inner
                        .fault(&headers)
                        .unwrap()
                        .unwrap()
                        .error
                        .is_some()
                })
                .collect::<Vec<bool>>()
        };
        assert_eq!(outcomes(7), outcomes(7));
        assert_ne!(outcomes(7), outcomes(8));
    }
}
