//! The types an `Any` may hold: every pool gets the well-known types its
//! files do not import (an `Any` may pack a `google.protobuf.StringValue`
//! whatever the service's files import), and an `Any` of a type that neither
//! defines prints as grpcurl prints it (the type URL, the bytes in base64,
//! and why) instead of failing the call.

use std::collections::BTreeSet;

use anyhow::Context;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

const ANY: &str = "google.protobuf.Any";

/// `pool` with every well-known file it lacks. A file whose types the pool
/// already defines under another file name (grpc-js serves them all in
/// `google_protobuf.proto`) is left out: the pool's own copy serves, and a
/// failed addition leaves the pool as it was.
pub(crate) fn with_well_known_types(mut pool: DescriptorPool) -> DescriptorPool {
    for file in DescriptorPool::global().files() {
        if pool.get_file_by_name(file.name()).is_none() {
            let _clashes = pool.add_file_descriptor_proto(file.file_descriptor_proto().clone());
        }
    }
    pool
}

/// `message` as it can be printed: itself, or, when an `Any` in it holds a
/// type its pool does not define, a copy in which that `Any` holds a stand-in
/// of the type whose JSON is grpcurl's (`@error` and `@value`).
pub(crate) fn printable(message: &DynamicMessage) -> anyhow::Result<Option<DynamicMessage>> {
    let pool = message.descriptor().parent_pool().clone();
    let mut unknown = BTreeSet::new();
    unknown_types(message, &pool, &mut unknown);
    if unknown.is_empty() {
        return Ok(None);
    }
    let mut with_stand_ins = pool;
    for name in &unknown {
        with_stand_ins
            .add_file_descriptor_proto(stand_in(name))
            .with_context(|| format!("describing the unknown type {name}"))?;
    }
    let descriptor = with_stand_ins
        .get_message_by_name(message.descriptor().full_name())
        .context("the message's own type")?;
    let mut copy = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    fill_stand_ins(&mut copy, &unknown);
    Ok(Some(copy))
}

/// The type an `Any` names (what follows the last `/` of its URL).
fn any_type(any: &DynamicMessage) -> Option<(String, Vec<u8>)> {
    let url = any.get_field_by_number(1)?;
    let value = any.get_field_by_number(2)?;
    let url = url.as_str()?;
    let name = url.rsplit_once('/').map_or(url, |(_, name)| name);
    Some((name.to_owned(), value.as_bytes()?.to_vec()))
}

fn unknown_types(message: &DynamicMessage, pool: &DescriptorPool, unknown: &mut BTreeSet<String>) {
    if message.descriptor().full_name() == ANY {
        if let Some((name, bytes)) = any_type(message) {
            match pool.get_message_by_name(&name) {
                // Its own fields may hold more.
                Some(inner) => {
                    if let Ok(inner) = DynamicMessage::decode(inner, bytes.as_slice()) {
                        unknown_types(&inner, pool, unknown);
                    }
                }
                None => {
                    unknown.insert(name);
                }
            }
        }
        return;
    }
    for (_, value) in message.fields() {
        values(value, &mut |nested| unknown_types(nested, pool, unknown));
    }
}

/// Calls `each` on every message `value` holds (itself, a list's, a map's).
fn values(value: &Value, each: &mut dyn FnMut(&DynamicMessage)) {
    match value {
        Value::Message(message) => each(message),
        Value::List(items) => items.iter().for_each(|item| values(item, each)),
        Value::Map(map) => map.values().for_each(|item| values(item, each)),
        _ => {}
    }
}

fn fill_stand_ins(message: &mut DynamicMessage, unknown: &BTreeSet<String>) {
    if message.descriptor().full_name() == ANY {
        let Some((name, bytes)) = any_type(message) else {
            return;
        };
        if !unknown.contains(&name) {
            return;
        }
        let pool = message.descriptor().parent_pool().clone();
        let Some(stand_in) = pool.get_message_by_name(&name) else {
            return;
        };
        let mut filled = DynamicMessage::new(stand_in);
        filled.set_field_by_number(
            1,
            Value::String(format!(
                "{name} is not recognized; see @value for raw binary message data"
            )),
        );
        filled.set_field_by_number(2, Value::Bytes(bytes.into()));
        message.set_field_by_number(2, Value::Bytes(filled.encode_to_vec().into()));
        return;
    }
    for (_, value) in message.fields_mut() {
        values_mut(value, &mut |nested| fill_stand_ins(nested, unknown));
    }
}

fn values_mut(value: &mut Value, each: &mut dyn FnMut(&mut DynamicMessage)) {
    match value {
        Value::Message(message) => each(message),
        Value::List(items) => items.iter_mut().for_each(|item| values_mut(item, each)),
        Value::Map(map) => map
            .iter_mut()
            .for_each(|(_key, item): (&MapKey, &mut Value)| values_mut(item, each)),
        _ => {}
    }
}

/// A file defining `name` as a message whose JSON is grpcurl's for an `Any`
/// it cannot resolve: `@error` (why) and `@value` (the bytes, base64).
fn stand_in(name: &str) -> FileDescriptorProto {
    let (package, message) = name.rsplit_once('.').unwrap_or(("", name));
    // Not identifiers, but the pool takes them and JSON prints them as named,
    // whether it prints proto names or JSON names.
    let field = |name: &str, number: i32, kind: Type| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        json_name: Some(name.to_owned()),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some(format!("echo-client/unknown/{name}.proto")),
        package: (!package.is_empty()).then(|| package.to_owned()),
        message_type: vec![DescriptorProto {
            name: Some(message.to_owned()),
            field: vec![
                field("@error", 1, Type::String),
                field("@value", 2, Type::Bytes),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".to_owned()),
        ..Default::default()
    }
}
