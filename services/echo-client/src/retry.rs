//! Retries of idempotent calls that failed with UNAVAILABLE (the server was
//! restarting, the connection broke): exponential backoff with jitter, within
//! the call's own deadline, and a budget shared by all of a client's calls so
//! that retries cannot multiply the load on a struggling server (gRPC's retry
//! throttling: a bucket of `budget_tokens`, -1 per failure, +0.1 per success,
//! retries only while more than half full).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use crate::deadline::CallDeadline;
use crate::stats::CallStats;

/// Tokens a success puts back in the budget.
const BUDGET_TOKEN_RATIO: f64 = 0.1;

/// How to retry idempotent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause before the first retry; doubled for each next one.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
    /// Size of the retry budget shared by the client's calls (gRPC's
    /// `maxTokens`): about half this many failures in a row stop retries.
    pub budget_tokens: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_tokens: 10,
        }
    }
}

/// A policy with the budget and default timeout of one client.
#[derive(Debug)]
pub(crate) struct Retrying {
    policy: RetryPolicy,
    default_timeout: Option<Duration>,
    tokens: Mutex<f64>,
    stats: Arc<CallStats>,
}

impl Retrying {
    pub(crate) fn new(
        policy: RetryPolicy,
        default_timeout: Option<Duration>,
        stats: Arc<CallStats>,
    ) -> Self {
        Self {
            policy,
            default_timeout,
            tokens: Mutex::new(f64::from(policy.budget_tokens)),
            stats,
        }
    }

    /// A transparent retry (`endpoints.rs`): it needs no budget, but spends
    /// some, as the policy's own retries do.
    pub(crate) fn count_retry(&self) {
        let _ = self.failed();
    }

    fn succeeded(&self) {
        let mut tokens = self.tokens.lock().expect("budget lock");
        *tokens = (*tokens + BUDGET_TOKEN_RATIO).min(f64::from(self.policy.budget_tokens));
    }

    /// Counts a failure; whether the budget still allows a retry.
    fn failed(&self) -> bool {
        let mut tokens = self.tokens.lock().expect("budget lock");
        *tokens = (*tokens - 1.0).max(0.0);
        *tokens > f64::from(self.policy.budget_tokens) / 2.0
    }

    /// Runs `call` on `request`, again after UNAVAILABLE while the policy, the
    /// budget and the deadline allow; each retry says how many attempts came
    /// before it (`grpc-previous-rpc-attempts`).
    pub(crate) async fn call<M, R, F, Fut>(
        &self,
        request: Request<M>,
        mut call: F,
    ) -> Result<Response<R>, Status>
    where
        M: Clone,
        F: FnMut(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let (metadata, _, message) = request.into_parts();
        let mut headers = metadata.into_headers();
        let deadline = CallDeadline::take_timeout(&mut headers)
            .or(self.default_timeout)
            .and_then(CallDeadline::after);
        let metadata = tonic::metadata::MetadataMap::from_headers(headers);
        let mut backoff = self.policy.initial_backoff;
        let mut attempt = 1;
        loop {
            let mut request =
                Request::from_parts(metadata.clone(), Default::default(), message.clone());
            if let Some(deadline) = deadline {
                if deadline.expired() {
                    return Err(Status::deadline_exceeded(
                        "deadline exceeded while retrying",
                    ));
                }
                request.extensions_mut().insert(deadline);
            }
            if attempt > 1 {
                // As gRPC's retries say it, so a server can tell a retry.
                let key = tonic::metadata::MetadataKey::from_bytes(
                    echo_wire::headers::PREVIOUS_RPC_ATTEMPTS
                        .as_str()
                        .as_bytes(),
                )
                .expect("a valid header name");
                request
                    .metadata_mut()
                    .insert(key, tonic::metadata::MetadataValue::from(attempt - 1));
            }
            let status = match call(request).await {
                Ok(response) => {
                    self.succeeded();
                    self.stats.ended_after(attempt);
                    return Ok(response);
                }
                Err(status) => status,
            };
            let retryable = status.code() == Code::Unavailable;
            let pause = backoff.mul_f64(0.8 + 0.4 * fastrand::f64());
            if !retryable
                || !self.failed()
                || attempt >= self.policy.max_attempts
                || deadline.is_some_and(|deadline| deadline.remaining() <= pause)
            {
                self.stats.ended_after(attempt);
                return Err(status);
            }
            tokio::time::sleep(pause).await;
            self.stats.retried();
            backoff = (backoff * 2).min(self.policy.max_backoff);
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    fn unavailable_then_ok(
        failures: u32,
    ) -> impl FnMut(Request<()>) -> std::future::Ready<Result<Response<()>, Status>> {
        let calls = AtomicU32::new(0);
        move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures {
                Err(Status::unavailable("down"))
            } else {
                Ok(Response::new(()))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_up_to_the_attempt_limit() {
        let retrying = Retrying::new(RetryPolicy::default(), None, Arc::default());
        assert!(
            retrying
                .call(Request::new(()), unavailable_then_ok(3))
                .await
                .is_ok()
        );
        let status = retrying
            .call(Request::new(()), unavailable_then_ok(4))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[tokio::test(start_paused = true)]
    async fn other_codes_are_not_retried() {
        let retrying = Retrying::new(RetryPolicy::default(), None, Arc::default());
        let calls = AtomicU32::new(0);
        let status = retrying
            .call(Request::new(()), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err::<Response<()>, _>(Status::invalid_argument("no")))
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_retry_storms() {
        let retrying = Retrying::new(
            RetryPolicy {
                max_attempts: 100,
                ..Default::default()
            },
            None,
            Arc::default(),
        );
        let calls = AtomicU32::new(0);
        let _ = retrying
            .call(Request::new(()), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err::<Response<()>, _>(Status::unavailable("down")))
            })
            .await;
        // 10 tokens, retries only above 5: the 5th failure ends it.
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_deadline() {
        let retrying = Retrying::new(
            RetryPolicy {
                max_attempts: 100,
                initial_backoff: Duration::from_millis(300),
                ..Default::default()
            },
            Some(Duration::from_millis(500)),
            Arc::default(),
        );
        let started = Instant::now();
        let status = retrying
            .call(Request::new(()), unavailable_then_ok(100))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(started.elapsed() <= Duration::from_millis(500));
    }
}
