//! `echo-client call`: any method of any service, in all four shapes, with
//! requests and responses in canonical proto3 JSON (prost-reflect's dynamic
//! messages).

use std::io::Read;

use anyhow::{Context, bail};
use bytes::Buf;
use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::output::Output;

/// Where the request messages come from (`-d`).
#[derive(Debug, Clone)]
pub(crate) enum RequestData {
    /// JSON given on the command line.
    Inline(String),
    /// `@FILE`.
    File(std::path::PathBuf),
    /// `@-`: read as it arrives, so that a bidi call is interactive.
    Stdin,
}

impl RequestData {
    /// `-d`'s value: JSON, `@FILE` or `@-`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.strip_prefix('@') {
            Some("-") => Self::Stdin,
            Some(path) => Self::File(path.into()),
            None => Self::Inline(text.to_owned()),
        })
    }

    /// Every message, read to the end (for methods that take one, and for bench).
    pub(crate) fn read_all(
        &self,
        input: &MessageDescriptor,
    ) -> anyhow::Result<Vec<DynamicMessage>> {
        parse_all(input, &self.text()?)
    }

    /// The whole text, read to the end.
    pub(crate) fn text(&self) -> anyhow::Result<String> {
        Ok(match self {
            Self::Inline(text) => text.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            Self::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read stdin")?;
                text
            }
        })
    }
}

/// The JSON objects of `text`, one after another, as messages of `input`.
pub(crate) fn parse_all(
    input: &MessageDescriptor,
    text: &str,
) -> anyhow::Result<Vec<DynamicMessage>> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
        .map(|(index, value)| to_message(input, index, value))
        .collect()
}

/// Request `index` (from 0) as a message of `input`; one that does not fit
/// names the field.
pub(crate) fn to_message(
    input: &MessageDescriptor,
    index: usize,
    value: serde_json::Result<Value>,
) -> anyhow::Result<DynamicMessage> {
    let value = value.with_context(|| format!("request {} is not JSON", index + 1))?;
    let mut track = serde_path_to_error::Track::new();
    DynamicMessage::deserialize(
        input.clone(),
        serde_path_to_error::Deserializer::new(value, &mut track),
    )
    .map_err(|cause| {
        let path = track.path().to_string();
        let field = match path.as_str() {
            "." => String::new(),
            path => format!(", field `{path}`"),
        };
        let suggestion = misspelled_field(input, &path, &cause.to_string())
            .map(|name| format!("; did you mean `{name}`?"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "request {} does not fit {}{field}: {cause}{suggestion}",
            index + 1,
            input.full_name()
        )
    })
}

/// For an error about an unknown field name (`cause`) in the message at
/// `path` of `input`, that message's field closest to the name given.
fn misspelled_field(input: &MessageDescriptor, path: &str, cause: &str) -> Option<String> {
    let given = cause
        .strip_prefix("unrecognized field name '")?
        .split('\'')
        .next()?;
    let mut message = input.clone();
    for segment in path.split('.').filter(|segment| !segment.is_empty()) {
        // `items[2]` or `labels.key`: the field's name comes first.
        let name = segment.split('[').next()?;
        let field = message
            .get_field_by_json_name(name)
            .or_else(|| message.get_field_by_name(name))?;
        message = match field.kind() {
            prost_reflect::Kind::Message(inner) if inner.is_map_entry() => {
                inner.map_entry_value_field().kind().as_message()?.clone()
            }
            prost_reflect::Kind::Message(inner) => inner,
            _ => return None,
        };
    }
    let names: Vec<String> = message
        .fields()
        .flat_map(|field| [field.json_name().to_owned(), field.name().to_owned()])
        .collect();
    crate::suggest::closest(given, names.iter().map(String::as_str)).map(str::to_owned)
}

/// The method `name` names: `package.Service/Method`, `/package.Service/Method`
/// or `package.Service.Method`.
pub(crate) fn split_method(name: &str) -> anyhow::Result<(&str, &str)> {
    let name = name.trim_start_matches('/');
    name.split_once('/')
        .or_else(|| name.rsplit_once('.'))
        .filter(|(service, method)| !service.is_empty() && !method.is_empty())
        .with_context(|| format!("{name:?} is not a method: give it as package.Service/Method"))
}

/// The HTTP/2 path of `method`.
pub(crate) fn path_of(method: &MethodDescriptor) -> anyhow::Result<PathAndQuery> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    path.parse()
        .with_context(|| format!("{path:?} is not a valid request path"))
}

