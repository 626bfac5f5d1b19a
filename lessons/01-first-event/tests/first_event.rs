//! Grades lesson 01: the producer's configuration, the encoding of an event, and the delivery report.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::events::sample_events;
use kit_testing::{broker, read_topic, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use lesson_01::{Delivery, encode, producer_config, send_event};

/// librdkafka's reading of a setting that `config` sets explicitly under one of its `names`, or `None` when it
/// sets none of them. librdkafka takes a setting under its own name or an alias (`acks` for
/// `request.required.acks`, `bootstrap.servers` for `metadata.broker.list`, `delivery.timeout.ms` for
/// `message.timeout.ms`), and writes a value its own way (`acks=all` reads back as `-1`): asking librdkafka rather
/// than the map accepts every way of saying the same thing. A setting left to librdkafka's default counts as unset,
/// so the answer says what it asks for instead of relying on one client's default.
fn setting(config: &ClientConfig, names: &[&str]) -> Option<String> {
    names.iter().any(|name| config.get(name).is_some()).then(|| {
        let native = config.create_native_config().unwrap_or_else(|e| panic!("librdkafka refuses the config: {e}"));
        native.get(names[0]).unwrap_or_else(|e| panic!("librdkafka cannot read {} back: {e}", names[0]))
    })
}

#[test]
fn the_config_names_the_brokers_and_waits_for_all_replicas() {
    let config = producer_config("broker-a:9092,broker-b:9092");
    assert_eq!(
        setting(&config, &["bootstrap.servers", "metadata.broker.list"]).as_deref(),
        Some("broker-a:9092,broker-b:9092"),
        "bootstrap.servers must be the address passed in"
    );
    let acks = setting(&config, &["acks", "request.required.acks"]);
    assert_eq!(
        acks.as_deref(),
        Some("-1"),
        "acks must be `all` (librdkafka reads it back as -1): a send counts only when every in-sync replica has it \
         (got {acks:?})"
    );
}

#[test]
fn a_send_gives_up_after_30_seconds() {
    let config = producer_config("broker-a:9092");
    let timeout = setting(&config, &["message.timeout.ms", "delivery.timeout.ms"]);
    assert_eq!(
        timeout.as_deref(),
        Some("30000"),
        "message.timeout.ms (or its alias delivery.timeout.ms) must be 30 s, in milliseconds, instead of librdkafka's \
         five minutes (got {timeout:?}; None means left to the default)"
    );
}

#[test]
fn an_event_is_keyed_by_its_user_and_carried_as_json() {
    for event in sample_events(1, 20, 4) {
        let encoded = encode(&event).unwrap();
        assert_eq!(encoded.key, event.user_id, "the key is the user id");
        let back: kit::UserEvent = serde_json::from_str(&encoded.payload).expect("the payload is the event as JSON");
        assert_eq!(back, event, "every field survives the trip");
    }
    let purchase = sample_events(1, 20, 4).into_iter().find(|e| e.amount_cents.is_some()).unwrap();
    let wire: Value = serde_json::from_str(&encode(&purchase).unwrap().payload).unwrap();
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("purchase_on_the_wire", wire));
}

#[tokio::test]
async fn each_delivery_report_says_where_the_event_really_is() {
    let broker = broker();
    let topic = unique("lesson01-user-events");
    broker.create_topic(&topic, 3).await.unwrap();
    let producer: FutureProducer = producer_config(broker.bootstrap_servers()).create().unwrap();

    let events = sample_events(11, 12, 4);
    let mut reports = Vec::new();
    for event in &events {
        let delivery = tokio::time::timeout(Duration::from_secs(20), send_event(&producer, &topic, event))
            .await
            .expect("no delivery report within 20 s: does the producer config name the brokers?")
            .expect("delivery failed");
        reports.push(delivery);
    }

    // The test's own view of the topic: every record must be exactly where its report says.
    let records = read_topic(broker, &topic, events.len(), Duration::from_secs(20)).await;
    assert_eq!(records.len(), events.len(), "one record per event, no more, no less");
    let by_position: BTreeMap<(i32, i64), _> = records.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (event, report) in events.iter().zip(&reports) {
        let record = by_position.get(&(report.partition, report.offset)).unwrap_or_else(|| {
            panic!("nothing at partition {}, offset {} as reported", report.partition, report.offset)
        });
        assert_eq!(record.key.as_deref(), Some(event.user_id.as_str()), "the record is keyed by user");
        let stored: kit::UserEvent = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(&stored, event, "the record at the reported position is this event");
    }

    // Which partition each user's events went to: decided by the key, the same on every run and broker.
    let placement: BTreeMap<&str, Vec<i32>> = events.iter().zip(&reports).fold(BTreeMap::new(), |mut acc, (e, d)| {
        acc.entry(e.user_id.as_str()).or_default().push(d.partition);
        acc
    });
    insta::assert_json_snapshot!("partition_of_each_users_events", placement);
    let _: &[Delivery] = &reports;
}

#[tokio::test]
async fn a_failed_delivery_is_an_error_naming_the_event() {
    // Nothing listens on port 1: no send can be delivered, and the lowered timeout makes the delivery fail in 2 s.
    let mut config = producer_config("127.0.0.1:1");
    config.set("message.timeout.ms", "2000").set("delivery.timeout.ms", "2000");
    let producer: FutureProducer = config.create().unwrap();
    let event = sample_events(7, 1, 1).remove(0);
    let result =
        tokio::time::timeout(Duration::from_secs(30), send_event(&producer, &unique("lesson01-nowhere"), &event))
            .await
            .expect("send_event did not return within 30 s of a delivery that cannot succeed");
    let error = result.expect_err("nothing listens at 127.0.0.1:1: the delivery cannot have succeeded");
    let text = format!("{error:#}");
    assert!(
        text.contains(&event.event_id.to_string()),
        "the error must name the event (its event_id {}), got: {text}",
        event.event_id
    );
}
