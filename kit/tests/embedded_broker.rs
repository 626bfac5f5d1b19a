//! The embedded broker behaves as the lessons rely on: topics with chosen partition counts, a consumer group
//! that forms quickly and receives what was produced, a published fixed address other clients can use, and a
//! clear error for an unreachable broker.

use std::time::Duration;

use futures::StreamExt;
use kit::broker::BrokerKind;
use kit::{Broker, EmbeddedCluster, FaultProxy};
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
async fn a_published_cluster_serves_clients_on_its_fixed_addresses() {
    // Three brokers, so the listeners after the bootstrap's are seen to take the ports that follow it.
    let cluster = EmbeddedCluster::start(3).unwrap();
    let port = free_ports(3);
    let proxy = FaultProxy::start_on(cluster.bootstrap_servers(), "127.0.0.1", port).unwrap();
    let published = proxy.bootstrap_servers().to_string();
    assert_eq!(published, format!("127.0.0.1:{port}"));
    cluster.create_topic("published-topic", 1).unwrap();

    // A client that only knows the fixed address learns every broker at a fixed address too.
    let mut advertised = kit::wire::metadata_brokers(&published, Duration::from_secs(10)).unwrap();
    advertised.sort_by_key(|broker| broker.node_id);
    let addresses: Vec<_> = advertised.iter().map(|b| (b.node_id, b.host.as_str(), b.port)).collect();
    let port = i32::from(port);
    assert_eq!(addresses, [(1, "127.0.0.1", port), (2, "127.0.0.1", port + 1), (3, "127.0.0.1", port + 2)]);

    let via_fixed = Broker::connect(BrokerKind::Embedded, published.clone(), "test".into()).unwrap();
    produce(&via_fixed, "published-topic", &[("k", "through the fixed address")]).await;
    let records = read_topic(&via_fixed, "published-topic", 1, Duration::from_secs(10)).await;
    assert_eq!(records[0].payload.as_deref(), Some("through the fixed address"));
    assert!(proxy.stats().metadata_rewritten >= 2, "{:?}", proxy.stats());
}

#[test]
fn the_wire_probe_lists_every_broker_of_a_cluster() {
    let cluster = EmbeddedCluster::start(3).unwrap();
    let mut brokers = kit::wire::metadata_brokers(cluster.bootstrap_servers(), Duration::from_secs(10)).unwrap();
    brokers.sort_by_key(|broker| broker.node_id);
    let listed: Vec<_> = brokers.iter().map(|b| format!("{}:{}", b.host, b.port)).collect();
    assert_eq!(brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(listed.join(","), cluster.bootstrap_servers(), "each broker where it listens");

    // The broker of this test binary, whichever it is (Apache Kafka too with KAFKA_BOOTSTRAP_SERVERS).
    let brokers = kit::wire::metadata_brokers(broker().bootstrap_servers(), Duration::from_secs(10)).unwrap();
    assert!(!brokers.is_empty() && brokers.iter().all(|b| b.port > 0), "{brokers:?}");
}

#[test]
fn the_wire_probe_gives_up_at_its_deadline_and_names_each_address() {
    let (nothing, also_nothing) = (free_ports(1), free_ports(1));
    let bootstrap = format!("127.0.0.1:{nothing},127.0.0.1:{also_nothing}");
    let started = std::time::Instant::now();
    let error = kit::wire::metadata_brokers(&bootstrap, Duration::from_secs(2)).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by its deadline: {:?}", started.elapsed());
    assert!(error.contains(&format!(":{nothing}")) && error.contains(&format!(":{also_nothing}")), "{error}");

    // A listener that accepts and never answers: the read, not only the connect, keeps to the deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let error = kit::wire::metadata_brokers(&silent.local_addr().unwrap().to_string(), Duration::from_millis(500));
    assert!(error.is_err() && started.elapsed() < Duration::from_secs(5), "{error:?} after {:?}", started.elapsed());
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
    free_ports(1)
}

/// The first of `count` consecutive loopback ports that were all free when looked at.
fn free_ports(count: u16) -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let all_free = (0..count)
            .all(|n| first.checked_add(n).is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()));
        if all_free {
            return first;
        }
    }
    panic!("no {count} consecutive free ports on loopback");
}
