//! Grades lesson 09 against a broker: the producer's configuration and the id the broker gives it, then the
//! numbered sequence under injected faults (request errors, a broker outage, acks that arrive too late), read
//! back and checked for "every record once, in order, per partition".
//!
//! Fault injection needs the in-process embedded broker. Each fault test starts a private cluster, so the
//! faults it injects never hit the other tests of this binary, which share `kit::testing::broker()`.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::testing::{ReadRecord, broker, can_grade, read_topic, unique, wait_until};
use kit::{Broker, Capability, EmbeddedCluster};
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use solution_09::{
    Delivery, Numbered, ProducerState, Watch, check_once_in_order, numbered_sequence, producer_config, send_numbered,
};

const KEYS: &[&str] = &["user-1", "user-2", "user-3"];

/// The learner's producer, watched through its statistics. `tuning` is the test's own conditions on top (small
/// batches, so many requests are in flight and a fault hits some of them but not others).
fn watched_producer(broker: &Broker, tuning: &[(&str, &str)]) -> (FutureProducer<Watch>, Watch) {
    let mut config = producer_config(broker.bootstrap_servers());
    config.set("statistics.interval.ms", Watch::INTERVAL_MS);
    for (key, value) in tuning {
        config.set(*key, *value);
    }
    let watch = Watch::default();
    let producer = config
        .create_with_context(watch.clone())
        .unwrap_or_else(|e| panic!("the producer config is rejected by librdkafka: {e}"));
    (producer, watch)
}

/// Many small requests: one batch holds at most 4 records and leaves at once.
const SMALL_BATCHES: &[(&str, &str)] = &[("batch.num.messages", "4"), ("linger.ms", "0")];

/// Each key's sequence numbers in log order, from the test's own reading of the topic (the learner's checker is
/// graded separately, so these assertions do not trust it).
fn sequences(records: &[ReadRecord]) -> BTreeMap<String, (Vec<i32>, Vec<u32>)> {
    let mut by_key: BTreeMap<String, (Vec<i32>, Vec<u32>)> = BTreeMap::new();
    for record in records {
        let numbered: Numbered = serde_json::from_str(record.payload.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("record {}/{} is not a numbered record: {e}", record.partition, record.offset));
        let (partitions, seqs) = by_key.entry(numbered.key).or_default();
        if !partitions.contains(&record.partition) {
            partitions.push(record.partition);
        }
        seqs.push(numbered.seq);
    }
    by_key
}

/// The test's own "once and in order per partition" verdict.
fn assert_once_in_order(records: &[ReadRecord], per_key: u32, situation: &str) {
    let expected: Vec<u32> = (0..per_key).collect();
    let by_key = sequences(records);
    assert_eq!(by_key.keys().map(String::as_str).collect::<Vec<_>>(), KEYS, "{situation}: every key was read back");
    for (key, (partitions, seqs)) in &by_key {
        assert_eq!(partitions.len(), 1, "{situation}: {key}'s records share one partition (got {partitions:?})");
        assert_eq!(seqs, &expected, "{situation}: {key}'s records arrive once each, 0..{per_key}, in order");
    }
}

/// A private embedded cluster with one topic, or `None` (reported) when this broker cannot inject faults.
async fn fault_cluster(test: &str, partitions: i32) -> Option<(EmbeddedCluster, Broker, String)> {
    if !can_grade(broker(), Capability::FaultInjection, test) {
        return None;
    }
    let cluster = EmbeddedCluster::start(1).expect("a private embedded cluster");
    let private = Broker::from_embedded(cluster.clone());
    let topic = unique("lesson09-numbered");
    private.create_topic(&topic, partitions).await.expect("topic");
    Some((cluster, private, topic))
}

async fn state_when(watch: &Watch, what: &str, accept: impl Fn(&ProducerState) -> bool) -> ProducerState {
    wait_until(what, Duration::from_secs(15), || {
        let state = watch.state().filter(|s| accept(s));
        async move { state }
    })
    .await
}

#[test]
fn the_config_turns_on_idempotence_and_what_it_needs() {
    let config = producer_config("broker-a:9092,broker-b:9092");
    assert_eq!(
        config.get("bootstrap.servers"),
        Some("broker-a:9092,broker-b:9092"),
        "bootstrap.servers is the address passed in"
    );
    assert_eq!(
        config.get("enable.idempotence"),
        Some("true"),
        "enable.idempotence must be true: without it a retried batch can be written twice or land after a later one"
    );
    assert!(
        matches!(config.get("acks"), Some("all") | Some("-1")),
        "acks must be `all`: idempotence guards retries, and only acks=all makes a send wait for every in-sync replica (got {:?})",
        config.get("acks")
    );
    let in_flight = config
        .get("max.in.flight.requests.per.connection")
        .or_else(|| config.get("max.in.flight"))
        .map(|v| v.parse::<u32>().expect("max.in.flight.requests.per.connection is a number"));
    assert!(
        matches!(in_flight, Some(1..=5)),
        "max.in.flight.requests.per.connection must be set, at most 5 (the broker re-orders at most 5 batches): got {in_flight:?}"
    );
    if let Some(retries) = config.get("retries").or_else(|| config.get("message.send.max.retries")) {
        let retries: i64 = retries.parse().expect("retries is a number");
        assert!(retries >= 1, "retries must be at least 1: the lesson is about retrying safely (got {retries})");
    }
    let timeout: u64 = config
        .get("message.timeout.ms")
        .or_else(|| config.get("delivery.timeout.ms"))
        .expect("message.timeout.ms must bound how long a record is retried")
        .parse()
        .expect("message.timeout.ms is a number");
    assert!(
        (1..=300_000).contains(&timeout),
        "message.timeout.ms must be a finite bound, not 0 (forever): got {timeout}"
    );
}

