//! Faults asked for by header, for every RPC of every served service and every
//! protocol (they reach this layer as gRPC): `x-echo-behavior` in this
//! server's vocabulary, `rpc-behavior` in that of gRPC's xDS interop test
//! servers (accepted verbatim), and the server's `--fault` default. Weighted
//! alternatives are drawn per request from one generator, seeded by
//! `--fault-seed` for reproducible runs. A call with neither header nor
//! default costs two header lookups.
//!
//! `x-echo-behavior`: behaviours separated by `;`, each `NAME=ALTERNATIVES`,
//! alternatives separated by `,`, each `VALUE` or `VALUE:P%` (the chance of
//! that value; the rest of the time the behaviour does nothing):
//! `delay=DURATION`, `error=CODE` (a name such as `UNAVAILABLE`, or a
//! number), `message=TEXT` (the error's message), `size=BYTES` (`4096`,
//! `64KiB`, `1MiB`: the size of each answer's payload, in place of the
//! message's own `response_size`, where the method answers with a payload:
//! echo.v1's Echo, ServerStream and BidiStream, TestService's UnaryCall and
//! output streams; at most `--max-payload-size`), `fail-attempts=N` (the
//! first N attempts of a call fail, with `error`'s code or UNAVAILABLE;
//! attempts counted by `grpc-previous-rpc-attempts`, or for clients that retry
//! without it by their `x-request-id`), `connection=ACTION` (`goaway`: GOAWAY
//! once the call is answered; `reset` or `reset-CODE`: the answer ends with
//! RST_STREAM, CANCEL by default, instead of its trailers; `close`: the
//! connection closes at once, unanswered), `seed=N` (draws come from a
//! generator of that seed, in the order its calls arrive: one client's run
//! repeats), `on=NAME,...` / `not-on=NAME,...` (the header applies on those
//! instances only / on all but those). E.g.
//! `delay=200ms:5%,2s:0.5%; error=UNAVAILABLE:10%,DEADLINE_EXCEEDED:1%`.
//!
//! `rpc-behavior`: values separated by `,`: `sleep-SECONDS`, `keep-open`
//! (no answer until the caller goes away or the deadline passes),
//! `error-code-CODE`, `succeed-on-retry-attempt-N` (no behaviour at all when
//! `grpc-previous-rpc-attempts` is N), each optionally prefixed by
//! `hostname=NAME ` to apply on the instance of that name only.
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

use echo_wire::h2_frames::CANCEL;
use futures_util::future::Either;
use http::{HeaderName, HeaderValue};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::chaos::Windows;
use crate::conn::{Arrival, ResetStream};
use crate::controls::ConnectionAction;

/// This server's behaviour header (a `HeaderName`: looked up on every call,
/// without parsing a name each time).
const ECHO_BEHAVIOR: HeaderName = HeaderName::from_static("x-echo-behavior");
/// The xDS interop test servers' behaviour header.
const RPC_BEHAVIOR: HeaderName = HeaderName::from_static("rpc-behavior");
/// The response header naming the instance.
const HOSTNAME: &str = "hostname";
/// The response header saying how many attempts of the call came before.
const ATTEMPT: &str = "x-echo-attempt";
/// Calls whose attempts are counted by request id, at most; then counting
/// starts over (a bound on memory, whatever clients send).
const MAX_COUNTED_CALLS: usize = 10_000;
/// Generators kept for header seeds, at most; then they start over.
const MAX_SEEDS: usize = 1_000;

/// One behaviour's alternatives with their chances (0 to 1); the remaining
/// chance is "nothing".
#[derive(Debug, Clone, PartialEq)]
struct Weighted<T> {
    alternatives: Vec<(T, f64)>,
}

impl<T: Clone> Weighted<T> {
    /// The alternative drawn with `roll` (uniform in 0..1).
    fn pick(&self, roll: f64) -> Option<T> {
        let mut below = 0.0;
        for (value, chance) in &self.alternatives {
            below += chance;
            if roll < below {
                return Some(value.clone());
            }
        }
        None
    }

    /// Whether a draw is needed (some alternative is not certain).
    fn is_random(&self) -> bool {
        self.alternatives.iter().any(|&(_, chance)| chance < 1.0)
    }
}

