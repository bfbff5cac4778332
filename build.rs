//! Compiles every `proto/**/*.proto` into tonic stubs and an encoded descriptor set.
//!
//! protox is a protobuf compiler written in Rust, so no `protoc` is needed.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";

/// File name, in `OUT_DIR`, of the encoded `FileDescriptorSet` served by reflection.
const DESCRIPTOR_SET: &str = "grpc_echo_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut protos)?;
    protos.sort();

    let descriptors = protox::compile(&protos, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join(DESCRIPTOR_SET), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .bytes(".")
        // The `connect` helper would tie the contract to tonic's transport; the
        // client crate builds its own channel.
        .build_transport(false)
        // Boxed: inline, the rarely set `Wire` would make every EchoResponse
        // (moved several times a call) three times larger.
        .boxed(".echo.v1.EchoResponse.wire")
        .compile_fds(descriptors)?;
    Ok(())
}

fn collect_protos(dir: &Path, protos: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, protos)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            protos.push(path);
        }
    }
    Ok(())
}
