//! Lesson 08 on RabbitMQ: retries with backoff and a dead-letter queue, routed by the broker.
//!
//! On Kafka the consumer does it all: it sleeps between attempts (holding up its partition) and writes the
//! dead letter to a topic itself. RabbitMQ routes messages for you. Three durable queues ([`Topology`]):
//! - the **work queue**, whose dead-letter exchange (`x-dead-letter-exchange`, `x-dead-letter-routing-key`)
//!   receives every message rejected without requeue (or expired there) and routes it to the dead-letter queue;
//! - the **wait queue**, which no one consumes: a copy put there with a per-message TTL (its `expiration`
//!   property) is dead-lettered when the TTL runs out — back to the work queue, with the broker's `x-death`
//!   header saying from where and why (`expired`);
//! - the **dead-letter queue**, where a message that used up its attempts rests for a human to look at.
//!
//! [`on_failure`] is the exercise: what to do with a message whose processing failed. [`Topology`],
//! [`open_channel`], [`attempts_so_far`] and the consumer loop [`work`] are given: the story (`--rabbitmq`) and
//! the tests (`tests/rabbitmq.rs`) run them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kit::UserEvent;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;

use crate::{Processor, RetryPolicy};

/// Header names this lesson writes on its copies. `x-…` headers belong to RabbitMQ (`x-death` above all).
pub mod header {
    /// How many attempts the message has had, all failed (an integer); absent on a first delivery.
    pub const ATTEMPTS: &str = "attempts";
    /// The error of the last failed attempt, for whoever reads the dead-letter queue.
    pub const LAST_ERROR: &str = "last-error";
}

/// The queues of one retrying consumer, named after a prefix: `{prefix}.work`, `{prefix}.wait`, `{prefix}.dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Where producers publish (through the default exchange) and the consumer reads.
    pub work: String,
    /// Where a copy waits out its delay; no consumer, dead-letters to `work`.
    pub wait: String,
    /// The dead-letter queue: messages given up on.
    pub dead: String,
}

impl Topology {
    pub fn named(prefix: &str) -> Topology {
        Topology { work: format!("{prefix}.work"), wait: format!("{prefix}.wait"), dead: format!("{prefix}.dlq") }
    }

    /// Declares the three queues, durable. `expires` (`x-expires`) lets unused queues delete themselves: tests
    /// and the story pass one, so a run killed half-way leaves nothing behind for long.
    ///
    /// Every queue is reached through the default exchange (`""`), which routes a message to the queue named by its
    /// routing key; so the dead-letter exchange of both the work and the wait queue is `""`, and the dead-letter
    /// routing key names the queue a dead letter goes to.
    pub async fn declare(&self, channel: &Channel, expires: Option<Duration>) -> anyhow::Result<()> {
        let arguments = |dead_letters_to: Option<&str>| {
            let mut arguments = FieldTable::default();
            if let Some(queue) = dead_letters_to {
                arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
                arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
            }
            if let Some(expires) = expires {
                arguments.insert("x-expires".into(), AMQPValue::LongLongInt(expires.as_millis() as i64));
            }
            arguments
        };
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(self.dead.as_str().into(), durable, arguments(None)).await?;
        // Rejected without requeue (or expired) in the work queue: to the dead-letter queue.
        channel.queue_declare(self.work.as_str().into(), durable, arguments(Some(&self.dead))).await?;
        // Expired in the wait queue: back to the work queue.
        channel.queue_declare(self.wait.as_str().into(), durable, arguments(Some(&self.work))).await?;
        Ok(())
    }

    /// The three queue names.
    pub fn queues(&self) -> [&str; 3] {
        [&self.work, &self.wait, &self.dead]
    }

    /// Deletes the three queues and whatever they hold.
    pub async fn delete(&self, channel: &Channel) -> anyhow::Result<()> {
        kit::rabbitmq::delete_queues(channel, &self.queues()).await
    }
}

/// A channel in confirm mode (every publish on it is confirmed by the broker, or refused) that receives at most
/// `prefetch` unacknowledged deliveries at a time.
pub async fn open_channel(connection: &Connection, prefetch: u16) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    Ok(channel)
}

