//! Grades retrying: the backoff and its jitter, what is worth retrying, and the policy inside `tower::retry` —
//! attempts counted by a scripted provider, waits measured on tokio's paused clock, the budget under an outage.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use solution_15::{Backoff, Delivery, MailError, MailRequest, MailRetry, is_retryable};
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::{ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn status(status: u16) -> MailError {
    MailError::Status { status, retry_after: None, body: String::new() }
}

const BACKOFF: Backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(1) };

#[test]
fn the_backoff_doubles_from_the_base_with_each_retry_up_to_the_cap() {
    let waits: Vec<Duration> = (1..=7).map(|retry| BACKOFF.delay(retry, 1.0)).collect();
    assert_eq!(
        waits,
        [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000), ms(1000)],
        "base for the first retry, doubling, capped (all of the backoff: fraction 1)"
    );
}

#[test]
fn the_cap_holds_however_many_retries_came_before() {
    for retry in [30, 31, 32, 33, 64, 100, 1000, u32::MAX] {
        assert_eq!(BACKOFF.delay(retry, 1.0), BACKOFF.cap, "retry {retry}: the cap, without overflowing");
        assert_eq!(BACKOFF.delay(retry, 0.0), BACKOFF.cap / 2, "retry {retry}: half the cap at the least");
    }
}

#[test]
fn jitter_keeps_each_wait_between_half_the_backoff_and_all_of_it() {
    assert_eq!(BACKOFF.delay(3, 0.0), ms(200), "fraction 0: half the backoff of 400 ms");
    assert_eq!(BACKOFF.delay(3, 0.5), ms(300), "fraction 0.5: half, plus half of the other half");
    assert_eq!(BACKOFF.delay(3, 1.0), ms(400), "fraction 1: all of it");
    assert_eq!(BACKOFF.delay(1, 0.25), Duration::from_micros(62_500), "fraction 0.25 of the first retry's");
    assert_eq!(BACKOFF.delay(1, 0.0), ms(50), "never at once: half the base at the least");
}

#[test]
fn only_what_may_succeed_next_time_is_worth_retrying() {
    for transient in
        [MailError::Timeout, MailError::Connection("reset".into()), status(500), status(502), status(503), status(504)]
    {
        assert!(is_retryable(&transient), "{transient:?} may pass: retry it");
    }
    assert!(is_retryable(&status(429)), "429 Too Many Requests: retry, later");
    assert!(is_retryable(&status(408)), "408 Request Timeout: retry");
    for permanent in [status(400), status(401), status(404), status(409), status(422)] {
        assert!(!is_retryable(&permanent), "{permanent:?} will be refused again: never retry it");
    }
    assert!(!is_retryable(&MailError::BreakerOpen), "a breaker rejection: retrying goes around the breaker");
    assert!(!is_retryable(&MailError::Overloaded), "a shed call: retrying queues after all");
}

/// A provider that answers from a script, then with `otherwise`; it logs when each call came.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Result<Delivery, MailError>>>>,
    otherwise: Result<Delivery, MailError>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(
        answers: impl IntoIterator<Item = Result<Delivery, MailError>>,
        otherwise: Result<Delivery, MailError>,
    ) -> Self {
        Scripted { answers: Arc::new(Mutex::new(answers.into_iter().collect())), otherwise, calls: Arc::default() }
    }

    /// `policy` around this provider, as the client's retry layer.
    async fn send(&self, policy: &MailRetry, request: MailRequest) -> Result<Delivery, MailError> {
        let provider = self.clone();
        let service = ServiceBuilder::new().retry(policy.clone()).service_fn(move |_: MailRequest| {
            provider.calls.lock().unwrap().push(Instant::now());
            let answer = provider.answers.lock().unwrap().pop_front().unwrap_or_else(|| provider.otherwise.clone());
            async move { answer }
        });
        // Ten minutes of the paused clock: retries that never end fail here instead of hanging the test.
        tokio::time::timeout(Duration::from_secs(600), service.oneshot(request))
            .await
            .expect("the retries ended (within ten minutes of backoff)")
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    /// The waits between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        self.calls().windows(2).map(|pair| pair[1] - pair[0]).collect()
    }
}

fn request(order_id: &str) -> MailRequest {
    MailRequest::confirmation(order_id, "someone@example.com")
}

