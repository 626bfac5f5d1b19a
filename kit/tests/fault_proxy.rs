//! The fault proxy works in front of a broker: clients that bootstrap at it keep talking through it (the
//! Metadata rewrite), and a lost ack is a real one: the broker wrote the batch, the producer never heard, and a
//! producer without idempotence writes the retry a second time. That holds on every broker, so it proves the
//! fault, whichever broker the tests run against.

use std::time::Duration;

use kit::{Broker, EmbeddedCluster, FaultProxy, TxnRequest};
use kit_testing::{broker, read_topic, unique};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;

fn producer_through(proxy: &FaultProxy, idempotent: bool) -> FutureProducer {
    let mut config = broker().producer_config();
    config
        .set("bootstrap.servers", proxy.bootstrap_servers())
        .set("enable.idempotence", idempotent.to_string())
        .set("acks", "all")
        .set("linger.ms", "0");
    config.create().expect("producer")
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &str) {
    producer
        .send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(20))
        .await
        .map_err(|(e, _)| e)
        .expect("the record is delivered in the end");
}

#[tokio::test]
async fn clients_keep_talking_through_the_proxy() {
    let broker = broker();
    let topic = unique("kit-proxy");
    broker.create_topic(&topic, 2).await.unwrap();
    let proxy = FaultProxy::start(broker.bootstrap_servers()).unwrap();
    let producer = producer_through(&proxy, true);

    let metadata = producer.client().fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    for advertised in metadata.brokers() {
        assert_eq!(advertised.host(), "127.0.0.1", "every broker is advertised at the proxy");
        assert!(
            !broker.bootstrap_servers().contains(&format!(":{}", advertised.port())),
            "broker {} is advertised on a proxy port, not its own ({})",
            advertised.id(),
            advertised.port()
        );
    }
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        send(&producer, &topic, key, value).await;
    }
    let stats = proxy.stats();
    assert!(stats.metadata_rewritten >= 1, "{stats:?}");
    assert!(stats.produce_requests >= 3, "the produce requests went through the proxy: {stats:?}");
    assert_eq!(stats.acks_lost, 0);

    let read = read_topic(broker, &topic, 3, Duration::from_secs(10)).await;
    let mut values: Vec<_> = read.iter().filter_map(|r| r.payload.clone()).collect();
    values.sort();
    assert_eq!(values, ["1", "2", "3"], "written once each, read back from the broker directly");
}

