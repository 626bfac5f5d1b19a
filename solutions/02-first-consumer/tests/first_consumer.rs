//! Grades lesson 02: the consumer's configuration, parsing records into events, and the consuming loop.

use std::time::Duration;

use kit::events::sample_events;
use kit_testing::{broker, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use solution_02::{MalformedEvent, StopReason, consume, consumer_config, parse_event};

#[test]
fn the_config_joins_the_group_and_starts_from_the_earliest_record() {
    let broker = broker();
    let config = consumer_config(broker, "readers");
    assert_eq!(config.get("group.id"), Some("readers"), "group.id is the group passed in");
    assert_eq!(
        config.get("auto.offset.reset"),
        Some("earliest"),
        "a new group must start from the first record, not only see new ones"
    );
    assert_eq!(config.get("bootstrap.servers"), Some(broker.bootstrap_servers()), "start from broker.consumer_base()");
    for (key, value) in broker.consumer_base().config_map() {
        assert_eq!(
            config.get(key),
            Some(value),
            "{key} must keep consumer_base()'s value: build on broker.consumer_base(), which tunes the group for \
             this broker"
        );
    }
}

#[test]
fn records_become_events_and_broken_ones_say_why() {
    for event in sample_events(2, 10, 3) {
        assert_eq!(parse_event(Some(event.to_json().as_bytes())), Ok(event));
    }
    let broken: Vec<(&str, Option<&[u8]>)> = vec![
        ("no payload", None),
        ("not JSON", Some(b"click by user-1".as_slice())),
        ("unknown event type", Some(br#"{"event_id":"7f0c3a52-94d1-4c1e-9d55-6a1d3f1b2c01","user_id":"user-1","event_type":"like","timestamp":"2026-01-01T09:00:00Z"}"#)),
        ("missing user", Some(br#"{"event_id":"7f0c3a52-94d1-4c1e-9d55-6a1d3f1b2c01","event_type":"click","timestamp":"2026-01-01T09:00:00Z"}"#)),
    ];
    let reasons: Vec<_> = broken
        .into_iter()
        .map(|(case, payload)| {
            let error = parse_event(payload).expect_err(case);
            if case == "no payload" {
                assert_eq!(error, MalformedEvent::Empty);
            } else {
                assert!(matches!(error, MalformedEvent::Invalid(_)), "{case}: {error:?}");
            }
            json!({ "case": case, "error": error.to_string() })
        })
        .collect();
    insta::assert_json_snapshot!("why_records_were_rejected", reasons);
    let zero_bytes = parse_event(Some(b"".as_slice())).expect_err("zero bytes are not an event");
    assert!(
        matches!(zero_bytes, MalformedEvent::Invalid(_)),
        "zero bytes are a payload that is not an event (Invalid); Empty is for a record with no payload at all: \
         got {zero_bytes:?}"
    );
}

#[tokio::test]
async fn asked_for_no_events_consume_returns_at_once() {
    let broker = broker();
    // Not even subscribed: nothing can arrive, so a loop that waits for a record before looking at the count never
    // returns, and the shutdown never fires.
    let consumer: StreamConsumer = consumer_config(broker, &unique("lesson02-none")).create().unwrap();
    let consumed = tokio::time::timeout(Duration::from_secs(10), consume(&consumer, 0, std::future::pending()))
        .await
        .expect("consume(.., 0, ..) did not return within 10 s: zero events are read before any record arrives");
    assert_eq!(consumed.stopped_by, StopReason::Count, "max_events = 0 is reached before the first record");
    assert!(consumed.events.is_empty() && consumed.skipped.is_empty(), "nothing is read: {consumed:?}");
}

#[tokio::test]
async fn a_new_group_reads_everything_in_order_and_reports_the_broken_record() {
    let broker = broker();
    let topic = unique("lesson02-user-events");
    broker.create_topic(&topic, 1).await.unwrap();
    let events = sample_events(3, 6, 3);
    let producer: FutureProducer = broker.producer_config().create().unwrap();
    for (i, event) in events.iter().enumerate() {
        let json = event.to_json();
        let payload = if i == 4 { "{\"user_id\": 42" } else { json.as_str() };
        producer
            .send(FutureRecord::to(&topic).key(&event.user_id).payload(payload), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // Everything was produced before the consumer existed: only `earliest` lets it see those records.
    let consumer: StreamConsumer = consumer_config(broker, &unique("lesson02")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let consumed =
        tokio::time::timeout(Duration::from_secs(30), consume(&consumer, 5, std::future::pending())).await.expect(
            "5 events were not read within 30 s: is auto.offset.reset earliest, and does the loop stop at max_events?",
        );

    assert_eq!(consumed.stopped_by, StopReason::Count);
    let read: Vec<_> = consumed.events.iter().map(|c| c.event.clone()).collect();
    let expected: Vec<_> = events.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, e)| e.clone()).collect();
    assert_eq!(read, expected, "every good event, in the order it was written");
    let offsets: Vec<_> = consumed.events.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 5], "each event comes with the offset it was read at");
    assert_eq!(consumed.skipped.len(), 1, "the broken record is reported, not dropped silently");
    assert_eq!((consumed.skipped[0].partition, consumed.skipped[0].offset), (0, 4));
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("what_the_new_group_read", consumed));
}

#[tokio::test]
async fn shutdown_stops_a_loop_already_waiting_for_a_record() {
    let broker = broker();
    let topic = unique("lesson02-quiet");
    broker.create_topic(&topic, 1).await.unwrap();
    let consumer: StreamConsumer = consumer_config(broker, &unique("lesson02-quiet")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();

    // The signal fires only once the loop is under way: the shutdown future says when `consume` first polls it,
    // and only then does `fire` complete it. Both run in this one task on the test's only thread, so by the time
    // `fire` runs, `consume` has gone back to waiting for a record (nothing ever arrives on this topic). A loop that
    // looks at `shutdown` only between records is stuck in that wait for good; no sleep, no race.
    let (polled, first_poll) = tokio::sync::oneshot::channel::<()>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = polled.send(());
        let _ = stopped.await;
    };
    let fire = async move {
        tokio::time::timeout(Duration::from_secs(5), first_poll)
            .await
            .expect("consume did not look at `shutdown` within 5 s of starting")
            .unwrap();
        stop.send(()).unwrap();
    };
    let (consumed, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(consume(&consumer, 10, shutdown), fire)
    })
    .await
    .expect(
        "consume did not return within 10 s of a shutdown that fired while it waited for a record: it must watch \
         `shutdown` while it waits, not only between records",
    );
    assert_eq!(consumed.stopped_by, StopReason::Shutdown);
    assert!(consumed.events.is_empty() && consumed.skipped.is_empty());
}
