//! The circuit breaker. Tower has timeouts, retries, limits and load shedding, but no breaker, so the lesson
//! writes one, in two parts:
//!
//! - [`Breaker`], the state machine, pure: it is told the time (`now`) and what happened, and answers whether a
//!   call may go. No clock, no I/O, no locks — the tests drive it instant by instant;
//! - [`CircuitBreakerLayer`], the tower layer that asks the state machine before each call and tells it the
//!   outcome after, through a [`BreakerHandle`] every clone of the client shares.
//!
//! The rule this breaker follows (one of several in use; Resilience4j, for one, opens on a failure *rate* over a
//! window of calls): it opens after `failure_threshold` failures **in a row**, stays open for `cool_down`, then
//! lets exactly **one** probe through; the probe's outcome closes it or opens it again.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::client::MailError;

// ANCHOR: config
/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open a closed breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker rejects every call before it lets a probe through.
    pub cool_down: Duration,
}
// ANCHOR_END: config

// ANCHOR: state
/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `consecutive_failures` is the run of failures since the last success.
    Closed { consecutive_failures: u32 },
    /// Calls are rejected without being made, until `until`.
    Open { until: Instant },
    /// One probe is in flight; every other call is rejected until its outcome is known.
    HalfOpen,
}

/// What the breaker says to a call that asks to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go (the breaker is closed).
    Call,
    /// Go, as the one probe that decides whether the breaker closes.
    Probe,
    /// Do not go: the breaker is open, or a probe is already in flight.
    Rejected,
}
// ANCHOR_END: state

// ANCHOR: breaker
/// The breaker's state machine. `now` is always passed in, so that a test can say what time it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub config: BreakerConfig,
    pub state: BreakerState,
}
// ANCHOR_END: breaker

impl Breaker {
    /// A closed breaker with no failure counted.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker { config, state: BreakerState::Closed { consecutive_failures: 0 } }
    }

    // EXERCISE: Say whether a call may go at `now`. A closed breaker lets every call through. An open breaker
    // rejects every call — it is never made — until its cool-down has passed (`now` at or after `until`); then
    // it lets exactly one call through, as the probe, and from then on rejects every other call while that probe is
    // in flight (half-open). Only `admit` and `record` change the state. The tests call it at the instants around
    // the end of the cool-down, and many times while a probe is out.
    // ANCHOR: admit
    /// Whether a call may go at `now`, and as what.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Call,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => Admission::Rejected,
        }
    }
    // ANCHOR_END: admit

    // EXERCISE: Learn from the outcome of a call that `admit` let through as `admission`: `failed` says whether it
    // counts as a failure (`counts_as_failure` decided). Closed: a failure adds one to the failures in a row, a
    // success sets them back to 0, and the `failure_threshold`-th failure in a row opens the breaker until `now`
    // plus the cool-down. The probe's outcome decides a half-open breaker: a success closes it with no failure
    // counted, a failure opens it again for a whole new cool-down from `now`. Anything else changes nothing: a
    // rejected call, and the late outcome of a call let through before the state changed (a call admitted while
    // closed that ends after the breaker opened must neither close it nor make it open longer). The tests replay
    // outages, recoveries and late answers step by step.
    // ANCHOR: record
    /// Takes the outcome of a call admitted as `admission` into account.
    pub fn record(&mut self, admission: Admission, failed: bool, now: Instant) {
        let open = BreakerState::Open { until: now + self.config.cool_down };
        match (admission, self.state) {
            (Admission::Call, BreakerState::Closed { consecutive_failures }) => {
                let failures = if failed { consecutive_failures.saturating_add(1) } else { 0 };
                self.state = if failures >= self.config.failure_threshold {
                    open
                } else {
                    BreakerState::Closed { consecutive_failures: failures }
                };
            }
            (Admission::Probe, BreakerState::HalfOpen) => {
                self.state = if failed { open } else { BreakerState::Closed { consecutive_failures: 0 } };
            }
            // A rejected call, or a call admitted in an earlier state: it says nothing about the provider now.
            _ => {}
        }
    }
    // ANCHOR_END: record
}

// EXERCISE: Say whether an error is the provider's failure, one that should count towards opening the breaker:
// the provider did not answer in time, could not be reached, or answered with a server error (5xx). An answer in
// the 4xx range is no failure of the provider — it is up, and says the request is wrong (400), or asks to slow down
// (429). And the calls the client never made (the breaker rejected it, or the bulkhead was full) say nothing about
// the provider. The tests try every kind of error.
// ANCHOR: counts_as_failure
/// Whether `error` says the provider is failing.
pub fn counts_as_failure(error: &MailError) -> bool {
    match error {
        MailError::Timeout | MailError::Connection(_) => true,
        MailError::Status { status, .. } => *status >= 500,
        MailError::BreakerOpen | MailError::Overloaded => false,
    }
}
// ANCHOR_END: counts_as_failure

/// The breaker's state kind, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn phase(&self) -> Phase {
        match self {
            BreakerState::Closed { .. } => Phase::Closed,
            BreakerState::Open { .. } => Phase::Open,
            BreakerState::HalfOpen => Phase::HalfOpen,
        }
    }
}