/// The attempts a delivery has had so far: its [`header::ATTEMPTS`] header (any integer type), or 0 without one.
///
/// Why a header of our own rather than `x-death`'s `count`: `x-death` is RabbitMQ's record of the dead-letterings
/// *it* did. RabbitMQ 3 read an `x-death` that a client copied onto a message it published, and counted on from it;
/// from RabbitMQ 4 a client's `x-death` is not interpreted, and the count starts over with every copy. The count that
/// means "attempts" has to travel with the copies we publish, in a header of our own.
pub fn attempts_so_far(properties: &BasicProperties) -> u32 {
    let Some(value) = properties.headers().as_ref().and_then(|headers| headers.inner().get(header::ATTEMPTS)) else {
        return 0;
    };
    let attempts = match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => 0,
    };
    u32::try_from(attempts).unwrap_or(0)
}

/// What [`on_failure`] did with a message whose processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Attempt `attempt` failed; a copy waits `delay`, then comes back to the work queue.
    Retrying { attempt: u32, delay: Duration },
    /// The last attempt failed; a copy is in the dead-letter queue.
    DeadLettered { attempts: u32 },
}

// EXERCISE: Processing `delivery` (a message of `topology.work`) just failed with `error`: decide what becomes of
// it and make it happen, with RabbitMQ doing the waiting. `policy.max_attempts` attempts in all, the first
// included. Count them in the header `header::ATTEMPTS` (an integer: the attempts made so far, absent on a first
// delivery; `attempts_so_far` reads it), not in `x-death`, which belongs to the broker.
// - While attempts remain: a copy waits in `topology.wait` for `policy.delay(n)`, n being the attempt that just
//   failed, as its own per-message TTL (the `expiration` property, in milliseconds), after which RabbitMQ puts it
//   back in the work queue. Return `Outcome::Retrying`.
// - After the last attempt: a copy goes to `topology.dead`, with the header `header::LAST_ERROR` holding the error
//   (`{error:#}`). Return `Outcome::DeadLettered`.
// Every copy has the original payload byte for byte, keeps the original's properties and headers (message id,
// trace headers…) with `attempts` updated, and is persistent (delivery mode 2). Settle the original only once its
// copy is safely stored: confirmed by RabbitMQ (`channel` is in confirm mode) and routed to its queue. If it is
// not, return an error and leave the original unsettled, so it is delivered again: a duplicate at worst, never a
// loss. The tests run a poison message (tried exactly `max_attempts` times, then in the DLQ with its last error)
// and one that fails once; they read each waiting copy's `expiration` and headers; they count every message in
// and out; and they hand you a wait queue that refuses copies and one that does not exist.
// ANCHOR: on_failure
/// Sends a failed delivery to wait for its next attempt, or to the dead-letter queue, then acknowledges it.
pub async fn on_failure(
    channel: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    error: &anyhow::Error,
    policy: &RetryPolicy,
) -> anyhow::Result<Outcome> {
    let attempt = attempts_so_far(&delivery.properties) + 1;
    // The copy is a new message to RabbitMQ: it carries the original's properties and headers, with the count of
    // attempts (ours, not x-death's) and the error that made it a copy.
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(header::ATTEMPTS.into(), AMQPValue::LongLongInt(attempt.into()));
    headers.insert(header::LAST_ERROR.into(), AMQPValue::LongString(format!("{error:#}").into()));
    // Persistent: a copy that a broker restart would lose is not stored safely.
    let copy = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let (queue, copy, outcome) = if attempt < policy.max_attempts {
        let delay = policy.delay(attempt);
        // The wait is the message's own TTL: when it runs out, the wait queue dead-letters it to the work queue.
        let copy = copy.with_expiration(delay.as_millis().to_string().into());
        (&topology.wait, copy, Outcome::Retrying { attempt, delay })
    } else {
        (&topology.dead, copy, Outcome::DeadLettered { attempts: attempt })
    };
    // `mandatory`: a copy that no queue takes is returned to us, not silently dropped — and still confirmed.
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirmation =
        channel.basic_publish("".into(), queue.as_str().into(), options, &delivery.data, copy).await?.await?;
    match confirmation {
        Confirmation::Ack(None) => {}
        Confirmation::Ack(Some(returned)) => {
            anyhow::bail!(
                "the copy for {queue} reached no queue ({}): the original stays unsettled",
                returned.reply_text
            )
        }
        Confirmation::Nack(_) => anyhow::bail!("RabbitMQ refused the copy for {queue}: the original stays unsettled"),
        Confirmation::NotRequested => {
            anyhow::bail!("the channel is not in confirm mode: nothing says the copy is stored")
        }
    }
    // Only now: a crash before this line leaves both the copy and the original, so the message comes twice, never
    // zero times.
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(outcome)
}
// ANCHOR_END: on_failure

