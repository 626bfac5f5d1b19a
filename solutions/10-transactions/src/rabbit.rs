//! Lesson 10's RabbitMQ counterpart: what RabbitMQ offers where Kafka has transactions.
//!
//! - **Publisher confirms** (`confirm.select`): the broker acknowledges each message once it has taken
//!   responsibility for it (a `basic.ack` back to the publisher), or refuses it (`basic.nack`). Asynchronous and
//!   fast, and the way not to lose publishes — but one message at a time: nothing ties two messages together.
//! - **AMQP transactions** (`tx.select`, `tx.commit`, `tx.rollback`): the publishes and acknowledgements made on
//!   one channel since its last commit take effect together at the next `tx.commit`, or not at all after a
//!   `tx.rollback` (or when the channel closes first). A rolled-back publish is never enqueued; a rolled-back ack
//!   leaves its message unacknowledged, held by the channel, and it comes back (redelivered) when the channel
//!   closes or asks for it (`basic.recover`). That makes consume-transform-publish atomic on RabbitMQ too —
//!   within limits Kafka's transactions do not have: one channel only, a synchronous round trip per commit (and
//!   a disk sync for persistent messages), no atomicity promised if the broker fails during a commit (RabbitMQ's
//!   documentation: the effects may then show in only some of the queues, or in part), and no identity a newer
//!   instance could fence, as Kafka fences a producer whose transactional id a newer one took: the channel is the
//!   only boundary (when it closes, its open transaction and its unacknowledged input go with it).
//!
//! The functions graded here are [`forward_in_tx`] and [`publish_confirmed`]; `main.rs --rabbitmq` tells the
//! story with them. Everything is async: lapin drives the connection on the caller's tokio runtime.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use serde::{Deserialize, Serialize};

use crate::ReserveStock;

/// A message to publish: the exchange, the routing key and the bytes. The default exchange (`""`) routes a
/// message to the queue named by its routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub payload: Vec<u8>,
}

impl Outgoing {
    /// A message for the queue `queue`, through the default exchange.
    pub fn to_queue(queue: &str, payload: impl Into<Vec<u8>>) -> Outgoing {
        Outgoing { exchange: String::new(), routing_key: queue.to_string(), payload: payload.into() }
    }
}

/// The properties of every message this module publishes: persistent (delivery mode 2, written to disk in a
/// durable queue: a committed transaction or a confirm of a transient message guarantees nothing across a broker
/// restart) and JSON.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(PERSISTENT).with_content_type("application/json".into())
}

/// AMQP's delivery mode of a persistent message (1 is transient).
pub const PERSISTENT: u8 = 2;

/// What the inventory service publishes on RabbitMQ for each line of a request: one reservation per product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineReserved {
    /// Always `"LINE_RESERVED"`.
    pub event: String,
    pub order_id: String,
    pub product_id: String,
    pub quantity: u32,
}

/// The inventory service's transform on RabbitMQ: one [`LineReserved`] per line of `request`, each addressed to
/// `queue` as JSON, made one at a time as the caller takes them (a real service asks the stock service for each
/// line, and any of those calls can fail: an `Err` in the sequence).
pub fn reserve_lines(request: &ReserveStock, queue: &str) -> impl Iterator<Item = anyhow::Result<Outgoing>> + use<> {
    let order_id = request.order_id.clone();
    let queue = queue.to_string();
    request.items.clone().into_iter().map(move |item| {
        let line = LineReserved {
            event: "LINE_RESERVED".into(),
            order_id: order_id.clone(),
            product_id: item.product_id,
            quantity: item.quantity,
        };
        Ok(Outgoing::to_queue(&queue, serde_json::to_vec(&line)?))
    })
}

