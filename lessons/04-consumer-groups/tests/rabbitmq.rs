//! Grades lesson 04's RabbitMQ exercise (`rabbit::subscribe_worker`) on a real RabbitMQ: every subscriber gets
//! every message; the workers of one subscriber share its messages; messages wait in the subscriber's queue while
//! none of its workers is connected; a worker holds at most `prefetch` unacknowledged messages; what a worker held
//! unacknowledged when it went away is redelivered to another.
//!
//! Each test publishes to a fanout exchange of its own (`unique`), and its workers are `rabbit::Worker`s, each with
//! a connection of its own, as separate processes would have. The exercise declares the queues, so they cannot
//! carry the `x-expires` of scratch queues: a guard deletes the test's queues and exchange when the test ends,
//! passed or failed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use kit::events::sample_events;
use kit::rabbitmq::RabbitMq;
use kit_testing::{unique, wait_until};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;
use lesson_04::rabbit::{Got, Publisher, Worker, subscriber_queue};
use uuid::Uuid;

/// How long a step may take: RabbitMQ on the same machine answers in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn rabbit() -> RabbitMq {
    RabbitMq::resolve().expect("a RabbitMQ to test against")
}

/// Runs `step`, failing the test if it takes longer than [`WAIT`] (naming `what`) or fails.
async fn within<T>(what: &str, step: impl Future<Output = anyhow::Result<T>>) -> T {
    match tokio::time::timeout(WAIT, step).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{what} failed: {e:#}"),
        Err(_) => panic!("{what} did not happen within {WAIT:?}"),
    }
}

/// Deletes what a test declared (its subscribers' queues, its exchange) when the test ends, passed or failed.
struct Cleanup {
    queues: Vec<String>,
    exchange: String,
}

impl Cleanup {
    fn new(exchange: &str, subscribers: &[&str]) -> Cleanup {
        let mut queues: Vec<String> = subscribers.iter().map(|s| subscriber_queue(exchange, s)).collect();
        // A queue named after the exchange alone: where a wrong answer shares one queue between subscribers.
        queues.push(exchange.to_string());
        Cleanup { queues, exchange: exchange.to_string() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (queues, exchange) = (std::mem::take(&mut self.queues), std::mem::take(&mut self.exchange));
        // Drop cannot await and may run while the test unwinds: a thread with a runtime of its own deletes them.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let connection = kit::rabbitmq::connect().await?;
                let channel = connection.create_channel().await?;
                let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
                kit::rabbitmq::delete_queues(&channel, &queues).await?;
                kit::rabbitmq::delete_exchanges(&channel, &[exchange.as_str()]).await?;
                connection.close(200, "test done".into()).await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the test's queues and exchange: {deleted:?}");
        }
    }
}

/// Starts worker `name` of `subscriber` on `exchange`.
async fn worker(exchange: &str, subscriber: &str, name: &str, prefetch: u16) -> Worker {
    within(&format!("starting {name}"), Worker::start(&rabbit(), exchange, subscriber, name, prefetch)).await
}

fn ids(received: &[Got]) -> BTreeSet<Uuid> {
    received.iter().map(|got| got.event.event_id).collect()
}

