//! How results are printed: answers, metadata and health as text or JSON lines
//! on stdout; a failed call's status and details, or any other error with each
//! of its causes once, on stderr.

use echo_client::load_report::OrcaLoadReport;
use echo_client::proto::{ClientStreamResponse, EchoResponse, Wire};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

/// Default `--addr` (here, where the hint for a refused connection names it).
pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// Writes one line to stdout. A closed stdout (as by `| head`) ends the
/// program with 141, as a program killed by SIGPIPE would, instead of a panic.
pub(crate) fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(err) = writeln!(std::io::stdout().lock(), "{line}") {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {err}");
        std::process::exit(1);
    }
}

/// How results are printed: text, or JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Headers and trailers too.
    pub show_metadata: bool,
}

impl Output {
    pub(crate) fn response(&self, response: &EchoResponse) {
        if self.json {
            out!(
                "{}",
                json!({
                    "message": response.message,
                    "payload_bytes": response.payload.len(),
                    "instance": response.instance,
                    "peer": response.peer,
                    "peer_identity": response.peer_identity,
                    "sequence": response.sequence,
                    "wire": response.wire.as_deref().map(wire_json),
                })
            );
        } else {
            out!(
                "{}  [seq {} · {} payload bytes · instance {} · peer {}]",
                response.message,
                response.sequence,
                response.payload.len(),
                response.instance,
                response.peer
            );
            if let Some(wire) = &response.wire {
                print_wire(wire);
            }
        }
    }

    pub(crate) fn summary(&self, summary: &ClientStreamResponse) {
        if self.json {
            out!(
                "{}",
                json!({
                    "count": summary.count,
                    "total_bytes": summary.total_bytes,
                    "messages": summary.messages,
                    "messages_truncated": summary.messages_truncated,
                    "sha256": summary.sha256,
                    "instance": summary.instance,
                    "peer": summary.peer,
                })
            );
        } else {
            out!(
                "{} messages, {} bytes, sha256 {}  [instance {} · peer {}]",
                summary.count,
                summary.total_bytes,
                summary.sha256,
                summary.instance,
                summary.peer
            );
            for message in &summary.messages {
                out!("  {message}");
            }
            if summary.messages_truncated {
                out!("  … (truncated)");
            }
        }
    }

    pub(crate) fn health(&self, service: &str, status: impl std::fmt::Debug + Copy) {
        let name = format!("{status:?}");
        if self.json {
            out!("{}", json!({ "service": service, "status": name }));
        } else {
            let service = if service.is_empty() {
                "(server)"
            } else {
                service
            };
            out!("{service}: {name}");
        }
    }

    /// Prints a response stream's headers, each message as it arrives, then its trailers.
    pub(crate) async fn stream(
        &self,
        response: tonic::Response<Streaming<EchoResponse>>,
    ) -> anyhow::Result<()> {
        self.metadata("headers", response.metadata());
        let mut stream = response.into_inner();
        while let Some(message) = stream.message().await? {
            self.response(&message);
        }
        if let Some(trailers) = stream.trailers().await? {
            self.metadata("trailers", &trailers);
        }
        Ok(())
    }

    /// Prints `metadata` as `kind` when `--show-metadata` asks for it; an
    /// ORCA load report (`endpoint-load-metrics-bin`) decoded, as JSON.
    pub(crate) fn metadata(&self, kind: &str, metadata: &MetadataMap) {
        if !self.show_metadata {
            return;
        }
        let entries: Vec<(String, Value)> = metadata
            .as_ref()
            .iter()
            .map(|(k, v)| {
                let report = (*k == echo_wire::headers::LOAD_REPORT)
                    .then(|| echo_client::load_report::from_metadata(metadata))
                    .flatten();
                let value = match report {
                    Some(report) => load_report_json(&report),
                    None => Value::from(String::from_utf8_lossy(v.as_bytes())),
                };
                (k.to_string(), value)
            })
            .collect();
        if self.json {
            let map: serde_json::Map<_, _> = entries.into_iter().collect();
            out!("{}", json!({ kind: map }));
        } else {
            for (key, value) in entries {
                match value {
                    Value::String(text) => out!("< {kind}: {key}: {text}"),
                    value => out!("< {kind}: {key}: {value}"),
                }
            }
        }
    }
}

