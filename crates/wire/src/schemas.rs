//! Every method of a set of compiled-in descriptor sets, by request path:
//! how it streams, whether it has side effects, and its messages' canonical
//! proto3 JSON mapping (prost-reflect). The server and the client library
//! read the same descriptors through this one module.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use prost_types::method_options::IdempotencyLevel;

/// What the translations need to know of one method.
#[derive(Debug)]
pub struct MethodSchema {
    /// The request message.
    pub input: MessageDescriptor,
    /// The response message.
    pub output: MessageDescriptor,
    /// Requests come as a stream.
    pub client_streaming: bool,
    /// Responses come as a stream.
    pub server_streaming: bool,
    /// Marked `idempotency_level = NO_SIDE_EFFECTS`: Connect may call it with GET.
    pub no_side_effects: bool,
}

impl MethodSchema {
    /// One request and one response.
    pub fn is_unary(&self) -> bool {
        !self.client_streaming && !self.server_streaming
    }
}

/// Every method of the descriptor sets, by request path (`/package.Service/Method`),
/// read on first use: a server that only ever sees gRPC never holds them
/// (measured: 1.1 MiB of idle RSS). Sets that do not decode give no methods
/// (the compiled-in sets are checked by their users' tests).
#[derive(Debug)]
pub struct Schemas {
    sets: &'static [&'static [u8]],
    methods: OnceLock<HashMap<String, MethodSchema>>,
}

impl Schemas {
    /// The methods of `sets` (encoded `FileDescriptorSet`s; a file in several
    /// sets is read once).
    pub const fn new(sets: &'static [&'static [u8]]) -> Self {
        Self {
            sets,
            methods: OnceLock::new(),
        }
    }

    /// The method `path` names, if it is known.
    pub fn method(&self, path: &str) -> Option<&MethodSchema> {
        self.methods
            .get_or_init(|| read(self.sets).unwrap_or_default())
            .get(path)
    }
}

/// The descriptors of `sets` (encoded `FileDescriptorSet`s) in one pool.
pub fn pool(sets: &[&[u8]]) -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    let mut pool = DescriptorPool::new();
    for set in sets {
        pool.decode_file_descriptor_set(*set)?;
    }
    Ok(pool)
}

/// Every method of `sets`, by path.
pub fn read(
    sets: &[&[u8]],
) -> Result<HashMap<String, MethodSchema>, prost_reflect::DescriptorError> {
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
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
                no_side_effects,
            };
            (path, schema)
        })
        .collect();
    Ok(methods)
}

/// Why a message could not be carried from one encoding to the other. Each
/// names the message type and its cause (the cause is not a `source`, so a
/// report names it once).
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The JSON is not a message of the type (or has a field that does not fit).
    #[error("{message}{} in JSON: {cause}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Invalid {
        /// The message type.
        message: String,
        /// The path of the field that does not fit, when one does not.
        field: Option<String>,
        /// What is wrong.
        cause: serde_json::Error,
    },
    /// The protobuf bytes are not a message of the type.
    #[error("cannot decode {message} to JSON: {cause}")]
    Decode {
        /// The message type.
        message: String,
        /// What is wrong.
        cause: prost::DecodeError,
    },
    /// The message could not be written as JSON.
    #[error("{message} to JSON: {cause}")]
    Serialize {
        /// The message type.
        message: String,
        /// What is wrong.
        cause: serde_json::Error,
    },
}

/// `json` (a message of type `desc` in proto3 JSON) encoded as protobuf.
pub fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, JsonError> {
    let invalid = |field: Option<String>, cause| JsonError::Invalid {
        message: desc.full_name().to_owned(),
        field: field.filter(|path| path != "."),
        cause,
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
pub fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, JsonError> {
    let message =
        DynamicMessage::decode(desc.clone(), proto).map_err(|cause| JsonError::Decode {
            message: desc.full_name().to_owned(),
            cause,
        })?;
    let mut json = Vec::with_capacity(proto.len() * 2 + 2);
    let mut serializer = serde_json::Serializer::new(&mut json);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|cause| JsonError::Serialize {
            message: desc.full_name().to_owned(),
            cause,
        })?;
    Ok(json.into())
}