/// Publishes `event` to `queue` (through the default exchange) as JSON, persistent, with its id as the message id,
/// and waits for RabbitMQ's confirm (`channel` must be in confirm mode, see [`open_channel`]).
pub async fn publish_event(channel: &Channel, queue: &str, event: &UserEvent) -> anyhow::Result<()> {
    let properties = BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    publish_raw(channel, queue, event.to_json().as_bytes(), properties).await
}

/// Publishes `payload` to `queue` with `properties` and waits for the confirm.
pub async fn publish_raw(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    match channel.basic_publish("".into(), queue.into(), options, payload, properties).await?.await? {
        Confirmation::Ack(None) => Ok(()),
        other => anyhow::bail!("publishing to {queue} was not confirmed: {other:?}"),
    }
}

/// When [`work`] returns: once `finished` messages are done with (processed, dead-lettered or rejected), after
/// `deliveries` deliveries in all (a bound on a retry loop gone wrong), or when none has arrived for `idle`
/// (longer than the longest wait).
#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub finished: usize,
    pub deliveries: usize,
    pub idle: Duration,
}

/// One delivery and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handled {
    /// Since [`work`] started.
    pub at: Duration,
    /// The event, when the payload is one.
    pub event: Option<UserEvent>,
    /// Which attempt this delivery was (1 for the first).
    pub attempt: u32,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Processed and acknowledged.
    Processed,
    /// Processing failed with `error`; [`on_failure`] did `outcome`.
    Failed { error: String, outcome: Outcome },
    /// Not a user event: rejected without requeue, so the work queue's dead-letter exchange took it to the DLQ.
    Rejected { reason: String },
}

/// The consumer: reads `topology.work` on `channel` (in confirm mode), processes each event, acknowledges what was
/// processed and hands each failure to [`on_failure`]. A payload that is not a user event cannot pass on a later
/// attempt: it is rejected without requeue at once, and the broker dead-letters it. Only infrastructure failing
/// (a copy not stored) stops it, with the delivery unsettled. Returns what it did, delivery by delivery.
pub async fn work<P: Processor>(
    channel: &Channel,
    topology: &Topology,
    processor: &mut P,
    policy: &RetryPolicy,
    until: Until,
) -> anyhow::Result<Vec<Handled>> {
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(topology.work.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut handled = Vec::new();
    let mut finished = 0;
    while finished < until.finished && handled.len() < until.deliveries {
        let delivery = match tokio::time::timeout(until.idle, consumer.next()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) | Err(_) => break,
        };
        let attempt = attempts_so_far(&delivery.properties) + 1;
        let (event, step) = match serde_json::from_slice::<UserEvent>(&delivery.data) {
            Err(e) => {
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
                (None, Step::Rejected { reason: format!("not a user event: {e}") })
            }
            Ok(event) => match processor.process(&event).await {
                Ok(()) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    (Some(event), Step::Processed)
                }
                Err(error) => {
                    let outcome = on_failure(channel, topology, &delivery, &error, policy).await?;
                    (Some(event), Step::Failed { error: format!("{error:#}"), outcome })
                }
            },
        };
        if !matches!(step, Step::Failed { outcome: Outcome::Retrying { .. }, .. }) {
            finished += 1;
        }
        handled.push(Handled { at: started.elapsed(), event, attempt, step });
    }
    // Stop receiving; whatever was delivered and not settled goes back to the queue when the channel closes.
    channel.basic_cancel(consumer.tag(), Default::default()).await?;
    Ok(handled)
}