#[tokio::test]
async fn the_broker_gives_the_producer_an_id() {
    let broker = broker();
    let topic = unique("lesson09-producer-id");
    broker.create_topic(&topic, 1).await.unwrap();
    let (producer, watch) = watched_producer(broker, &[]);
    let records = numbered_sequence(&["user-1"], 1);
    tokio::time::timeout(Duration::from_secs(20), send_numbered(&producer, &topic, &records))
        .await
        .expect("no delivery report within 20 s")
        .expect("delivery failed");
    // Statistics arrive every 100 ms; the id is assigned before the first record can be sent.
    let state = state_when(&watch, "the producer's statistics", |_| true).await;
    let state = if state.idempotence == "Assigned" {
        state
    } else {
        state_when(&watch, "the idempotence state `Assigned`", |s| s.idempotence == "Assigned").await
    };
    assert!(state.producer_id >= 0, "an idempotent producer has a producer id: {state:?}");
    let identity = serde_json::json!({
        "idempotence": state.idempotence,
        "has_producer_id": state.producer_id >= 0,
        "producer_epoch": state.producer_epoch,
    });
    kit::redact::settings().bind(|| insta::assert_json_snapshot!("producer_identity", identity));
}

#[tokio::test]
async fn each_delivery_report_says_where_the_record_is() {
    let broker = broker();
    let topic = unique("lesson09-deliveries");
    broker.create_topic(&topic, 3).await.unwrap();
    let (producer, _watch) = watched_producer(broker, SMALL_BATCHES);
    let records = numbered_sequence(KEYS, 10);
    let deliveries: Vec<Delivery> =
        tokio::time::timeout(Duration::from_secs(20), send_numbered(&producer, &topic, &records))
            .await
            .expect("no delivery reports within 20 s")
            .expect("delivery failed");
    assert_eq!(deliveries.len(), records.len(), "one delivery report per record, in the order sent");

    let read = read_topic(broker, &topic, records.len(), Duration::from_secs(20)).await;
    assert_once_in_order(&read, 10, "no faults");
    let by_position: BTreeMap<(i32, i64), &ReadRecord> = read.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (record, delivery) in records.iter().zip(&deliveries) {
        let stored = by_position.get(&(delivery.partition, delivery.offset)).unwrap_or_else(|| {
            panic!(
                "nothing at {}/{} where {} #{} was reported",
                delivery.partition, delivery.offset, record.key, record.seq
            )
        });
        let stored: Numbered = serde_json::from_str(stored.payload.as_deref().unwrap()).unwrap();
        assert_eq!(&stored, record, "the record at the reported position is the one sent");
    }
}

#[tokio::test]
async fn request_errors_are_retried_without_duplicates_or_reordering() {
    let test = "request_errors_are_retried_without_duplicates_or_reordering";
    let Some((cluster, private, topic)) = fault_cluster(test, 3).await else {
        return;
    };
    let (producer, _watch) = watched_producer(&private, SMALL_BATCHES);
    // Retriable errors a real cluster answers during a leader election or with a slow replica, every other
    // request: a failed batch is retried while the next one, already in flight, succeeds. Without idempotence
    // the retried batch lands after it (measured on the embedded broker: reordered in every trial).
    let faults = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    ];
    let errors = faults.iter().cycle().take(9).flat_map(|f| [*f, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR]).collect();
    cluster.fail_requests(RDKafkaApiKey::Produce, errors);

    let per_key = 30;
    let records = numbered_sequence(KEYS, per_key);
    tokio::time::timeout(Duration::from_secs(30), send_numbered(&producer, &topic, &records))
        .await
        .expect("no delivery reports within 30 s")
        .expect("every record is reported delivered: retries ride out retriable errors");

    // The private broker is in this process: 3 s is plenty, and it is how long a missing record is waited for.
    let read = read_topic(&private, &topic, records.len(), Duration::from_secs(3)).await;
    let check = check_once_in_order(&read, KEYS, per_key);
    let by_key = sequences(&read);
    assert_eq!(by_key.keys().map(String::as_str).collect::<Vec<_>>(), KEYS, "every key's records were read back");
    for (key, (partitions, seqs)) in by_key {
        assert_eq!(partitions.len(), 1, "{key}'s records share one partition");
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{key}: retries must not reorder records (is enable.idempotence on?)");
        sorted.dedup();
        assert_eq!(sorted.len(), seqs.len(), "{key}: retries must not write a record twice");
        let report = &check.keys[&key];
        assert!(report.out_of_order.is_empty() && report.duplicated.is_empty(), "the checker agrees: {report:?}");
    }
    // That nothing is lost needs a broker that checks an idempotent producer's sequence numbers. A real broker
    // rejects a batch that comes after a failed one (OUT_OF_ORDER_SEQUENCE) and the producer resends both in
    // order. The embedded broker checks sequences only for transactional producers: it writes the later batch,
    // and the producer, seeing it acknowledged, takes the failed one as written too: on the embedded broker a
    // few records go missing although every delivery report says "delivered" (the checker's `missing` list).
    if can_grade(broker(), Capability::IdempotentDedupOnLostAck, test) {
        assert_once_in_order(&read, per_key, "under request errors");
    }
}

