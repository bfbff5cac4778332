//! The grammar of faults asked for by header: `x-echo-behavior` (this
//! server's vocabulary, also the syntax of `--fault`) and `rpc-behavior`
//! (that of gRPC's xDS interop test servers), parsed into typed values. The
//! behaviour layer (`layers/behavior.rs`) parses each call's headers with it,
//! and the config parses `--fault` with it once.
//!
//! `x-echo-behavior`: behaviours separated by `;`, each `NAME=ALTERNATIVES`,
//! alternatives separated by `,`, each `VALUE` or `VALUE:P%` (the chance of
//! that value; the rest of the time the behaviour does nothing):
//! `delay=DURATION`, `error=CODE` (a name such as `UNAVAILABLE`, or a
//! number), `message=TEXT` (the error's message), `size=BYTES` (`4096`,
//! `64KiB`, `1MiB`: the size of each answer's payload), `fail-attempts=N`
//! (the first N attempts of a call fail), `connection=ACTION` (`goaway`,
//! `reset`, `reset-CODE`, `close`), `seed=N` (draws from a generator of that
//! seed), `on=NAME,...` / `not-on=NAME,...` (the instances it applies on /
//! all but those). E.g. `delay=200ms:5%,2s:0.5%; error=UNAVAILABLE:10%`.
//!
//! `rpc-behavior`: values separated by `,`: `sleep-SECONDS`, `keep-open`,
//! `error-code-CODE`, `succeed-on-retry-attempt-N`, each optionally prefixed
//! by `hostname=NAME ` to apply on the instance of that name only.

use std::str::FromStr;
use std::time::Duration;

use echo_wire::h2_frames::CANCEL;
use tonic::Code;

use crate::context::ConnectionAction;

/// Why a behaviour (`x-echo-behavior`, `--fault` or `rpc-behavior`) does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BehaviorError {
    /// A part is not `NAME=VALUE`.
    #[error("`{0}` is not NAME=VALUE")]
    NotNameValue(String),
    /// The name is none of the known behaviours.
    #[error(
        "unknown behaviour `{0}` (known: delay, error, message, size, fail-attempts, \
         connection, seed, on, not-on)"
    )]
    UnknownBehavior(String),
    /// A chance is not a percentage.
    #[error("`{0}` is not a percentage")]
    NotPercent(String),
    /// A chance is outside 0% to 100%.
    #[error("`{0}%` is not between 0% and 100%")]
    PercentOutOfRange(f64),
    /// The alternatives' chances add up to more than certainty.
    #[error("the chances of `{0}` add up to more than 100%")]
    ChancesOver100(String),
    /// A duration does not parse.
    #[error("`{text}`: {reason}")]
    Duration {
        /// The text.
        text: String,
        /// humantime's reason.
        reason: String,
    },
    /// A code does not name a status code.
    #[error(transparent)]
    Code(#[from] echo_wire::codes::UnknownCode),
    /// A code names OK, which is no error.
    #[error("`{0}` is not an error status code (1 to 16)")]
    NotAnError(String),
    /// A size is not bytes, KiB or MiB.
    #[error("`{0}` is not a size (bytes, KiB or MiB)")]
    Size(String),
    /// A connection action is none of the known ones.
    #[error("`{0}` is not a connection action (goaway, close, reset, reset-CODE)")]
    Action(String),
    /// A count or seed is not a whole number.
    #[error("`{text}` is not {what}")]
    Number {
        /// The text.
        text: String,
        /// What it should be.
        what: &'static str,
    },
    /// `hostname=NAME` with nothing after it.
    #[error("`{0}`: hostname=NAME is followed by a value")]
    HostnameAlone(String),
    /// An `rpc-behavior` value is none of the known ones.
    #[error("unknown rpc-behavior value `{0}`")]
    UnknownRpcBehavior(String),
    /// A sleep longer than any deadline.
    #[error("`{0}` is longer than any deadline")]
    SleepTooLong(String),
}

/// One behaviour's alternatives with their chances (0 to 1); the remaining
/// chance is "nothing".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Weighted<T> {
    pub(crate) alternatives: Vec<(T, f64)>,
}

