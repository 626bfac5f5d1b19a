//! Grades lesson 02: the consumer's configuration, parsing records into events, and the consuming loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::events::sample_events;
use kit_testing::{broker, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use solution_02::{MalformedEvent, StopReason, consume, consumer_config, parse_event};
use tracing::instrument::WithSubscriber;

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
    let log = Captured::default();
    let consumed = tokio::time::timeout(
        Duration::from_secs(30),
        consume(&consumer, 5, std::future::pending()).with_subscriber(log.subscriber()),
    )
    .await
    .expect("5 events were not read within 30 s: is auto.offset.reset earliest, and does the loop stop at max_events?");

    assert_eq!(consumed.stopped_by, StopReason::Count);
    let read: Vec<_> = consumed.events.iter().map(|c| c.event.clone()).collect();
    let expected: Vec<_> = events.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, e)| e.clone()).collect();
    assert_eq!(read, expected, "every good event, in the order it was written");
    let offsets: Vec<_> = consumed.events.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 5], "each event comes with the offset it was read at");
    assert_eq!(consumed.skipped.len(), 1, "the broken record is reported, not dropped silently");
    assert_eq!((consumed.skipped[0].partition, consumed.skipped[0].offset), (0, 4));
    // Whoever runs the consumer sees the log, not the returned report: the warning must say which record was
    // skipped (its offset, a word of its own in the line) and why (serde's message for `"user_id": 42`).
    let logged = log.text();
    assert!(
        log.warnings()
            .iter()
            .any(|line| words(line).any(|word| word == "4") && line.contains("invalid type: integer `42`")),
        "the skipped record is logged as a warning giving its offset (4) and the reason; the log was:\n{logged}"
    );
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("what_the_new_group_read", consumed));
}

#[tokio::test]
async fn a_receive_error_is_logged_and_the_loop_reads_on() {
    // With `enable.partition.eof`, the client reports reaching the end of a partition as an error from `recv()`:
    // a receive error the test can cause, deterministically. The topic is empty when the consumer joins, so its
    // first fetch ends at the end of the partition. The event is written only once the loop has logged that error,
    // so a loop that stops on it never sees the event; a loop that reads on takes the event and stops at the count.
    let broker = broker();
    let topic = unique("lesson02-eof");
    broker.create_topic(&topic, 1).await.unwrap();
    let mut config = consumer_config(broker, &unique("lesson02-eof"));
    config.set("enable.partition.eof", "true");
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let event = sample_events(1, 1, 1).remove(0);
    let producer: FutureProducer = broker.producer_config().create().unwrap();

    let log = Captured::default();
    let write_after_the_error = async {
        kit_testing::wait_until(
            "consume to log the receive error (the end of the partition: `Partition EOF`) as a warning that names \
             it",
            Duration::from_secs(30),
            || {
                let logged = log.warnings().iter().any(|line| line.contains("EOF"));
                async move { logged.then_some(()) }
            },
        )
        .await;
        let json = event.to_json();
        producer
            .send(FutureRecord::to(&topic).key(&event.user_id).payload(&json), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    };
    let (consumed, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            consume(&consumer, 1, std::future::pending()).with_subscriber(log.subscriber()),
            write_after_the_error
        )
    })
    .await
    .expect("consume did not read the event written after the receive error within 60 s");
    assert_eq!(
        consumed.stopped_by,
        StopReason::Count,
        "a receive error must not end the loop (the client retries by itself), and `shutdown` never fired; the log \
         was:\n{}",
        log.text()
    );
    let read: Vec<_> = consumed.events.iter().map(|c| c.event.clone()).collect();
    assert_eq!(read, [event], "the event written after the error is read");
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

/// What a future logs while it runs (any level, plain text): `consume(..).with_subscriber(log.subscriber())`. The
/// subscriber is the future's own, so what other tests and librdkafka's threads log does not end up here.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines logged at WARN or ERROR (an error is more than a warning, never less).
    fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(String::from)
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The words of a log line: its runs of letters and digits (`offset=4` gives `offset` and `4`).
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty())
}
