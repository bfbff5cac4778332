//! The grammar of chaos schedules (`--chaos`, `--chaos-file`), parsed once
//! into [`Schedule`]s; `ops/chaos.rs` runs them.
//!
//! A schedule is one line: an event and its settings, `KEY=VALUE` separated
//! by spaces:
//!
//! - `goaway every=P`: GOAWAY on every open connection.
//! - `close fraction=F every=P`: each open connection closed at once with
//!   chance F (`25%` or `0.25`).
//! - `slow delay=D for=W every=P`: every call starting in the window waits D.
//! - `errors code=CODE for=W every=P`: every call starting in the window
//!   fails with CODE (a name such as `UNAVAILABLE`, or a number).
//! - `unhealthy for=W every=P`: health says NOT_SERVING for the window.
//! - `load report=LOAD for=W every=P`: the instance reports LOAD (a load
//!   report as `--load-report` takes it) for the window.
//!
//! Any schedule also takes `after=T` (the first event T after start; `P` by
//! default) and `jitter=J` (each event up to J later).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::load_report::{LoadReportError, LoadReportSpec};

/// Why a chaos schedule, or a file of them, does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The schedule is empty.
    #[error("an empty chaos schedule")]
    Empty,
    /// A setting is not `KEY=VALUE`.
    #[error("`{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    /// A setting is given twice.
    #[error("`{0}` is given twice")]
    Twice(String),
    /// The event is none of the known ones.
    #[error("unknown chaos event `{0}` (known: goaway, close, slow, errors, unhealthy, load)")]
    UnknownEvent(String),
    /// A setting the event needs is missing.
    #[error("`{event}` needs {setting}")]
    Needs {
        /// The event.
        event: String,
        /// What it needs, e.g. `every=DURATION`.
        setting: &'static str,
    },
    /// A setting the event does not take.
    #[error("`{event}` takes no `{key}`")]
    Takes {
        /// The event.
        event: String,
        /// The setting.
        key: String,
    },
    /// An instant event given a window.
    #[error("`{0}` is an instant: it takes no for=DURATION")]
    Instant(String),
    /// A duration does not parse.
    #[error("{key}: `{text}`: {reason}")]
    Duration {
        /// The setting.
        key: String,
        /// Its value.
        text: String,
        /// humantime's reason.
        reason: String,
    },
    /// `every=0`.
    #[error("every=0 would never stop")]
    NeverStops,
    /// A window and its jitter do not fit in the period.
    #[error("for + jitter must be shorter than every (`{0}`)")]
    WindowTooLong(String),
    /// A fraction is not one.
    #[error("`{0}` is not a fraction (25% or 0.25)")]
    Fraction(String),
    /// A fraction is outside 0 to 1.
    #[error("`{0}` is not between 0 and 100%")]
    FractionRange(String),
    /// A code names no status code.
    #[error(transparent)]
    Code(#[from] echo_wire::codes::UnknownCode),
    /// A load window's report does not parse.
    #[error("report: {0}")]
    LoadReport(#[from] LoadReportError),
    /// A code names OK, which is no error.
    #[error("`{0}` is not an error status code (1 to 16)")]
    NotAnError(String),
    /// A line of a chaos file does not parse.
    #[error("line {line}: {source}")]
    Line {
        /// Its number, from 1.
        line: usize,
        /// Why.
        source: Box<ChaosError>,
    },
    /// A chaos file cannot be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One recurring event and when it recurs.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub(crate) event: Event,
    pub(crate) every: Duration,
    pub(crate) after: Duration,
    pub(crate) jitter: Duration,
}

/// What a schedule does each time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    GoAway,
    Close {
        fraction: f64,
    },
    Slow {
        delay: Duration,
        window: Duration,
    },
    Errors {
        code: Code,
        window: Duration,
    },
    Unhealthy {
        window: Duration,
    },
    Load {
        report: Arc<LoadReportSpec>,
        window: Duration,
    },
}

