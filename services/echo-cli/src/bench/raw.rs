//! A method of any server as a load's target (`--method` with raw messages,
//! `--call` with messages from its descriptors), and what is made per request.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use echo_client::ClientBuilder;
use http::uri::PathAndQuery;

use super::args::{BenchArgs, BenchRpc};
use super::targets::{self, Templates};
use super::template::{self, Template};
use crate::commands::any::call::{self as any_call, RequestData};

/// The method `--method` or `--call` names, if either does.
pub(super) fn raw_target_named(args: &BenchArgs) -> Option<&str> {
    args.call
        .as_deref()
        .or(args.method.as_ref().map(PathAndQuery::as_str))
}

/// A method of any server, with encoded messages.
pub(super) struct RawTarget {
    pub(super) path: PathAndQuery,
    /// At least one.
    pub(super) messages: Vec<Bytes>,
    /// What is made per request instead (bidi ping-pongs the first message).
    pub(super) templates: Option<Arc<Templates>>,
    pub(super) shape: Shape,
}

/// Which way a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// The method `--method` or `--call` names, if either does.
pub(super) async fn raw_target(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
) -> anyhow::Result<Option<RawTarget>> {
    let headers = header_templates
        .iter()
        .map(|(key, value)| {
            let key = key
                .parse()
                .with_context(|| format!("{key:?} is not a header name"))?;
            let template =
                Template::parse(value).with_context(|| format!("the template of header {key}"))?;
            Ok((key, template))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &args.method {
        return Ok(Some(RawTarget {
            path: path.clone(),
            messages: vec![raw_message(args.field, args.payload_size)],
            templates: templates(None, headers),
            shape: if args.rpc == BenchRpc::Bidi {
                Shape::Bidi
            } else {
                Shape::Unary
            },
        }));
    }
    let Some(name) = &args.call else {
        return Ok(None);
    };
    let (service, _) = any_call::split_method(name)?;
    let pool = crate::commands::any::pool_for(builder, &args.source, service).await?;
    let method = crate::commands::any::find_method(&pool, name)?;
    let input = method.input();
    // A template is one request's JSON, made anew for each request; it is
    // made once here so that one that does not fit fails before the load.
    let text = args.data.as_ref().map(RequestData::text).transpose()?;
    let body = match &text {
        Some(text) if Template::is_template(text) => {
            let template = Template::parse(text).context("the --data template")?;
            let first = template.render(template::RequestContext {
                request: 0,
                worker: 0,
                connection: 0,
            });
            targets::encode(&input, &first).context("the --data template's first request")?;
            Some((template, input.clone()))
        }
        _ => None,
    };
    let messages = match &text {
        Some(text) if body.is_none() => any_call::parse_all(&input, text)?,
        _ => vec![prost_reflect::DynamicMessage::new(input.clone())],
    };
    if messages.is_empty() {
        bail!("--data holds no request message");
    }
    let shape = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => Shape::Unary,
        (false, true) => Shape::ServerStream,
        (true, false) => Shape::ClientStream,
        (true, true) => Shape::Bidi,
    };
    Ok(Some(RawTarget {
        path: any_call::path_of(&method)?,
        messages: messages
            .iter()
            .map(|message| prost::Message::encode_to_vec(message).into())
            .collect(),
        templates: templates(body, headers),
        shape,
    }))
}

fn templates(
    body: Option<(Template, prost_reflect::MessageDescriptor)>,
    headers: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        Template,
    )>,
) -> Option<Arc<Templates>> {
    (body.is_some() || !headers.is_empty()).then(|| {
        Arc::new(Templates {
            body,
            headers,
            made: Default::default(),
        })
    })
}

/// The message `--method` sends: protobuf field `field` (length-delimited)
/// holding `size` bytes of `*`, which reads as a `string` or `bytes` field alike.
fn raw_message(field: u32, size: usize) -> Bytes {
    const LENGTH_DELIMITED: u64 = 2;
    let mut message = BytesMut::with_capacity(size + 15);
    put_varint(&mut message, u64::from(field) << 3 | LENGTH_DELIMITED);
    put_varint(&mut message, size as u64);
    message.put_bytes(b'*', size);
    message.freeze()
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use grpc_echo::echo::v1::EchoRequest;
    use prost::Message;

    use super::raw_message;

    #[test]
    fn raw_messages_fill_the_field_asked() {
        let as_message = EchoRequest::decode(raw_message(1, 200)).unwrap();
        assert_eq!(as_message.message, "*".repeat(200));
        assert!(as_message.payload.is_empty());
        let as_payload = EchoRequest::decode(raw_message(2, 70_000)).unwrap();
        assert_eq!(as_payload.payload, vec![b'*'; 70_000]);
        assert!(as_payload.message.is_empty());
    }
}
