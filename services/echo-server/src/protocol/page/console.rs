//! What the page's console needs of the server's descriptors: every served
//! method with a JSON template of its request, and a message carried between
//! proto3 JSON and protobuf (to validate what a person types, and to call in
//! binary).

use std::sync::OnceLock;

use echo_wire::schemas::{self, JsonError};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// Why the console could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// The query names no message type.
    #[error("the query names no message type: give ?type=package.Message")]
    NoType,
    /// The server's descriptors hold no message of that name.
    #[error("no message type {0} among the server's descriptors")]
    UnknownType(String),
    /// The body is larger than `--max-message-size`.
    #[error("the message is larger than the server's {0}-byte limit")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// The message is not one of its type.
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// The served services and the descriptors that describe them, decoded on
/// the console's first use (a server nobody browses never holds them).
#[derive(Debug)]
pub(crate) struct Console {
    served: Vec<&'static str>,
    sets: &'static [&'static [u8]],
    pool: OnceLock<DescriptorPool>,
}

impl Console {
    /// A console of `served` (what reflection lists), described by `sets`.
    pub(crate) fn new(served: &[&'static str], sets: &'static [&'static [u8]]) -> Self {
        let mut served = served.to_vec();
        served.sort_unstable();
        Self {
            served,
            sets,
            pool: OnceLock::new(),
        }
    }

    fn pool(&self) -> &DescriptorPool {
        // The compiled-in sets decode (checked by the protocol's tests).
        self.pool
            .get_or_init(|| schemas::pool(self.sets).unwrap_or_default())
    }

    /// Every served method: its shape, its messages and a template of its request.
    pub(crate) fn methods(&self) -> Value {
        let services: Vec<Value> = self
            .served
            .iter()
            .filter_map(|name| self.pool().get_service_by_name(name))
            .map(|service| {
                let methods: Vec<Value> = service
                    .methods()
                    .map(|method| {
                        json!({
                            "name": method.name(),
                            "clientStreaming": method.is_client_streaming(),
                            "serverStreaming": method.is_server_streaming(),
                            "input": method.input().full_name(),
                            "output": method.output().full_name(),
                            "template": template(&method.input(), &mut Vec::new()),
                        })
                    })
                    .collect();
                json!({ "name": service.full_name(), "methods": methods })
            })
            .collect();
        json!({ "services": services })
    }

    /// The message type a query (`type=package.Message`) names.
    pub(crate) fn message(&self, query: Option<&str>) -> Result<MessageDescriptor, ConsoleError> {
        let name = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("type="))
            .filter(|name| !name.is_empty())
            .ok_or(ConsoleError::NoType)?;
        self.pool()
            .get_message_by_name(name)
            .ok_or_else(|| ConsoleError::UnknownType(name.to_owned()))
    }
}

/// A message of every field with a placeholder value, as proto3 JSON: the
/// first member of each oneof only (two would not parse), one element of each
/// list and map, and `null` (an empty list or map) where a message would
/// contain itself or is an Any.
fn template(message: &MessageDescriptor, open: &mut Vec<String>) -> Value {
    match message.full_name() {
        "google.protobuf.Timestamp" => return json!("1970-01-01T00:00:00Z"),
        "google.protobuf.Duration" => return json!("0s"),
        "google.protobuf.FieldMask" => return json!(""),
        "google.protobuf.Struct" => return json!({}),
        "google.protobuf.ListValue" => return json!([]),
        // An Any needs a type the server knows; a Value may be anything.
        "google.protobuf.Any" | "google.protobuf.Value" => return Value::Null,
        name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
            if let Some(value) = message.get_field_by_name("value") {
                return scalar(&value.kind(), open);
            }
        }
        _ => {}
    }
    if open.iter().any(|name| name == message.full_name()) {
        return Value::Null;
    }
    open.push(message.full_name().to_owned());
    let mut fields = Map::new();
    for field in message.fields() {
        let later_member = field.containing_oneof().is_some_and(|oneof| {
            !oneof.is_synthetic()
                && oneof
                    .fields()
                    .next()
                    .is_some_and(|first| first.number() != field.number())
        });
        if !later_member {
            fields.insert(field.json_name().to_owned(), field_template(&field, open));
        }
    }
    open.pop();
    Value::Object(fields)
}

