//! Checks a request's control fields and turns them into a [`Plan`] the handlers follow.

use std::time::Duration;

use grpc_echo::echo::v1::{
    ConnectionAction as Action, ConnectionControl, EchoRequest, MetadataEcho, StatusCode,
};
use tonic::Code;

use crate::config::ControlLimits;
use crate::context::ConnectionAction;
use crate::error::EchoError;

/// The RPC a request arrived on; some controls apply to some RPCs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    Echo,
    ServerStream,
    ClientStream,
    BidiStream,
}

/// Where the request's metadata is copied in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EchoTargets {
    pub(crate) headers: bool,
    pub(crate) trailers: bool,
}

impl EchoTargets {
    pub(crate) fn union(self, other: Self) -> Self {
        Self {
            headers: self.headers || other.headers,
            trailers: self.trailers || other.trailers,
        }
    }
}

/// What the server does for one request, once its controls are checked.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) delay: Duration,
    pub(crate) response_size: Option<u32>,
    pub(crate) error: Option<EchoError>,
    pub(crate) echo: EchoTargets,
    pub(crate) count: u32,
    pub(crate) interval: Duration,
    pub(crate) connection: Option<ConnectionAction>,
}

/// The server's bounds on control values.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_delay: Duration,
    pub(crate) max_stream_count: u32,
    pub(crate) max_payload_size: u32,
    pub(crate) max_summary_messages: u32,
}

impl From<&ControlLimits> for Limits {
    fn from(config: &ControlLimits) -> Self {
        Self {
            max_delay: *config.max_delay,
            max_stream_count: config.max_stream_count,
            max_payload_size: config.max_payload_size,
            max_summary_messages: config.max_summary_messages,
        }
    }
}

impl Limits {
    /// Checks every control of `request` for `rpc`; the first bad one names its field.
    pub(crate) fn plan(&self, request: &EchoRequest, rpc: Rpc) -> Result<Plan, EchoError> {
        let delay = self.duration("delay", request.delay.as_ref())?;

        let response_size = request.response_size;
        if let Some(size) = response_size {
            if rpc == Rpc::ClientStream {
                return Err(EchoError::invalid(
                    "response_size",
                    "ClientStream answers with a summary, which has no payload",
                ));
            }
            if size > self.max_payload_size {
                return Err(EchoError::invalid(
                    "response_size",
                    format!(
                        "{size} exceeds the server maximum of {}",
                        self.max_payload_size
                    ),
                ));
            }
        }

        let error = request.error.as_ref().map(requested_error).transpose()?;

        let echo = match MetadataEcho::try_from(request.echo_metadata) {
            Ok(MetadataEcho::None) => EchoTargets::default(),
            Ok(_) if rpc == Rpc::BidiStream => {
                return Err(EchoError::invalid(
                    "echo_metadata",
                    "BidiStream sends its headers before reading requests; use Echo, ServerStream or ClientStream",
                ));
            }
            Ok(MetadataEcho::Headers) => EchoTargets {
                headers: true,
                trailers: false,
            },
            Ok(MetadataEcho::Trailers) => EchoTargets {
                headers: false,
                trailers: true,
            },
            Ok(MetadataEcho::Both) => EchoTargets {
                headers: true,
                trailers: true,
            },
            Err(_) => {
                return Err(EchoError::invalid(
                    "echo_metadata",
                    format!("unknown MetadataEcho value {}", request.echo_metadata),
                ));
            }
        };

        let (count, interval) = match &request.stream {
            None => (1, Duration::ZERO),
            Some(_) if rpc != Rpc::ServerStream => {
                return Err(EchoError::invalid("stream", "applies to ServerStream only"));
            }
            Some(stream) => {
                let count = stream.count.unwrap_or(1);
                if count > self.max_stream_count {
                    return Err(EchoError::invalid(
                        "stream.count",
                        format!(
                            "{count} exceeds the server maximum of {}",
                            self.max_stream_count
                        ),
                    ));
                }
                (
                    count,
                    self.duration("stream.interval", stream.interval.as_ref())?,
                )
            }
        };

        let connection = match &request.connection {
            None => None,
            Some(_) if matches!(rpc, Rpc::ClientStream | Rpc::BidiStream) => {
                return Err(EchoError::invalid(
                    "connection",
                    "applies to Echo and ServerStream only",
                ));
            }
            Some(control) => connection_action(control, error.is_some())?,
        };

        Ok(Plan {
            delay,
            response_size,
            error,
            echo,
            count,
            interval,
            connection,
        })
    }