impl<T: Clone> Weighted<T> {
    /// The alternative drawn with `roll` (uniform in 0..1).
    pub(crate) fn pick(&self, roll: f64) -> Option<T> {
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
pub struct Behaviors {
    pub(crate) delay: Option<Weighted<Duration>>,
    pub(crate) error: Option<Weighted<Code>>,
    pub(crate) message: Option<String>,
    pub(crate) size: Option<Weighted<u32>>,
    pub(crate) fail_attempts: Option<u32>,
    pub(crate) connection: Option<Weighted<ConnectionAction>>,
    pub(crate) seed: Option<u64>,
    on: Option<Vec<String>>,
    not_on: Option<Vec<String>>,
}

impl FromStr for Behaviors {
    type Err = BehaviorError;

    /// Parses `x-echo-behavior`'s syntax (see the module docs).
    fn from_str(text: &str) -> Result<Self, BehaviorError> {
        let mut behaviors = Self::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| BehaviorError::NotNameValue(part.to_owned()))?;
            match name.trim() {
                "delay" => behaviors.delay = Some(weighted(value, parse_duration)?),
                "error" => behaviors.error = Some(weighted(value, parse_error_code)?),
                "message" => behaviors.message = Some(value.trim().to_owned()),
                "size" => behaviors.size = Some(weighted(value, parse_size)?),
                "fail-attempts" => {
                    behaviors.fail_attempts = Some(number(value, "a number of attempts")?);
                }
                "connection" => behaviors.connection = Some(weighted(value, parse_action)?),
                "seed" => behaviors.seed = Some(number(value, "a seed (a number)")?),
                "on" => behaviors.on = Some(names(value)),
                "not-on" => behaviors.not_on = Some(names(value)),
                other => return Err(BehaviorError::UnknownBehavior(other.to_owned())),
            }
        }
        Ok(behaviors)
    }
}

impl Behaviors {
    /// Whether any behaviour needs a draw.
    pub(crate) fn is_random(&self) -> bool {
        self.delay.as_ref().is_some_and(Weighted::is_random)
            || self.error.as_ref().is_some_and(Weighted::is_random)
            || self.connection.as_ref().is_some_and(Weighted::is_random)
            || self.size.as_ref().is_some_and(Weighted::is_random)
    }

    /// Whether they apply on the instance named `instance`.
    pub(crate) fn apply_on(&self, instance: &str) -> bool {
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

fn number<T: FromStr>(text: &str, what: &'static str) -> Result<T, BehaviorError> {
    text.trim().parse().map_err(|_| BehaviorError::Number {
        text: text.trim().to_owned(),
        what,
    })
}

fn weighted<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, BehaviorError>,
) -> Result<Weighted<T>, BehaviorError> {
    let mut alternatives = Vec::new();
    for alternative in text.split(',').map(str::trim) {
        let (value, chance) = match alternative.rsplit_once(':') {
            Some((value, percent)) if percent.trim_end().ends_with('%') => {
                let percent: f64 = percent
                    .trim()
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| BehaviorError::NotPercent(percent.to_owned()))?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(BehaviorError::PercentOutOfRange(percent));
                }
                (value, percent / 100.0)
            }
            _ => (alternative, 1.0),
        };
        alternatives.push((parse(value.trim())?, chance));
    }
    let total: f64 = alternatives.iter().map(|&(_, chance)| chance).sum();
    if total > 1.0 + 1e-9 {
        return Err(BehaviorError::ChancesOver100(text.to_owned()));
    }
    Ok(Weighted { alternatives })
}

/// A duration in humantime's syntax (`200ms`, `1m 30s`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, BehaviorError> {
    humantime::parse_duration(text).map_err(|err| BehaviorError::Duration {
        text: text.to_owned(),
        reason: err.to_string(),
    })
}

/// A status code that is an error (not OK), by name or number.
pub(crate) fn parse_error_code(text: &str) -> Result<Code, BehaviorError> {
    match echo_wire::codes::parse(text)? {
        0 => Err(BehaviorError::NotAnError(text.to_owned())),
        code => Ok(Code::from(code)),
    }
}

/// A payload size: bytes, or `KiB` / `MiB`.
fn parse_size(text: &str) -> Result<u32, BehaviorError> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let unit: u32 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(BehaviorError::Size(text.to_owned())),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| BehaviorError::Size(text.to_owned()))
}