fn field_template(field: &FieldDescriptor, open: &mut Vec<String>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Value::Null;
        };
        let key = match entry.map_entry_key_field().kind() {
            Kind::Bool => "false".to_owned(),
            Kind::String => "key".to_owned(),
            _ => "0".to_owned(),
        };
        // A value with no placeholder (an Any, a recursive message) leaves the map empty.
        let value = scalar(&entry.map_entry_value_field().kind(), open);
        return if value.is_null() {
            json!({})
        } else {
            json!({ key: value })
        };
    }
    let value = scalar(&field.kind(), open);
    match field.is_list() {
        true if value.is_null() => json!([]),
        true => json!([value]),
        false => value,
    }
}

/// A placeholder of `kind`: zero, empty, the enum's first value, or a message's template.
fn scalar(kind: &Kind, open: &mut Vec<String>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!(0.0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => json!(0),
        // 64-bit integers are strings in proto3 JSON.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => json!("0"),
        Kind::Bool => json!(false),
        Kind::String | Kind::Bytes => json!(""),
        Kind::Enum(values) => values
            .values()
            .next()
            .map_or(Value::Null, |value| json!(value.name())),
        Kind::Message(message) => template(message, open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::DESCRIPTOR_SETS;

    fn console() -> Console {
        // Every service the server can serve.
        let served = [
            "echo.v1.EchoService",
            "echo.v1.AdminService",
            "grpc.examples.echo.Echo",
            "grpc.testing.TestService",
            "connectrpc.conformance.v1.ConformanceService",
            "grpc.health.v1.Health",
            "grpc.channelz.v1.Channelz",
            "xds.service.orca.v3.OpenRcaService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        Console::new(&served, &DESCRIPTOR_SETS)
    }

    /// Every template is a request its method takes: it parses as its type.
    #[test]
    fn every_template_parses_as_its_request() {
        let console = console();
        let methods = console.methods();
        let services = methods["services"].as_array().unwrap();
        assert_eq!(services.len(), 10, "each service described");
        let mut checked = 0;
        for service in services {
            for method in service["methods"].as_array().unwrap() {
                let input = console
                    .message(Some(&format!("type={}", method["input"].as_str().unwrap())))
                    .unwrap();
                let template = method["template"].to_string();
                schemas::json_to_proto(&input, template.as_bytes())
                    .unwrap_or_else(|err| panic!("{}: {template}: {err}", method["name"]));
                checked += 1;
            }
        }
        assert!(checked > 30, "{checked} methods");
    }

    #[test]
    fn a_template_has_every_field_once_per_oneof() {
        let methods = console().methods();
        let test_service = methods["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|service| service["name"] == "grpc.testing.TestService")
            .unwrap();
        let unary = test_service["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|method| method["name"] == "UnaryCall")
            .unwrap();
        let template = &unary["template"];
        assert_eq!(template["responseType"], "COMPRESSABLE");
        assert_eq!(template["responseSize"], 0);
        assert_eq!(
            template["payload"],
            json!({"type": "COMPRESSABLE", "body": ""})
        );
        assert_eq!(
            template["responseStatus"],
            json!({"code": 0, "message": ""})
        );
        assert_eq!(template["fillUsername"], false);
        assert_eq!(unary["clientStreaming"], false);
        assert_eq!(unary["output"], "grpc.testing.SimpleResponse");
    }

    #[test]
    fn a_query_names_a_known_message_type() {
        let console = console();
        assert_eq!(
            console
                .message(Some("type=echo.v1.EchoRequest"))
                .unwrap()
                .full_name(),
            "echo.v1.EchoRequest"
        );
        assert!(matches!(console.message(None), Err(ConsoleError::NoType)));
        assert_eq!(
            console
                .message(Some("type=no.Such"))
                .unwrap_err()
                .to_string(),
            "no message type no.Such among the server's descriptors"
        );
    }
}
