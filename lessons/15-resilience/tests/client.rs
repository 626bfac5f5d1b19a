//! Grades the whole client over real HTTP against the fake provider (no broker): the Idempotency-Key, the
//! statuses, timeouts and refused connections as the breaker and the retry see them, the breaker through an
//! outage and a recovery, and the bulkhead shedding what is beyond its limit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, order, settings};
use lesson_15::{BreakerConfig, BreakerState, Delivery, FakeProvider, MailError, Mode, Resilience};

async fn provider() -> FakeProvider {
    FakeProvider::start().await.expect("a fake provider")
}

/// Waits until the breaker would let a call through again (its cool-down over).
async fn cool_down_passed(client: &lesson_15::MailClient) {
    kit_testing::wait_until("the breaker's cool-down to pass", Duration::from_secs(10), || {
        let ready = client.breaker.ready();
        async move { ready.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn each_call_carries_the_order_id_as_idempotency_key_and_a_500_is_tried_again() {
    let provider = provider().await;
    let client = client(&provider.url(), &settings());
    provider.answer_next([500]);
    assert_eq!(client.send(order("order-1")).await, Ok(Delivery { status: 202 }), "sent on the second attempt");
    let calls = provider.calls();
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [500, 202]);
    assert!(
        calls.iter().all(|c| c.order_id.as_deref() == Some("order-1")),
        "every attempt carries Idempotency-Key: order-1"
    );
    assert_eq!(provider.emails_per_order().get("order-1"), Some(&1));
}

#[tokio::test]
async fn an_outage_opens_the_breaker_after_the_threshold_and_one_probe_closes_it_after_the_recovery() {
    let provider = provider().await;
    let resilience = Resilience {
        breaker: BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(300) },
        ..settings()
    };
    let client = client(&provider.url(), &resilience);
    provider.set_mode(Mode::Failing(503)).await.unwrap();
    assert_eq!(
        client.send(order("order-1")).await,
        Err(MailError::BreakerOpen),
        "three 503s open the breaker; the third retry is rejected by it and not retried"
    );
    assert_eq!(provider.calls().len(), 3, "the provider saw the threshold's 3 calls");
    for n in 2..8 {
        assert_eq!(client.send(order(&format!("order-{n}"))).await, Err(MailError::BreakerOpen));
    }
    assert_eq!(provider.calls().len(), 3, "while open, no call reaches the provider");

    provider.set_mode(Mode::Healthy).await.unwrap();
    cool_down_passed(&client).await;
    assert_eq!(client.send(order("order-8")).await, Ok(Delivery { status: 202 }), "the probe goes, and succeeds");
    assert_eq!(provider.calls().len(), 4);
    assert_eq!(client.breaker.state(), BreakerState::Closed { consecutive_failures: 0 }, "closed again");
    assert_eq!(client.send(order("order-9")).await, Ok(Delivery { status: 202 }));
    assert_eq!(provider.emails_per_order().len(), 2);
}

#[tokio::test]
async fn a_slow_provider_times_out_and_timeouts_count_towards_opening() {
    let provider = provider().await;
    provider.set_latency(Duration::from_secs(2));
    let resilience = Resilience {
        timeout: Duration::from_millis(100),
        breaker: BreakerConfig { failure_threshold: 2, cool_down: Duration::from_secs(30) },
        max_retries: 0,
        ..settings()
    };
    let client = client(&provider.url(), &resilience);
    assert_eq!(client.send(order("order-1")).await, Err(MailError::Timeout));
    assert_eq!(client.breaker.state(), BreakerState::Closed { consecutive_failures: 1 }, "a timeout is a failure");
    assert_eq!(client.send(order("order-2")).await, Err(MailError::Timeout));
    assert!(matches!(client.breaker.state(), BreakerState::Open { .. }), "two in a row open the breaker");
    assert_eq!(client.send(order("order-3")).await, Err(MailError::BreakerOpen));
    assert_eq!(provider.calls().len(), 2);
}

#[tokio::test]
async fn refused_connections_count_as_failures_and_the_provider_is_used_again_once_back() {
    let provider = provider().await;
    let resilience = Resilience {
        breaker: BreakerConfig { failure_threshold: 2, cool_down: Duration::from_millis(300) },
        max_retries: 1,
        ..settings()
    };
    let client = client(&provider.url(), &resilience);
    provider.set_mode(Mode::Down).await.unwrap();
    let refused = client.send(order("order-1")).await;
    assert!(matches!(refused, Err(MailError::Connection(_))), "nobody listens: {refused:?}");
    assert!(matches!(client.breaker.state(), BreakerState::Open { .. }), "two refused connections open the breaker");

    provider.set_mode(Mode::Healthy).await.unwrap();
    cool_down_passed(&client).await;
    assert_eq!(client.send(order("order-2")).await, Ok(Delivery { status: 202 }));
    assert_eq!(client.breaker.state(), BreakerState::Closed { consecutive_failures: 0 });
}

#[tokio::test]
async fn a_refused_email_is_tried_once_and_does_not_count_as_a_failure() {
    let provider = provider().await;
    provider.refuse("order-x", 400, "mailbox unavailable: no such user");
    let client = client(&provider.url(), &settings());
    for _ in 0..5 {
        match client.send(order("order-x")).await {
            Err(MailError::Status { status: 400, body, .. }) => assert!(body.contains("no such user"), "{body}"),
            other => panic!("a 400 comes back as it is: {other:?}"),
        }
    }
    assert_eq!(provider.calls().len(), 5, "five sends, five calls: no retry");
    assert_eq!(
        client.breaker.state(),
        BreakerState::Closed { consecutive_failures: 0 },
        "the provider is up and answers: the breaker stays closed"
    );
}

#[tokio::test]
async fn the_bulkhead_sheds_calls_beyond_its_limit_at_once_instead_of_queueing_them() {
    let provider = provider().await;
    provider.set_latency(Duration::from_millis(300));
    let client = client(&provider.url(), &Resilience { max_in_flight: 2, ..settings() });
    let finished: Arc<Mutex<Vec<Result<Delivery, MailError>>>> = Arc::default();
    let sends = (0..5).map(|n| {
        let (client, finished) = (client.clone(), finished.clone());
        async move {
            let result = client.send(order(&format!("order-{n}"))).await;
            finished.lock().unwrap().push(result);
        }
    });
    futures::future::join_all(sends).await;
    let finished = finished.lock().unwrap().clone();
    let shed = finished.iter().filter(|r| **r == Err(MailError::Overloaded)).count();
    let sent = finished.iter().filter(|r| r.is_ok()).count();
    assert_eq!((sent, shed), (2, 3), "two in flight at most; the other three shed: {finished:?}");
    assert!(
        finished[..3].iter().all(|r| *r == Err(MailError::Overloaded)),
        "the shed calls failed before the others finished (they did not wait for a slot): {finished:?}"
    );
    assert_eq!(provider.calls().len(), 2, "shed calls never reach the provider, and are not retried");
    assert_eq!(client.breaker.state(), BreakerState::Closed { consecutive_failures: 0 }, "shedding is no failure");
}