/// The behaviours of one `x-echo-behavior` (or `--fault`) value.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Behaviors {
    delay: Option<Weighted<Duration>>,
    error: Option<Weighted<Code>>,
    message: Option<String>,
    size: Option<Weighted<u32>>,
    fail_attempts: Option<u32>,
    connection: Option<Weighted<ConnectionAction>>,
    seed: Option<u64>,
    on: Option<Vec<String>>,
    not_on: Option<Vec<String>>,
}

impl Behaviors {
    /// Parses `x-echo-behavior`'s syntax (see the module docs).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut behaviors = Self::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not NAME=VALUE"))?;
            match name.trim() {
                "delay" => behaviors.delay = Some(weighted(value, parse_duration)?),
                "error" => behaviors.error = Some(weighted(value, parse_code)?),
                "message" => behaviors.message = Some(value.trim().to_owned()),
                "size" => behaviors.size = Some(weighted(value, parse_size)?),
                "fail-attempts" => {
                    behaviors.fail_attempts = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|_| format!("`{value}` is not a number of attempts"))?,
                    );
                }
                "connection" => behaviors.connection = Some(weighted(value, parse_action)?),
                "seed" => {
                    behaviors.seed = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|_| format!("`{value}` is not a seed (a number)"))?,
                    );
                }
                "on" => behaviors.on = Some(names(value)),
                "not-on" => behaviors.not_on = Some(names(value)),
                other => {
                    return Err(format!(
                        "unknown behaviour `{other}` (known: delay, error, message, size, \
                         fail-attempts, connection, seed, on, not-on)"
                    ));
                }
            }
        }
        Ok(behaviors)
    }

    fn is_random(&self) -> bool {
        self.delay.as_ref().is_some_and(Weighted::is_random)
            || self.error.as_ref().is_some_and(Weighted::is_random)
            || self.connection.as_ref().is_some_and(Weighted::is_random)
            || self.size.as_ref().is_some_and(Weighted::is_random)
    }

    /// Whether they apply on the instance named `instance`.
    fn apply_on(&self, instance: &str) -> bool {
        let named = |names: &Option<Vec<String>>| {
            names
                .as_ref()
                .map(|names| names.iter().any(|name| name == instance))
        };
        named(&self.on).unwrap_or(true) && !named(&self.not_on).unwrap_or(false)
    }
}

fn names(text: &str) -> Vec<String> {
    text.split(',').map(|name| name.trim().to_owned()).collect()
}

fn weighted<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Weighted<T>, String> {
    let mut alternatives = Vec::new();
    for alternative in text.split(',').map(str::trim) {
        let (value, chance) = match alternative.rsplit_once(':') {
            Some((value, percent)) if percent.trim_end().ends_with('%') => {
                let percent: f64 = percent
                    .trim()
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| format!("`{percent}` is not a percentage"))?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(format!("`{percent}%` is not between 0% and 100%"));
                }
                (value, percent / 100.0)
            }
            _ => (alternative, 1.0),
        };
        alternatives.push((parse(value.trim())?, chance));
    }
    let total: f64 = alternatives.iter().map(|&(_, chance)| chance).sum();
    if total > 1.0 + 1e-9 {
        return Err(format!("the chances of `{text}` add up to more than 100%"));
    }
    Ok(Weighted { alternatives })
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("`{text}`: {err}"))
}

/// A payload size: bytes, or `KiB` / `MiB`.
fn parse_size(text: &str) -> Result<u32, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let unit: u32 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(format!("`{text}` is not a size (bytes, KiB or MiB)")),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a size (bytes, KiB or MiB)"))
}

/// A connection action: `goaway`, `close`, `reset` or `reset-CODE`.
fn parse_action(text: &str) -> Result<ConnectionAction, String> {
    match text {
        "goaway" => Ok(ConnectionAction::GoAway),
        "close" => Ok(ConnectionAction::Close),
        // Without a code: CANCEL.
        "reset" => Ok(ConnectionAction::ResetStream(CANCEL)),
        _ => text
            .strip_prefix("reset-")
            .and_then(|code| code.parse().ok())
            .map(ConnectionAction::ResetStream)
            .ok_or_else(|| {
                format!("`{text}` is not a connection action (goaway, close, reset, reset-CODE)")
            }),
    }
}

