//! Where the descriptors of any service come from: the server's reflection
//! (v1, or v1alpha for older servers), `.proto` files compiled at run time
//! with protox, or an encoded `FileDescriptorSet` (a protoset).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use echo_client::Transport;
use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::{Code, Streaming};
use tonic_prost::ProstCodec;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use super::any_types::with_well_known_types;

/// Where `list`, `describe` and `call` read descriptors [default: the server's reflection].
#[derive(Debug, Clone, Args)]
pub(crate) struct SourceArgs {
    /// Compile this `.proto` file (repeatable) instead of asking the server.
    #[arg(long = "proto", env = "ECHO_PROTO", value_delimiter = ',')]
    protos: Vec<PathBuf>,
    /// Where `--proto` files and their imports are found (repeatable) [default: `.`].
    #[arg(
        long = "import-path",
        env = "ECHO_IMPORT_PATH",
        value_delimiter = ',',
        requires = "protos"
    )]
    import_paths: Vec<PathBuf>,
    /// Read descriptors from this encoded `FileDescriptorSet` (repeatable).
    #[arg(
        long = "protoset",
        env = "ECHO_PROTOSET",
        value_delimiter = ',',
        conflicts_with = "protos"
    )]
    protosets: Vec<PathBuf>,
}

impl SourceArgs {
    /// The descriptors of the files given; `None` when they are to come from
    /// the server.
    pub(crate) fn files(&self) -> anyhow::Result<Option<DescriptorPool>> {
        if !self.protos.is_empty() {
            let import_paths = if self.import_paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                self.import_paths.clone()
            };
            let mut compiler = protox::Compiler::new(&import_paths)
                .context("cannot use the --import-path directories")?;
            compiler.include_imports(true);
            compiler
                .open_files(&self.protos)
                .map_err(|err| anyhow::anyhow!("cannot compile the --proto files: {err}"))?;
            return Ok(Some(with_well_known_types(compiler.descriptor_pool())));
        }
        if self.protosets.is_empty() {
            return Ok(None);
        }
        let mut pool = DescriptorPool::new();
        for path in &self.protosets {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            pool.decode_file_descriptor_set(bytes.as_slice())
                .with_context(|| format!("{} is not a valid protoset", path.display()))?;
        }
        Ok(Some(with_well_known_types(pool)))
    }
}

/// The two reflection services; the messages are the same in both.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A reflection stream to the server: one request, one answer at a time.
pub(crate) struct Reflection {
    requests: mpsc::Sender<ServerReflectionRequest>,
    answers: Streaming<ServerReflectionResponse>,
}

impl Reflection {
    /// Opens the stream on the v1 service, or v1alpha where v1 is not served.
    pub(crate) async fn open(transport: Transport) -> anyhow::Result<Self> {
        let mut grpc = Grpc::new(transport);
        for path in REFLECTION_PATHS {
            // Some servers send their headers only with a first answer: the
            // first question goes with the call.
            let (requests, receiver) = mpsc::channel(1);
            let _ = requests.try_send(question(MessageRequest::ListServices(String::new())));
            super::call::ready(&mut grpc).await?;
            let opened = grpc
                .streaming(
                    tonic::Request::new(ReceiverStream::new(receiver)),
                    PathAndQuery::from_static(path),
                    ProstCodec::default(),
                )
                .await;
            let mut answers = match opened {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == Code::Unimplemented => continue,
                Err(status) => return Err(status.into()),
            };
            match answers.message().await {
                Ok(Some(_)) => return Ok(Self { requests, answers }),
                Err(status) if status.code() == Code::Unimplemented => continue,
                Err(status) => return Err(status.into()),
                Ok(None) => bail!("the server ended the reflection stream"),
            }
        }
        bail!(
            "the server does not serve reflection (grpc.reflection.v1 or v1alpha): \
             give the service's descriptors with --proto FILE or --protoset FILE"
        )
    }

    async fn ask(&mut self, request: MessageRequest) -> anyhow::Result<MessageResponse> {
        if self.requests.send(question(request)).await.is_err() {
            // The stream ended: its status says why.
            self.answers.message().await?;
            bail!("the server ended the reflection stream");
        }
        match self.answers.message().await? {
            Some(ServerReflectionResponse {
                message_response: Some(MessageResponse::ErrorResponse(error)),
                ..
            }) => bail!(
                "{}: {}",
                echo_wire::codes::name(error.error_code),
                error.error_message
            ),
            Some(ServerReflectionResponse {
                message_response: Some(answer),
                ..
            }) => Ok(answer),
            Some(_) => bail!("the server's reflection answer is empty"),
            None => bail!("the server ended the reflection stream"),
        }
    }