#[tokio::test]
async fn each_broker_of_a_cluster_gets_a_relay_of_its_own() {
    // A private three-broker cluster: partition leaders spread over the brokers, so producing to every partition
    // needs a connection to each, all of them through the proxy.
    let cluster = Broker::from_embedded(EmbeddedCluster::start(3).unwrap());
    let topic = unique("kit-proxy-cluster");
    cluster.create_topic(&topic, 6).await.unwrap();
    let proxy = FaultProxy::start(cluster.bootstrap_servers()).unwrap();
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", proxy.bootstrap_servers()).create().unwrap();

    let metadata = producer.client().fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    let mut ports: Vec<i32> = metadata.brokers().iter().map(|b| b.port()).collect();
    assert!(metadata.brokers().iter().all(|b| b.host() == "127.0.0.1"));
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three brokers, three relays: {:?}", metadata.brokers().len());
    let leaders: std::collections::BTreeSet<i32> =
        metadata.topics()[0].partitions().iter().map(|p| p.leader()).collect();
    drop(metadata);
    assert!(leaders.len() > 1, "the partitions' leaders are spread over the brokers: {leaders:?}");

    for partition in 0..6 {
        producer
            .send(FutureRecord::<str, str>::to(&topic).partition(partition).payload("x"), Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let stats = proxy.stats();
    assert!(stats.connections > leaders.len() as u64, "bootstrap plus one per leader: {stats:?}");
    assert!(stats.produce_requests >= 6, "{stats:?}");
}

#[tokio::test]
async fn a_transactional_producer_reaches_its_coordinator_through_the_proxy() {
    let broker = broker();
    let topic = unique("kit-proxy-txn");
    broker.create_topic(&topic, 1).await.unwrap();
    let proxy = FaultProxy::start(broker.bootstrap_servers()).unwrap();
    let transactional_id = unique("kit-proxy-txn");
    let producer: FutureProducer = broker
        .producer_config()
        .set("bootstrap.servers", proxy.bootstrap_servers())
        .set("transactional.id", &transactional_id)
        .create()
        .unwrap();
    // librdkafka's transactional calls block: off the async runtime's thread.
    let producer = tokio::task::spawn_blocking(move || {
        producer.init_transactions(Duration::from_secs(20)).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        producer
    })
    .await
    .unwrap();
    send(&producer, &topic, "k", "in a transaction").await;
    tokio::task::spawn_blocking(move || producer.commit_transaction(Duration::from_secs(20)).expect("commit"))
        .await
        .unwrap();

    let stats = proxy.stats();
    assert!(
        stats.coordinators_rewritten >= 1,
        "the transaction coordinator was looked up through the proxy: {stats:?}"
    );
    assert!(stats.produce_requests >= 1, "and the records still went through it: {stats:?}");
    let read = read_topic(broker, &topic, 1, Duration::from_secs(10)).await;
    assert_eq!(read.iter().filter(|r| r.payload.as_deref() == Some("in a transaction")).count(), 1);

    // The transaction as the proxy logged it: the producer's id, the partition it joined, the commit.
    let log = proxy.transaction_log();
    assert!(
        log.iter().any(|e| matches!(e, TxnRequest::InitProducerId { transactional_id: Some(id), error_code: 0, .. } if *id == transactional_id)),
        "{log:?}"
    );
    assert!(
        log.iter().any(|e| matches!(e, TxnRequest::AddPartitionsToTxn { partitions, .. } if partitions.contains(&(topic.clone(), 0)))),
        "{log:?}"
    );
    assert!(matches!(log.last(), Some(TxnRequest::EndTxn { committed: true, .. })), "{log:?}");
}

#[tokio::test]
async fn a_crash_before_end_txn_keeps_the_commit_from_the_broker_and_cuts_the_client_off() {
    let broker = broker();
    let topic = unique("kit-proxy-crash");
    broker.create_topic(&topic, 1).await.unwrap();
    let proxy = FaultProxy::start(broker.bootstrap_servers()).unwrap();
    let producer: FutureProducer = broker
        .producer_config()
        .set("bootstrap.servers", proxy.bootstrap_servers())
        .set("transactional.id", unique("kit-proxy-crash"))
        .create()
        .unwrap();
    let producer = tokio::task::spawn_blocking(move || {
        producer.init_transactions(Duration::from_secs(20)).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        producer
    })
    .await
    .unwrap();
    send(&producer, &topic, "k", "never committed").await;
    proxy.crash_before_next_end_txn();
    let committed = tokio::task::spawn_blocking(move || {
        let result = producer.commit_transaction(Duration::from_secs(3));
        std::mem::forget(producer); // a crashed process closes nothing
        result
    })
    .await
    .unwrap();
    assert!(committed.is_err(), "the commit never reached the broker: {committed:?}");
    assert_eq!(proxy.stats().end_txn_cut, 1, "{:?}", proxy.stats());
    assert!(
        !proxy.transaction_log().iter().any(|e| matches!(e, TxnRequest::EndTxn { .. })),
        "the EndTxn kept from the broker is not in the log: {:?}",
        proxy.transaction_log()
    );
}

#[tokio::test]
async fn a_lost_ack_makes_a_producer_without_idempotence_write_twice() {
    let broker = broker();
    let topic = unique("kit-proxy-lost-ack");
    broker.create_topic(&topic, 1).await.unwrap();
    let proxy = FaultProxy::start(broker.bootstrap_servers()).unwrap();
    let producer = producer_through(&proxy, false);
    send(&producer, &topic, "warm-up", "0").await;

    proxy.lose_produce_acks(1);
    send(&producer, &topic, "k", "once").await;
    assert_eq!(proxy.stats().acks_lost, 1, "{:?}", proxy.stats());

    // The broker holds the warm-up record and two copies of the other: the write whose ack was lost and the
    // retry (`read_topic` lingers after the third record, so a fourth would be caught too).
    let read = read_topic(broker, &topic, 3, Duration::from_secs(10)).await;
    let copies = read.iter().filter(|r| r.payload.as_deref() == Some("once")).count();
    assert_eq!(copies, 2, "the lost-ack batch was written, then written again by the retry: {read:?}");
}

#[tokio::test]
async fn a_failed_request_never_reaches_the_broker_and_the_retry_writes_it_once() {
    let broker = broker();
    let topic = unique("kit-proxy-error");
    broker.create_topic(&topic, 1).await.unwrap();
    let proxy = FaultProxy::start(broker.bootstrap_servers()).unwrap();
    let producer = producer_through(&proxy, false);
    send(&producer, &topic, "warm-up", "0").await;

    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS]);
    send(&producer, &topic, "k", "once").await;
    let stats = proxy.stats();
    assert_eq!(stats.requests_failed, 1, "{stats:?}");
    assert!(stats.produce_requests >= 3, "warm-up, the failed request and its retry: {stats:?}");

    let read = read_topic(broker, &topic, 2, Duration::from_secs(10)).await;
    let copies = read.iter().filter(|r| r.payload.as_deref() == Some("once")).count();
    assert_eq!(copies, 1, "the refused request wrote nothing, its retry wrote the record: {read:?}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_refused_connection_not_a_hang() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let proxy = FaultProxy::start(&address.to_string()).unwrap();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", proxy.bootstrap_servers())
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()
        .unwrap();
    let metadata = producer.client().fetch_metadata(None, Duration::from_secs(3));
    assert!(metadata.is_err(), "no metadata comes from a broker that is not there");
    assert!(FaultProxy::start("no-port-here").is_err(), "an address without a port is refused up front");
}
