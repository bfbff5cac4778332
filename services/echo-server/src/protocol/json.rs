//! The canonical proto3 JSON mapping of every served method's messages, from
//! the descriptor sets the server already compiles (prost-reflect), and the
//! message compressions a JSON message may arrive in.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use prost_types::method_options::IdempotencyLevel;
use tonic::Status;

/// What the translations need to know of one method.
#[derive(Debug)]
pub(crate) struct MethodSchema {
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
    /// Marked `idempotency_level = NO_SIDE_EFFECTS`: Connect may call it with GET.
    pub(crate) no_side_effects: bool,
}

/// Every method of the descriptor sets, by request path (`/package.Service/Method`),
/// read on first use: a server that only ever sees gRPC never holds them
/// (measured: 1.1 MiB of idle RSS).
#[derive(Debug)]
pub(crate) struct Schemas {
    sets: &'static [&'static [u8]],
    methods: OnceLock<HashMap<String, MethodSchema>>,
}

impl Schemas {
    /// The methods of `sets` (encoded `FileDescriptorSet`s; a file in several
    /// sets is read once).
    pub(crate) fn new(sets: &'static [&'static [u8]]) -> Self {
        Self {
            sets,
            methods: OnceLock::new(),
        }
    }

    /// The method `path` names, if it is known.
    pub(crate) fn method(&self, path: &str) -> Option<&MethodSchema> {
        self.methods
            .get_or_init(|| {
                read(self.sets).unwrap_or_else(|err| {
                    tracing::error!(cause = %err, "the compiled-in descriptor sets do not decode: JSON calls will be UNIMPLEMENTED");
                    HashMap::new()
                })
            })
            .get(path)
    }
}

/// The descriptors of `sets` (encoded `FileDescriptorSet`s) in one pool.
pub(crate) fn pool(sets: &[&[u8]]) -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    let mut pool = DescriptorPool::new();
    for set in sets {
        pool.decode_file_descriptor_set(*set)?;
    }
    Ok(pool)
}

fn read(sets: &[&[u8]]) -> Result<HashMap<String, MethodSchema>, prost_reflect::DescriptorError> {
    let methods = pool(sets)?
        .services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .map(|method| {
            let no_side_effects = method
                .method_descriptor_proto()
                .options
                .as_ref()
                .is_some_and(|options| {
                    options.idempotency_level() == IdempotencyLevel::NoSideEffects
                });
            let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
            let schema = MethodSchema {
                input: method.input(),
                output: method.output(),
                no_side_effects,
            };
            (path, schema)
        })
        .collect();
    Ok(methods)
}

/// `json` (a message of type `desc` in proto3 JSON) encoded as protobuf.
/// A value that does not fit is INVALID_ARGUMENT naming its field.
pub(crate) fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    let invalid = |path: Option<String>, cause: serde_json::Error| {
        let field = path
            .filter(|path| path != ".")
            .map(|path| format!(" field `{path}`"))
            .unwrap_or_default();
        Status::invalid_argument(format!("{}{field} in JSON: {cause}", desc.full_name()))
    };
    let mut json = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let message = DynamicMessage::deserialize(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut json, &mut track),
    )
    .map_err(|cause| invalid(Some(track.path().to_string()), cause))?;
    json.end().map_err(|cause| invalid(None, cause))?;
    Ok(message.encode_to_vec().into())
}

/// `proto` (a protobuf message of type `desc`) in proto3 JSON.
pub(crate) fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(desc.clone(), proto).map_err(|err| {
        Status::internal(format!("cannot decode {} to JSON: {err}", desc.full_name()))
    })?;
    let mut json = Vec::with_capacity(proto.len() * 2 + 2);
    let mut serializer = serde_json::Serializer::new(&mut json);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|err| Status::internal(format!("{} to JSON: {err}", desc.full_name())))?;
    Ok(json.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::DESCRIPTOR_SETS;

    /// Read only when first needed, so a failure would show at a call, not
    /// at start-up: the compiled-in sets are checked here instead.
    #[test]
    fn the_compiled_in_descriptor_sets_decode() {
        let methods = read(&DESCRIPTOR_SETS).unwrap();
        let echo = &methods["/echo.v1.EchoService/Echo"];
        assert_eq!(echo.input.full_name(), "echo.v1.EchoRequest");
        assert!(echo.no_side_effects);
        assert!(methods.contains_key("/grpc.testing.TestService/UnaryCall"));
        assert!(methods.contains_key("/grpc.health.v1.Health/Check"));
    }
}
