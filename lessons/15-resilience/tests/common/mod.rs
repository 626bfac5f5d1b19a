//! What lesson 15's tests share: the client's settings for tests, fresh topics, a mailer running in a task that
//! fails the test as soon as it stops by itself, orders put on a topic, and the offsets a group committed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kit_testing::{broker, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use lesson_15::breaker::BreakerHandle;
use lesson_15::client::BudgetConfig;
use lesson_15::mailer::{FetchWatch, MailerStats};
use lesson_15::{Backoff, BreakerConfig, MailClient, MailRequest, MailTopics, Mailer, Resilience};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The client's settings in the tests: the lesson's, with shorter waits.
pub fn settings() -> Resilience {
    Resilience {
        timeout: Duration::from_millis(500),
        breaker: BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(1000) },
        backoff: Backoff { base: Duration::from_millis(20), cap: Duration::from_millis(200) },
        max_retries: 3,
        budget: BudgetConfig { ttl: Duration::from_secs(10), min_per_sec: 1, retry_ratio: 0.2 },
        max_in_flight: 4,
    }
}

/// A request for `order_id`.
pub fn order(order_id: &str) -> MailRequest {
    MailRequest::confirmation(order_id, &format!("{order_id}@example.com"))
}

/// Fresh topics: `mail.requests` with 3 partitions, `mail.dlq` with 1, as in the manifest.
pub async fn mail_topics() -> MailTopics {
    let topics = MailTopics { requests: unique("lesson15-requests"), dead_letters: unique("lesson15-dlq") };
    kit_testing::create_topics(&[(&topics.requests, false, 3), (&topics.dead_letters, false, 1)]).await;
    topics
}

/// Writes one request per order id to `topic`, keyed by it, in order; where each landed (partition, offset).
pub async fn publish(topic: &str, order_ids: &[String]) -> BTreeMap<String, (i32, i64)> {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    let mut positions = BTreeMap::new();
    for order_id in order_ids {
        let payload = serde_json::to_vec(&order(order_id)).unwrap();
        let delivered = producer
            .send(FutureRecord::to(topic).key(order_id).payload(&payload), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("writing {order_id}: {e}"));
        positions.insert(order_id.clone(), (delivered.partition, delivered.offset));
    }
    positions
}

/// The offsets `group` committed on `topic`'s 3 partitions (`None`: nothing committed).
pub async fn committed(group: &str, topic: &str) -> Vec<Option<i64>> {
    kit_testing::committed_offsets(group, topic, 3).await
}

/// The offsets a group should have committed once the orders in `done` are handled, and no other: per
/// partition, one past the last of them — the orders of a partition are handled in the order of their offsets,
/// so that is also how many of its records are handled. `None` for a partition with nothing handled.
pub fn committed_after(positions: &BTreeMap<String, (i32, i64)>, done: &[String]) -> Vec<Option<i64>> {
    (0..3)
        .map(|partition| {
            done.iter()
                .filter_map(|order_id| positions.get(order_id))
                .filter(|(p, _)| *p == partition)
                .map(|(_, offset)| offset + 1)
                .max()
        })
        .collect()
}

/// A mailer running in a task of its own.
pub struct Running {
    task: JoinHandle<anyhow::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
    pub stats: Arc<MailerStats>,
    pub fetched: Arc<FetchWatch>,
    pub breaker: BreakerHandle,
}

impl Running {
    pub fn start(mailer: Mailer) -> Running {
        let (stats, fetched, breaker) = (mailer.stats.clone(), mailer.fetched.clone(), mailer.client.breaker.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mailer.run(async {
            let _ = stopped.await;
        }));
        Running { task, stop: Some(stop), stats, fetched, breaker }
    }

    /// Fails the test at once if the mailer stopped by itself: with its panic (an exercise's `todo!()`), or its
    /// error.
    pub async fn check(&mut self) {
        if self.task.is_finished() {
            match (&mut self.task).await {
                Ok(Ok(())) => panic!("the mailer stopped by itself"),
                Ok(Err(error)) => panic!("the mailer stopped with an error: {error:#}"),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    }

    /// Stops the mailer and waits for it.
    pub async fn stop(mut self) {
        self.check().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(result)) => result.expect("the mailer stops cleanly"),
            Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
            Err(_) => panic!("the mailer did not stop within 30 s"),
        }
    }
}

/// Waits, up to `within`, until `probe` returns `Some`, failing the test at once if the mailer stops by itself.
pub async fn wait_for<T, F>(running: &mut Running, what: &str, within: Duration, mut probe: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        running.check().await;
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up after {within:?} waiting for {what}");
        tokio::time::sleep(kit::wait::POLL_INTERVAL).await; // the polling interval, bounded by the deadline
    }
}

/// A mail client of `url` with `resilience`.
pub fn client(url: &str, resilience: &Resilience) -> MailClient {
    MailClient::new(url, resilience).expect("a client")
}
