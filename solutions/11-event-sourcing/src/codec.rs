//! How events and snapshots look on the wire, and how old events are read: the schema of a stored event is a
//! contract with every future reader, since the log keeps events for ever and a replay reads all of them.
//!
//! An event record is JSON, keyed by the order id:
//! `{"schema":2,"order_id":"order-7","version":3,"event":{"type":"ITEM_ADDED","sku":"LAPTOP",…}}`.
//! Schema 1 records (written before the order had a currency) have no `schema` field and no `currency` in
//! `ITEM_ADDED`; they are never rewritten — the log is immutable — but *upcast* each time they are read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::order::{DEFAULT_CURRENCY, Event, OrderState};

/// The schema this code writes. Readers accept it and every older one.
pub const CURRENT_SCHEMA: u64 = 2;

/// The schema of snapshots. A snapshot of another schema is ignored, never upcast: it is a cache of a fold, and
/// the events it came from can always be folded again.
pub const SNAPSHOT_SCHEMA: u64 = 1;

// ANCHOR: stored_event
/// An event as the log holds it: which order, which version of it (1 for its first event), what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub order_id: String,
    pub version: u64,
    pub event: Event,
}
// ANCHOR_END: stored_event

/// The state of an order at one version, kept so that loading it need not fold every event again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub order_id: String,
    /// The state at `state.version`.
    pub state: OrderState,
}

/// Why a record could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("schema {0} is newer than this reader (it knows up to {CURRENT_SCHEMA}): upgrade the reader")]
    FutureSchema(u64),
    #[error("the schema field is {0}, not a positive integer")]
    BadSchema(Value),
    #[error("not an event of schema {CURRENT_SCHEMA} after upcasting: {0}")]
    Shape(serde_json::Error),
}

/// The record (key and payload) that stores `event`, in the current schema.
pub fn encode_event(event: &StoredEvent) -> (String, Vec<u8>) {
    let mut record = serde_json::to_value(event).expect("an event is plain data");
    record["schema"] = CURRENT_SCHEMA.into();
    (event.order_id.clone(), serde_json::to_vec(&record).expect("a JSON value serialises"))
}

// EXERCISE: Bring one stored event record, as JSON, to the current schema (`CURRENT_SCHEMA`), so that it
// deserialises into a `StoredEvent`. A record without a `schema` field is schema 1: its `ITEM_ADDED` events had no
// currency and were all in `DEFAULT_CURRENCY`; nothing else changed between 1 and 2. The result carries
// `"schema": CURRENT_SCHEMA`. A record of the current schema comes back as it is. A schema this code does not
// know yet (newer) is `DecodeError::FutureSchema`, and a schema field that is not a positive integer is
// `DecodeError::BadSchema`: a reader must never guess what a newer writer meant. The tests upcast records of
// every schema, byte for byte, and decode a fixture of every schema ever written.
// ANCHOR: upcast
/// `record` in the current schema.
pub fn upcast(mut record: Value) -> Result<Value, DecodeError> {
    let schema = match record.get("schema") {
        None => 1,
        Some(value) => value.as_u64().filter(|&n| n >= 1).ok_or_else(|| DecodeError::BadSchema(value.clone()))?,
    };
    if schema > CURRENT_SCHEMA {
        return Err(DecodeError::FutureSchema(schema));
    }
    if schema == 1 {
        if let Some(event) = record.get_mut("event").and_then(Value::as_object_mut)
            && event.get("type").and_then(Value::as_str) == Some("ITEM_ADDED")
        {
            event.insert("currency".into(), DEFAULT_CURRENCY.into());
        }
        record["schema"] = CURRENT_SCHEMA.into();
    }
    Ok(record)
}
// ANCHOR_END: upcast

/// Reads an event record of any schema this code knows.
pub fn decode_event(payload: &[u8]) -> Result<StoredEvent, DecodeError> {
    let record: Value = serde_json::from_slice(payload).map_err(DecodeError::NotJson)?;
    let mut current = upcast(record)?;
    if let Some(fields) = current.as_object_mut() {
        fields.remove("schema");
    }
    serde_json::from_value(current).map_err(DecodeError::Shape)
}

/// The record (key and payload) that stores `snapshot`.
pub fn encode_snapshot(snapshot: &Snapshot) -> (String, Vec<u8>) {
    let mut record = serde_json::to_value(snapshot).expect("a snapshot is plain data");
    record["schema"] = SNAPSHOT_SCHEMA.into();
    (snapshot.order_id.clone(), serde_json::to_vec(&record).expect("a JSON value serialises"))
}

/// Reads a snapshot record: `None` for one of another schema, or not a snapshot at all (the caller then folds the
/// order's events from the start, which gives the same state, only slower).
pub fn decode_snapshot(payload: &[u8]) -> Option<Snapshot> {
    let mut record: Value = serde_json::from_slice(payload).ok()?;
    if record.get("schema").and_then(Value::as_u64) != Some(SNAPSHOT_SCHEMA) {
        return None;
    }
    record.as_object_mut()?.remove("schema");
    serde_json::from_value(record).ok()
}