#[tokio::test]
async fn a_broker_outage_is_ridden_out() {
    let test = "a_broker_outage_is_ridden_out";
    let Some((cluster, private, topic)) = fault_cluster(test, 3).await else {
        return;
    };
    let (producer, watch) = watched_producer(&private, SMALL_BATCHES);
    let per_key = 20;
    let records = numbered_sequence(KEYS, per_key);
    let (before, after) = records.split_at(records.len() / 2);
    send_numbered(&producer, &topic, before).await.expect("the first half is delivered while the broker is up");

    cluster.broker_down(1).unwrap();
    let sending = send_numbered(&producer, &topic, after);
    let outage = async {
        // Bring the broker back only once the producer has noticed it is gone.
        state_when(&watch, "the producer to notice the outage", |s| s.brokers_up == 0).await;
        cluster.broker_up(1).unwrap();
    };
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(30), futures::future::join(sending, outage))
        .await
        .expect("the second half was not delivered within 30 s of the outage");
    sent.expect("records sent during the outage are delivered when the broker is back");

    let read = read_topic(&private, &topic, records.len(), Duration::from_secs(20)).await;
    assert_once_in_order(&read, per_key, "across a broker outage");
    let check = check_once_in_order(&read, KEYS, per_key);
    kit::redact::settings().bind(|| insta::assert_json_snapshot!("broker_outage", check));
}

#[tokio::test]
async fn a_lost_ack_is_retried_and_written_once_on_real_kafka() {
    let test = "a_lost_ack_is_retried_and_written_once_on_real_kafka";
    let Some((cluster, private, topic)) = fault_cluster(test, 1).await else {
        return;
    };
    // The producer gives up waiting for an ack after 1 s; the broker will answer after 1.5 s.
    let (producer, watch) = watched_producer(
        &private,
        &[("request.timeout.ms", "1000"), ("socket.timeout.ms", "1000"), ("linger.ms", "0")],
    );
    let warm_up = numbered_sequence(&["warm-up"], 1);
    send_numbered(&producer, &topic, &warm_up).await.expect("warm-up record");

    let per_key = 10;
    let records = numbered_sequence(KEYS, per_key);
    cluster.round_trip_time(1, Duration::from_millis(1500)).unwrap();
    let sending = send_numbered(&producer, &topic, &records);
    let slow_acks = async {
        // The broker has written the records but its acks come too late: the producer times out and retries.
        state_when(&watch, "a request to time out", |s| s.request_timeouts > 0).await;
        cluster.round_trip_time(1, Duration::ZERO).unwrap();
    };
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(30), futures::future::join(sending, slow_acks))
        .await
        .expect("records were not delivered within 30 s once acks were fast again");
    sent.expect("every record is delivered in the end");

    let read: Vec<ReadRecord> = read_topic(&private, &topic, records.len() + 1, Duration::from_secs(20))
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() != Some("warm-up"))
        .collect();
    let check = check_once_in_order(&read, KEYS, per_key);
    let by_key = sequences(&read);
    assert_eq!(by_key.keys().map(String::as_str).collect::<Vec<_>>(), KEYS, "every key's records were read back");
    for (key, (_, seqs)) in by_key {
        let report = &check.keys[&key];
        assert!(report.missing.is_empty(), "{key}: nothing is lost when acks are late: {report:?}");
        assert!(report.out_of_order.is_empty(), "{key}: first arrivals keep their order: {report:?} from {seqs:?}");
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        seqs.iter().for_each(|s| *counts.entry(*s).or_default() += 1);
        let duplicated: Vec<u32> = counts.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
        assert_eq!(report.duplicated, duplicated, "{key}: the checker names exactly the copies found in the log");
    }
    // Real Kafka drops the retried batch it already has (same producer id and sequence). The embedded broker
    // checks sequences only for transactional producers, so there the retry is written a second time.
    if can_grade(broker(), Capability::IdempotentDedupOnLostAck, test) {
        assert_once_in_order(&read, per_key, "after lost acks");
    }
}
