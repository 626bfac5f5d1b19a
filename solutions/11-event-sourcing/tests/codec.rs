//! Grades lesson 11's schema evolution, with no broker: `upcast` brings a record of every schema to the current
//! one byte for byte and refuses what it cannot know, and every event record ever written (the fixtures in
//! `tests/fixtures/`, one file per schema) still decodes with today's reader.

use serde_json::{Value, json};
use solution_11::codec::{
    CURRENT_SCHEMA, DecodeError, Snapshot, decode_event, decode_snapshot, encode_event, encode_snapshot, upcast,
};
use solution_11::{Event, StoredEvent, replay, restore};

#[test]
fn a_schema_1_item_gains_the_default_currency_and_the_current_schema() {
    let v1 = json!({"order_id": "o-1", "version": 2,
                    "event": {"type": "ITEM_ADDED", "sku": "LAPTOP", "quantity": 1, "unit_price_cents": 99900}});
    let expected = json!({"schema": 2, "order_id": "o-1", "version": 2,
                          "event": {"type": "ITEM_ADDED", "sku": "LAPTOP", "quantity": 1, "unit_price_cents": 99900,
                                    "currency": "EUR"}});
    assert_eq!(upcast(v1).expect("a schema 1 record upcasts"), expected);
    let explicit_v1 = json!({"schema": 1, "order_id": "o-1", "version": 2,
                             "event": {"type": "ITEM_ADDED", "sku": "LAPTOP", "quantity": 1, "unit_price_cents": 99900}});
    assert_eq!(upcast(explicit_v1).expect("\"schema\": 1 is schema 1 too"), expected);
}

#[test]
fn other_schema_1_events_only_gain_the_schema() {
    for event in [
        json!({"type": "ORDER_PLACED", "customer_id": "customer-3"}),
        json!({"type": "ORDER_CONFIRMED", "total_cents": 104900}),
        json!({"type": "ORDER_CANCELLED", "reason": "returned"}),
    ] {
        let v1 = json!({"order_id": "o-1", "version": 1, "event": event.clone()});
        let expected = json!({"schema": 2, "order_id": "o-1", "version": 1, "event": event});
        assert_eq!(upcast(v1).expect("a schema 1 record upcasts"), expected);
    }
}

#[test]
fn a_current_record_comes_back_as_it_is() {
    let stored = StoredEvent {
        order_id: "o-1".into(),
        version: 2,
        event: Event::ItemAdded { sku: "DOCK".into(), quantity: 1, unit_price_cents: 18_900, currency: "USD".into() },
    };
    let (key, payload) = encode_event(&stored);
    assert_eq!(key, "o-1", "events are keyed by order id");
    let record: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(record["schema"], json!(CURRENT_SCHEMA));
    assert_eq!(upcast(record.clone()).expect("a current record upcasts"), record, "unchanged, USD included");
    assert_eq!(decode_event(&payload).expect("decodes"), stored);
}

#[test]
fn a_schema_from_the_future_or_a_broken_one_is_refused() {
    let future = json!({"schema": CURRENT_SCHEMA + 1, "order_id": "o-1", "version": 1,
                        "event": {"type": "ORDER_PLACED", "customer_id": "c"}});
    assert!(
        matches!(upcast(future.clone()), Err(DecodeError::FutureSchema(n)) if n == CURRENT_SCHEMA + 1),
        "a newer schema is FutureSchema, never read as if it were the current one"
    );
    assert!(decode_event(&serde_json::to_vec(&future).unwrap()).is_err());
    for schema in [json!(0), json!(-1), json!("2"), json!(1.5), Value::Null] {
        let record = json!({"schema": schema.clone(), "order_id": "o-1", "version": 1,
                            "event": {"type": "ORDER_PLACED", "customer_id": "c"}});
        assert!(
            matches!(upcast(record), Err(DecodeError::BadSchema(_))),
            "schema {schema} is not a positive integer: BadSchema"
        );
    }
}

/// Every line of `tests/fixtures/schema-N.jsonl`, for every N, decoded with today's reader.
fn fixtures() -> Vec<(String, Vec<StoredEvent>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| decode_event(line.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}\n  {line}")))
                .collect();
            (name, events)
        })
        .collect()
}

#[test]
fn every_event_ever_written_still_decodes() {
    let fixtures = fixtures();
    let names: Vec<_> = fixtures.iter().map(|(name, _)| name.clone()).collect();
    let expected: Vec<_> = (1..=CURRENT_SCHEMA).map(|n| format!("schema-{n}.jsonl")).collect();
    assert_eq!(names, expected, "a fixture for every schema up to the current one");
    for (name, events) in &fixtures {
        let state = replay(events.iter().map(|e| &e.event));
        assert_eq!(state.version, events.len() as u64, "{name}");
        assert!(state.currency.is_some(), "{name}: every item has a currency once read");
    }
    insta::assert_json_snapshot!("fixtures_decoded", fixtures);
}

#[test]
fn snapshots_of_another_schema_are_ignored_and_the_events_folded_again() {
    let (_, events) = fixtures().pop().expect("a fixture of the current schema");
    let full = restore(None, &events).expect("the fixture restores");
    let at_2 = Snapshot { order_id: events[0].order_id.clone(), state: replay(events[..2].iter().map(|e| &e.event)) };
    let (key, payload) = encode_snapshot(&at_2);
    assert_eq!(key, at_2.order_id, "snapshots are keyed by order id, so compaction keeps one per order");
    let decoded = decode_snapshot(&payload);
    assert_eq!(decoded.as_ref(), Some(&at_2));
    assert_eq!(restore(decoded.as_ref(), &events[2..]), Ok(full.clone()), "the snapshot and its tail");

    // A snapshot of a schema this reader does not know is no snapshot: the order is folded from its first event.
    let mut other: Value = serde_json::from_slice(&payload).unwrap();
    other["schema"] = json!(99);
    let unknown = decode_snapshot(&serde_json::to_vec(&other).unwrap());
    assert_eq!(unknown, None);
    assert_eq!(restore(unknown.as_ref(), &events), Ok(full.clone()));
    assert_eq!(decode_snapshot(b"not json"), None);
    assert_eq!(full.version, events.len() as u64);
}
