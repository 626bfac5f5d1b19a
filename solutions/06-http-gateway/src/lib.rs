//! Lesson 06 — an HTTP gateway in front of Kafka: clients that speak HTTP, not Kafka, post events to it and
//! read back what it has consumed.
//!
//! The lesson's three ideas are here, as functions the tests call:
//! - [`validate_event`]: a JSON body becomes a [`UserEvent`] or the list of everything wrong with it, field by
//!   field (HTTP 422), so nothing malformed ever reaches the topic;
//! - [`publish`] and [`classify`]: send the event and wait for the broker's acknowledgement, and tell "Kafka
//!   cannot be reached, come back later" (HTTP 503) from "Kafka refused this record" (HTTP 500);
//! - [`keep_newest`] and [`newest_first`]: the bounded in-memory buffer behind `GET /messages`.
//!
//! [`gateway`] wires them into an axum server with a background reader, start-up retries and a graceful
//! shutdown; `main.rs` tells the story with it.

pub mod gateway;

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::{EventType, UserEvent};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// One problem with one field of a request, as the client reads it in a 422 response.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FieldError {
    /// The field's name in the JSON body, or `body` when the body as a whole is unusable.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The fields an event body may carry: [`UserEvent`]'s, nothing else.
pub const EVENT_FIELDS: &[&str] = &["event_id", "user_id", "event_type", "amount_cents", "timestamp"];

/// The longest `user_id` accepted. It becomes the record key: keys are stored with every record and hashed on
/// every send, so an unbounded one is a cost every consumer pays.
pub const MAX_USER_ID_CHARS: usize = 128;

/// The messages the gateway answers with, one per rule, so a rule reads the same wherever it is broken (and
/// clients may match on them).
pub mod rule {
    use super::{EVENT_FIELDS, MAX_USER_ID_CHARS};

    pub const REQUIRED: &str = "is required";
    pub const NOT_A_STRING: &str = "must be a string";
    pub const BLANK: &str = "must not be blank";
    pub const AMOUNT_NOT_POSITIVE: &str = "must be a whole number of cents greater than 0";
    pub const AMOUNT_REQUIRED_FOR_PURCHASE: &str = "is required for a purchase";
    pub const AMOUNT_NOT_ALLOWED_FOR_CLICK: &str = "must be absent for a click: clicks carry no amount";
    pub const NOT_A_UUID: &str = "must be a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e";
    pub const NOT_A_TIMESTAMP: &str = "must be an RFC 3339 date-time such as 2026-01-01T09:00:00Z";

    pub fn too_long() -> String {
        format!("must be at most {MAX_USER_ID_CHARS} characters")
    }

    pub fn unknown_field() -> String {
        format!("is not a field of an event (expected one of: {})", EVENT_FIELDS.join(", "))
    }

    pub fn unknown_event_type(got: &str) -> String {
        format!("must be \"click\" or \"purchase\", not {got:?}")
    }
}

/// Reads a request body as a JSON object, or says in one [`FieldError`] (field `body`) why it is not one.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                Value::Null | Value::Object(_) => "null",
            };
            Err(FieldError::new("body", format!("must be a JSON object, not {kind}")))
        }
        Err(e) => Err(FieldError::new("body", format!("is not valid JSON: {e}"))),
    }
}

