//! Lesson 04 on RabbitMQ: the consumer group's two promises — share the work inside one service, give every
//! service its own copy — built from RabbitMQ's pieces, to set beside Kafka's.
//!
//! A publisher sends each event to a **fanout exchange**, which copies it into every queue bound to it. Each
//! subscriber (a service: analytics, audit) has **one queue of its own**, and its workers are **competing
//! consumers** of that queue: RabbitMQ hands each message to one of them, in turn, and at most `prefetch`
//! unacknowledged messages to each. The queue plays the part of Kafka's group: it is what a second subscriber
//! needs one of, and what outlives the workers (as a group's committed offsets outlive its members).
//!
//! The differences are the lesson: Kafka gives a member whole partitions (one user's events stay with one member,
//! in order), RabbitMQ deals out single messages; Kafka reacts to a member leaving with a rebalance, RabbitMQ by
//! redelivering only what that worker held unacknowledged; Kafka keeps the log for everyone, RabbitMQ removes a
//! message from a queue once it is acknowledged.
//!
//! [`subscribe_worker`] is the exercise. [`Publisher`] and [`Worker`] are given: the story (`--rabbitmq`) and
//! the tests (`tests/rabbitmq.rs`) run subscribers with them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kit::UserEvent;
use kit::rabbitmq::RabbitMq;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use serde::Serialize;
use tokio::task::JoinHandle;

/// The queue that holds `subscriber`'s copy of what is published to `exchange`: `{exchange}.{subscriber}`.
pub fn subscriber_queue(exchange: &str, subscriber: &str) -> String {
    format!("{exchange}.{subscriber}")
}

// EXERCISE: Make this worker (its `channel`) one of the competing consumers of subscriber `subscriber`, which
// receives what is published to `exchange` (a durable fanout exchange, already declared by the publisher), and
// return its consumer. The caller acknowledges each delivery once it has handled it. The subscriber's messages wait
// in the queue named by `subscriber_queue(exchange, subscriber)` (`{exchange}.{subscriber}`): a durable queue with
// no arguments, shared by all of the subscriber's workers. The tests check, on a real RabbitMQ:
// - every subscriber receives every message published to the exchange once its first worker has subscribed;
// - the workers of one subscriber share its messages: each message goes to one of them, and both get some;
// - messages published while none of a subscriber's workers is connected wait for the next worker, and the queue
//   is still there, durable, after they have all left;
// - a worker holds at most `prefetch` unacknowledged messages at a time; the rest go to workers with room;
// - a message a worker received but had not acknowledged when its connection closed goes to another worker,
//   marked `redelivered`.
// ANCHOR: subscribe_worker
/// A consumer of `subscriber`'s queue on `channel`, holding at most `prefetch` unacknowledged messages.
pub async fn subscribe_worker(
    channel: &Channel,
    exchange: &str,
    subscriber: &str,
    prefetch: u16,
) -> anyhow::Result<Consumer> {
    let queue = subscriber_queue(exchange, subscriber);
    // Named after the subscriber, so all its workers find the same queue; durable and neither exclusive nor
    // auto-delete, so it outlives them all and keeps what arrives while none is connected. Declaring is
    // idempotent: every worker declares it, the first one creates it.
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await?;
    // A fanout exchange ignores the routing key: every queue bound to it gets its own copy of each message.
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Before consuming: the limit applies to the consumers the channel starts after it.
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    // Manual acknowledgement (no_ack stays false): a message stays the queue's until the caller acks it, and goes
    // back to the queue if the worker's channel closes first.
    let consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    Ok(consumer)
}
// ANCHOR_END: subscribe_worker

