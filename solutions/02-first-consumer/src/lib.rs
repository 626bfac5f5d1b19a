//! Lesson 02 — the first consumer: join a consumer group, start from the beginning of the log, turn records
//! back into events, report the ones that are not events, and stop cleanly.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

use std::future::Future;

use kit::{Broker, UserEvent};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use serde::Serialize;

/// Why a record could not be read as a [`UserEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEvent {
    #[error("the record has no payload")]
    Empty,
    #[error("the payload is not a user event: {0}")]
    Invalid(String),
}

/// An event and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumedEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: UserEvent,
}

/// A record that was skipped, with the reason: reported, never a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRecord {
    pub partition: i32,
    pub offset: i64,
    pub error: String,
}

/// Why consuming stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_events` events were read.
    Count,
    /// The shutdown signal (Ctrl-C in the story) fired.
    Shutdown,
}

/// What a consuming session read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumed {
    pub events: Vec<ConsumedEvent>,
    pub skipped: Vec<SkippedRecord>,
    pub stopped_by: StopReason,
}

// EXERCISE: The configuration of a member of consumer group `group_id`, built on `broker.consumer_base()` (the
// bootstrap servers and tuning for this broker). A group that has committed nothing yet must start from the oldest
// record still stored, not from the end of the log. The tests read the group and the reset policy back, and later
// write events *before* your consumer joins: only the right policy sees them.
// ANCHOR: consumer_config
/// A member of consumer group `group_id` that reads a new group's partitions from the beginning.
pub fn consumer_config(broker: &Broker, group_id: &str) -> ClientConfig {
    let mut config = broker.consumer_base();
    config.set("group.id", group_id).set("auto.offset.reset", "earliest");
    config
}
// ANCHOR_END: consumer_config

// EXERCISE: Turn a record's payload back into a `UserEvent`, or say why it is not one — never panic. A record with
// no payload and bytes that are not a `UserEvent` (zero bytes included: they are a payload, just not an event)
// are different `MalformedEvent`s; for the second keep the JSON parser's own message (it names the field and
// position, which is what someone fixing the producer needs). The tests feed good, missing, zero-byte and broken
// payloads.
// ANCHOR: parse_event
/// The event in `payload`, or why there is none.
pub fn parse_event(payload: Option<&[u8]>) -> Result<UserEvent, MalformedEvent> {
    let bytes = payload.ok_or(MalformedEvent::Empty)?;
    serde_json::from_slice(bytes).map_err(|e| MalformedEvent::Invalid(e.to_string()))
}
// ANCHOR_END: parse_event

// EXERCISE: Read from `consumer` (already subscribed) until `max_events` events have been read or `shutdown`
// completes, whichever comes first, and say which it was. A record `parse_event` refuses becomes a `SkippedRecord`
// and a warning in the log that gives its offset and the reason, and the loop goes on. A receive error is logged as
// a warning too, with the error, and never ends the loop: the client retries by itself, and the next record may be
// on its way. The tests expect each event with its partition and offset, in order within each partition, the
// broken record among the skipped ones and named in a warning, a loop that reads on after a receive error (the end
// of a partition, which the tests turn into one), and a loop that stops promptly when `shutdown` fires while it is
// waiting for a record on a topic where nothing ever arrives.
// ANCHOR: consume
/// Consumes events until `max_events` are read or `shutdown` fires, skipping (and reporting) malformed records.
pub async fn consume(consumer: &StreamConsumer, max_events: usize, shutdown: impl Future<Output = ()>) -> Consumed {
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    tokio::pin!(shutdown);
    let stopped_by = loop {
        if events.len() >= max_events {
            break StopReason::Count;
        }
        tokio::select! {
            // `biased`: once shutdown is asked for, stop before taking another record.
            biased;
            _ = &mut shutdown => break StopReason::Shutdown,
            received = consumer.recv() => match received {
                Ok(message) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    match parse_event(message.payload()) {
                        Ok(event) => events.push(ConsumedEvent { partition, offset, event }),
                        Err(error) => {
                            tracing::warn!(partition, offset, %error, "skipping a malformed record");
                            skipped.push(SkippedRecord { partition, offset, error: error.to_string() });
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "receive failed; the client retries"),
            },
        }
    };
    Consumed { events, skipped, stopped_by }
}
// ANCHOR_END: consume
