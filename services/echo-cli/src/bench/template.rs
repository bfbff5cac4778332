//! Per-request templates in `bench --call`'s request data and headers, with
//! the actions ghz's call data offers: `{{.RequestNumber}}`, `{{.WorkerID}}`,
//! `{{.ConnectionID}}`, `{{.Timestamp}}` (RFC 3339), `{{.TimestampUnix}}`,
//! `{{.TimestampUnixMilli}}`, `{{.TimestampUnixNano}}`, `{{.UUID}}` (v4),
//! `{{randomString N}}` and `{{randomInt MIN MAX}}`.

use std::fmt::Write;
use std::time::SystemTime;

use thiserror::Error;

/// Why a template does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum TemplateError {
    #[error("`{{{{` at byte {0} is never closed by `}}}}`")]
    Unclosed(usize),
    #[error("unknown template action `{{{{{0}}}}}`")]
    Unknown(String),
    #[error("`{{{{{0}}}}}`: {1}")]
    BadArguments(String, &'static str),
}

/// A parsed template: text, and actions filled in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestNumber,
    WorkerId,
    ConnectionId,
    Timestamp,
    TimestampUnix,
    TimestampUnixMilli,
    TimestampUnixNano,
    Uuid,
    RandomString(usize),
    RandomInt(i64, i64),
}

/// What one request's actions are filled in from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext {
    /// The request's number in the run, from 0.
    pub(crate) request: u64,
    pub(crate) worker: usize,
    pub(crate) connection: usize,
}

impl Template {
    /// Whether `text` holds any action at all (plain text is sent as it is).
    pub(crate) fn is_template(text: &str) -> bool {
        text.contains("{{")
    }

    pub(crate) fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let inner_start = open + 2;
            let close = rest[inner_start..]
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let action = rest[inner_start..inner_start + close].trim();
            parts.push(Self::action(action)?);
            let consumed = inner_start + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    fn action(action: &str) -> Result<Part, TemplateError> {
        let words: Vec<&str> = action.split_whitespace().collect();
        let number = |word: &str| word.parse::<i64>().ok();
        Ok(match words.as_slice() {
            [".RequestNumber"] => Part::RequestNumber,
            [".WorkerID"] => Part::WorkerId,
            [".ConnectionID"] => Part::ConnectionId,
            [".Timestamp"] => Part::Timestamp,
            [".TimestampUnix"] => Part::TimestampUnix,
            [".TimestampUnixMilli"] => Part::TimestampUnixMilli,
            [".TimestampUnixNano"] => Part::TimestampUnixNano,
            [".UUID"] => Part::Uuid,
            ["randomString", length] => match length.parse::<usize>() {
                Ok(length) if length <= 1 << 20 => Part::RandomString(length),
                _ => {
                    return Err(TemplateError::BadArguments(
                        action.to_owned(),
                        "takes a length from 0 to 1048576",
                    ));
                }
            },
            ["randomInt", min, max] => match (number(min), number(max)) {
                (Some(min), Some(max)) if min < max => Part::RandomInt(min, max),
                _ => {
                    return Err(TemplateError::BadArguments(
                        action.to_owned(),
                        "takes two integers MIN < MAX (MAX not included)",
                    ));
                }
            },
            _ => return Err(TemplateError::Unknown(action.to_owned())),
        })
    }

    /// The text for one request.
    pub(crate) fn render(&self, context: RequestContext) -> String {
        let mut out = String::new();
        let since_epoch = || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
        };
        for part in &self.parts {
            let _ = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    Ok(())
                }
                Part::RequestNumber => write!(out, "{}", context.request),
                Part::WorkerId => write!(out, "{}", context.worker),
                Part::ConnectionId => write!(out, "{}", context.connection),
                Part::Timestamp => write!(
                    out,
                    "{}",
                    humantime::format_rfc3339_nanos(SystemTime::now())
                ),
                Part::TimestampUnix => write!(out, "{}", since_epoch().as_secs()),
                Part::TimestampUnixMilli => write!(out, "{}", since_epoch().as_millis()),
                Part::TimestampUnixNano => write!(out, "{}", since_epoch().as_nanos()),
                Part::Uuid => {
                    let bits = fastrand::u128(..);
                    // Version 4, variant 10.
                    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
                    let hex = format!("{bits:032x}");
                    write!(
                        out,
                        "{}-{}-{}-{}-{}",
                        &hex[..8],
                        &hex[8..12],
                        &hex[12..16],
                        &hex[16..20],
                        &hex[20..]
                    )
                }
                Part::RandomString(length) => {
                    out.extend((0..*length).map(|_| fastrand::alphanumeric()));
                    Ok(())
                }
                Part::RandomInt(min, max) => write!(out, "{}", fastrand::i64(*min..*max)),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: RequestContext = RequestContext {
        request: 41,
        worker: 3,
        connection: 1,
    };

    #[test]
    fn actions_are_filled_in_per_request() {
        let template =
            Template::parse(r#"{"sku":"w{{.WorkerID}}-c{{ .ConnectionID }}-n{{.RequestNumber}}"}"#)
                .unwrap();
        assert_eq!(template.render(CONTEXT), r#"{"sku":"w3-c1-n41"}"#);

        let random = Template::parse("{{randomString 12}}|{{randomInt 5 7}}|{{.UUID}}").unwrap();
        let text = random.render(CONTEXT);
        let fields: Vec<&str> = text.split('|').collect();
        assert_eq!(fields[0].len(), 12);
        assert!(fields[0].chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(["5", "6"].contains(&fields[1]), "{text}");
        let uuid = fields[2];
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "{uuid}");
        assert!("89ab".contains(&uuid[19..20]), "{uuid}");
        assert_ne!(random.render(CONTEXT), text);

        let time = Template::parse("{{.TimestampUnix}} {{.Timestamp}}").unwrap();
        let text = time.render(CONTEXT);
        let (unix, rfc3339) = text.split_once(' ').unwrap();
        assert!(unix.parse::<u64>().unwrap() > 1_700_000_000);
        assert!(humantime::parse_rfc3339(rfc3339).is_ok(), "{rfc3339}");
    }

    #[test]
    fn a_bad_template_says_what_is_wrong() {
        assert_eq!(
            Template::parse("a {{.UUID"),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(
            Template::parse("{{.Nope}}").unwrap_err().to_string(),
            "unknown template action `{{.Nope}}`"
        );
        assert!(
            Template::parse("{{randomInt 9 1}}")
                .unwrap_err()
                .to_string()
                .contains("MIN < MAX")
        );
        assert!(Template::parse("{{randomString -1}}").is_err());
        assert!(!Template::is_template(r#"{"plain":"json"}"#));
    }
}
