//! Cross-cutting behaviour of every RPC, as tower layers around the router;
//! [`stack`] puts them in order.

mod auth;
mod behavior;
mod body;
mod deadline;
mod load_report;
mod message_compression;
mod size_status;
mod trace;
mod trailers;
mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::StdError;
use tonic::service::RecoverErrorLayer;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower_service::Service;

pub(crate) use auth::{AuthLayer, Tokens};
pub(crate) use behavior::BehaviorLayer;

use crate::ops::load_report::LoadReports;
use crate::ops::metrics::Metrics;

/// What the layers need to know beyond the router.
pub(crate) struct StackSettings {
    /// Every call is recorded here.
    pub(crate) metrics: Arc<Metrics>,
    /// Calls starting at once, across connections.
    pub(crate) max_concurrent_calls: usize,
    /// No call lasts longer, whatever its deadline.
    pub(crate) max_call_time: Duration,
    /// Bearer tokens, when configured.
    pub(crate) auth: Option<AuthLayer>,
    /// Faults by header and the server's defaults.
    pub(crate) behavior: BehaviorLayer,
    /// The load reports every answer carries.
    pub(crate) load_reports: Arc<LoadReports>,
}

/// `inner` wrapped in every layer, outermost (first to see a request, last to
/// see its response) first.
pub(crate) fn stack<S>(
    inner: S,
    settings: StackSettings,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<impl http_body::Body<Data = Bytes, Error = Status> + Send + 'static>,
    Error: Into<StdError> + Send,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        // Outermost, so that an error from any layer below (load shedding's
        // `Overloaded`) still becomes a gRPC status instead of a reset stream.
        .layer(RecoverErrorLayer::new())
        // Next, so that every call is traced and counted, refused ones too, and
        // its request id is set before anything else can answer.
        .layer(trace::TraceLayer::new(settings.metrics))
        // Inside tracing, so the metrics and log line see the remapped code.
        .layer(size_status::MessageSizeStatusLayer)
        // Outside the limits and auth, so a refused call still says what arrived.
        .layer(wire::WireLayer)
        // Sheds at once when the concurrency limit below has no room, rather
        // than queueing calls without bound.
        .layer(LoadShedLayer::new())
        // The limit load shedding asks about: one count across connections.
        .layer(GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_calls,
        ))
        // Outside auth and the deadline, so the trailers a handler asks for are
        // added whichever layer ends the call.
        .layer(trailers::TrailersLayer)
        // Inside the trailers it adds to, outside auth and the deadline, so
        // that every answer of a service under test reports, refusals too.
        .layer(load_report::LoadReportLayer::new(settings.load_reports))
        // Before the deadline starts: a refused call costs no timer.
        .option_layer(settings.auth)
        // Inside auth and the limits, so it times the handler's work only.
        .layer(deadline::DeadlineLayer::new(settings.max_call_time))
        // Inside the deadline, so a fault's delay or keep-open ends when the
        // caller's deadline does; before the handlers, which it may skip.
        .layer(settings.behavior)
        // Next to the handlers, as it rewrites their message bodies.
        .layer(message_compression::MessageCompressionLayer)
        .service(inner)
}
