//! The canonical proto3 JSON mapping of every served method's messages, from
//! the descriptor sets the server already compiles (echo-wire's `schemas`),
//! with its failures as statuses.

use bytes::Bytes;
use echo_wire::schemas::{self, JsonError};
pub(crate) use echo_wire::schemas::{MethodSchema, Schemas, pool};
use prost_reflect::MessageDescriptor;
use tonic::Status;

/// `json` (a message of type `desc` in proto3 JSON) encoded as protobuf.
/// A value that does not fit is INVALID_ARGUMENT naming its field.
pub(crate) fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    schemas::json_to_proto(desc, json).map_err(status_of)
}

/// `proto` (a protobuf message of type `desc`) in proto3 JSON.
pub(crate) fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, Status> {
    schemas::proto_to_json(desc, proto).map_err(status_of)
}

/// Bad JSON is the caller's (INVALID_ARGUMENT); a message that will not
/// become JSON is the server's (INTERNAL).
fn status_of(error: JsonError) -> Status {
    match error {
        invalid @ JsonError::Invalid { .. } => Status::invalid_argument(invalid.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::services::DESCRIPTOR_SETS;

    /// Read only when first needed, so a failure would show at a call, not
    /// at start-up: the compiled-in sets are checked here instead.
    #[test]
    fn the_compiled_in_descriptor_sets_decode() {
        let methods = echo_wire::schemas::read(&DESCRIPTOR_SETS).unwrap();
        let echo = &methods["/echo.v1.EchoService/Echo"];
        assert_eq!(echo.input.full_name(), "echo.v1.EchoRequest");
        assert!(echo.no_side_effects);
        assert!(methods.contains_key("/grpc.testing.TestService/UnaryCall"));
        assert!(methods.contains_key("/grpc.health.v1.Health/Check"));
    }
}
