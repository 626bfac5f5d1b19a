//! Grades the circuit breaker: the state machine instant by instant (the time is passed in: no clock, no broker),
//! what counts as a failure, and the tower layer around it on tokio's paused clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lesson_15::breaker::{BreakerHandle, CircuitBreakerLayer};
use lesson_15::{Admission, Breaker, BreakerConfig, BreakerState, Delivery, MailError, counts_as_failure};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const COOL_DOWN: Duration = Duration::from_secs(10);

fn breaker(failure_threshold: u32) -> Breaker {
    Breaker::new(BreakerConfig { failure_threshold, cool_down: COOL_DOWN })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A call at `at` that the breaker lets through as a plain call and that fails (or not).
fn call(b: &mut Breaker, at: Instant, fails: bool) {
    assert_eq!(b.admit(at), Admission::Call, "a closed breaker lets the call through (state {:?})", b.state);
    b.record(Admission::Call, fails, at);
}

/// A breaker with threshold 3 opened by three failures at `t`: open until `t + COOL_DOWN`.
fn opened_at(t: Instant) -> Breaker {
    let mut b = breaker(3);
    for _ in 0..3 {
        call(&mut b, t, true);
    }
    assert_eq!(b.state, BreakerState::Open { until: t + COOL_DOWN }, "three failures in a row open it");
    b
}

#[test]
fn a_closed_breaker_opens_at_the_threshold_th_failure_in_a_row_and_not_before() {
    let t = Instant::now();
    let mut b = breaker(3);
    assert_eq!(b.state, BreakerState::Closed { consecutive_failures: 0 });
    call(&mut b, t, true);
    assert_eq!(b.state, BreakerState::Closed { consecutive_failures: 1 }, "one failure: still closed");
    call(&mut b, t + ms(100), true);
    assert_eq!(b.state, BreakerState::Closed { consecutive_failures: 2 }, "two failures: still closed");
    call(&mut b, t + ms(200), true);
    assert_eq!(
        b.state,
        BreakerState::Open { until: t + ms(200) + COOL_DOWN },
        "the third failure in a row opens it, for the cool-down from the moment it failed"
    );

    for threshold in [1, 5] {
        let mut b = breaker(threshold);
        for n in 1..threshold {
            call(&mut b, t, true);
            assert_eq!(b.state, BreakerState::Closed { consecutive_failures: n }, "threshold {threshold}");
        }
        call(&mut b, t, true);
        assert_eq!(b.state, BreakerState::Open { until: t + COOL_DOWN }, "threshold {threshold}: open");
    }
}

#[test]
fn a_success_sets_the_failures_in_a_row_back_to_zero() {
    let t = Instant::now();
    let mut b = breaker(3);
    call(&mut b, t, true);
    call(&mut b, t, true);
    call(&mut b, t, false);
    assert_eq!(b.state, BreakerState::Closed { consecutive_failures: 0 }, "a success resets the count");
    call(&mut b, t, true);
    call(&mut b, t, true);
    assert_eq!(
        b.state,
        BreakerState::Closed { consecutive_failures: 2 },
        "four failures, but not in a row: still closed"
    );
    call(&mut b, t, true);
    assert!(matches!(b.state, BreakerState::Open { .. }), "the third in a row opens it");
}

#[test]
fn an_open_breaker_rejects_every_call_until_its_cool_down_has_passed() {
    let t = Instant::now();
    let mut b = opened_at(t);
    let open = b.state;
    for at in [t, t + ms(1), t + COOL_DOWN / 2, t + COOL_DOWN - ms(1)] {
        assert_eq!(b.admit(at), Admission::Rejected, "{:?} into the cool-down: rejected", at - t);
        assert_eq!(b.state, open, "a rejection changes nothing");
    }
    b.record(Admission::Rejected, true, t + ms(5));
    assert_eq!(b.state, open, "the outcome of a rejected call (there is none) changes nothing");
    assert_eq!(b.admit(t + COOL_DOWN), Admission::Probe, "at the end of the cool-down, one call goes, as the probe");
    assert_eq!(b.state, BreakerState::HalfOpen);
}

#[test]
fn half_open_lets_exactly_one_probe_through() {
    let t = Instant::now();
    let mut b = opened_at(t);
    let end = t + COOL_DOWN;
    assert_eq!(b.admit(end + ms(3)), Admission::Probe, "the first call after the cool-down is the probe");
    for later in [ms(3), ms(4), ms(500), Duration::from_secs(60), Duration::from_secs(3600)] {
        assert_eq!(b.admit(end + later), Admission::Rejected, "while the probe is out, every other call is rejected");
        assert_eq!(b.state, BreakerState::HalfOpen);
    }
}

#[test]
fn a_successful_probe_closes_the_breaker_with_no_failure_counted() {
    let t = Instant::now();
    let mut b = opened_at(t);
    let end = t + COOL_DOWN;
    assert_eq!(b.admit(end), Admission::Probe);
    b.record(Admission::Probe, false, end + ms(40));
    assert_eq!(b.state, BreakerState::Closed { consecutive_failures: 0 }, "the probe succeeded: closed");
    call(&mut b, end + ms(50), true);
    call(&mut b, end + ms(60), true);
    assert_eq!(
        b.state,
        BreakerState::Closed { consecutive_failures: 2 },
        "the failures before the outage are forgotten: two new ones do not open it"
    );
    call(&mut b, end + ms(70), true);
    assert_eq!(b.state, BreakerState::Open { until: end + ms(70) + COOL_DOWN }, "the third does");
}

#[test]
fn a_failed_probe_opens_the_breaker_again_for_a_whole_new_cool_down() {
    let t = Instant::now();
    let mut b = opened_at(t);
    let end = t + COOL_DOWN;
    assert_eq!(b.admit(end), Admission::Probe);
    let failed_at = end + ms(500);
    b.record(Admission::Probe, true, failed_at);
    assert_eq!(b.state, BreakerState::Open { until: failed_at + COOL_DOWN }, "a new cool-down, from the failure");
    assert_eq!(b.admit(failed_at + COOL_DOWN - ms(1)), Admission::Rejected, "rejected until it has passed");
    assert_eq!(b.admit(failed_at + COOL_DOWN), Admission::Probe, "then the next probe");
    b.record(Admission::Probe, true, failed_at + COOL_DOWN + ms(1));
    assert_eq!(b.state, BreakerState::Open { until: failed_at + COOL_DOWN + ms(1) + COOL_DOWN }, "and again");
}

#[test]
fn late_outcomes_of_calls_let_through_before_the_state_changed_decide_nothing() {
    let t = Instant::now();
    let mut b = breaker(3);
    // Five calls go out together while the breaker is closed; three fail and open it.
    for _ in 0..5 {
        assert_eq!(b.admit(t), Admission::Call);
    }
    for _ in 0..3 {
        b.record(Admission::Call, true, t + ms(10));
    }
    let open = BreakerState::Open { until: t + ms(10) + COOL_DOWN };
    assert_eq!(b.state, open);
    b.record(Admission::Call, false, t + ms(20));
    assert_eq!(b.state, open, "a late success of a call admitted while closed does not close an open breaker");
    b.record(Admission::Call, true, t + ms(30));
    assert_eq!(b.state, open, "a late failure does not make it open longer");

    assert_eq!(b.admit(t + ms(10) + COOL_DOWN), Admission::Probe);
    b.record(Admission::Call, false, t + ms(10) + COOL_DOWN);
    assert_eq!(
        b.state,
        BreakerState::HalfOpen,
        "only the probe's outcome decides a half-open breaker, not a late call's"
    );
    b.record(Admission::Call, true, t + ms(11) + COOL_DOWN);
    assert_eq!(b.state, BreakerState::HalfOpen, "nor a late call's failure");
}

#[test]
fn the_provider_fails_when_it_times_out_cannot_be_reached_or_answers_5xx_and_only_then() {
    let status = |status: u16| MailError::Status { status, retry_after: None, body: String::new() };
    for failure in [MailError::Timeout, MailError::Connection("connection refused".into()), status(500), status(502)] {
        assert!(counts_as_failure(&failure), "{failure:?} is the provider failing");
    }
    assert!(counts_as_failure(&status(503)), "503 Service Unavailable is the provider failing");
    assert!(counts_as_failure(&status(504)), "504 Gateway Timeout is the provider failing");
    for healthy in [status(400), status(404), status(422), status(408)] {
        assert!(!counts_as_failure(&healthy), "{healthy:?}: the provider is up and answers; not its failure");
    }
    let slow_down = MailError::Status { status: 429, retry_after: Some(Duration::from_secs(1)), body: String::new() };
    assert!(!counts_as_failure(&slow_down), "429 asks the client to slow down: the provider is up");
    for not_made in [MailError::BreakerOpen, MailError::Overloaded] {
        assert!(
            !counts_as_failure(&not_made),
            "{not_made:?}: the call was never made; it says nothing of the provider"
        );
    }
}

#[test]
fn given_an_outage_and_a_recovery_the_breaker_goes_closed_open_half_open_closed() {
    let t = Instant::now();
    let mut b = breaker(3);
    let describe = |state: BreakerState| match state {
        BreakerState::Closed { consecutive_failures } => format!("closed, {consecutive_failures} failure(s) in a row"),
        BreakerState::Open { until } => format!("open until {} ms", (until - t).as_millis()),
        BreakerState::HalfOpen => "half-open".to_string(),
    };
    // (at ms, what the call does: None = still in flight, Some(true) = fails, Some(false) = succeeds)
    let steps: [(u64, &str, Option<bool>); 13] = [
        (0, "fails", Some(true)),
        (100, "fails", Some(true)),
        (200, "succeeds", Some(false)),
        (300, "fails", Some(true)),
        (400, "fails", Some(true)),
        (500, "fails", Some(true)),
        (600, "asks", None),
        (10_499, "asks", None),
        (10_500, "probe fails", Some(true)),
        (10_600, "asks", None),
        (20_600, "probe out", None),
        (20_700, "asks while the probe is out", None),
        (20_800, "probe succeeds", Some(false)),
    ];
    let mut timeline = Vec::new();
    let mut probe_out = false;
    for (at, what, outcome) in steps {
        let now = t + ms(at);
        let admission = if what == "probe succeeds" && probe_out { Admission::Probe } else { b.admit(now) };
        match admission {
            Admission::Probe if outcome.is_none() => probe_out = true,
            Admission::Rejected => {}
            _ => b.record(admission, outcome.unwrap_or(false), now),
        }
        timeline.push(serde_json::json!({
            "at_ms": at,
            "call": what,
            "admitted": format!("{admission:?}"),
            "state": describe(b.state),
        }));
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("breaker_timeline", timeline));
}

/// What the inner service answers, in order; when the script runs out, a success.
type Script = Arc<Mutex<VecDeque<Answer>>>;

enum Answer {
    Fail(u16),
    Ok,
    /// Answers when the sender sends (or fails when it is dropped): a call that stays in flight.
    Wait(tokio::sync::oneshot::Receiver<bool>),
}

#[tokio::test(start_paused = true)]
async fn the_layer_never_calls_through_an_open_breaker_and_lets_one_probe_out_at_a_time() {
    let config = BreakerConfig { failure_threshold: 3, cool_down: Duration::from_secs(5) };
    let handle = BreakerHandle::new(config);
    let script: Script = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let inner = {
        let (script, calls) = (script.clone(), calls.clone());
        tower::service_fn(move |_request: &'static str| {
            *calls.lock().unwrap() += 1;
            let answer = script.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
            async move {
                let fail = |status| MailError::Status { status, retry_after: None, body: String::new() };
                match answer {
                    Answer::Fail(status) => Err(fail(status)),
                    Answer::Ok => Ok(Delivery { status: 202 }),
                    Answer::Wait(answer) => match answer.await {
                        Ok(true) => Ok(Delivery { status: 202 }),
                        _ => Err(fail(503)),
                    },
                }
            }
        })
    };
    let service = CircuitBreakerLayer::new(handle.clone()).layer(inner);
    let calls_made = || *calls.lock().unwrap();

    script.lock().unwrap().extend([Answer::Fail(503), Answer::Fail(400), Answer::Fail(500), Answer::Fail(503)]);
    for _ in 0..4 {
        let _ = service.clone().oneshot("mail").await;
    }
    assert_eq!(calls_made(), 4, "a 400 is no failure: it takes three 5xx in a row, and four calls, to open");
    assert!(matches!(handle.state(), BreakerState::Closed { consecutive_failures: 2 }), "{:?}", handle.state());
    script.lock().unwrap().push_back(Answer::Fail(502));
    let _ = service.clone().oneshot("mail").await;
    assert!(matches!(handle.state(), BreakerState::Open { .. }), "open after three 5xx in a row");
    assert_eq!(calls_made(), 5);

    for _ in 0..10 {
        let result = service.clone().oneshot("mail").await;
        assert_eq!(result, Err(MailError::BreakerOpen), "an open breaker fails the call at once");
    }
    assert_eq!(calls_made(), 5, "and never makes it");

    tokio::time::sleep(config.cool_down).await;
    let (answer, answered) = tokio::sync::oneshot::channel();
    script.lock().unwrap().push_back(Answer::Wait(answered));
    let probe = tokio::spawn(service.clone().oneshot("probe"));
    kit_testing::wait_until("the probe to reach the provider", Duration::from_secs(5), || {
        let made = calls_made();
        async move { (made == 6).then_some(()) }
    })
    .await;
    for _ in 0..5 {
        let result = service.clone().oneshot("mail").await;
        assert_eq!(result, Err(MailError::BreakerOpen), "while the probe is out, other calls are rejected");
    }
    assert_eq!(calls_made(), 6, "exactly one probe reached the provider");
    answer.send(true).unwrap();
    let probed = probe.await.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
    assert_eq!(probed, Ok(Delivery { status: 202 }));
    assert_eq!(handle.state(), BreakerState::Closed { consecutive_failures: 0 }, "the probe succeeded: closed");
    assert_eq!(service.clone().oneshot("mail").await, Ok(Delivery { status: 202 }), "calls go through again");
    assert_eq!(calls_made(), 7);
}