// EXERCISE: Turn the fields of a request body into a `UserEvent`, or into EVERY problem found, each a `FieldError`
// naming its field, so one round trip tells the client all there is to fix. The rules, with the messages of `rule`
// (the tests compare them word for word):
// - a field that is not in `EVENT_FIELDS` is an error (`rule::unknown_field()`);
// - `user_id`: required (absent or `null` is `rule::REQUIRED`), a string, not blank (`rule::BLANK` for "" or
//   whitespace only), at most `MAX_USER_ID_CHARS` characters (`rule::too_long()`);
// - `event_type`: required, the string "click" or "purchase" (else `rule::unknown_event_type(got)`);
// - `amount_cents`: a purchase needs one (`rule::AMOUNT_REQUIRED_FOR_PURCHASE`) and it must be a whole number
//   above 0 (19.99, -5 and "1999" are not: `rule::AMOUNT_NOT_POSITIVE`); a click must not carry one (`null` counts
//   as absent; else `rule::AMOUNT_NOT_ALLOWED_FOR_CLICK`);
// - `event_id` (a UUID string) and `timestamp` (an RFC 3339 date-time string) are optional: when absent, a new
//   random (version 4) UUID and `received_at`.
// A field of the wrong JSON type gets its rule's message too (`rule::NOT_A_STRING`, `rule::NOT_A_UUID`, …).
// ANCHOR: validate_event
/// The event `fields` describe, or every rule they break, each naming its field. `received_at` is the event
/// time when the client sent none.
pub fn validate_event(fields: &Map<String, Value>, received_at: DateTime<Utc>) -> Result<UserEvent, Vec<FieldError>> {
    /// Records a broken rule of `field`; passes a valid value on.
    fn keep<T>(errors: &mut Vec<FieldError>, field: &str, checked: Result<T, String>) -> Option<T> {
        checked.map_err(|message| errors.push(FieldError::new(field, message))).ok()
    }
    let mut errors = Vec::new();
    for name in fields.keys().filter(|name| !EVENT_FIELDS.contains(&name.as_str())) {
        errors.push(FieldError::new(name, rule::unknown_field()));
    }
    // `null` counts as absent throughout: many clients serialise a missing optional field that way.
    let present = |name: &str| fields.get(name).filter(|value| !value.is_null());

    let user_id = match present("user_id") {
        None => Err(rule::REQUIRED.to_string()),
        Some(Value::String(id)) if id.trim().is_empty() => Err(rule::BLANK.to_string()),
        Some(Value::String(id)) if id.chars().count() > MAX_USER_ID_CHARS => Err(rule::too_long()),
        Some(Value::String(id)) => Ok(id.clone()),
        Some(_) => Err(rule::NOT_A_STRING.to_string()),
    };
    let user_id = keep(&mut errors, "user_id", user_id);
    let event_type = match present("event_type") {
        None => Err(rule::REQUIRED.to_string()),
        Some(Value::String(kind)) => match kind.as_str() {
            "click" => Ok(EventType::Click),
            "purchase" => Ok(EventType::Purchase),
            other => Err(rule::unknown_event_type(other)),
        },
        Some(_) => Err(rule::NOT_A_STRING.to_string()),
    };
    let event_type = keep(&mut errors, "event_type", event_type);
    // The amount's rules depend on the type; when the type is itself invalid, only the amount's shape is checked.
    let amount_cents = match (event_type, present("amount_cents")) {
        (Some(EventType::Click), Some(_)) => Err(rule::AMOUNT_NOT_ALLOWED_FOR_CLICK.to_string()),
        (Some(EventType::Purchase), None) => Err(rule::AMOUNT_REQUIRED_FOR_PURCHASE.to_string()),
        (_, Some(amount)) => {
            amount.as_u64().filter(|&cents| cents > 0).map(Some).ok_or(rule::AMOUNT_NOT_POSITIVE.to_string())
        }
        (_, None) => Ok(None),
    };
    let amount_cents = keep(&mut errors, "amount_cents", amount_cents);
    let event_id = match present("event_id") {
        None => Ok(Uuid::new_v4()),
        Some(value) => value.as_str().and_then(|id| Uuid::parse_str(id).ok()).ok_or(rule::NOT_A_UUID.to_string()),
    };
    let event_id = keep(&mut errors, "event_id", event_id);
    let timestamp = match present("timestamp") {
        None => Ok(received_at),
        Some(value) => value
            .as_str()
            .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
            .map(|time| time.with_timezone(&Utc))
            .ok_or(rule::NOT_A_TIMESTAMP.to_string()),
    };
    let timestamp = keep(&mut errors, "timestamp", timestamp);

    match (user_id, event_type, amount_cents, event_id, timestamp) {
        (Some(user_id), Some(event_type), Some(amount_cents), Some(event_id), Some(timestamp)) if errors.is_empty() => {
            Ok(UserEvent { event_id, user_id, event_type, amount_cents, timestamp })
        }
        _ => Err(errors),
    }
}
// ANCHOR_END: validate_event

/// Where Kafka stored a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Why an event could not be published, in the two kinds an HTTP client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No broker took the record in time, or the cluster is between leaders: nothing is wrong with the event,
    /// and the same request may succeed later. HTTP 503 with `Retry-After`.
    #[error("Kafka is unavailable: {reason}")]
    Unavailable { reason: String },
    /// The broker refused this record for a reason retrying will not fix (too large, no such topic, not
    /// authorised). HTTP 500: the gateway or its set-up is at fault, not the client.
    #[error("Kafka refused the event: {reason}")]
    Rejected { reason: String },
}