/// What a breaker has done so far, counted around the state machine (not by it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Calls let through while closed.
    pub calls: u64,
    /// Probes let through.
    pub probes: u64,
    /// Calls rejected without being made.
    pub rejected: u64,
    /// Times the breaker opened (a failed probe opening it again counts too).
    pub opened: u64,
    /// Changes of phase (closed, open, half-open), all of them.
    pub transitions: u64,
}

/// One breaker, shared by every clone of a client: the state machine behind a lock, the clock, and counts.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug)]
struct Shared {
    breaker: Breaker,
    counts: BreakerCounts,
    last_opened_at: Option<Instant>,
}

impl BreakerHandle {
    pub fn new(config: BreakerConfig) -> BreakerHandle {
        let shared = Shared { breaker: Breaker::new(config), counts: BreakerCounts::default(), last_opened_at: None };
        BreakerHandle { shared: Arc::new(Mutex::new(shared)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the state machine whether a call may go now.
    pub fn admit_now(&self) -> Admission {
        let mut shared = self.lock();
        let before = shared.breaker.state.phase();
        let admission = shared.breaker.admit(Instant::now());
        match admission {
            Admission::Call => shared.counts.calls += 1,
            Admission::Probe => shared.counts.probes += 1,
            Admission::Rejected => shared.counts.rejected += 1,
        }
        shared.note_change(before);
        admission
    }

    /// Tells the state machine how a call it let through ended.
    pub fn record_outcome(&self, admission: Admission, failed: bool) {
        let mut shared = self.lock();
        let before = shared.breaker.state.phase();
        shared.breaker.record(admission, failed, Instant::now());
        shared.note_change(before);
    }

    pub fn state(&self) -> BreakerState {
        self.lock().breaker.state
    }

    pub fn counts(&self) -> BreakerCounts {
        self.lock().counts
    }

    /// When the breaker last opened.
    pub fn last_opened_at(&self) -> Option<Instant> {
        self.lock().last_opened_at
    }

    /// Whether a call would be let through now: closed, or open with its cool-down over (the call would be the
    /// probe). Changes nothing.
    pub fn ready(&self) -> bool {
        match self.state() {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } => Instant::now() >= until,
            BreakerState::HalfOpen => false,
        }
    }

    /// Whether the breaker is open and still cooling down, with the number of phase changes so far: two
    /// readings with the same count, both cooling down, mean it stayed open in between.
    pub fn cooling_down(&self) -> (bool, u64) {
        let shared = self.lock();
        let cooling = matches!(shared.breaker.state, BreakerState::Open { until } if Instant::now() < until);
        (cooling, shared.counts.transitions)
    }
}

impl Shared {
    fn note_change(&mut self, before: Phase) {
        let after = self.breaker.state.phase();
        if after != before {
            self.counts.transitions += 1;
            if after == Phase::Open {
                self.counts.opened += 1;
                self.last_opened_at = Some(Instant::now());
            }
        }
    }
}

// ANCHOR: layer
/// The breaker as a tower layer: wraps a service whose errors are [`MailError`]s.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    handle: BreakerHandle,
}

impl CircuitBreakerLayer {
    pub fn new(handle: BreakerHandle) -> CircuitBreakerLayer {
        CircuitBreakerLayer { handle }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker { inner, handle: self.handle.clone() }
    }
}

/// A service behind the breaker: each call asks [`Breaker::admit`] first — a rejected call fails at once with
/// [`MailError::BreakerOpen`] and never reaches the inner service — and tells [`Breaker::record`] how it ended,
/// as [`counts_as_failure`] judges it.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    handle: BreakerHandle,
}

impl<S, Request> Service<Request> for CircuitBreaker<S>
where
    S: Service<Request, Error = MailError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = MailError;
    type Future = BoxFuture<'static, Result<S::Response, MailError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MailError>> {
        // The inner service (the timeout around the HTTP call) is always ready and reserves nothing, so a call
        // the breaker then rejects leaves nothing held.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let admission = self.handle.admit_now();
        if admission == Admission::Rejected {
            return Box::pin(std::future::ready(Err(MailError::BreakerOpen)));
        }
        let outcome = Outcome { handle: self.handle.clone(), admission: Some(admission) };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            outcome.settle(result.as_ref().err().is_some_and(counts_as_failure));
            result
        })
    }
}
// ANCHOR_END: layer

/// A call let through whose outcome is not known yet. If the caller drops it first, a probe counts as failed —
/// otherwise the breaker would stay half-open for ever, rejecting everything while waiting for an outcome that
/// will never come — and a plain call counts as nothing.
struct Outcome {
    handle: BreakerHandle,
    admission: Option<Admission>,
}

impl Outcome {
    fn settle(mut self, failed: bool) {
        if let Some(admission) = self.admission.take() {
            self.handle.record_outcome(admission, failed);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.admission.take() == Some(Admission::Probe) {
            self.handle.record_outcome(Admission::Probe, true);
        }
    }
}
