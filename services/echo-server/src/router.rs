//! Routes a call to its service by the first segment of its path.
//!
//! tonic's `Routes` goes through axum, which boxes the request body again,
//! converts it back and inserts path parameters on every call; generated
//! servers need none of that, only their service name matched (measured with
//! callgrind, see BENCHMARKS.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower_service::Service;

type RouteFuture = BoxFuture<http::Response<Body>, Infallible>;

/// A generated tonic server, callable through a shared reference.
trait Route: Send + Sync {
    fn route(&self, request: http::Request<Body>) -> RouteFuture;
}

impl<S> Route for S
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = RouteFuture,
        > + Clone
        + Send
        + Sync,
{
    fn route(&self, request: http::Request<Body>) -> RouteFuture {
        // Generated servers are always ready, and cheap to clone (an `Arc`).
        Service::call(&mut self.clone(), request)
    }
}

/// The services of the server, by full name; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: Arc<Vec<(&'static str, Box<dyn Route>)>>,
}

impl Router {
    /// Also routes calls of `S::NAME` to `service`.
    pub(crate) fn add<S>(mut self, service: S) -> Self
    where
        S: Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = Infallible,
                Future = RouteFuture,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
    {
        Arc::get_mut(&mut self.routes)
            .expect("routes are added before the router is shared")
            .push((S::NAME, Box::new(service)));
        self
    }

    fn route(&self, path: &str) -> Option<&dyn Route> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() || method.contains('/') {
            return None;
        }
        self.routes
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, route)| route.as_ref())
    }
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> RouteFuture {
        match self.route(request.uri().path()) {
            Some(route) => route.route(request),
            None => {
                let (parts, ()) = Status::unimplemented("").into_http::<()>().into_parts();
                let response = http::Response::from_parts(parts, Body::empty());
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}
