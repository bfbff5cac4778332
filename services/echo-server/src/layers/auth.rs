//! Bearer-token authentication: a call must carry `authorization: Bearer
//! <token>` with one of the configured tokens, or it gets UNAUTHENTICATED.
//! Services named as open (by default health and reflection) need no token.
//!
//! Tokens are compared in constant time, and never logged.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

/// The configured tokens; `Debug` does not print them.
#[derive(Clone)]
pub(crate) struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// One token per line of `text`; blank lines and `#` comments are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let tokens = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.as_bytes().to_vec())
            .collect();
        Self(Arc::new(tokens))
    }

    /// How many tokens there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is one of the tokens, in time independent of where they differ.
    fn contains(&self, candidate: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(candidate)
            })
            .into()
    }
}

/// Requires a bearer token; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    tokens: Tokens,
    open_services: Arc<Vec<String>>,
}

impl AuthLayer {
    /// Requires one of `tokens` on every call but those to `open_services`
    /// (full service names, e.g. `grpc.health.v1.Health`).
    pub(crate) fn new(tokens: Tokens, open_services: Vec<String>) -> Self {
        Self {
            tokens,
            open_services: Arc::new(open_services),
        }
    }

    fn check<B>(&self, request: &http::Request<B>) -> Result<(), tonic::Status> {
        let service = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next();
        if service.is_some_and(|service| self.open_services.iter().any(|open| open == service)) {
            return Ok(());
        }
        let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
            return Err(tonic::Status::unauthenticated("missing bearer token"));
        };
        let token = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| tonic::Status::unauthenticated("authorization is not a bearer token"))?;
        if self.tokens.contains(token) {
            Ok(())
        } else {
            Err(tonic::Status::unauthenticated("invalid bearer token"))
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    auth: AuthLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.auth.check(&request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_token_per_line_and_matches_exactly() {
        let tokens = Tokens::parse("# team tokens\nalpha\n\n  beta  \n");
        assert_eq!(tokens.len(), 2);
        assert!(tokens.contains(b"alpha") && tokens.contains(b"beta"));
        for wrong in [&b""[..], b"alph", b"alphaa", b"ALPHA", b"# team tokens"] {
            assert!(!tokens.contains(wrong), "{wrong:?}");
        }
        assert!(
            !format!("{tokens:?}").contains("alpha"),
            "Debug must not print tokens"
        );
    }
}