fn ids_of(events: &[kit::UserEvent]) -> BTreeSet<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// Waits until `workers` have received, together, every one of `expected`.
async fn wait_for_all(what: &str, workers: &[&Worker], expected: &BTreeSet<Uuid>) {
    wait_until(what, WAIT, || async {
        let seen: BTreeSet<Uuid> = workers.iter().flat_map(|w| ids(&w.received())).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
}

/// insta's settings for these snapshots: the workbook's redactions, and the file named after this test binary
/// (`rabbitmq__NAME.snap`), apart from the Kafka tests' snapshots.
fn snapshot_settings() -> insta::Settings {
    let mut settings = kit_testing::redact::settings();
    settings.set_prepend_module_to_snapshot(true);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message() {
    let exchange = unique("l04-fanout");
    let _cleanup = Cleanup::new(&exchange, &["analytics", "audit"]);
    let publisher = within("declaring the exchange", Publisher::start(&rabbit(), &exchange)).await;
    let analytics = worker(&exchange, "analytics", "analytics-1", 10).await;
    let audit = worker(&exchange, "audit", "audit-1", 10).await;

    let events = sample_events(41, 20, 9);
    within("publishing 20 events", publisher.publish(&events)).await;
    wait_for_all("analytics to receive all 20 messages", &[&analytics], &ids_of(&events)).await;
    wait_for_all("audit to receive all 20 messages", &[&audit], &ids_of(&events)).await;

    let mut per_subscriber = BTreeMap::new();
    for worker in [analytics, audit] {
        let subscriber = worker.subscriber.clone();
        let received = within("a worker leaving", worker.leave()).await;
        assert_eq!(received.len(), events.len(), "{subscriber} receives each message once: {received:#?}");
        per_subscriber.insert(subscriber, received.len());
    }
    snapshot_settings().bind(|| insta::assert_json_snapshot!("messages_per_subscriber", per_subscriber));
}

/// What the snapshot shows of two workers of one subscriber sharing its messages.
#[derive(Serialize)]
struct Shared {
    messages: usize,
    received: usize,
    received_by_both: usize,
    workers_with_a_share: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_one_subscriber_share_its_messages() {
    let exchange = unique("l04-work");
    let _cleanup = Cleanup::new(&exchange, &["billing"]);
    let publisher = within("declaring the exchange", Publisher::start(&rabbit(), &exchange)).await;
    let first = worker(&exchange, "billing", "billing-1", 5).await;
    let second = worker(&exchange, "billing", "billing-2", 5).await;

    let events = sample_events(42, 20, 9);
    within("publishing 20 events", publisher.publish(&events)).await;
    wait_for_all(
        "the two billing workers to receive all 20 messages between them",
        &[&first, &second],
        &ids_of(&events),
    )
    .await;

    let (got_first, got_second) = (first.received(), second.received());
    let both: BTreeSet<Uuid> = ids(&got_first).intersection(&ids(&got_second)).copied().collect();
    assert!(both.is_empty(), "{} messages went to both workers of one subscriber", both.len());
    assert_eq!(got_first.len() + got_second.len(), events.len(), "each message is delivered once in the subscriber");
    assert!(
        !got_first.is_empty() && !got_second.is_empty(),
        "both workers get a share: billing-1 got {}, billing-2 got {}",
        got_first.len(),
        got_second.len()
    );
    let shared = Shared {
        messages: events.len(),
        received: got_first.len() + got_second.len(),
        received_by_both: both.len(),
        workers_with_a_share: [&got_first, &got_second].iter().filter(|got| !got.is_empty()).count(),
    };
    snapshot_settings().bind(|| insta::assert_json_snapshot!("shared_by_two_workers", shared));
    within("billing-1 leaving", first.leave()).await;
    within("billing-2 leaving", second.leave()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_while_no_worker_is_connected() {
    let exchange = unique("l04-away");
    let _cleanup = Cleanup::new(&exchange, &["reports"]);
    let publisher = within("declaring the exchange", Publisher::start(&rabbit(), &exchange)).await;
    let first = worker(&exchange, "reports", "reports-1", 10).await;
    within("reports-1 leaving", first.leave()).await;

    // The subscriber has no worker now: its queue is still there, and as declared (durable, no arguments).
    let queue = subscriber_queue(&exchange, "reports");
    let connection = within("connecting to look at the queue", kit::rabbitmq::connect()).await;
    let look = within("opening a channel", async { anyhow::Ok(connection.create_channel().await?) }).await;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let kept = within("looking for the queue", async {
        anyhow::Ok(look.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await)
    })
    .await;
    assert!(kept.is_ok(), "the queue {queue} is still there after its only worker left: {kept:?}");
    // Declaring a queue that exists with other properties fails: this succeeds only on a durable queue with no
    // arguments (not exclusive, not auto-delete), the queue the instruction describes.
    let look = within("opening a channel", async { anyhow::Ok(connection.create_channel().await?) }).await;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let same = within("declaring the queue again", async {
        anyhow::Ok(look.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await)
    })
    .await;
    assert!(same.is_ok(), "the queue {queue} is durable, with no arguments: declaring it so fails with {same:?}");

    let events = sample_events(43, 10, 9);
    within("publishing 10 events while no worker is connected", publisher.publish(&events)).await;
    let back = worker(&exchange, "reports", "reports-2", 10).await;
    wait_for_all(
        "reports-2 to receive the 10 messages published while no worker was connected",
        &[&back],
        &ids_of(&events),
    )
    .await;
    let received = within("reports-2 leaving", back.leave()).await;
    assert_eq!(received.len(), events.len(), "each message waited once: {received:#?}");
    let _ = connection.close(200, "test done".into()).await;
}

/// What the snapshot shows of a worker that never acknowledges next to one that does.
#[derive(Serialize)]
struct Held {
    prefetch_of_the_holder: u16,
    held_unacknowledged: usize,
    taken_by_the_other: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_at_most_prefetch_unacknowledged_messages() {
    let exchange = unique("l04-prefetch");
    let _cleanup = Cleanup::new(&exchange, &["billing"]);
    let publisher = within("declaring the exchange", Publisher::start(&rabbit(), &exchange)).await;
    let prefetch = 3;
    let holder = worker(&exchange, "billing", "billing-holder", prefetch).await;
    holder.stop_acknowledging();
    let taker = worker(&exchange, "billing", "billing-taker", 50).await;

    let events = sample_events(44, 20, 9);
    within("publishing 20 events", publisher.publish(&events)).await;
    wait_for_all("the two workers to receive all 20 messages between them", &[&holder, &taker], &ids_of(&events)).await;

    let (held, taken) = (holder.received(), taker.received());
    assert_eq!(
        held.len(),
        usize::from(prefetch),
        "a worker that acknowledges nothing receives its prefetch ({prefetch}) and no more: {:#?}",
        ids(&held)
    );
    assert_eq!(taken.len(), events.len() - held.len(), "the other worker takes the rest, each message once");
    assert!(taken.iter().all(|got| !got.redelivered), "nothing was redelivered: {taken:#?}");
    let snapshot =
        Held { prefetch_of_the_holder: prefetch, held_unacknowledged: held.len(), taken_by_the_other: taken.len() };
    snapshot_settings().bind(|| insta::assert_json_snapshot!("held_at_most_prefetch", snapshot));
    within("the holder leaving", holder.leave()).await;
    within("the taker leaving", taker.leave()).await;
}

/// What the snapshot shows of a worker that went away holding messages.
#[derive(Serialize)]
struct Redelivered {
    held_when_it_left: usize,
    redelivered_to_the_other: usize,
    received_by_the_other: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_of_a_worker_that_left_go_to_another() {
    let exchange = unique("l04-redeliver");
    let _cleanup = Cleanup::new(&exchange, &["billing"]);
    let publisher = within("declaring the exchange", Publisher::start(&rabbit(), &exchange)).await;
    let holder = worker(&exchange, "billing", "billing-holder", 3).await;
    holder.stop_acknowledging();
    let taker = worker(&exchange, "billing", "billing-taker", 50).await;

    let events = sample_events(45, 10, 9);
    within("publishing 10 events", publisher.publish(&events)).await;
    wait_for_all("the two workers to receive all 10 messages between them", &[&holder, &taker], &ids_of(&events)).await;
    let held = ids(&holder.held());
    assert!(!held.is_empty(), "the holder received messages it did not acknowledge");

    // The holder goes away without acknowledging: what it held goes to the taker, marked as redelivered.
    within("the holder leaving", holder.leave()).await;
    let redelivered = wait_until(
        "the messages the holder left unacknowledged to reach the other worker, marked redelivered",
        WAIT,
        || async {
            let again: BTreeSet<Uuid> =
                ids(&taker.received().into_iter().filter(|g| g.redelivered).collect::<Vec<_>>());
            held.is_subset(&again).then_some(again)
        },
    )
    .await;
    assert_eq!(redelivered, held, "only what the holder held is redelivered");
    let received = within("the taker leaving", taker.leave()).await;
    assert_eq!(ids(&received), ids_of(&events), "the taker ends up with every message");
    assert_eq!(received.len(), events.len(), "each message reached the taker once: {received:#?}");
    let snapshot = Redelivered {
        held_when_it_left: held.len(),
        redelivered_to_the_other: redelivered.len(),
        received_by_the_other: received.len(),
    };
    snapshot_settings().bind(|| insta::assert_json_snapshot!("redelivered_after_a_worker_left", snapshot));
}