/// Waits until `grpc` can take a call; a transport that cannot is UNAVAILABLE.
pub(crate) async fn ready(grpc: &mut Grpc<echo_client::Transport>) -> Result<(), Status> {
    grpc.ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))
}

/// Makes the call and prints each response as it arrives.
pub(crate) async fn run(
    grpc: &Grpc<echo_client::Transport>,
    method: &MethodDescriptor,
    data: Option<&RequestData>,
    options: &SerializeOptions,
    out: Output,
) -> anyhow::Result<()> {
    let input = method.input();
    let (requests, receiver) = mpsc::channel(16);
    // A request that does not parse ends the call (the stream is reset, not
    // half-closed: the server must not see a shortened stream as complete).
    let (bad_request, mut bad_request_seen) = mpsc::channel::<anyhow::Error>(1);
    if method.is_client_streaming() {
        match data {
            Some(RequestData::Stdin) | None => read_stdin(input, requests, bad_request),
            Some(data) => {
                let messages = data.read_all(&input)?;
                tokio::spawn(async move {
                    for message in messages {
                        if requests.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    } else {
        let mut messages = match data {
            Some(data) => data.read_all(&input)?,
            None => vec![DynamicMessage::new(input.clone())],
        };
        if messages.len() != 1 {
            bail!(
                "{} takes one request message; {} given",
                method.full_name(),
                messages.len()
            );
        }
        // The channel has room: this cannot fail. Dropping the sender ends
        // the request stream, which a unary server waits for.
        let _ = requests.try_send(messages.remove(0));
        drop(requests);
    }

    let mut grpc = grpc.clone();
    ready(&mut grpc).await?;
    let response = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(receiver)),
            path_of(method)?,
            DynamicCodec {
                output: method.output(),
            },
        )
        .await?;
    out.metadata("headers", response.metadata());
    let mut answers = response.into_inner();
    loop {
        tokio::select! {
            Some(err) = bad_request_seen.recv() => return Err(err),
            answer = answers.message() => match answer? {
                Some(answer) => print(&answer, options, out)?,
                None => break,
            },
        }
    }
    if let Some(trailers) = answers.trailers().await? {
        out.metadata("trailers", &trailers);
    }
    Ok(())
}

/// Reads request messages from stdin as they are typed, on a thread of its own.
fn read_stdin(
    input: MessageDescriptor,
    requests: mpsc::Sender<DynamicMessage>,
    bad_request: mpsc::Sender<anyhow::Error>,
) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin().lock();
        for (index, value) in serde_json::Deserializer::from_reader(stdin)
            .into_iter::<Value>()
            .enumerate()
        {
            match to_message(&input, index, value) {
                Ok(message) => {
                    if requests.blocking_send(message).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    let _ = bad_request.blocking_send(err);
                    return;
                }
            }
        }
    });
}

fn print(message: &DynamicMessage, options: &SerializeOptions, out: Output) -> anyhow::Result<()> {
    let stand_ins = super::any_types::printable(message)?;
    let message = stand_ins.as_ref().unwrap_or(message);
    let mut text = Vec::new();
    if out.json {
        let mut serializer = serde_json::Serializer::new(&mut text);
        message.serialize_with_options(&mut serializer, options)?;
    } else {
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
        let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
        message.serialize_with_options(&mut serializer, options)?;
    }
    out!("{}", String::from_utf8_lossy(&text));
    Ok(())
}

/// Encodes dynamic requests and decodes responses as the method's output type.
#[derive(Debug, Clone)]
struct DynamicCodec {
    output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = Self;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self {
        self.clone()
    }
}

#[derive(Debug, Clone, Copy)]
struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|err| Status::internal(format!("cannot encode the request: {err}")))
    }
}

impl Decoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.output.clone(), bytes)
            .map(Some)
            .map_err(|err| {
                Status::internal(format!(
                    "the response does not decode as {}: {err}",
                    self.output.full_name()
                ))
            })
    }
}