/// Publishes events to a fanout exchange, one JSON message each, and waits for RabbitMQ to confirm each.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Publisher {
    /// Connects and declares `exchange`: fanout, durable (it outlives a restart of RabbitMQ, like the queues).
    pub async fn start(rabbit: &RabbitMq, exchange: &str) -> anyhow::Result<Publisher> {
        let connection = rabbit.connect().await?;
        let channel = connection.create_channel().await?;
        // Publisher confirms: each publish is answered once RabbitMQ has routed the message to every bound queue.
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(exchange.into(), ExchangeKind::Fanout, options, FieldTable::default()).await?;
        Ok(Publisher { connection, channel, exchange: exchange.to_string() })
    }

    /// The exchange it publishes to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Publishes `events` in order (persistent messages: a durable queue keeps them across a restart), each
    /// confirmed before the next is sent.
    pub async fn publish(&self, events: &[UserEvent]) -> anyhow::Result<()> {
        for event in events {
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(event.event_id.to_string().into())
                .with_delivery_mode(2);
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    event.to_json().as_bytes(),
                    properties,
                )
                .await?
                .await?;
            anyhow::ensure!(confirm.is_ack(), "RabbitMQ refused event {}: {confirm:?}", event.event_id);
        }
        Ok(())
    }

    /// Deletes the queues of `subscribers` and the exchange, then disconnects: what a story leaves behind.
    pub async fn delete_all(self, subscribers: &[&str]) -> anyhow::Result<()> {
        let queues: Vec<String> = subscribers.iter().map(|s| subscriber_queue(&self.exchange, s)).collect();
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        kit::rabbitmq::delete_queues(&self.channel, &queues).await?;
        kit::rabbitmq::delete_exchanges(&self.channel, &[self.exchange.as_str()]).await?;
        self.connection.close(200, "done".into()).await?;
        Ok(())
    }
}

/// One event as a worker received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Got {
    pub worker: String,
    pub event: UserEvent,
    /// RabbitMQ's flag: this message was delivered before, to a worker that did not acknowledge it.
    pub redelivered: bool,
    /// Whether this worker acknowledged it (a worker that stopped acknowledging holds it).
    pub acknowledged: bool,
}

/// A running worker of one subscriber: a connection of its own (as a worker process has), a consumer from
/// [`subscribe_worker`], and a task that acknowledges each event as it arrives — until told to stop acknowledging,
/// which is how the story and the tests make a worker that hangs on its messages.
pub struct Worker {
    pub name: String,
    pub subscriber: String,
    connection: Connection,
    received: Arc<Mutex<Vec<Got>>>,
    acknowledging: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Worker {
    /// Connects, subscribes as one of `subscriber`'s workers (see [`subscribe_worker`]) and starts reading.
    pub async fn start(
        rabbit: &RabbitMq,
        exchange: &str,
        subscriber: &str,
        name: &str,
        prefetch: u16,
    ) -> anyhow::Result<Worker> {
        let connection = rabbit.connect().await?;
        let channel = connection.create_channel().await?;
        let mut consumer = subscribe_worker(&channel, exchange, subscriber, prefetch).await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let acknowledging = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (name, received, acknowledging) = (name.to_string(), received.clone(), acknowledging.clone());
            async move {
                // The channel lives as long as its consumer reads: it ends when the worker's connection closes.
                let _channel = channel;
                while let Some(delivery) = consumer.next().await {
                    let delivery = match delivery {
                        Ok(delivery) => delivery,
                        Err(e) => {
                            tracing::warn!("{name}: {e}");
                            break;
                        }
                    };
                    let acknowledged = acknowledging.load(Ordering::SeqCst);
                    if acknowledged && let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                        tracing::warn!("{name}: acknowledging failed: {e}");
                        break;
                    }
                    match serde_json::from_slice::<UserEvent>(&delivery.data) {
                        Ok(event) => received.lock().expect("received poisoned").push(Got {
                            worker: name.clone(),
                            event,
                            redelivered: delivery.redelivered,
                            acknowledged,
                        }),
                        Err(e) => tracing::warn!("{name}: a message that is not a user event: {e}"),
                    }
                }
            }
        });
        Ok(Worker {
            name: name.to_string(),
            subscriber: subscriber.to_string(),
            connection,
            received,
            acknowledging,
            task,
        })
    }

    /// From now on the worker keeps what it receives without acknowledging it, as one stuck in a slow call would.
    pub fn stop_acknowledging(&self) {
        self.acknowledging.store(false, Ordering::SeqCst);
    }

    /// What this worker has received so far, in order.
    pub fn received(&self) -> Vec<Got> {
        self.received.lock().expect("received poisoned").clone()
    }

    /// What it received and holds unacknowledged.
    pub fn held(&self) -> Vec<Got> {
        self.received().into_iter().filter(|got| !got.acknowledged).collect()
    }

    /// The worker goes away, as a crashed process does as far as RabbitMQ can tell: its connection closes. Every
    /// message it held unacknowledged goes back to its queue, for another worker. Returns what it had received.
    pub async fn leave(self) -> anyhow::Result<Vec<Got>> {
        self.connection.close(200, "worker leaves".into()).await?;
        // The consumer ends with the connection; the task is stopped in case it is still awaiting.
        self.task.abort();
        Ok(self.received.lock().expect("received poisoned").clone())
    }
}
