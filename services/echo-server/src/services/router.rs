//! Routes a call to its service by the first segment of its path.
//!
//! tonic's `Routes` goes through axum, which boxes the request body again,
//! converts it back and inserts path parameters on every call; generated
//! servers need none of that, only their service name matched (measured with
//! callgrind, see BENCHMARKS.md).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower_service::Service;

use crate::context::UnknownRoute;

type RouteFuture = BoxFuture<http::Response<Body>, Infallible>;

/// A generated tonic server, callable through a shared reference.
trait Route: Send + Sync {
    fn route(&self, request: http::Request<Body>) -> RouteFuture;
}

/// A generated tonic server, as the router takes it.
pub(crate) trait Generated:
    Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = RouteFuture,
    > + Clone
    + Send
    + Sync
{
}

impl<S> Generated for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = RouteFuture,
        > + Clone
        + Send
        + Sync
{
}

impl<S: Generated> Route for S {
    fn route(&self, request: http::Request<Body>) -> RouteFuture {
        // Generated servers are always ready, and cheap to clone (an `Arc`).
        Service::call(&mut self.clone(), request)
    }
}

/// A service built on its first call (`build`), for services that cost
/// start-up time and memory and that few clients call; a build that fails
/// answers each call INTERNAL.
struct Lazy<S, F> {
    service: OnceLock<Result<S, String>>,
    build: F,
}

impl<S, F, E> Route for Lazy<S, F>
where
    S: Route,
    F: Fn() -> Result<S, E> + Send + Sync,
    E: std::fmt::Display,
{
    fn route(&self, request: http::Request<Body>) -> RouteFuture {
        let built = self.service.get_or_init(|| {
            (self.build)().map_err(|err| {
                tracing::error!(cause = %err, "cannot build a service");
                err.to_string()
            })
        });
        match built {
            Ok(service) => service.route(request),
            Err(err) => Box::pin(std::future::ready(Ok(
                Status::internal(err.clone()).into_http::<Body>()
            ))),
        }
    }
}

/// The services of the server, by full name; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: Arc<Vec<(&'static str, Box<dyn Route>)>>,
}

impl Router {
    /// Also routes calls of `S::NAME` to `service`.
    pub(crate) fn add<S: Generated + NamedService + 'static>(mut self, service: S) -> Self {
        Arc::get_mut(&mut self.routes)
            .expect("routes are added before the router is shared")
            .push((S::NAME, Box::new(service)));
        self
    }

    /// Also routes calls of `S::NAME` to the service `build` makes on the
    /// first of them.
    pub(crate) fn add_lazy<S, F, E>(mut self, build: F) -> Self
    where
        S: Generated + NamedService + 'static,
        F: Fn() -> Result<S, E> + Send + Sync + 'static,
        E: std::fmt::Display + 'static,
    {
        let lazy = Lazy {
            service: OnceLock::new(),
            build,
        };
        Arc::get_mut(&mut self.routes)
            .expect("routes are added before the router is shared")
            .push((S::NAME, Box::new(lazy)));
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
    type Future = Routed;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Routed {
        let uri = request.uri().clone();
        match self.route(uri.path()) {
            Some(route) => Routed {
                inner: route.route(request),
                uri,
            },
            None => {
                let message = match uri.path().strip_prefix('/').and_then(|p| p.split_once('/')) {
                    Some((service, _)) => format!("unknown service {service}"),
                    None => format!(
                        "malformed method path {}: expected /package.Service/Method",
                        uri.path()
                    ),
                };
                Routed {
                    inner: Box::pin(std::future::ready(Ok(unimplemented(message)))),
                    uri,
                }
            }
        }
    }
}

/// A routed call's answer. A generated server answers a method it lacks
/// with UNIMPLEMENTED and neither message nor details; this names the
/// method, as grpc-go does, so that a caller sees what is missing.
pub(crate) struct Routed {
    inner: RouteFuture,
    uri: http::Uri,
}

impl Future for Routed {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.inner.as_mut().poll(cx))?;
        let headers = response.headers();
        let unnamed = headers
            .get(echo_wire::headers::STATUS)
            .is_some_and(|code| code == "12")
            && !headers.contains_key(echo_wire::headers::MESSAGE)
            // A handler's own UNIMPLEMENTED (with details) is left as it is.
            && !headers.contains_key(echo_wire::headers::STATUS_DETAILS);
        if !unnamed {
            return Poll::Ready(Ok(response));
        }
        let (service, method) = self.uri.path()[1..].split_once('/').unwrap_or_default();
        Poll::Ready(Ok(unimplemented(format!(
            "unknown method {method} for service {service}"
        ))))
    }
}

fn unimplemented(message: String) -> http::Response<Body> {
    let (parts, ()) = Status::unimplemented(message)
        .into_http::<()>()
        .into_parts();
    let mut response = http::Response::from_parts(parts, Body::empty());
    response.extensions_mut().insert(UnknownRoute);
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn health_check() -> http::Request<Body> {
        // An empty Health.Check request: one gRPC frame of no bytes.
        http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc")
            .body(Body::new(http_body_util::Full::new(
                bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
            )))
            .unwrap()
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|status| status.to_str().ok())
    }

    #[tokio::test]
    async fn lazy_services_are_built_once_on_their_first_call() {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let builds = Arc::new(AtomicUsize::new(0));
        let mut router = Router::default().add_lazy({
            let builds = Arc::clone(&builds);
            move || {
                builds.fetch_add(1, Ordering::Relaxed);
                Ok::<_, String>(health.clone())
            }
        });
        assert_eq!(builds.load(Ordering::Relaxed), 0);
        for _ in 0..2 {
            let response = router.call(health_check()).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_lazy_service_that_cannot_be_built_answers_internal() {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let builds = Arc::new(AtomicUsize::new(0));
        let mut router = Router::default().add_lazy({
            let builds = Arc::clone(&builds);
            move || match builds.fetch_add(1, Ordering::Relaxed) {
                0 => Err("descriptors do not decode".to_owned()),
                _ => Ok(health.clone()),
            }
        });
        // The failed build is kept: built from the same compiled-in
        // descriptors, it would fail again.
        for _ in 0..2 {
            let response = router.call(health_check()).await.unwrap();
            assert_eq!(grpc_status(&response), Some("13"));
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);
    }
}