// ANCHOR: transient_codes
/// Errors that say "not now" rather than "never": librdkafka already retried within `message.timeout.ms`, so
/// the client is told to come back later.
pub const TRANSIENT_CODES: &[RDKafkaErrorCode] = &[
    // No broker acknowledged the record within message.timeout.ms: the usual face of an unreachable cluster.
    RDKafkaErrorCode::MessageTimedOut,
    // The producer's local queue is full: the broker is slower than the incoming traffic.
    RDKafkaErrorCode::QueueFull,
    // Every broker connection is down, or one just failed.
    RDKafkaErrorCode::AllBrokersDown,
    RDKafkaErrorCode::BrokerTransportFailure,
    RDKafkaErrorCode::BrokerNotAvailable,
    RDKafkaErrorCode::NetworkException,
    RDKafkaErrorCode::RequestTimedOut,
    // A partition is between leaders, or has too few in-sync replicas for acks=all right now.
    RDKafkaErrorCode::LeaderNotAvailable,
    RDKafkaErrorCode::NotLeaderForPartition,
    RDKafkaErrorCode::NotEnoughReplicas,
    RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
];
// ANCHOR_END: transient_codes

// EXERCISE: Sort a Kafka error into the kind an HTTP client can act on: an error whose librdkafka code is in
// `TRANSIENT_CODES` means "come back later" (`PublishError::Unavailable`, a 503); any other, including an error
// without a librdkafka code, means "this will not work" (`PublishError::Rejected`, a 500). Both carry the error's
// own text, word for word, as their reason. The tests sort ten error codes of both kinds.
// ANCHOR: classify
/// Whether `error` means "come back later" (503) or "this will not work" (500).
pub fn classify(error: &KafkaError) -> PublishError {
    let reason = error.to_string();
    match error.rdkafka_error_code() {
        Some(code) if TRANSIENT_CODES.contains(&code) => PublishError::Unavailable { reason },
        _ => PublishError::Rejected { reason },
    }
}
// ANCHOR_END: classify

/// How long `send` may wait for room in the producer's local queue: not at all. A full queue means the broker
/// is not keeping up, and the HTTP client should hear so (503) instead of holding a connection open.
pub const QUEUE_TIMEOUT: Duration = Duration::ZERO;

// EXERCISE: Publish `event` to `topic` and wait for the broker's acknowledgement. One user's events must stay in
// order, and the payload is `event.to_json()`. A full local queue is an answer (a 503), not a reason to hold the
// HTTP request: use `QUEUE_TIMEOUT`. Return where the record was stored, from the delivery report, or the failure
// sorted by `classify` (an outage is `Unavailable`, anything else `Rejected`). The tests find each accepted event
// where its 202 said, and expect a 503 — not a hang — when nothing listens at the broker's address, a 503 at once
// when the local queue is full, and a 500 (`Rejected`) for a record too large for the producer to take.
// ANCHOR: publish
/// Sends one event and returns where it landed, or why it could not be published.
pub async fn publish(producer: &FutureProducer, topic: &str, event: &UserEvent) -> Result<Delivery, PublishError> {
    let payload = event.to_json();
    let record = FutureRecord::to(topic).key(&event.user_id).payload(&payload);
    match producer.send(record, QUEUE_TIMEOUT).await {
        Ok(delivery) => Ok(Delivery { partition: delivery.partition, offset: delivery.offset }),
        Err((error, _message)) => Err(classify(&error)),
    }
}
// ANCHOR_END: publish

// EXERCISE: Remember `item` in `buffer` (oldest at the front, newest at the back) while holding at most `capacity`
// items: the oldest are forgotten first, and a capacity of 0 keeps nothing. The tests push past the capacity,
// check the length after every push, then which items are left.
// ANCHOR: keep_newest
/// Remembers `item`, forgetting the oldest items beyond `capacity`: memory stays bounded however much is read.
pub fn keep_newest<T>(buffer: &mut VecDeque<T>, capacity: usize, item: T) {
    if capacity == 0 {
        return;
    }
    while buffer.len() >= capacity {
        buffer.pop_front();
    }
    buffer.push_back(item);
}
// ANCHOR_END: keep_newest

// EXERCISE: Copies of the newest `limit` items of `buffer` (whose newest item is at the back), newest first; fewer
// when the buffer holds fewer, none for a `limit` of 0.
// ANCHOR: newest_first
/// Up to `limit` of the newest items, newest first: what `GET /messages` shows.
pub fn newest_first<T: Clone>(buffer: &VecDeque<T>, limit: usize) -> Vec<T> {
    buffer.iter().rev().take(limit).cloned().collect()
}
// ANCHOR_END: newest_first
