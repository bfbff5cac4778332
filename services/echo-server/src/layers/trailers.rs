//! Appends trailers that a handler put in the response's extensions.
//!
//! tonic has no way for a successful handler to add trailers; a handler that
//! wants some inserts [`ExtraTrailers`] and this layer adds them to whatever
//! trailers the call ends with, success or error.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{HookedBody, TrailersHook};
use crate::context::ExtraTrailers;

impl TrailersHook for ExtraTrailers {
    fn on_trailers(self, trailers: &mut HeaderMap) {
        trailers.extend(self.0);
    }

    fn on_no_trailers(self) {}
}

/// Applies [`ExtraTrailers`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrailersLayer;

impl<S> Layer<S> for TrailersLayer {
    type Service = TrailersService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrailersService { inner }
    }
}

/// The service made by [`TrailersLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TrailersService<S> {
    inner: S,
}

impl<S, Req, B> Service<Req> for TrailersService<S>
where
    S: Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<HookedBody<B, ExtraTrailers>>;
    type Error = S::Error;
    type Future = TrailersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        TrailersFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Future of [`TrailersService`].
    pub(crate) struct TrailersFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for TrailersFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<HookedBody<B, ExtraTrailers>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        let extra = response.extensions_mut().remove::<ExtraTrailers>();
        Poll::Ready(Ok(response.map(|body| HookedBody::new(body, extra))))
    }
}