    fn duration(
        &self,
        field: &'static str,
        value: Option<&prost_types::Duration>,
    ) -> Result<Duration, EchoError> {
        let Some(value) = value else {
            return Ok(Duration::ZERO);
        };
        if value.seconds < 0 || value.nanos < 0 {
            return Err(EchoError::invalid(field, "must not be negative"));
        }
        let duration =
            Duration::try_from(*value).map_err(|err| EchoError::invalid(field, err.to_string()))?;
        if duration > self.max_delay {
            return Err(EchoError::invalid(
                field,
                format!(
                    "{} exceeds the server maximum of {}",
                    humantime::format_duration(duration),
                    humantime::format_duration(self.max_delay)
                ),
            ));
        }
        Ok(duration)
    }
}

fn connection_action(
    control: &ConnectionControl,
    error_requested: bool,
) -> Result<Option<ConnectionAction>, EchoError> {
    let action = match Action::try_from(control.action) {
        Ok(Action::None) => None,
        Ok(Action::Goaway) => Some(ConnectionAction::GoAway),
        Ok(Action::ResetStream) if error_requested => {
            return Err(EchoError::invalid(
                "connection.action",
                "a reset stream ends without a status, so it cannot carry `error`; choose one",
            ));
        }
        Ok(Action::ResetStream) => Some(ConnectionAction::ResetStream(control.reset_code)),
        Ok(Action::Close) => Some(ConnectionAction::Close),
        Err(_) => {
            return Err(EchoError::invalid(
                "connection.action",
                format!("unknown ConnectionAction value {}", control.action),
            ));
        }
    };
    if control.reset_code != 0 && !matches!(action, Some(ConnectionAction::ResetStream(_))) {
        return Err(EchoError::invalid(
            "connection.reset_code",
            "applies to CONNECTION_ACTION_RESET_STREAM only",
        ));
    }
    Ok(action)
}

fn requested_error(control: &grpc_echo::echo::v1::ErrorControl) -> Result<EchoError, EchoError> {
    match StatusCode::try_from(control.code) {
        Ok(StatusCode::Ok) => Err(EchoError::invalid(
            "error.code",
            "STATUS_CODE_OK is not an error; leave `error` unset to succeed",
        )),
        Ok(_) => Ok(EchoError::Requested {
            code: Code::from_i32(control.code),
            message: control.message.clone(),
            details: control.details.clone(),
            retry_delay: control
                .retry_delay
                .map(|delay| {
                    if delay.seconds < 0 || delay.nanos < 0 {
                        return Err(EchoError::invalid(
                            "error.retry_delay",
                            "must not be negative",
                        ));
                    }
                    Duration::try_from(delay)
                        .map_err(|err| EchoError::invalid("error.retry_delay", err.to_string()))
                })
                .transpose()?,
        }),
        Err(_) => Err(EchoError::invalid(
            "error.code",
            format!("unknown StatusCode value {}", control.code),
        )),
    }
}

#[cfg(test)]
mod tests {
    use grpc_echo::echo::v1::{ErrorControl, StreamControl};

    use super::*;

    fn limits() -> Limits {
        Limits::from(&ControlLimits::default())
    }

