//! gRPC status codes by name: the one parser of a code given as text (flags,
//! behaviour headers, chaos schedules), and the spellings each audience
//! expects.

/// gRPC's name of each status code, indexed by its number, as the spec and
/// `grpc-status` tables write it.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The names grpc-go gives the codes, which the grpc-ecosystem metrics and
/// dashboards use as the `grpc_code` label ("OK", "Canceled", ...).
pub const CAMEL_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Text that names no gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status code `{0}` (a name such as UNAVAILABLE or NOT_FOUND, or 0 to 16)")]
pub struct UnknownCode(pub String);

/// The status code `text` names: a number from 0 to 16, or a name in any
/// case, with `-` or `_` between words (`UNAVAILABLE`, `not-found`), and
/// Connect's spelling `canceled` too.
pub fn parse(text: &str) -> Result<i32, UnknownCode> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return (0..=16)
            .contains(&number)
            .then_some(number)
            .ok_or_else(|| UnknownCode(text.to_owned()));
    }
    let wanted = text.to_ascii_uppercase().replace('-', "_");
    let wanted = if wanted == "CANCELED" {
        "CANCELLED"
    } else {
        &wanted
    };
    NAMES
        .iter()
        .position(|name| *name == wanted)
        .map(|code| code as i32)
        .ok_or_else(|| UnknownCode(text.to_owned()))
}

/// gRPC's name of `code` (`UNKNOWN` for a number out of range).
pub fn name(code: i32) -> &'static str {
    spelled(&NAMES, code)
}

/// grpc-go's name of `code` (`Unknown` for a number out of range).
pub fn camel_name(code: i32) -> &'static str {
    spelled(&CAMEL_NAMES, code)
}

fn spelled(names: &[&'static str; 17], code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|code| names.get(code))
        .copied()
        .unwrap_or(names[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_spellings_parse() {
        for (code, name) in NAMES.iter().enumerate() {
            assert_eq!(parse(name), Ok(code as i32));
            assert_eq!(parse(&name.to_ascii_lowercase()), Ok(code as i32));
            assert_eq!(parse(&code.to_string()), Ok(code as i32));
        }
        assert_eq!(parse("not-found"), Ok(5));
        assert_eq!(parse(" canceled "), Ok(1));
        for bad in ["17", "-1", "NOPE", ""] {
            assert_eq!(parse(bad), Err(UnknownCode(bad.to_owned())));
        }
        assert_eq!(name(14), "UNAVAILABLE");
        assert_eq!(camel_name(1), "Canceled");
        assert_eq!(camel_name(99), "Unknown");
    }
}