impl Event {
    /// The name a schedule line, a log line and a metric label give it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::GoAway => "goaway",
            Self::Close { .. } => "close",
            Self::Slow { .. } => "slow",
            Self::Errors { .. } => "errors",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Load { .. } => "load",
        }
    }

    /// How long the event lasts (none: it is an instant).
    fn window(&self) -> Option<Duration> {
        match self {
            Self::GoAway | Self::Close { .. } => None,
            Self::Slow { window, .. }
            | Self::Errors { window, .. }
            | Self::Unhealthy { window }
            | Self::Load { window, .. } => Some(*window),
        }
    }
}

impl FromStr for Schedule {
    type Err = ChaosError;

    /// Parses one schedule line (see the module docs).
    fn from_str(text: &str) -> Result<Self, ChaosError> {
        let mut words = text.split_whitespace();
        let kind = words.next().ok_or(ChaosError::Empty)?;
        let mut settings = BTreeMap::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| ChaosError::NotKeyValue(word.to_owned()))?;
            if settings.insert(key, value).is_some() {
                return Err(ChaosError::Twice(key.to_owned()));
            }
        }
        let needs = |setting| ChaosError::Needs {
            event: kind.to_owned(),
            setting,
        };
        let mut take = |key: &str| settings.remove(key);
        let every = duration("every", take("every"))?.ok_or_else(|| needs("every=DURATION"))?;
        let after = duration("after", take("after"))?.unwrap_or(every);
        let jitter = duration("jitter", take("jitter"))?.unwrap_or_default();
        let window = duration("for", take("for"))?;
        let event = match kind {
            "goaway" => Event::GoAway,
            "close" => Event::Close {
                fraction: parse_fraction(take("fraction").ok_or_else(|| needs("fraction=F"))?)?,
            },
            "slow" => Event::Slow {
                delay: duration("delay", take("delay"))?.ok_or_else(|| needs("delay=DURATION"))?,
                window: window.ok_or_else(|| needs("for=DURATION"))?,
            },
            "errors" => Event::Errors {
                code: parse_error_code(take("code").ok_or_else(|| needs("code=CODE"))?)?,
                window: window.ok_or_else(|| needs("for=DURATION"))?,
            },
            "unhealthy" => Event::Unhealthy {
                window: window.ok_or_else(|| needs("for=DURATION"))?,
            },
            "load" => Event::Load {
                report: Arc::new(
                    take("report")
                        .ok_or_else(|| needs("report=LOAD"))?
                        .parse()?,
                ),
                window: window.ok_or_else(|| needs("for=DURATION"))?,
            },
            other => return Err(ChaosError::UnknownEvent(other.to_owned())),
        };
        if event.window().is_none() && window.is_some() {
            return Err(ChaosError::Instant(kind.to_owned()));
        }
        if let Some(key) = settings.keys().next() {
            return Err(ChaosError::Takes {
                event: kind.to_owned(),
                key: (*key).to_owned(),
            });
        }
        if every.is_zero() {
            return Err(ChaosError::NeverStops);
        }
        // A window and its jitter fit in a period, so a schedule's windows
        // never overlap each other.
        if event.window().unwrap_or_default() + jitter >= every {
            return Err(ChaosError::WindowTooLong(text.trim().to_owned()));
        }
        Ok(Self {
            event,
            every,
            after,
            jitter,
        })
    }
}

impl Schedule {
    /// The schedules of a file's text: one per line; blank lines and `#`
    /// comments skipped.
    pub fn parse_lines(text: &str) -> Result<Vec<Self>, ChaosError> {
        text.lines()
            .enumerate()
            .map(|(number, line)| (number + 1, line.split('#').next().unwrap_or("").trim()))
            .filter(|(_, line)| !line.is_empty())
            .map(|(line, text)| {
                text.parse().map_err(|source| ChaosError::Line {
                    line,
                    source: Box::new(source),
                })
            })
            .collect()
    }
}