    /// The services the server lists.
    pub(crate) async fn services(&mut self) -> anyhow::Result<Vec<String>> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(list) => Ok(list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect()),
            _ => bail!("the server answered ListServices with something else"),
        }
    }

    /// The files that define `symbols`, and every file they import, as one pool.
    pub(crate) async fn pool_for(&mut self, symbols: &[String]) -> anyhow::Result<DescriptorPool> {
        let mut files: Vec<FileDescriptorProto> = Vec::new();
        let mut known: HashSet<String> = HashSet::new();
        let mut wanted: VecDeque<String> = VecDeque::new();
        for symbol in symbols {
            let answer = self
                .ask(MessageRequest::FileContainingSymbol(symbol.clone()))
                .await
                .with_context(|| format!("the server's reflection cannot find {symbol}"))?;
            take_files(answer, &mut files, &mut known, &mut wanted)?;
        }
        // Imports the server has not sent yet, transitively.
        while let Some(name) = wanted.pop_front() {
            if known.contains(&name) {
                continue;
            }
            let answer = self
                .ask(MessageRequest::FileByFilename(name.clone()))
                .await
                .with_context(|| format!("the server's reflection cannot send {name}"))?;
            take_files(answer, &mut files, &mut known, &mut wanted)?;
        }
        supply_missing_imports(&mut files);
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(files)
            .context("the server's descriptors do not fit together")?;
        Ok(with_well_known_types(pool))
    }
}

/// Node's `@grpc/reflection` sends files that use types of other files without
/// importing them (grpc/grpc-node#2958, #3018), which grpcurl cannot use. Each
/// such file gets the import: of the file sent that defines the type, or else
/// of prost-reflect's copy of the well-known file.
fn supply_missing_imports(files: &mut Vec<FileDescriptorProto>) {
    let mut defined_in: HashMap<String, String> = HashMap::new();
    for file in files.iter() {
        for name in defined_types(file) {
            defined_in.insert(name, file.name().to_owned());
        }
    }
    let well_known = DescriptorPool::global();
    let mut present: HashSet<String> = files.iter().map(|file| file.name().to_owned()).collect();
    let mut supplied = Vec::new();
    for file in files.iter_mut() {
        let mut types = Vec::new();
        referenced_types(file, &mut types);
        for name in types {
            // Fully qualified (`.pkg.Type`) or, as that package sends them, not.
            let name = name.trim_start_matches('.');
            let import = match defined_in.get(name) {
                Some(import) => import.clone(),
                None => {
                    let Some(well_known_file) = well_known
                        .get_message_by_name(name)
                        .map(|message| message.parent_file())
                        .or_else(|| well_known.get_enum_by_name(name).map(|e| e.parent_file()))
                    else {
                        continue;
                    };
                    // With the well-known files it imports in turn.
                    let mut pending = vec![well_known_file.clone()];
                    while let Some(needed) = pending.pop() {
                        if present.insert(needed.name().to_owned()) {
                            supplied.push(needed.file_descriptor_proto().clone());
                            pending.extend(needed.dependencies());
                        }
                    }
                    well_known_file.name().to_owned()
                }
            };
            if import != file.name() && !file.dependency.contains(&import) {
                file.dependency.push(import);
            }
        }
    }
    files.extend(supplied);
}

/// The full names of the messages and enums `file` defines.
fn defined_types(file: &FileDescriptorProto) -> Vec<String> {
    fn nested(prefix: &str, message: &prost_types::DescriptorProto, names: &mut Vec<String>) {
        let name = format!("{prefix}.{}", message.name());
        for each in &message.nested_type {
            nested(&name, each, names);
        }
        names.extend(
            message
                .enum_type
                .iter()
                .map(|e| format!("{name}.{}", e.name())),
        );
        names.push(name);
    }
    let mut names = Vec::new();
    let package = file.package();
    for message in &file.message_type {
        nested(package, message, &mut names);
    }
    names.extend(
        file.enum_type
            .iter()
            .map(|e| format!("{package}.{}", e.name())),
    );
    names
        .into_iter()
        .map(|name| name.trim_start_matches('.').to_owned())
        .collect()
}

/// The type names `file` refers to: its fields' and its methods'.
fn referenced_types(file: &FileDescriptorProto, types: &mut Vec<String>) {
    fn fields_of(message: &prost_types::DescriptorProto, types: &mut Vec<String>) {
        types.extend(
            message
                .field
                .iter()
                .map(|field| field.type_name().to_owned()),
        );
        for nested in &message.nested_type {
            fields_of(nested, types);
        }
    }
    for message in &file.message_type {
        fields_of(message, types);
    }
    for method in file.service.iter().flat_map(|service| &service.method) {
        types.push(method.input_type().to_owned());
        types.push(method.output_type().to_owned());
    }
}

fn question(request: MessageRequest) -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }
}

/// Keeps the files of a reflection answer not seen before, and asks for their imports.
fn take_files(
    answer: MessageResponse,
    files: &mut Vec<FileDescriptorProto>,
    known: &mut HashSet<String>,
    wanted: &mut VecDeque<String>,
) -> anyhow::Result<()> {
    let MessageResponse::FileDescriptorResponse(answer) = answer else {
        bail!("the server answered a file request with something else");
    };
    for encoded in answer.file_descriptor_proto {
        let file = FileDescriptorProto::decode(encoded.as_slice())
            .context("the server sent a descriptor that does not decode")?;
        if !known.insert(file.name().to_owned()) {
            continue;
        }
        wanted.extend(file.dependency.iter().cloned());
        files.push(file);
    }
    Ok(())
}
