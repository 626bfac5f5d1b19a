//! Lesson 01 — the first event: configure a producer, turn a user event into a keyed JSON record, send it,
//! and learn from the delivery report where Kafka stored it.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

use std::time::Duration;

use kit::UserEvent;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

/// Where Kafka stored a record: its partition, and its offset (position) within that partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// A record ready for the wire: the key decides the partition, the payload is the event as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub key: String,
    pub payload: String,
}

// EXERCISE: The configuration of this lesson's producer. It must find the cluster through exactly the brokers in
// `bootstrap_servers`, count a send as done only once every in-sync replica of the partition has the record (the
// strongest acknowledgement Kafka gives), and give up on a send after 30 s instead of librdkafka's five minutes,
// so a missing broker turns into an error you can read. The settings go by librdkafka's names (an alias librdkafka
// accepts is fine); the tests ask librdkafka to read the broker list, the acknowledgement level and the timeout
// back from what you return, and count a setting left to librdkafka's default as missing.
// ANCHOR: producer_config
/// The configuration of a producer that talks to the brokers at `bootstrap_servers` and waits for every
/// in-sync replica to acknowledge each record.
pub fn producer_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers).set("acks", "all").set("message.timeout.ms", "30000");
    config
}
// ANCHOR_END: producer_config

// EXERCISE: Turn `event` into what goes on the wire. The key must send every event of one user to the same
// partition (so they stay in order); the payload must be the whole event as JSON, from which any consumer gets
// back an equal `UserEvent`. The tests decode your payload and compare every field, check the key, and snapshot a
// purchase.
// ANCHOR: encode
/// The record for `event`: keyed by user, JSON payload.
pub fn encode(event: &UserEvent) -> anyhow::Result<EncodedEvent> {
    Ok(EncodedEvent { key: event.user_id.clone(), payload: serde_json::to_string(event)? })
}
// ANCHOR_END: encode

// EXERCISE: Send `event` to `topic` (as `encode` makes it) and return where the broker stored it. The partition
// and offset must come from the broker's answer, never be worked out by you: the tests read the topic back on
// their own and look for each event exactly where you said it is. A delivery that fails is an error naming the
// event, not a panic.
// ANCHOR: send_event
/// Sends one event and waits for the broker's acknowledgement.
pub async fn send_event(producer: &FutureProducer, topic: &str, event: &UserEvent) -> anyhow::Result<Delivery> {
    let encoded = encode(event)?;
    let record = FutureRecord::to(topic).key(&encoded.key).payload(&encoded.payload);
    let delivery = producer
        .send(record, QUEUE_TIMEOUT)
        .await
        .map_err(|(error, _message)| anyhow::anyhow!("could not deliver event {}: {error}", event.event_id))?;
    Ok(Delivery { partition: delivery.partition, offset: delivery.offset })
}
// ANCHOR_END: send_event

/// How long `send` may wait for room in the producer's local queue when it is full.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
