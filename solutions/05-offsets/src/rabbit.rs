//! Lesson 05 on RabbitMQ (`cargo xtask lesson 05 --rabbitmq`, `tests/rabbitmq.rs`): what takes the place of
//! Kafka's committed offsets.
//!
//! Kafka keeps one number per group and partition: committing offset N says "everything before N is done", and
//! the records stay in the log to be read again. A RabbitMQ classic queue keeps no position at all. It hands each
//! message to a consumer and waits for that consumer to **settle** it, message by message:
//! - `basic.ack`: done, the message is deleted — there is nothing left to replay;
//! - `basic.nack` (or `basic.reject`) with `requeue`: back in the queue, delivered again with `redelivered` set;
//! - `basic.nack` / `basic.reject` without `requeue`: dropped (or dead-lettered, when the queue has somewhere to
//!   send it — not in this lesson);
//! - nothing yet: the message is *unacknowledged*, outstanding on its channel; if the channel closes, it goes back.
//!
//! The prefetch (`basic.qos`) bounds how many unacknowledged deliveries a consumer may hold. `ack` and `nack` take
//! a `multiple` flag that settles every outstanding delivery up to the tag given: Kafka's cumulative commit
//! again, and a trap when deliveries are handled out of order.
//!
//! A RabbitMQ **stream** is RabbitMQ's log: messages get offsets, a reader picks where it starts (the first
//! message kept, the next one published, an offset, a timestamp), and reading removes nothing.
//!
//! `settle` and `read_stream` are the exercises; the rest is given.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};

/// What the handler made of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// Handled: the message must never come back.
    Done,
    /// Could not be handled now (a dependency is down): the message must come back later.
    RetryLater,
    /// Can never be handled (it does not parse): the message must go away and not come back.
    Poison,
}

// EXERCISE: Settle `delivery` — that message and no other — as the handler's `outcome` says. `Done`: the message
// leaves the queue for good. `RetryLater`: it goes back in the queue and is delivered again, marked redelivered.
// `Poison`: it leaves the queue and is never delivered again (this lesson's queues have no dead-letter exchange).
// Deliveries are handled in any order: settling one must never settle another, earlier or later, that is still
// being handled — those stay outstanding until they are settled themselves (and return to the queue if their
// channel closes first). Settling a delivery that is already settled is an error, not a second settlement. The
// tests settle three messages with the three outcomes and read what comes back; settle the last of three
// outstanding deliveries first, with each outcome, then close the channel and expect the two earlier ones back in
// the queue; and settle one delivery twice.
// ANCHOR: settle
/// Settles exactly `delivery`, as `outcome` says.
pub async fn settle(delivery: &Delivery, outcome: Outcome) -> anyhow::Result<()> {
    // `multiple: false` everywhere: `true` would settle every outstanding delivery up to this tag as well.
    let settled = match outcome {
        Outcome::Done => delivery.ack(BasicAckOptions { multiple: false }).await?,
        Outcome::RetryLater => delivery.nack(BasicNackOptions { multiple: false, requeue: true }).await?,
        Outcome::Poison => delivery.reject(BasicRejectOptions { requeue: false }).await?,
    };
    // lapin answers `false` when this delivery was settled already (or its channel is gone) and sends nothing:
    // RabbitMQ would close the channel on a tag it no longer knows.
    anyhow::ensure!(settled, "delivery {} is already settled (or its channel is closed)", delivery.delivery_tag);
    Ok(())
}
// ANCHOR_END: settle

/// Where a stream reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The oldest message the stream still keeps (Kafka's `earliest`).
    First,
    /// Only messages published after the reader starts (Kafka's `latest`).
    Next,
    /// The message at this offset, and everything after it (an `assign` at an offset in Kafka).
    Offset(u64),
}

/// How many deliveries a stream reader may hold unacknowledged. On a stream an ack deletes nothing: it only tells
/// RabbitMQ the reader is ready for more (flow control).
pub const STREAM_PREFETCH: u16 = 100;

/// The header in which RabbitMQ gives each delivery from a stream its offset.
pub const STREAM_OFFSET_HEADER: &str = "x-stream-offset";

