//! Apache Kafka on this machine's JVM (kit::jvm_kafka), tested for what it is for: a three-broker cluster keeps
//! every acknowledged `acks=all` write when a broker is killed mid-stream, and refuses writes with
//! NOT_ENOUGH_REPLICAS once too few replicas are left; a single broker is killed and restarted on its data.
//!
//! Each test starts a private cluster on free ports (JVMs tied to this process). They need Java 17+ and Maven: a
//! machine without them prints "NOT RUN" — unless `WORKBOOK_REQUIRE_JVM_KAFKA` is set (CI sets it), which turns
//! a missing JVM into a failure, so the suite can never pass there without running them.

use std::collections::BTreeSet;
use std::time::Duration;

use kit::jvm_kafka::{self, JvmCluster, Spec};
use kit::{Broker, BrokerKind};
use kit_testing::{read_topic, unique};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Whether this machine can run the tests; prints why not (or fails, when they are required).
fn jvm_or_skip(test: &str) -> bool {
    if jvm_kafka::available() {
        return true;
    }
    let why = jvm_kafka::check_tools().err().map(|e| e.to_string()).unwrap_or_else(|| "no `mvn`".into());
    if std::env::var_os("WORKBOOK_REQUIRE_JVM_KAFKA").is_some() {
        panic!("WORKBOOK_REQUIRE_JVM_KAFKA is set but Kafka cannot run on this machine's JVM: {why}");
    }
    eprintln!("NOT RUN: `{test}` needs Apache Kafka on the JVM: {why}");
    false
}

/// Starts a private cluster off the test runtime's thread (it blocks for seconds).
async fn cluster(brokers: u16) -> JvmCluster {
    tokio::task::spawn_blocking(move || {
        JvmCluster::start(&Spec { brokers, port: None, ..Spec::default() }, &|step| eprintln!("{step}"))
    })
    .await
    .unwrap()
    .expect("a private Kafka cluster on the JVM")
}

fn producer(bootstrap: &str, acks: &str, retries: bool) -> FutureProducer {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("acks", acks).set("linger.ms", "5");
    if retries {
        config.set("enable.idempotence", "true").set("message.timeout.ms", "60000");
    } else {
        // One try, so the broker's own refusal is what the send reports (not a timeout after retries).
        config
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("message.timeout.ms", "10000");
    }
    config.create().expect("producer")
}

async fn create_replicated_topic(bootstrap: &str, topic: &str, partitions: i32, replicas: i32) {
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for result in admin.create_topics([&spec], &options).await.unwrap() {
        result.map_err(|(t, e)| format!("{t}: {e}")).expect("topic created");
    }
}

