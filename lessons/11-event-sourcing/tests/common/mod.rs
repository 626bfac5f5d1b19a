//! What lesson 11's read-side tests (`projection.rs`, `service.rs`) share: a read model in a namespace of its own
//! (cleared at the end, also when the test fails), the store's topics and a writer over them, order histories
//! written by hand, and a projector running in the background until told to stop.
//!
//! librdkafka's transactional calls block: the tests run on tokio's multi-threaded runtime and call the writer
//! through [`blocking`], on tokio's blocking pool.

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::redis::ClearOnDrop;
use kit_testing::{broker, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use lesson_11::projection::{ProjectorReport, ReadModel, projector_config, run_projector};
use lesson_11::store::{OrderWriter, StoreTopics, producer_config};
use lesson_11::{Command, Event, StoredEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PARTITIONS: i32 = 3;

/// Runs blocking code on tokio's blocking pool and waits for it; a panic there fails the test.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A read model in a fresh namespace, and the guard that deletes its keys when the test ends.
pub async fn read_model(prefix: &str) -> (ReadModel, ClearOnDrop) {
    let namespace = unique(prefix);
    let guard = ClearOnDrop::new(namespace.clone()).expect("a Redis to clear the namespace in");
    (ReadModel::new(kit::redis::test_connection().await, namespace), guard)
}

/// Events of order `order_id`, numbered from version `from`: a history written by hand, so the read side is
/// graded on its own.
pub fn numbered(order_id: &str, from: u64, events: Vec<Event>) -> Vec<StoredEvent> {
    (from..).zip(events).map(|(version, event)| StoredEvent { order_id: order_id.into(), version, event }).collect()
}

pub fn placed(customer: &str) -> Event {
    Event::OrderPlaced { customer_id: customer.into() }
}

pub fn item(sku: &str, quantity: u32, unit_price_cents: u64) -> Event {
    Event::ItemAdded { sku: sku.into(), quantity, unit_price_cents, currency: "EUR".into() }
}

pub fn confirmed(total_cents: u64) -> Event {
    Event::OrderConfirmed { total_cents }
}

pub fn cancelled(reason: &str) -> Event {
    Event::OrderCancelled { reason: reason.into() }
}

pub fn place(customer: &str) -> Command {
    Command::PlaceOrder { customer_id: customer.into() }
}

pub fn add(sku: &str, quantity: u32, unit_price_cents: u64) -> Command {
    Command::AddItem { sku: sku.into(), quantity, unit_price_cents, currency: "EUR".into() }
}

/// A fresh pair of store topics.
pub async fn store_topics() -> StoreTopics {
    let topics = StoreTopics {
        events: unique("lesson11-events"),
        snapshots: unique("lesson11-snapshots"),
        partitions: PARTITIONS,
    };
    broker().create_topic(&topics.events, PARTITIONS).await.expect("events topic");
    let compacted = [("cleanup.policy", "compact".to_string())];
    broker().create_topic_with(&topics.snapshots, PARTITIONS, &compacted).await.expect("snapshots topic");
    topics
}

/// A writer of every partition at `bootstrap` (the broker's or a proxy's) with nothing known yet, shared with
/// blocking closures.
pub async fn writer(bootstrap: &str, topics: &StoreTopics) -> Arc<Mutex<OrderWriter>> {
    owner(bootstrap, topics, topics.all_partitions()).await
}

/// A writer of the partitions `owned`, with an identity of its own and nothing known yet.
pub async fn owner(bootstrap: &str, topics: &StoreTopics, owned: BTreeSet<i32>) -> Arc<Mutex<OrderWriter>> {
    let producer = producer_config(bootstrap, &unique("lesson11-writer")).create().expect("a producer");
    let topics = topics.clone();
    blocking(move || {
        let writer = OrderWriter::start(producer, topics, owned, 5, || Ok(HashMap::new())).expect("the writer starts");
        Arc::new(Mutex::new(writer))
    })
    .await
}

/// Sends `commands` to order `order_id`, each at the version the previous one returned (the first at 0);
/// returns the order's last version. Every command must be carried out.
pub async fn send(writer: &Arc<Mutex<OrderWriter>>, order_id: &str, commands: Vec<Command>) -> u64 {
    let (writer, order_id) = (Arc::clone(writer), order_id.to_string());
    blocking(move || {
        let mut writer = writer.lock().unwrap();
        let mut version = 0;
        for command in commands {
            version = writer
                .handle(&order_id, version, &command)
                .unwrap_or_else(|e| panic!("{order_id}: {command:?} at version {version}: {e}"));
        }
        version
    })
    .await
}

/// A projector running in the background: a member of `group` on `topic`, applying to its own clone of
/// `read_model`, until [`Projector::stop`].
pub struct Projector {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<ProjectorReport>>,
}

impl Projector {
    pub fn start(topic: &str, group: &str, read_model: &ReadModel) -> Projector {
        let consumer: StreamConsumer =
            projector_config(broker().consumer_config(group)).create().expect("the projector's consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut read_model = read_model.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = run_projector(&consumer, &mut read_model, async {
                let _ = stopped.await;
            })
            .await;
            // Leaving the group blocks for a moment: not on an async worker.
            tokio::task::spawn_blocking(move || drop(consumer)).await.expect("the consumer closes");
            result
        });
        Projector { stop, task }
    }

    /// Whether the projector's run has ended (by itself only on an error, or a panic).
    pub fn has_ended(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the projector to stop and returns what its run returned; a panic in it fails the test with its
    /// own message.
    pub async fn stop(self) -> anyhow::Result<ProjectorReport> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Waits for the projector to end by itself (on an error) and returns what its run returned.
    pub async fn ended(self, within: Duration) -> anyhow::Result<ProjectorReport> {
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("the projector did not stop by itself within {within:?}"))
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}