// EXERCISE: Start a reader of `stream` (a RabbitMQ stream: a log, as a Kafka partition is) at `from`, and return its
// consumer. `First` starts at the oldest message the stream keeps; `Offset(n)` at offset n exactly; `Next` sees only
// what is published after the reader has started. Reading removes nothing: any number of readers each get every
// message, and each delivery carries its offset (`stream_offset` reads it). RabbitMQ must accept the reader: it
// refuses a stream consumer whose deliveries are not acknowledged by the application, or that may hold an unbounded
// number of them unacknowledged (the tests acknowledge each delivery they take). The tests publish to a fresh stream,
// then read from `First` (every message, offsets from 0), from `Offset(4)` (offsets 4 onwards), with `Next` (only
// what they publish afterwards), and with two readers at once (each gets everything, and a third still finds it all).
// ANCHOR: read_stream
/// A consumer of `stream` starting at `from`.
pub async fn read_stream(channel: &Channel, stream: &str, from: StreamStart) -> anyhow::Result<Consumer> {
    // A stream consumer must have a prefetch: RabbitMQ refuses one without (PRECONDITION_FAILED).
    channel.basic_qos(STREAM_PREFETCH, BasicQosOptions::default()).await?;
    let start = match from {
        StreamStart::First => AMQPValue::LongString("first".into()),
        StreamStart::Next => AMQPValue::LongString("next".into()),
        StreamStart::Offset(offset) => AMQPValue::LongLongInt(i64::try_from(offset)?),
    };
    let mut arguments = FieldTable::default();
    arguments.insert(STREAM_OFFSET_HEADER.into(), start);
    // `no_ack` stays false (the default): RabbitMQ refuses automatic acknowledgement on a stream.
    let consumer = channel.basic_consume(stream.into(), "".into(), BasicConsumeOptions::default(), arguments).await?;
    Ok(consumer)
}
// ANCHOR_END: read_stream

/// The offset of `delivery` in the stream it was read from.
pub fn stream_offset(delivery: &Delivery) -> anyhow::Result<u64> {
    let headers = delivery.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get(STREAM_OFFSET_HEADER)) {
        Some(AMQPValue::LongLongInt(offset)) => Ok(u64::try_from(*offset)?),
        Some(other) => anyhow::bail!("{STREAM_OFFSET_HEADER} is not an offset: {other:?}"),
        None => {
            anyhow::bail!("delivery {} has no {STREAM_OFFSET_HEADER} header: not from a stream", delivery.delivery_tag)
        }
    }
}

/// Declares the stream `name`: a durable queue of type `stream`, which RabbitMQ keeps as an append-only log.
pub async fn declare_stream(channel: &Channel, name: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), durable, arguments).await?;
    Ok(())
}

/// A channel in confirm mode: every publish on it is confirmed by RabbitMQ once the message is stored.
pub async fn confirming_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publishes `payloads` to `queue` (a classic queue or a stream) through the default exchange, persistent, one by
/// one, each confirmed by RabbitMQ before the next. `channel` must be in confirm mode (`confirming_channel`).
pub async fn publish(channel: &Channel, queue: &str, payloads: &[String]) -> anyhow::Result<()> {
    for payload in payloads {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let confirm = channel.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            persistent,
        );
        match confirm.await?.await? {
            Confirmation::Ack(_) => {}
            Confirmation::Nack(_) => anyhow::bail!("RabbitMQ refused {payload:?} on {queue}"),
            Confirmation::NotRequested => anyhow::bail!("publish on a channel in confirm mode (`confirming_channel`)"),
        }
    }
    Ok(())
}

/// How long the lesson waits for one delivery before it says nothing came.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The next delivery of `consumer`, or an error that names `what` was awaited.
pub async fn next_delivery(consumer: &mut Consumer, what: &str) -> anyhow::Result<Delivery> {
    use futures::StreamExt;
    match tokio::time::timeout(DELIVERY_TIMEOUT, consumer.next()).await {
        Ok(Some(delivery)) => Ok(delivery?),
        Ok(None) => anyhow::bail!("the consumer was cancelled while waiting for {what}"),
        Err(_) => anyhow::bail!("no delivery within {DELIVERY_TIMEOUT:?} while waiting for {what}"),
    }
}

/// The payload of `delivery` as text.
pub fn payload(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.data).into_owned()
}