    fn field_of(result: Result<Plan, EchoError>) -> &'static str {
        match result {
            Err(EchoError::InvalidControl { field, .. }) => field,
            other => panic!("expected an invalid control, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_request_is_one_immediate_echo() {
        let plan = limits().plan(&EchoRequest::default(), Rpc::Echo).unwrap();
        assert_eq!(plan.delay, Duration::ZERO);
        assert_eq!(plan.count, 1);
        assert!(plan.error.is_none());
        assert_eq!(plan.echo, EchoTargets::default());
    }

    #[test]
    fn connection_actions_are_checked() {
        let limits = limits();
        let with = |action: Action, reset_code: u32| EchoRequest {
            connection: Some(ConnectionControl {
                action: action as i32,
                reset_code,
            }),
            ..Default::default()
        };
        let plan = limits
            .plan(&with(Action::ResetStream, 8), Rpc::ServerStream)
            .unwrap();
        assert_eq!(plan.connection, Some(ConnectionAction::ResetStream(8)));
        let plan = limits.plan(&with(Action::Goaway, 0), Rpc::Echo).unwrap();
        assert_eq!(plan.connection, Some(ConnectionAction::GoAway));
        assert_eq!(
            field_of(limits.plan(&with(Action::Close, 0), Rpc::BidiStream)),
            "connection"
        );
        assert_eq!(
            field_of(limits.plan(&with(Action::Goaway, 8), Rpc::Echo)),
            "connection.reset_code"
        );
        let mut unknown = with(Action::None, 0);
        unknown.connection.as_mut().unwrap().action = 9;
        assert_eq!(
            field_of(limits.plan(&unknown, Rpc::Echo)),
            "connection.action"
        );
        let mut reset_and_error = with(Action::ResetStream, 2);
        reset_and_error.error = Some(ErrorControl {
            code: StatusCode::Internal as i32,
            ..Default::default()
        });
        assert_eq!(
            field_of(limits.plan(&reset_and_error, Rpc::Echo)),
            "connection.action"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let limits = limits();
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        let request = EchoRequest {
            delay: Some(negative),
            ..Default::default()
        };
        assert_eq!(field_of(limits.plan(&request, Rpc::Echo)), "delay");

        let request = EchoRequest {
            stream: Some(StreamControl {
                count: Some(limits.max_stream_count + 1),
                interval: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            field_of(limits.plan(&request, Rpc::ServerStream)),
            "stream.count"
        );
        assert_eq!(field_of(limits.plan(&request, Rpc::Echo)), "stream");

        let request = EchoRequest {
            stream: Some(StreamControl {
                count: Some(2),
                interval: Some(negative),
            }),
            ..Default::default()
        };
        assert_eq!(
            field_of(limits.plan(&request, Rpc::ServerStream)),
            "stream.interval"
        );

        let request = EchoRequest {
            echo_metadata: 42,
            ..Default::default()
        };
        assert_eq!(field_of(limits.plan(&request, Rpc::Echo)), "echo_metadata");

        let request = EchoRequest {
            error: Some(ErrorControl {
                code: 99,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field_of(limits.plan(&request, Rpc::Echo)), "error.code");

        let request = EchoRequest {
            response_size: Some(limits.max_payload_size + 1),
            ..Default::default()
        };
        assert_eq!(field_of(limits.plan(&request, Rpc::Echo)), "response_size");
    }

    proptest::proptest! {
        /// Whatever bytes arrive, decoding then checking them never panics, and
        /// a plan that passes stays within the limits.
        #[test]
        fn any_request_bytes_are_checked_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            use prost::Message;
            let limits = limits();
            if let Ok(request) = EchoRequest::decode(&bytes[..]) {
                for rpc in [Rpc::Echo, Rpc::ServerStream, Rpc::ClientStream, Rpc::BidiStream] {
                    if let Ok(plan) = limits.plan(&request, rpc) {
                        proptest::prop_assert!(plan.delay <= limits.max_delay);
                        proptest::prop_assert!(plan.interval <= limits.max_delay);
                        proptest::prop_assert!(plan.count <= limits.max_stream_count);
                        proptest::prop_assert!(plan.response_size.unwrap_or(0) <= limits.max_payload_size);
                    }
                }
            }
        }

        #[test]
        fn any_control_values_are_checked_without_panicking(
            seconds in proptest::num::i64::ANY,
            nanos in proptest::num::i32::ANY,
            code in proptest::num::i32::ANY,
            echo in proptest::num::i32::ANY,
            count in proptest::option::of(proptest::num::u32::ANY),
        ) {
            let duration = prost_types::Duration { seconds, nanos };
            let request = EchoRequest {
                delay: Some(duration),
                error: Some(ErrorControl { code, ..Default::default() }),
                echo_metadata: echo,
                stream: Some(StreamControl { count, interval: Some(duration) }),
                ..Default::default()
            };
            let _ = limits().plan(&request, Rpc::ServerStream);
        }
    }
}
