//! Retrying: which failures are worth another attempt, how long to wait before it, and how many retries the
//! client may make at all. The policy plugs into `tower::retry::Retry`, which calls [`MailRetry::retry`] with each
//! attempt's result and waits for the future it returns before the next attempt.
//!
//! Three limits keep retries from making an outage worse:
//! - a **backoff** that doubles with each retry, up to a cap, so that a struggling provider gets air;
//! - **jitter**: part of each wait is random, so that clients that failed together do not retry together;
//! - a **budget** (`tower::retry::budget::TpsBudget`): every request puts a token in, every retry takes
//!   `1 / retry_ratio` out. When the provider fails everything, the requests still come but the retries stop at
//!   a share of them (20% with the lesson's settings) — instead of multiplying the load by `1 + max_retries`.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::client::{Delivery, MailError, MailRequest};

// ANCHOR: backoff
/// Exponential backoff with "equal jitter": the n-th retry waits between half of `min(cap, base · 2^(n-1))` and
/// all of it. Half is fixed, so that a retry never comes at once; half is random, so that retries spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The backoff before the first retry.
    pub base: Duration,
    /// The longest backoff, however many retries came before.
    pub cap: Duration,
}
// ANCHOR_END: backoff

impl Backoff {
    // EXERCISE: The wait before retry number `retry` (1 for the first retry). The backoff starts at `base` for the
    // first retry and doubles with each retry after it, but never exceeds `cap` — even after a hundred retries, where
    // doubling overflows any integer. The wait is half the backoff plus `fraction` (a random number from 0 to 1,
    // passed in so that tests can choose it) times the other half: `fraction` 0 gives half the backoff, 1 all of
    // it. The tests check the doubling, the cap, very large retry numbers and both ends of the jitter.
    // ANCHOR: delay
    /// The wait before retry number `retry` (from 1), with `fraction` of the jitter (from 0 to 1).
    pub fn delay(&self, retry: u32, fraction: f64) -> Duration {
        let doubled = self.base.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let backoff = doubled.min(self.cap);
        let half = backoff / 2;
        half + (backoff - half).mul_f64(fraction.clamp(0.0, 1.0))
    }
    // ANCHOR_END: delay
}

// EXERCISE: Say whether a failed attempt is worth another one: only what may succeed next time. A timeout, a
// connection that failed, a server error (5xx), 408 Request Timeout and 429 Too Many Requests may pass. Another
// client error (400, 404, 422, …) will be refused again, whatever the wait: never retry it (the consumer sends it to
// the dead-letter topic). And never retry a call that was not made: the breaker rejected it (retrying would
// go around the breaker), or the bulkhead was full (retrying would queue after all). The tests try every kind.
// ANCHOR: is_retryable
/// Whether another attempt may succeed where this one failed with `error`.
pub fn is_retryable(error: &MailError) -> bool {
    match error {
        MailError::Timeout | MailError::Connection(_) => true,
        MailError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        MailError::BreakerOpen | MailError::Overloaded => false,
    }
}
// ANCHOR_END: is_retryable

// ANCHOR: policy
/// The retry policy: tower gives each request a copy of it, so `retries` counts that request's retries.
#[derive(Debug, Clone)]
pub struct MailRetry {
    pub backoff: Backoff,
    /// Retries after the first attempt, at most.
    pub max_retries: u32,
    /// Shared by every request of the client.
    pub budget: Arc<TpsBudget>,
    /// Retries made for this request so far.
    pub retries: u32,
}
// ANCHOR_END: policy

impl MailRetry {
    pub fn new(backoff: Backoff, max_retries: u32, budget: Arc<TpsBudget>) -> MailRetry {
        MailRetry { backoff, max_retries, budget, retries: 0 }
    }
}

impl Policy<MailRequest, Delivery, MailError> for MailRetry {
    type Future = tokio::time::Sleep;

    // EXERCISE: Decide, after an attempt, whether to make another, and return the wait before it (`None`: the
    // result stands). Every request counts once in the budget (`deposit`), on its first attempt's result, whether
    // it succeeded or not — the budget is a share of requests. Retry only what `is_retryable` allows, at most
    // `max_retries` times per request, and only when the budget lets one be taken (`withdraw`). The wait is
    // `backoff.delay` for this retry with a random fraction (`fastrand::f64()`); a 429 that says when to come back
    // (`retry_after`) waits the longer of the two (never their sum). The tests count the attempts a scripted provider sees, and
    // measure the waits on tokio's paused clock.
    // ANCHOR: retry
    fn retry(&mut self, _request: &mut MailRequest, result: &mut Result<Delivery, MailError>) -> Option<Self::Future> {
        if self.retries == 0 {
            self.budget.deposit();
        }
        let error = result.as_ref().err()?;
        if !is_retryable(error) || self.retries >= self.max_retries || !self.budget.withdraw() {
            return None;
        }
        self.retries += 1;
        let mut wait = self.backoff.delay(self.retries, fastrand::f64());
        if let MailError::Status { retry_after: Some(after), .. } = error {
            wait = wait.max(*after);
        }
        Some(tokio::time::sleep(wait))
    }
    // ANCHOR_END: retry

    fn clone_request(&mut self, request: &MailRequest) -> Option<MailRequest> {
        Some(request.clone())
    }
}