/// A status code by name (`UNAVAILABLE`, `unavailable`) or number.
pub(crate) fn parse_code(text: &str) -> Result<Code, String> {
    if let Ok(number) = text.parse::<i32>() {
        return match number {
            1..=16 => Ok(Code::from(number)),
            _ => Err(format!("`{text}` is not an error status code (1 to 16)")),
        };
    }
    // The contract's StatusCode names each code: STATUS_CODE_UNAVAILABLE.
    grpc_echo::echo::v1::StatusCode::from_str_name(&format!(
        "STATUS_CODE_{}",
        text.to_ascii_uppercase()
    ))
    .map(|code| Code::from(code as i32))
    .filter(|code| *code != Code::Ok)
    .ok_or_else(|| format!("`{text}` is not a status code name"))
}

/// What `rpc-behavior` asks of this instance.
#[derive(Debug, Clone, PartialEq, Default)]
struct RpcBehavior {
    sleep: Duration,
    keep_open: bool,
    error: Option<Code>,
    succeed_on_attempt: Option<u32>,
}

impl RpcBehavior {
    /// Parses `rpc-behavior` as the instance named `instance`.
    fn parse(text: &str, instance: &str) -> Result<Self, String> {
        let mut behavior = Self::default();
        for value in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let value = match value.strip_prefix("hostname=") {
                Some(rest) => match rest.split_once(' ') {
                    Some((host, value)) if host == instance => value.trim(),
                    Some(_) => continue,
                    None => return Err(format!("`{value}`: hostname=NAME is followed by a value")),
                },
                None => value,
            };
            let number = |rest: &str| {
                rest.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| format!("`{value}` does not end in a number"))
            };
            if let Some(seconds) = value.strip_prefix("sleep-") {
                let sleep = Duration::try_from_secs_f64(number(seconds)?)
                    .map_err(|_| format!("`{value}` is longer than any deadline"))?;
                // Bounded by the deadline and --max-call-time anyway.
                behavior.sleep = behavior.sleep.saturating_add(sleep);
            } else if value == "keep-open" {
                behavior.keep_open = true;
            } else if let Some(code) = value.strip_prefix("error-code-") {
                behavior.error = Some(parse_code(code)?);
            } else if let Some(attempt) = value.strip_prefix("succeed-on-retry-attempt-") {
                behavior.succeed_on_attempt = Some(number(attempt)? as u32);
            } else {
                return Err(format!("unknown rpc-behavior value `{value}`"));
            }
        }
        Ok(behavior)
    }
}

/// What the layer does to one call.
#[derive(Debug, Default)]
struct Fault {
    delay: Duration,
    keep_open: bool,
    error: Option<Status>,
    connection: Option<ConnectionAction>,
    size: Option<u32>,
    /// Attempts of this call before this one.
    attempt: u32,
}