/// A connection action: `goaway`, `close`, `reset` or `reset-CODE`.
fn parse_action(text: &str) -> Result<ConnectionAction, BehaviorError> {
    match text {
        "goaway" => Ok(ConnectionAction::GoAway),
        "close" => Ok(ConnectionAction::Close),
        // Without a code: CANCEL.
        "reset" => Ok(ConnectionAction::ResetStream(CANCEL)),
        _ => text
            .strip_prefix("reset-")
            .and_then(|code| code.parse().ok())
            .map(ConnectionAction::ResetStream)
            .ok_or_else(|| BehaviorError::Action(text.to_owned())),
    }
}

/// What `rpc-behavior` asks of one instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RpcBehavior {
    pub(crate) sleep: Duration,
    pub(crate) keep_open: bool,
    pub(crate) error: Option<Code>,
    pub(crate) succeed_on_attempt: Option<u32>,
}

impl RpcBehavior {
    /// Parses `rpc-behavior` as the instance named `instance` reads it.
    pub(crate) fn parse(text: &str, instance: &str) -> Result<Self, BehaviorError> {
        let mut behavior = Self::default();
        for value in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let value = match value.strip_prefix("hostname=") {
                Some(rest) => match rest.split_once(' ') {
                    Some((host, value)) if host == instance => value.trim(),
                    Some(_) => continue,
                    None => return Err(BehaviorError::HostnameAlone(value.to_owned())),
                },
                None => value,
            };
            let number = |rest: &str| {
                rest.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| BehaviorError::Number {
                        text: value.to_owned(),
                        what: "ending in a number",
                    })
            };
            if let Some(seconds) = value.strip_prefix("sleep-") {
                let sleep = Duration::try_from_secs_f64(number(seconds)?)
                    .map_err(|_| BehaviorError::SleepTooLong(value.to_owned()))?;
                // Bounded by the deadline and --max-call-time anyway.
                behavior.sleep = behavior.sleep.saturating_add(sleep);
            } else if value == "keep-open" {
                behavior.keep_open = true;
            } else if let Some(code) = value.strip_prefix("error-code-") {
                behavior.error = Some(parse_error_code(code)?);
            } else if let Some(attempt) = value.strip_prefix("succeed-on-retry-attempt-") {
                behavior.succeed_on_attempt = Some(number(attempt)? as u32);
            } else {
                return Err(BehaviorError::UnknownRpcBehavior(value.to_owned()));
            }
        }
        Ok(behavior)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_behaviors_parse_with_their_chances() {
        let behaviors: Behaviors =
            "delay=200ms:5%,2s:0.5%; error=UNAVAILABLE:10%,deadline_exceeded:1%; message=try later"
                .parse()
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
        assert!(
            !"delay=1s; error=14"
                .parse::<Behaviors>()
                .unwrap()
                .is_random()
        );

        for (bad, why) in [
            ("delay", "is not NAME=VALUE"),
            ("colour=red", "unknown behaviour"),
            ("error=NOPE", "unknown status code"),
            ("error=0", "not an error status code"),
            ("delay=1s:60%,2s:50%", "more than 100%"),
            ("delay=1s:x%", "not a percentage"),
            ("delay=forever", "`forever`"),
            ("fail-attempts=x", "not a number of attempts"),
        ] {
            let err = bad.parse::<Behaviors>().unwrap_err().to_string();
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
        let err = RpcBehavior::parse("sleep-1e300", "pod").unwrap_err();
        assert!(
            err.to_string().contains("longer than any deadline"),
            "{err}"
        );
    }

    #[test]
    fn connection_actions_and_seeds_parse() {
        let behaviors: Behaviors = "connection=goaway:10%,reset-7:5%,close:1%; seed=42"
            .parse()
            .unwrap();
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
            "connection=reset".parse::<Behaviors>().unwrap().connection,
            Some(Weighted {
                alternatives: vec![(ConnectionAction::ResetStream(CANCEL), 1.0)]
            })
        );
        assert!("connection=explode".parse::<Behaviors>().is_err());
        assert!("seed=-1".parse::<Behaviors>().is_err());
    }
}
