//! One request message for unary and server-streaming calls: gRPC's status
//! codes document calls to them with none or several as UNIMPLEMENTED
//! (a cardinality violation), where tonic reads the first message and
//! drops the rest, or answers INTERNAL when there is none.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use echo_wire::framing::Framing;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use prost::Message as _;
use tonic::Status;
use tonic::codegen::StdError;

/// The paths (`/package.Service/Method`) of every method that takes one
/// request message, from the descriptor sets served. A set of paths, not
/// the descriptors: the server holds this much for every call's sake, and
/// looks it up on every call (with foldhash: SipHash cost 150 instructions
/// more per call).
#[derive(Debug, Default)]
pub(crate) struct SingleRequestMethods(HashSet<String, foldhash::fast::RandomState>);

impl SingleRequestMethods {
    pub(crate) fn new(sets: &[&[u8]]) -> Self {
        let mut paths = HashSet::default();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::error!(
                    "a compiled-in descriptor set does not decode: calls to its methods may carry any number of messages"
                );
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        if !method.client_streaming() {
                            paths.insert(format!("/{service_name}/{}", method.name()));
                        }
                    }
                }
            }
        }
        Self(paths)
    }

    /// Whether calls to `path` take exactly one request message.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

pin_project! {
    /// A request body that ends in UNIMPLEMENTED at a second message, or at
    /// its end when no message came.
    pub(crate) struct OneMessage<B> {
        #[pin]
        inner: B,
        framing: Framing,
        messages: u64,
        // Set once the body has ended in an error.
        failed: bool,
    }
}

impl<B> OneMessage<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            framing: Framing::default(),
            messages: 0,
            failed: false,
        }
    }
}

impl<B> HttpBody for OneMessage<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<StdError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let violation = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    *this.messages += this.framing.messages_in(chunk);
                }
                if *this.messages <= 1 {
                    return Poll::Ready(Some(Ok(frame)));
                }
                "a unary or server-streaming call sent more than one request message"
            }
            Some(Err(error)) => return Poll::Ready(Some(Err(Status::from_error(error.into())))),
            None if *this.messages > 0 => return Poll::Ready(None),
            None => "a unary or server-streaming call sent no request message",
        };
        *this.failed = true;
        Poll::Ready(Some(Err(Status::unimplemented(violation))))
    }

    fn is_end_stream(&self) -> bool {
        // The end is where a missing message is told.
        self.failed || (self.messages > 0 && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
