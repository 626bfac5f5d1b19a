//! Grades lesson 01: the producer's configuration, the encoding of an event, and the delivery report.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::events::sample_events;
use kit_testing::{broker, read_topic, unique};
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use lesson_01::{Delivery, encode, producer_config, send_event};

#[test]
fn the_config_names_the_brokers_and_waits_for_all_replicas() {
    let config = producer_config("broker-a:9092,broker-b:9092");
    assert_eq!(
        config.get("bootstrap.servers"),
        Some("broker-a:9092,broker-b:9092"),
        "bootstrap.servers must be the address passed in"
    );
    assert!(
        matches!(config.get("acks"), Some("all") | Some("-1")),
        "acks must be `all`: a send counts only when every in-sync replica has it (got {:?})",
        config.get("acks")
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
