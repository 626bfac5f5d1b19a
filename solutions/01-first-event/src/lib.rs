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

// EXERCISE: Build the producer's configuration. Set `bootstrap.servers` to the address you are given (the
// brokers to ask for the cluster's metadata) and `acks` to `all` (a send counts only once every in-sync replica
// has the record). Also set `message.timeout.ms` to 30000, so a missing broker fails a send in 30 s, not 5 min.
// ANCHOR: producer_config
/// The configuration of a producer that talks to the brokers at `bootstrap_servers` and waits for every
/// in-sync replica to acknowledge each record.
pub fn producer_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers).set("acks", "all").set("message.timeout.ms", "30000");
    config
}
// ANCHOR_END: producer_config

// EXERCISE: Encode `event` for Kafka: the key is the event's `user_id` (so one user's events share a
// partition and stay in order) and the payload is the event serialised to JSON with `serde_json::to_string`.
// ANCHOR: encode
/// The record for `event`: keyed by user, JSON payload.
pub fn encode(event: &UserEvent) -> anyhow::Result<EncodedEvent> {
    Ok(EncodedEvent { key: event.user_id.clone(), payload: serde_json::to_string(event)? })
}
// ANCHOR_END: encode

// EXERCISE: Send `event` to `topic` and report where it landed. Encode it with `encode`, build a
// `FutureRecord::to(topic)` with its key and payload, and await `producer.send(record, QUEUE_TIMEOUT)`. The
// delivery report (`Ok(delivery)`) carries `partition` and `offset`; turn an `Err((error, _message))` into an
// error with `anyhow::anyhow!`.
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
