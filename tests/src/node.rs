//! Node.js clients of other implementations (the official Connect clients),
//! as installed by `scripts/test.sh`, with code generated from our protos by
//! `@bufbuild/protoc-gen-es` fed the descriptors our build compiles (there is
//! no `protoc` here: the plugin request is built from them directly).

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

use crate::process::{COMMAND_TIMEOUT, output_within};

/// The proto files the Node clients need code for.
const GENERATED: [&str; 1] = ["echo/v1/echo.proto"];

/// The `node_modules` installed from `tests/node/package.json`.
pub fn node_modules() -> PathBuf {
    let path: PathBuf = std::env::var_os("ECHO_TEST_NODE_MODULES")
        .unwrap_or_else(|| {
            panic!("ECHO_TEST_NODE_MODULES is not set: run the suite with scripts/test.sh, which installs the Node clients")
        })
        .into();
    assert!(
        path.is_dir(),
        "ECHO_TEST_NODE_MODULES={} is not a directory",
        path.display()
    );
    path
}

/// A directory holding the test scripts of `tests/node` beside a link to
/// [`node_modules`] and the code protoc-gen-es generates for the echo contract
/// (under `gen/`), so the scripts import both as they would in a project.
pub fn project(dir: &Path) -> PathBuf {
    let modules = node_modules();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    for entry in std::fs::read_dir(&scripts).expect("tests/node") {
        let path = entry.expect("tests/node entry").path();
        if path
            .extension()
            .is_some_and(|ext| ext == "mjs" || ext == "json")
        {
            std::fs::copy(&path, dir.join(path.file_name().expect("a file name")))
                .expect("copy a script");
        }
    }
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).expect("link node_modules");
    generate(&modules.join(".bin/protoc-gen-es"), &dir.join("gen"));
    dir.to_owned()
}

/// Runs protoc-gen-es on our descriptors, writing its files under `out`.
fn generate(plugin: &Path, out: &Path) {
    let set =
        FileDescriptorSet::decode(grpc_echo::FILE_DESCRIPTOR_SET).expect("our descriptors decode");
    let request = CodeGeneratorRequest {
        file_to_generate: GENERATED.map(String::from).to_vec(),
        parameter: Some("target=js".to_owned()),
        proto_file: set.file,
        ..Default::default()
    };
    let output = output_within(
        Command::new(plugin),
        &request.encode_to_vec(),
        COMMAND_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "protoc-gen-es failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response =
        CodeGeneratorResponse::decode(output.stdout.as_slice()).expect("a plugin response");
    assert_eq!(
        response.error, None,
        "protoc-gen-es refused our descriptors"
    );
    for file in response.file {
        let path = out.join(file.name());
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create gen dirs");
        std::fs::write(&path, file.content()).expect("write generated code");
    }
}