/// A `--chaos-file`, read and parsed when the command line is.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosFile {
    /// The file.
    pub path: PathBuf,
    /// Its schedules.
    pub schedules: Vec<Schedule>,
}

impl FromStr for ChaosFile {
    type Err = ChaosError;

    fn from_str(path: &str) -> Result<Self, ChaosError> {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|source| ChaosError::File {
            path: path.clone(),
            source,
        })?;
        let schedules = Schedule::parse_lines(&text)?;
        Ok(Self { path, schedules })
    }
}

fn duration(key: &str, value: Option<&str>) -> Result<Option<Duration>, ChaosError> {
    value
        .map(|text| {
            humantime::parse_duration(text).map_err(|err| ChaosError::Duration {
                key: key.to_owned(),
                text: text.to_owned(),
                reason: err.to_string(),
            })
        })
        .transpose()
}

fn parse_error_code(text: &str) -> Result<Code, ChaosError> {
    match echo_wire::codes::parse(text)? {
        0 => Err(ChaosError::NotAnError(text.to_owned())),
        code => Ok(Code::from(code)),
    }
}

/// `25%` or `0.25`.
fn parse_fraction(text: &str) -> Result<f64, ChaosError> {
    let fraction = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| ChaosError::Fraction(text.to_owned()))?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(ChaosError::FractionRange(text.to_owned()));
    }
    Ok(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_their_settings() {
        assert_eq!(
            "slow delay=200ms for=5s every=1m after=10s jitter=2s"
                .parse::<Schedule>()
                .unwrap(),
            Schedule {
                event: Event::Slow {
                    delay: Duration::from_millis(200),
                    window: Duration::from_secs(5),
                },
                every: Duration::from_secs(60),
                after: Duration::from_secs(10),
                jitter: Duration::from_secs(2),
            }
        );
        let close: Schedule = "close fraction=25% every=30s".parse().unwrap();
        assert_eq!(close.event, Event::Close { fraction: 0.25 });
        assert_eq!(
            close.after,
            Duration::from_secs(30),
            "after defaults to every"
        );
        assert_eq!(
            "errors code=unavailable for=1s every=10s"
                .parse::<Schedule>()
                .unwrap()
                .event,
            Event::Errors {
                code: Code::Unavailable,
                window: Duration::from_secs(1)
            }
        );
        let load: Schedule = "load report=cpu=0.9,qps=auto for=5s every=20s"
            .parse()
            .unwrap();
        assert_eq!(
            load.event,
            Event::Load {
                report: Arc::new("cpu=0.9,qps=auto".parse().unwrap()),
                window: Duration::from_secs(5)
            }
        );
        let file = "# a flaky afternoon\n\ngoaway every=30s\nunhealthy for=5s every=1m # drills\n";
        assert_eq!(Schedule::parse_lines(file).unwrap().len(), 2);

        for (bad, why) in [
            ("", "empty"),
            ("storm every=1s", "unknown chaos event"),
            ("goaway", "needs every="),
            ("goaway every=1s for=1s", "is an instant"),
            ("slow for=1s every=10s", "needs delay="),
            ("errors code=NOPE for=1s every=10s", "unknown status code"),
            (
                "errors code=OK for=1s every=10s",
                "not an error status code",
            ),
            ("unhealthy for=10s every=10s", "shorter than every"),
            (
                "slow delay=1s for=5s every=10s jitter=5s",
                "shorter than every",
            ),
            ("close fraction=150% every=1s", "between 0 and 100%"),
            ("goaway every=1s colour=red", "takes no `colour`"),
            ("goaway every=1s every=2s", "given twice"),
            ("goaway every=0s", "never stop"),
            ("goaway every", "not KEY=VALUE"),
            ("load for=1s every=10s", "needs report=LOAD"),
            (
                "load report=gpu=1 for=1s every=10s",
                "report: unknown load report key",
            ),
            ("load report=cpu=1 every=10s", "needs for="),
        ] {
            let err = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let err = Schedule::parse_lines("goaway every=1s\nslow every=1s\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
