//! The embedded broker behaves as the lessons rely on: topics with chosen partition counts, a consumer group
//! that forms quickly and receives what was produced, a published fixed address other clients can use, and a
//! clear error for an unreachable broker.

use std::time::Duration;

use futures::StreamExt;
use kit::broker::BrokerKind;
use kit::{Broker, EmbeddedCluster};
use kit_testing::{broker, read_topic, unique};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

async fn produce(broker: &Broker, topic: &str, records: &[(&str, &str)]) {
    let producer: FutureProducer = broker.producer_config().create().unwrap();
    for (key, value) in records {
        producer
            .send(FutureRecord::to(topic).key(*key).payload(*value), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test]
async fn creates_topics_with_the_asked_partition_count() {
    let broker = broker();
    let topic = unique("kit-partitions");
    broker.create_topic(&topic, 5).await.unwrap();
    let producer: FutureProducer = broker.producer_config().create().unwrap();
    let metadata = producer.client().fetch_metadata(Some(&topic), Duration::from_secs(5)).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 5);
}

#[tokio::test]
async fn a_group_member_receives_what_was_produced() {
    let broker = broker();
    let topic = unique("kit-group");
    broker.create_topic(&topic, 2).await.unwrap();
    produce(broker, &topic, &[("a", "1"), ("b", "2"), ("c", "3")]).await;

    let consumer: StreamConsumer = broker.consumer_config(&unique("kit-group")).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut values: Vec<String> = consumer
        .stream()
        .take(3)
        .map(|m| String::from_utf8(m.unwrap().payload().unwrap().to_vec()).unwrap())
        .collect::<Vec<_>>()
        .await;
    values.sort();
    assert_eq!(values, ["1", "2", "3"]);
}

#[tokio::test]
async fn read_topic_sees_every_record_with_its_key() {
    let broker = broker();
    let topic = unique("kit-read");
    broker.create_topic(&topic, 1).await.unwrap();
    produce(broker, &topic, &[("k1", "v1"), ("k2", "v2")]).await;
    let records = read_topic(broker, &topic, 2, Duration::from_secs(10)).await;
    let pairs: Vec<_> = records.iter().map(|r| (r.key.clone().unwrap(), r.offset)).collect();
    assert_eq!(pairs, [("k1".to_string(), 0), ("k2".to_string(), 1)]);
}

#[tokio::test]
async fn a_published_cluster_serves_clients_on_its_fixed_address() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let port = free_port();
    let published = cluster.publish("127.0.0.1", port).unwrap();
    assert_eq!(published, format!("127.0.0.1:{port}"));
    cluster.create_topic("published-topic", 1).unwrap();

    // A separate client that only knows the fixed address: its metadata must point back at that address.
    let via_fixed = Broker::connect(BrokerKind::Embedded, published.clone(), "test".into()).unwrap();
    produce(&via_fixed, "published-topic", &[("k", "through the forwarder")]).await;
    let records = read_topic(&via_fixed, "published-topic", 1, Duration::from_secs(10)).await;
    assert_eq!(records[0].payload.as_deref(), Some("through the forwarder"));
    let consumer: StreamConsumer = via_fixed.consumer_base().set("group.id", "x").create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).unwrap();
    assert_eq!(metadata.brokers()[0].port(), i32::from(port), "the broker advertises the fixed port");
}

#[test]
fn an_unreachable_broker_is_reported_with_how_to_start_one() {
    let port = free_port(); // nothing listens there
    let err = Broker::connect(BrokerKind::External, format!("127.0.0.1:{port}"), "KAFKA_BOOTSTRAP_SERVERS".into())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("cargo xtask broker") && err.contains("cargo xtask up"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