/// An ORCA load report as proto3 JSON (`{"cpuUtilization":0.5, ...}`).
pub(crate) fn load_report_json(report: &OrcaLoadReport) -> Value {
    static CONTRACT: std::sync::OnceLock<Option<DescriptorPool>> = std::sync::OnceLock::new();
    CONTRACT
        .get_or_init(|| DescriptorPool::decode(grpc_echo::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
        .and_then(|pool| pool.get_message_by_name("xds.data.orca.v3.OrcaLoadReport"))
        .and_then(|descriptor| {
            DynamicMessage::decode(descriptor, report.encode_to_vec().as_slice()).ok()
        })
        .and_then(|message| {
            message
                .serialize_with_options(serde_json::value::Serializer, &Default::default())
                .ok()
        })
        .unwrap_or_default()
}

/// Prints why the command failed on stderr: a call's status with its rich
/// details, or any other error with each of its causes once; then, for a
/// mistake a newcomer is likely to make, what to do about it.
pub(crate) fn report_error(err: &anyhow::Error, json: bool) {
    let hint = hint(err);
    match err.downcast_ref::<Status>() {
        Some(status) => report_status(status, hint.as_deref(), json),
        None if json => {
            let mut value = json!({ "error": causes(err) });
            if let Some(hint) = hint {
                value["hint"] = hint.into();
            }
            eprintln!("{value}");
        }
        None => {
            eprintln!("error: {}", causes(err));
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
        }
    }
}

/// What to do about `err`, when it is a mistake with a known remedy: no
/// server where the client calls, or a server without its admin service.
fn hint(err: &anyhow::Error) -> Option<String> {
    use grpc_echo::echo::v1::admin_service_server::SERVICE_NAME as ADMIN;
    if let Some(status) = err.downcast_ref::<Status>() {
        return (status.code() == tonic::Code::Unimplemented
            && status.message() == format!("unknown service {ADMIN}"))
        .then(|| {
            format!("the server serves {ADMIN} only when started with --admin (ECHO_ADMIN=true)")
        });
    }
    let refused = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    refused.then(|| {
        format!(
            "is a server running there? `echo-server` listens on {} by default; \
             --addr (or ECHO_ADDR) names the server to call",
            DEFAULT_ADDR.trim_start_matches("http://")
        )
    })
}

/// The causes of `err`, outermost first, joined by `: `; a cause whose text
/// an earlier one already carries is left out (transport errors often repeat
/// their source in their own message).
pub(crate) fn causes(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints a failed call's status (and its rich details) to stderr.
fn report_status(status: &Status, hint: Option<&str>, json: bool) {
    let details = details(status);
    let name = echo_wire::codes::name(status.code() as i32);
    if json {
        let mut value: Value = json!({
            "error": {
                "code": status.code() as i32,
                "name": name,
                "message": status.message(),
                "details": details,
            }
        });
        if let Some(hint) = hint {
            value["hint"] = hint.into();
        }
        eprintln!("{value}");
    } else {
        eprintln!(
            "error: {name} (code {}): {}",
            status.code() as i32,
            status.message()
        );
        for detail in details {
            let type_name = detail["@type"]
                .as_str()
                .and_then(|url| url.rsplit('/').next())
                .unwrap_or_default()
                .to_owned();
            eprintln!("  {type_name} {detail}");
        }
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
}

/// Every `google.rpc` detail of `status` (`grpc-status-details-bin`), each as
/// canonical JSON with its `@type`; a detail of a type not known here keeps
/// its type URL and its bytes in base64.
pub(crate) fn details(status: &Status) -> Vec<Value> {
    if status.details().is_empty() {
        return Vec::new();
    }
    let Ok(rich) = tonic_types::pb::Status::decode(status.details()) else {
        return vec![json!({ "@type": "", "error": "the details are not a google.rpc.Status" })];
    };
    rich.details.iter().map(detail).collect()
}

fn detail(any: &prost_types::Any) -> Value {
    use base64::Engine;
    static RPC_TYPES: std::sync::OnceLock<Option<DescriptorPool>> = std::sync::OnceLock::new();
    let known = RPC_TYPES
        .get_or_init(|| DescriptorPool::decode(tonic_types::pb::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(any.type_url.rsplit('/').next()?))
        .and_then(|descriptor| DynamicMessage::decode(descriptor, any.value.as_slice()).ok())
        .and_then(|message| {
            message
                .serialize_with_options(serde_json::value::Serializer, &Default::default())
                .ok()
        });
    let mut detail = serde_json::Map::new();
    detail.insert("@type".to_owned(), Value::from(any.type_url.as_str()));
    match known {
        Some(Value::Object(fields)) => detail.extend(fields),
        _ => {
            let value = base64::engine::general_purpose::STANDARD.encode(&any.value);
            detail.insert("value".to_owned(), Value::from(value));
        }
    }
    Value::Object(detail)
}

/// What the server received (`--reflect-wire`), as JSON.
fn wire_json(wire: &Wire) -> serde_json::Value {
    json!({
        "protocol": wire.protocol,
        "content_type": wire.content_type,
        "http_version": wire.http_version,
        "authority": wire.authority,
        "user_agent": wire.user_agent,
        "timeout": wire.timeout,
        "compression": wire.compression,
        "accept_compression": wire.accept_compression,
        "tls": wire.tls.as_ref().map(|tls| json!({
            "version": tls.version,
            "cipher": tls.cipher,
            "alpn": tls.alpn,
            "sni": tls.sni,
            "client_subject": tls.client_subject,
            "spiffe_id": tls.spiffe_id,
        })),
        "traceparent": wire.traceparent,
        "tracestate": wire.tracestate,
        "baggage": wire.baggage,
        "headers": wire.headers.iter().map(|h| [&h.name, &h.value]).collect::<Vec<_>>(),
    })
}

/// What the server received (`--reflect-wire`), a line each.
fn print_wire(wire: &Wire) {
    out!(
        "received: {} {} · authority {} · content-type {} · timeout {} · compression {}",
        wire.protocol,
        wire.http_version,
        wire.authority,
        wire.content_type,
        or_none(&wire.timeout),
        or_none(&wire.compression)
    );
    if let Some(tls) = &wire.tls {
        out!(
            "received over TLS: {} {} · ALPN {} · SNI {} · client {} {}",
            tls.version,
            tls.cipher,
            or_none(&tls.alpn),
            or_none(&tls.sni),
            or_none(&tls.client_subject),
            tls.spiffe_id
        );
    }
    for header in &wire.headers {
        out!("received header {}: {}", header.name, header.value);
    }
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "none" } else { text }
}

/// Each call's phases on stderr (`--timing`), offsets from the first phase
/// of its report (the connection's when it opened one): a table per call, or
/// one JSON object per call.
pub(crate) fn timing(calls: &[echo_client::timing::CallTiming], json: bool) {
    for call in calls {
        let Some(origin) = call.origin() else {
            continue;
        };
        let mut phases: Vec<&echo_client::timing::Phase> = call
            .connection
            .iter()
            .flatten()
            .chain(&call.phases)
            .collect();
        phases.sort_by_key(|phase| (phase.start, phase.end));
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        if json {
            let phases: Vec<Value> = phases
                .iter()
                .map(|phase| {
                    json!({
                        "phase": phase.name,
                        "offset_ms": millis(phase.start - origin),
                        "duration_ms": millis(phase.duration()),
                        "detail": phase.detail,
                    })
                })
                .collect();
            let connection = if call.connection.is_some() {
                "new"
            } else {
                "reused"
            };
            eprintln!(
                "{}",
                json!({ "timing": { "path": call.path, "connection": connection, "phases": phases } })
            );
            continue;
        }
        match call.connection {
            Some(_) => eprintln!("timing {} (new connection)", call.path),
            None => eprintln!(
                "timing {} (reused connection: resolve, connect, TLS and HTTP setup skipped)",
                call.path
            ),
        }
        eprintln!("  {:>10}  {:>10}  phase", "offset", "duration");
        for phase in phases {
            let line = format!(
                "  {:>7.3} ms  {:>7.3} ms  {:<17} {}",
                millis(phase.start - origin),
                millis(phase.duration()),
                phase.name,
                phase.detail
            );
            eprintln!("{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_rich_detail_is_decoded_and_unknown_ones_keep_their_type() {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::with_error_info(
            "QUOTA",
            "example.com",
            std::collections::HashMap::from([("k".to_owned(), "v".to_owned())]),
        );
        details.set_retry_info(Some(std::time::Duration::from_millis(1500)));
        details.add_bad_request_violation("name", "too long");
        details.set_localized_message("en-GB", "Too long");
        let status = Status::with_error_details(Code::InvalidArgument, "bad", details);
        let decoded = super::details(&status);
        let types: Vec<&str> = decoded
            .iter()
            .map(|d| d["@type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "type.googleapis.com/google.rpc.RetryInfo",
                "type.googleapis.com/google.rpc.ErrorInfo",
                "type.googleapis.com/google.rpc.BadRequest",
                "type.googleapis.com/google.rpc.LocalizedMessage",
            ]
        );
        assert_eq!(decoded[0]["retryDelay"], "1.500s");
        assert_eq!(decoded[1]["metadata"]["k"], "v");
        assert_eq!(decoded[2]["fieldViolations"][0]["field"], "name");

        let unknown = prost_types::Any {
            type_url: "type.googleapis.com/acme.Mystery".to_owned(),
            value: vec![1, 2, 3],
        };
        let rich = tonic_types::pb::Status {
            code: 5,
            message: "gone".to_owned(),
            details: vec![unknown],
        };
        let status = Status::with_details(Code::NotFound, "gone", rich.encode_to_vec().into());
        assert_eq!(
            super::details(&status),
            [json!({ "@type": "type.googleapis.com/acme.Mystery", "value": "AQID" })]
        );
    }

    #[test]
    fn each_cause_is_named_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = anyhow::Error::new(io)
            .context("tcp connect error: Connection refused")
            .context("transport error")
            .context("cannot connect to 127.0.0.1:1");
        assert_eq!(
            causes(&err),
            "cannot connect to 127.0.0.1:1: transport error: tcp connect error: Connection refused"
        );
    }
}