/// A budget that never runs out in these tests.
fn plenty() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(Duration::from_secs(10), 1000, 1000.0))
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_after_growing_waits_until_the_retries_run_out() {
    let policy = MailRetry::new(BACKOFF, 3, plenty());
    let provider = Scripted::new([], Err(status(503)));
    let result = provider.send(&policy, request("o-1")).await;
    assert_eq!(result, Err(status(503)), "the last attempt's error stands");
    assert_eq!(provider.calls().len(), 4, "the first attempt and 3 retries, no more");
    let gaps = provider.gaps();
    for (retry, gap) in gaps.iter().enumerate() {
        let backoff = BACKOFF.delay(retry as u32 + 1, 1.0);
        assert!(
            *gap >= backoff / 2 && *gap <= backoff,
            "retry {} came {gap:?} after the attempt before: the wait is between {:?} and {backoff:?}",
            retry + 1,
            backoff / 2
        );
    }

    let provider = Scripted::new(
        [Err(status(500)), Err(MailError::Timeout), Err(MailError::Connection("refused".into()))],
        Ok(Delivery { status: 202 }),
    );
    let result = provider.send(&policy, request("o-2")).await;
    assert_eq!(result, Ok(Delivery { status: 202 }), "a 500, a timeout and a refused connection, then sent");
    assert_eq!(provider.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_at_least_as_long_as_its_retry_after_says() {
    let policy = MailRetry::new(BACKOFF, 3, plenty());
    let slow_down = MailError::Status { status: 429, retry_after: Some(Duration::from_secs(3)), body: String::new() };
    let provider = Scripted::new([Err(slow_down)], Ok(Delivery { status: 202 }));
    assert_eq!(provider.send(&policy, request("o-1")).await, Ok(Delivery { status: 202 }));
    let gaps = provider.gaps();
    assert_eq!(gaps.len(), 1, "one retry");
    assert!(gaps[0] >= Duration::from_secs(3), "the retry came {:?} after the 429: Retry-After said 3 s", gaps[0]);
    assert!(
        gaps[0] < Duration::from_secs(3) + BACKOFF.base / 2,
        "the retry came {:?} after the 429: Retry-After said 3 s, longer than the backoff, so the wait is 3 s — the \
         longer of the two, not their sum",
        gaps[0]
    );

    let provider = Scripted::new([Err(status(429))], Ok(Delivery { status: 202 }));
    assert_eq!(provider.send(&policy, request("o-2")).await, Ok(Delivery { status: 202 }));
    let gaps = provider.gaps();
    assert!(gaps[0] <= BACKOFF.base, "a 429 without Retry-After waits the backoff ({:?})", gaps[0]);
}

#[tokio::test(start_paused = true)]
async fn refusals_breaker_rejections_and_sheds_are_never_retried() {
    let policy = MailRetry::new(BACKOFF, 3, plenty());
    for error in [status(400), status(404), status(422), MailError::BreakerOpen, MailError::Overloaded] {
        let provider = Scripted::new([], Err(error.clone()));
        assert_eq!(provider.send(&policy, request("o-1")).await, Err(error.clone()));
        assert_eq!(provider.calls().len(), 1, "{error:?}: tried once, never again");
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_multiplying_the_load_in_an_outage() {
    // 20% of the requests, plus a reserve of 1 retry per second over 10 s; backoffs of a few ms, so that the
    // whole outage fits in the budget's 10 s.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.2));
    let policy = MailRetry::new(Backoff { base: ms(1), cap: ms(8) }, 3, budget);
    let provider = Scripted::new([], Err(status(503)));
    for n in 0..100 {
        let _ = provider.send(&policy, request(&format!("o-{n}"))).await;
    }
    let calls = provider.calls().len();
    assert!(
        calls <= 100 + 20 + 10,
        "100 requests in an outage made {calls} calls: with the budget, at most 130 (without it, 400)"
    );
    assert!(calls > 100, "the budget still allows some retries: {calls} calls for 100 requests");
}

#[tokio::test(start_paused = true)]
async fn every_request_earns_its_share_of_retries_in_the_budget() {
    // No reserve: only requests earn retries, half a retry each. Every order fails its first attempt and
    // succeeds its second.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.5));
    let policy = MailRetry::new(BACKOFF, 3, budget);
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0));
    let mut sent = 0;
    for n in 0..10 {
        let (seen, calls) = (seen.clone(), calls.clone());
        let service = ServiceBuilder::new().retry(policy.clone()).service_fn(move |request: MailRequest| {
            *calls.lock().unwrap() += 1;
            let first = seen.lock().unwrap().insert(request.order_id.clone());
            async move { if first { Err(status(503)) } else { Ok(Delivery { status: 202 }) } }
        });
        if service.oneshot(request(&format!("o-{n}"))).await.is_ok() {
            sent += 1;
        }
    }
    assert_eq!(
        *calls.lock().unwrap(),
        15,
        "10 requests, each putting half a retry in the budget: 5 retries (each request counts once, failed or not)"
    );
    assert_eq!(sent, 5, "the 5 retried orders were sent");
}