async fn send(producer: &FutureProducer, topic: &str, value: &str) -> Result<(i32, i64), KafkaError> {
    producer
        .send(FutureRecord::to(topic).key(value).payload(value), Duration::from_secs(5))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_keep_every_acknowledged_write_and_refuse_when_too_few_replicas_are_left() {
    let test = "three_brokers_keep_every_acknowledged_write_and_refuse_when_too_few_replicas_are_left";
    if !jvm_or_skip(test) {
        return;
    }
    let started = std::time::Instant::now();
    let mut cluster = cluster(3).await;
    eprintln!("three brokers and a controller up in {:.1} s", started.elapsed().as_secs_f64());
    let bootstrap = cluster.bootstrap_servers();
    assert_eq!(cluster.broker_ids(), [1, 2, 3]);
    let topic = unique("kit-replicated");
    create_replicated_topic(&bootstrap, &topic, 3, 3).await;

    // Write 300 records with acks=all; after the first 100 are acknowledged, kill broker 2 without warning.
    let writer = producer(&bootstrap, "all", true);
    let mut acknowledged = BTreeSet::new();
    let mut killed = false;
    for i in 0..300 {
        let value = format!("record-{i:03}");
        if i == 100 {
            tokio::task::block_in_place(|| cluster.kill_broker(2)).unwrap();
            killed = true;
        }
        let sent = writer
            .send(FutureRecord::to(&topic).key(&value).payload(&value), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e);
        // Every write is acknowledged in the end: the partitions broker 2 led get a new leader from the ISR.
        sent.unwrap_or_else(|e| panic!("{value} was not acknowledged (broker 2 killed: {killed}): {e}"));
        acknowledged.insert(value);
    }
    drop(writer);
    eprintln!("300 acks=all writes, broker 2 killed after 100, done at {:.1} s", started.elapsed().as_secs_f64());

    // Every acknowledged record is on the surviving brokers, once.
    let reader = Broker::connect(BrokerKind::Jvm, bootstrap.clone(), "a private cluster".into()).unwrap();
    let read = read_topic(&reader, &topic, acknowledged.len(), Duration::from_secs(60)).await;
    let values: Vec<String> = read.iter().filter_map(|r| r.payload.clone()).collect();
    let distinct: BTreeSet<String> = values.iter().cloned().collect();
    assert_eq!(distinct, acknowledged, "every acknowledged record survives the loss of a broker");
    assert_eq!(values.len(), acknowledged.len(), "and none is there twice");

    // Kill a second broker: one replica is left, min.insync.replicas is 2, so acks=all writes must be refused.
    tokio::task::block_in_place(|| cluster.kill_broker(3)).unwrap();
    let strict = producer(&bootstrap, "all", false);
    let refused =
        kit::wait::until("an acks=all write to be refused for want of replicas", Duration::from_secs(60), || {
            let strict = &strict;
            let topic = &topic;
            async move {
                match send(strict, topic, "with-one-replica-left").await {
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => Ok(Some(())),
                    // Accepted with one replica left: exactly what min.insync.replicas must prevent.
                    Ok(at) => {
                        anyhow::bail!("an acks=all write was acknowledged with two of three brokers down: {at:?}")
                    }
                    // While the controller notices the dead brokers (a few seconds), a write may time out instead.
                    Err(_) => Ok(None),
                }
            }
        })
        .await;
    refused.expect("acks=all refused with NOT_ENOUGH_REPLICAS");
    eprintln!("NOT_ENOUGH_REPLICAS with one broker left at {:.1} s", started.elapsed().as_secs_f64());

    // acks=1 asks only the leader: the same write goes through, which is the durability it gives up.
    let relaxed = producer(&bootstrap, "1", false);
    send(&relaxed, &topic, "acks-1").await.expect("an acks=1 write needs only the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_restarts_on_its_data() {
    if !jvm_or_skip("a_killed_broker_restarts_on_its_data") {
        return;
    }
    let mut cluster = cluster(1).await;
    let bootstrap = cluster.bootstrap_servers();
    let broker = Broker::connect(BrokerKind::Jvm, bootstrap.clone(), "a private cluster".into()).unwrap();
    let topic = unique("kit-restart");
    broker.create_topic(&topic, 1).await.unwrap();
    let writer = producer(&bootstrap, "all", true);
    for i in 0..10 {
        send(&writer, &topic, &format!("before-{i}")).await.expect("written before the crash");
    }
    tokio::task::block_in_place(|| cluster.kill_broker(1)).unwrap();
    tokio::task::block_in_place(|| cluster.start_broker(1)).unwrap();
    send(&writer, &topic, "after").await.expect("written after the restart");
    let read = read_topic(&broker, &topic, 11, Duration::from_secs(30)).await;
    let values: Vec<_> = read.iter().filter_map(|r| r.payload.as_deref()).collect();
    assert_eq!(values.len(), 11, "{values:?}");
    assert_eq!(values.last(), Some(&"after"));
    let data = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!data.exists(), "a stopped cluster deletes its data");
}

#[test]
fn the_pom_pins_the_version_the_containers_use() {
    let pom = include_str!("../kafka/pom.xml");
    assert!(pom.contains(&format!("<kafka.version>{}</kafka.version>", jvm_kafka::KAFKA_VERSION)), "{pom}");
}