/// Request extension: the payload size each answer of the call should have
/// (`size=` of a behaviour header), in place of the message's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseSize(pub(crate) u32);

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
            fault.error = rpc
                .error
                .map(|code| Status::new(code, format!("{RPC_BEHAVIOR} asked for it")));
        }
        let parsed;
        let behaviors = match echo {
            Some(echo) => {
                parsed = Behaviors::parse(text(echo, &ECHO_BEHAVIOR)?)
                    .map_err(|err| Status::invalid_argument(format!("{ECHO_BEHAVIOR}: {err}")))?;
                Some(&parsed)
            }
            None => self.defaults.as_ref(),
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
            let message = || {
                behaviors
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{ECHO_BEHAVIOR} asked for it"))
            };
            match behaviors.fail_attempts {
                // Only the first attempts fail, with the error asked for.
                Some(failing) => {
                    // Counted by request id only here, where it matters: a
                    // lock and a map entry, not for every call under --fault.
                    if previous_attempts(headers).is_none() {
                        fault.attempt = self.attempts_by_request_id(headers);
                    }
                    if fault.attempt < failing {
                        let code = behaviors
                            .error
                            .as_ref()
                            .and_then(|e| e.alternatives.first())
                            .map_or(Code::Unavailable, |&(code, _)| code);
                        fault.error = Some(Status::new(code, message()));
                    }
                }
                None => {
                    if let Some(code) = behaviors.error.as_ref().and_then(|e| e.pick(error_roll)) {
                        fault.error = Some(Status::new(code, message()));
                    }
                }
            }
        }
        // A chaos window adds its delay, and fails calls the headers let through.
        if let Some((delay, error)) = window {
            fault.delay = fault.delay.saturating_add(delay);
            if fault.error.is_none() {
                fault.error = error.map(|code| {
                    Status::new(code, format!("chaos: an error window on {}", self.instance))
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
            .get(super::trace::REQUEST_ID)
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
                Some(status) => status.into_http(),
                None => inner.call(request).await?,
            };
            if let (Some(ConnectionAction::GoAway), Some(control)) = (fault.connection, &control) {
                control.go_away();
            }
            if let Some(ConnectionAction::ResetStream(code)) = fault.connection {
                response.extensions_mut().insert(ResetStream(code));
            }
            let headers = response.headers_mut();
            headers.insert(HOSTNAME, hostname);
            headers.insert(ATTEMPT, HeaderValue::from(fault.attempt));
            Ok(response)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_behaviors_parse_with_their_chances() {
        let behaviors = Behaviors::parse(
            "delay=200ms:5%,2s:0.5%; error=UNAVAILABLE:10%,deadline_exceeded:1%; message=try later",
        )
        .unwrap();
        let delay = behaviors.delay.as_ref().unwrap();
        assert_eq!(delay.pick(0.01), Some(Duration::from_millis(200)));
        assert_eq!(delay.pick(0.052), Some(Duration::from_secs(2)));
        assert_eq!(delay.pick(0.2), None);
        let error = behaviors.error.as_ref().unwrap();
        assert_eq!(error.pick(0.05), Some(Code::Unavailable));
        assert_eq!(error.pick(0.105), Some(Code::DeadlineExceeded));
        assert_eq!(error.pick(0.5), None);
        assert_eq!(behaviors.message.as_deref(), Some("try later"));
        assert!(behaviors.is_random());
        assert!(!Behaviors::parse("delay=1s; error=14").unwrap().is_random());

        for (bad, why) in [
            ("delay", "is not NAME=VALUE"),
            ("colour=red", "unknown behaviour"),
            ("error=NOPE", "not a status code name"),
            ("error=0", "not an error status code"),
            ("delay=1s:60%,2s:50%", "more than 100%"),
            ("delay=1s:x%", "not a percentage"),
            ("delay=forever", "`forever`"),
        ] {
            let err = Behaviors::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn rpc_behaviors_parse_as_the_xds_test_servers_read_them() {
        let parsed = RpcBehavior::parse(
            "sleep-1, error-code-14, hostname=pod-b keep-open, succeed-on-retry-attempt-2",
            "pod-a",
        )
        .unwrap();
        assert_eq!(
            parsed,
            RpcBehavior {
                sleep: Duration::from_secs(1),
                keep_open: false,
                error: Some(Code::Unavailable),
                succeed_on_attempt: Some(2),
            }
        );
        let on_b = RpcBehavior::parse("hostname=pod-b keep-open", "pod-b").unwrap();
        assert!(on_b.keep_open);
        assert!(RpcBehavior::parse("explode", "pod-a").is_err());
        assert!(RpcBehavior::parse("sleep-x", "pod-a").is_err());
    }

    /// Found by the `behavior` fuzz target: a sleep too long for a
    /// `Duration` panicked the call's task instead of answering.
    #[test]
    fn sleeps_too_long_for_a_duration_are_refused_and_sums_are_capped() {
        let err = RpcBehavior::parse("sleep-1e300", "pod").unwrap_err();
        assert!(err.contains("longer than any deadline"), "{err}");
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

    #[test]
    fn connection_actions_and_seeds_parse() {
        let behaviors =
            Behaviors::parse("connection=goaway:10%,reset-7:5%,close:1%; seed=42").unwrap();
        let connection = behaviors.connection.as_ref().unwrap();
        assert_eq!(connection.pick(0.05), Some(ConnectionAction::GoAway));
        assert_eq!(
            connection.pick(0.12),
            Some(ConnectionAction::ResetStream(7))
        );
        assert_eq!(connection.pick(0.155), Some(ConnectionAction::Close));
        assert_eq!(connection.pick(0.2), None);
        assert_eq!(behaviors.seed, Some(42));
        assert_eq!(
            Behaviors::parse("connection=reset").unwrap().connection,
            Some(Weighted {
                alternatives: vec![(ConnectionAction::ResetStream(CANCEL), 1.0)]
            })
        );
        assert!(Behaviors::parse("connection=explode").is_err());
        assert!(Behaviors::parse("seed=-1").is_err());
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
