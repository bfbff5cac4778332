//! Descriptors printed as proto source, as grpcurl's `describe` prints them:
//! type references fully qualified with a leading dot.

use std::fmt::Write;

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Syntax,
};

const INDENT: &str = "  ";

/// `service Name { rpc ... }`.
pub(crate) fn service(service: &ServiceDescriptor) -> String {
    let mut out = format!("service {} {{\n", service.name());
    for method in service.methods() {
        let _ = writeln!(out, "{INDENT}{}", self::method(&method));
    }
    out.push_str("}\n");
    out
}

/// `rpc Name ( [stream] .In ) returns ( [stream] .Out );`.
pub(crate) fn method(method: &MethodDescriptor) -> String {
    let stream = |streaming: bool| if streaming { "stream " } else { "" };
    format!(
        "rpc {} ( {}.{} ) returns ( {}.{} );",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

/// `message Name { fields, oneofs, nested types }`.
pub(crate) fn message(message: &MessageDescriptor) -> String {
    let mut out = String::new();
    write_message(&mut out, message, "");
    out
}

/// `enum Name { VALUE = n; }`.
pub(crate) fn enumeration(enumeration: &EnumDescriptor) -> String {
    let mut out = String::new();
    write_enum(&mut out, enumeration, "");
    out
}

/// One field's declaration, e.g. `repeated .pkg.Item items = 3;`.
pub(crate) fn field(field: &FieldDescriptor) -> String {
    let syntax = field.parent_message().parent_file().syntax();
    let label = match field.cardinality() {
        _ if field.is_map() => "",
        Cardinality::Repeated => "repeated ",
        Cardinality::Required => "required ",
        Cardinality::Optional if syntax == Syntax::Proto2 => "optional ",
        Cardinality::Optional
            if field
                .containing_oneof()
                .is_some_and(|oneof| oneof.is_synthetic()) =>
        {
            "optional "
        }
        Cardinality::Optional => "",
    };
    format!(
        "{label}{} {} = {};",
        type_name(field),
        field.name(),
        field.number()
    )
}

fn write_message(out: &mut String, message: &MessageDescriptor, indent: &str) {
    let inner = format!("{indent}{INDENT}");
    let _ = writeln!(out, "{indent}message {} {{", message.name());
    let mut oneofs_written = Vec::new();
    for field in message.fields() {
        match field
            .containing_oneof()
            .filter(|oneof| !oneof.is_synthetic())
        {
            Some(oneof) => {
                if oneofs_written.contains(&oneof.name().to_owned()) {
                    continue;
                }
                oneofs_written.push(oneof.name().to_owned());
                let _ = writeln!(out, "{inner}oneof {} {{", oneof.name());
                for member in oneof.fields() {
                    let _ = writeln!(out, "{inner}{INDENT}{}", self::field(&member));
                }
                let _ = writeln!(out, "{inner}}}");
            }
            None => {
                let _ = writeln!(out, "{inner}{}", self::field(&field));
            }
        }
    }
    for nested in message
        .child_messages()
        .filter(|nested| !nested.is_map_entry())
    {
        write_message(out, &nested, &inner);
    }
    for nested in message.child_enums() {
        write_enum(out, &nested, &inner);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn write_enum(out: &mut String, enumeration: &EnumDescriptor, indent: &str) {
    let _ = writeln!(out, "{indent}enum {} {{", enumeration.name());
    for value in enumeration.values() {
        let _ = writeln!(
            out,
            "{indent}{INDENT}{} = {};",
            value.name(),
            value.number()
        );
    }
    let _ = writeln!(out, "{indent}}}");
}

/// A field's type as proto source names it: a scalar, `.pkg.Type`, or `map<K, V>`.
fn type_name(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(entry) if field.is_map() => format!(
            "map<{}, {}>",
            type_name(&entry.map_entry_key_field()),
            type_name(&entry.map_entry_value_field())
        ),
        Kind::Message(message) => format!(".{}", message.full_name()),
        Kind::Enum(enumeration) => format!(".{}", enumeration.full_name()),
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    #[test]
    fn messages_services_and_enums_print_as_proto_source() {
        let pool =
            DescriptorPool::decode(grpc_echo::FILE_DESCRIPTOR_SET).expect("the compiled-in set");
        let service = pool.get_service_by_name("echo.v1.EchoService").unwrap();
        let text = self::service(&service);
        assert!(text.starts_with("service EchoService {\n"), "{text}");
        assert!(
            text.contains(
                "  rpc BidiStream ( stream .echo.v1.EchoRequest ) returns ( stream .echo.v1.EchoResponse );\n"
            ),
            "{text}"
        );
        let request = pool.get_message_by_name("echo.v1.EchoRequest").unwrap();
        let text = message(&request);
        assert!(text.contains("  string message = 1;\n"), "{text}");
        assert!(text.ends_with("}\n"));
        let code = pool.get_enum_by_name("echo.v1.StatusCode").unwrap();
        assert!(enumeration(&code).contains("  STATUS_CODE_NOT_FOUND = 5;\n"));
    }
}