// EXERCISE: Consume-transform-publish, atomically, on RabbitMQ. `input` was delivered on `channel` (manual
// acknowledgement), which may or may not be in transaction mode yet. `outputs` are the transform's results for it,
// made one at a time as you take them; one may be an error (the transform failed part-way). Publish every output
// (to its exchange and routing key, with `persistent_json()` as its properties) and acknowledge `input`, so that
// both take effect together or not at all; return how many outputs were published. On any failure — an output
// that is an error, a publish the broker refuses (it then closes the channel), a commit that fails — return an
// error carrying the cause, and leave nothing of this attempt behind: no consumer of the outputs' queue ever sees
// one of them, not even after later calls on `channel`, and `input` is neither acknowledged nor rejected: it stays
// held by `channel` and comes back to its queue, redelivered, when the channel closes or recovers its
// unacknowledged messages. The tests read the outputs and their properties, check that the input is gone after a
// success, fail the transform part-way (output queue empty, input held, then redelivered and forwarded once), fail
// one input and forward the next on the same channel, and publish an output to an exchange that does not exist.
// ANCHOR: forward_in_tx
/// Publishes `outputs` and acknowledges `input` in one AMQP transaction on `channel`: both or neither.
pub async fn forward_in_tx(
    channel: &Channel,
    input: &Delivery,
    outputs: impl IntoIterator<Item = anyhow::Result<Outgoing>>,
) -> anyhow::Result<usize> {
    // Once per channel would do (a channel stays in transaction mode, each commit opening the next transaction);
    // selecting again is a no-op that costs one round trip, and this function cannot know what its caller did.
    channel.tx_select().await?;
    let attempt: anyhow::Result<usize> = async {
        let mut published = 0;
        for output in outputs {
            let output = output?;
            channel
                .basic_publish(
                    output.exchange.as_str().into(),
                    output.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &output.payload,
                    persistent_json(),
                )
                .await?;
            published += 1;
        }
        // On the channel itself, not through `input.ack()`: lapin's acker is single-use, so after a rollback a
        // second attempt with the same delivery would skip its ack without a word.
        channel.basic_ack(input.delivery_tag, BasicAckOptions::default()).await?;
        // The broker enqueues the publishes and settles the ack here, together; until then nobody sees anything.
        channel.tx_commit().await?;
        Ok(published)
    }
    .await;
    let Err(error) = attempt else {
        return attempt;
    };
    // Without a rollback, this attempt's publishes (and its ack) stay pending in the channel's transaction, and the
    // next commit on the channel — the next input's — would carry them. A channel the broker closed (a refused
    // publish) has no transaction left to roll back: the broker discarded it with the channel.
    if let Err(rollback) = channel.tx_rollback().await
        && channel.status().connected()
    {
        return Err(error.context(format!("and the rollback failed ({rollback}): close the channel")));
    }
    Err(error)
}
// ANCHOR_END: forward_in_tx

/// Why [`publish_confirmed`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or the connection failed: which messages the broker took is unknown.
    #[error("publishing failed: {0}")]
    Channel(#[from] lapin::Error),
    /// Every message was answered, and these were not taken: `refused` (a `basic.nack`: the broker could not
    /// store them) and `returned` (unroutable: no queue was bound for them), by their index in the batch.
    #[error("the broker did not take every message: refused {refused:?}, returned unroutable {returned:?}")]
    NotConfirmed { refused: Vec<usize>, returned: Vec<usize> },
}

// EXERCISE: Publish `messages` on `channel` (never in transaction mode; it may already be in confirm mode), each
// with `persistent_json()` as its properties, and return only once the broker has answered for every one of them:
// `Ok` if it took them all into a queue, else `PublishError::NotConfirmed` listing, by index in `messages`, the
// ones it refused (`refused`) and the ones no queue took because nothing routes them (`returned`) — all of them,
// not just the first. The tests publish a batch and read it back from its queue, fill a queue that refuses
// publishes beyond its length, and publish messages routed nowhere among routable ones.
// ANCHOR: publish_confirmed
/// Publishes `messages` and waits for the broker's confirm of each: every one taken into a queue, or an error
/// listing those that were not.
pub async fn publish_confirmed(channel: &Channel, messages: &[Outgoing]) -> Result<(), PublishError> {
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    // Publish all, then wait: the confirms stream back while later messages are still being sent. Awaiting each
    // confirm before the next publish would cost a round trip per message.
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                // Mandatory: a message no queue takes comes back (basic.return) instead of vanishing, and its
                // confirm says so. The broker confirms it all the same: it was handled, by being returned.
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &message.payload,
                persistent_json(),
            )
            .await?;
        confirms.push(confirm);
    }
    let (mut refused, mut returned) = (Vec::new(), Vec::new());
    for (index, confirm) in confirms.into_iter().enumerate() {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_returned)) => returned.push(index),
            Confirmation::Nack(_) => refused.push(index),
            // Only if confirm mode is off, which `confirm_select` above rules out.
            Confirmation::NotRequested => refused.push(index),
        }
    }
    if refused.is_empty() && returned.is_empty() {
        Ok(())
    } else {
        Err(PublishError::NotConfirmed { refused, returned })
    }
}
// ANCHOR_END: publish_confirmed
