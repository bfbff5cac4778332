//! Puts the instance's ORCA load report on every answer of the services
//! under test, in the `endpoint-load-metrics-bin` trailer (in the headers of
//! a trailers-only answer, where its trailers are), as gRFC A51's backends
//! do; a call's `x-echo-load-report` header reports in its place (a header
//! that does not parse fails the call with INVALID_ARGUMENT).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use echo_wire::headers::{LOAD_REPORT as TRAILER, STATUS};
use futures_util::future::{Either, Ready};
use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::load_report::{LoadReportError, LoadReportSpec};
use crate::context::ExtraTrailers;
use crate::ops::load_report::LoadReports;
use crate::services::under_test;

/// The request header with which a call asks for its own load report.
pub(crate) const LOAD_REPORT_HEADER: HeaderName = HeaderName::from_static("x-echo-load-report");

/// Applies [`LoadReports`] to every call.
#[derive(Debug, Clone)]
pub(crate) struct LoadReportLayer {
    reports: Arc<LoadReports>,
}

impl LoadReportLayer {
    pub(crate) fn new(reports: Arc<LoadReports>) -> Self {
        Self { reports }
    }
}

impl<S> Layer<S> for LoadReportLayer {
    type Service = LoadReportService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadReportService {
            inner,
            reports: Arc::clone(&self.reports),
        }
    }
}

/// The service made by [`LoadReportLayer`].
#[derive(Debug, Clone)]
pub(crate) struct LoadReportService<S> {
    inner: S,
    reports: Arc<LoadReports>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadReportService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<LoadReportFuture<S::Future>, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let asked = request.headers().get(LOAD_REPORT_HEADER);
        // A call that asks nothing of a server that reports nothing costs one lookup.
        if asked.is_none() && !self.reports.reporting() || !under_test(request.uri().path()) {
            return Either::Left(LoadReportFuture {
                inner: self.inner.call(request),
                trailer: None,
            });
        }
        self.reports.count_call();
        let requested = match asked.map(parse_header).transpose() {
            Ok(requested) => requested,
            Err(status) => {
                return Either::Right(futures_util::future::ready(Ok(status.into_http())));
            }
        };
        Either::Left(LoadReportFuture {
            trailer: self.reports.trailer(requested.as_ref()),
            inner: self.inner.call(request),
        })
    }
}

/// A call's `x-echo-load-report`, or the status that says why it does not parse.
fn parse_header(value: &HeaderValue) -> Result<LoadReportSpec, tonic::Status> {
    value
        .to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|text| text.parse().map_err(|err: LoadReportError| err.to_string()))
        .map_err(|reason| {
            tonic::Status::invalid_argument(format!("{LOAD_REPORT_HEADER}: {reason}"))
        })
}

pin_project! {
    /// Future of [`LoadReportService`].
    pub(crate) struct LoadReportFuture<F> {
        #[pin]
        inner: F,
        trailer: Option<HeaderValue>,
    }
}

impl<F, B, E> Future for LoadReportFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(trailer) = this.trailer.take() {
            if response.headers().contains_key(STATUS) {
                // Trailers-only: the headers are the trailers.
                response.headers_mut().insert(TRAILER, trailer);
            } else {
                response
                    .extensions_mut()
                    .get_or_insert_default::<ExtraTrailers>()
                    .0
                    .insert(TRAILER, trailer);
            }
        }
        Poll::Ready(Ok(response))
    }
}
