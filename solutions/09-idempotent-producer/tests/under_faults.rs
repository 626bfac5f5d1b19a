//! Grades lesson 09 against a broker: the producer's configuration and the id the broker gives it, that the
//! records are sent without waiting for one another (all handed to the producer at the first poll, Produce requests
//! counted by `kit::FaultProxy`), that a record the producer refuses (queue full) is an error, then the numbered
//! sequence under injected faults (request errors, many refusals in a row, a broker outage, lost acks, acks that
//! arrive too late), read back and checked for "every record once, in order, per partition".
//!
//! Two kinds of fault. Refused requests, lost acks and late acks come from `kit::FaultProxy`, between the
//! producer and whichever broker the tests run against, real Kafka included: that is where "nothing lost" and
//! "a retried batch is written once" are graded in full, since the embedded broker does not check an
//! idempotent producer's sequence numbers. Each test has its own proxy, so its faults hit its producer only.
//! A broker outage takes a whole broker down, so that test starts a private cluster (`kit::outage`), and the
//! outage never hits the other tests, which share `kit_testing::broker()`: an in-process mock next to the
//! embedded broker, Apache Kafka on this machine's JVM (killed and restarted on its data) next to real Kafka.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::outage::OutageCluster;
use kit::{Capability, FaultProxy};
use kit_testing::{ReadRecord, broker, can_grade, read_topic, unique, wait_until};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaRespErr;
use solution_09::{
    Delivery, Numbered, ProducerState, WARM_UP_KEY, Watch, check_once_in_order, numbered_sequence, producer_config,
    send_numbered, warm_up,
};

const KEYS: &[&str] = &["user-1", "user-2", "user-3"];

/// The learner's producer, watched through its statistics. `tuning` is the test's own conditions on top (small
/// batches, so many requests are in flight and a fault hits some of them but not others).
fn watched_producer(bootstrap_servers: &str, tuning: &[(&str, &str)]) -> (FutureProducer<Watch>, Watch) {
    let mut config = producer_config(bootstrap_servers);
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
    let (producer, watch) = watched_producer(broker.bootstrap_servers(), &[]);
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
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("producer_identity", identity));
}

#[tokio::test]
async fn each_delivery_report_says_where_the_record_is() {
    let broker = broker();
    let topic = unique("lesson09-deliveries");
    broker.create_topic(&topic, 3).await.unwrap();
    let (producer, _watch) = watched_producer(broker.bootstrap_servers(), SMALL_BATCHES);
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
async fn records_are_sent_without_waiting_for_earlier_reports() {
    // The proxy relays everything to the broker and counts the producer's Produce requests. A sender that awaits
    // each delivery report before sending the next record can only ever hand librdkafka one record: each leaves in
    // a request of its own, 30 requests for 30 records. Records sent without waiting are all queued before the
    // first batch leaves (the producer lingers 50 ms to fill one, and queueing 30 records takes microseconds), so
    // on one partition they go in one request, a few if a batch is retried or the machine stalls the test past
    // the linger. The bound, a quarter of the records (7), is far from both.
    let topic = unique("lesson09-not-waiting");
    broker().create_topic(&topic, 1).await.expect("topic");
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let batching = [("linger.ms", "50"), ("batch.num.messages", "10000")];
    let (producer, _watch) = watched_producer(proxy.bootstrap_servers(), &batching);
    let records = numbered_sequence(KEYS, 10);
    let deliveries = tokio::time::timeout(Duration::from_secs(30), send_numbered(&producer, &topic, &records))
        .await
        .expect("no delivery reports within 30 s")
        .expect("delivery failed");
    assert_eq!(deliveries.len(), records.len(), "one delivery report per record");

    let requests = proxy.stats().produce_requests;
    assert!(requests >= 1, "the records went through the proxy: {:?}", proxy.stats());
    assert!(
        requests <= records.len() as u64 / 4,
        "{} records took {requests} Produce requests: each record waited for the report of the one before it, so \
         only one was ever in flight",
        records.len()
    );
}

/// An address where nothing listens (port 1 refuses every connection): a producer aimed at it keeps every record
/// it is handed until `message.timeout.ms` fails it.
const NOWHERE: &str = "127.0.0.1:1";

#[tokio::test]
async fn every_record_is_handed_to_the_producer_before_any_report_is_awaited() {
    // No record can leave this producer, so none is reported while the test looks: after one poll of
    // `send_numbered`, the producer holds (`in_flight_count`) exactly the records already handed to it. Sent without
    // waiting, that is every record. Sends awaited one by one, or in windows of a few reports, have handed it one
    // record or one window. The count may also include an error event about the refused connection, hence `>=`.
    let producer: FutureProducer =
        producer_config(NOWHERE).create().unwrap_or_else(|e| panic!("librdkafka refuses the config: {e}"));
    let records = numbered_sequence(KEYS, 20);
    let topic = unique("lesson09-nowhere");
    let mut sending = std::pin::pin!(send_numbered(&producer, &topic, &records));
    let first_poll = futures::poll!(sending.as_mut());
    assert!(first_poll.is_pending(), "nothing can be delivered yet, so send_numbered cannot be done: {first_poll:?}");
    let held = producer.in_flight_count();
    assert!(
        held >= records.len() as i32,
        "after its first poll, send_numbered had handed the producer {held} of {} records: every record must be \
         handed over before any delivery report is awaited",
        records.len()
    );
}

#[tokio::test]
async fn a_record_the_producer_refuses_to_take_is_an_error_naming_it() {
    // The producer's local queue holds 5 records, and the proxy holds the broker's acks back for 2 s, so the 5 stay
    // in it while the others are handed over: the producer refuses them (queue full). Returning the 5 reports as
    // if that were all would lose the other records without a word.
    let tuning = [("queue.buffering.max.messages", "5")];
    let (proxy, topic, producer, _watch) = behind_a_proxy("lesson09-queue-full", 1, &tuning).await;
    proxy.delay_produce_acks(Duration::from_secs(2));
    let records: Vec<Numbered> = (100..112).map(|seq| Numbered { key: "user-7".to_string(), seq }).collect();
    let result = tokio::time::timeout(Duration::from_secs(30), send_numbered(&producer, &topic, &records))
        .await
        .expect("send_numbered did not return within 30 s of a full queue");
    let error = match result {
        Ok(deliveries) => panic!(
            "the producer's queue holds 5 records and no ack comes back for 2 s: handed all {} records without \
             waiting, it refuses some, yet send_numbered returned Ok with {} delivery reports. A record the producer \
             refuses is an error, never skipped (and records do not wait for earlier reports)",
            records.len(),
            deliveries.len()
        ),
        Err(error) => error,
    };
    // The warm-up record may still hold a place in the queue for a moment: the first refused record is #104 or #105.
    let text = format!("{error:#}");
    let names_a_refused_record = records[4..].iter().any(|r| text.contains(&r.seq.to_string()));
    assert!(
        text.contains("user-7") && names_a_refused_record,
        "the error must name a record the producer refused (key user-7, seq 104 or later), got: {text}"
    );
}

/// How many Produce requests in a row the proxy refuses in `a_record_refused_many_times_is_retried_until_delivered`.
/// At most 5 requests are in flight, and the batch holding the first record goes first in every round of retries,
/// so it is refused at least 30 / 5 = 6 times: more than a count of 5 retries allows, far less than the 30 s bound.
const REFUSED_IN_A_ROW: usize = 30;

#[tokio::test]
async fn a_record_refused_many_times_is_retried_until_delivered() {
    let test = "a_record_refused_many_times_is_retried_until_delivered";
    // Retries 10 ms to 50 ms apart, so 30 refusals take about a second: what must end the retrying is the learner's
    // message.timeout.ms (30 s), never a count of retries.
    let tuning = [("retry.backoff.ms", "10"), ("retry.backoff.max.ms", "50")];
    let (proxy, topic, producer, _watch) = behind_a_proxy("lesson09-refused-in-a-row", 1, &tuning).await;
    // A partition whose in-sync replicas are too few refuses every write until a replica catches up:
    // NOT_ENOUGH_REPLICAS, retriable, and each refusal counts as a retry of the batch.
    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; REFUSED_IN_A_ROW]);
    let per_key = 5;
    let records = numbered_sequence(KEYS, per_key);
    let sent = tokio::time::timeout(Duration::from_secs(30), send_numbered(&producer, &topic, &records))
        .await
        .unwrap_or_else(|_| panic!("records were not delivered within 30 s ({:?})", proxy.stats()));
    let deliveries = sent.unwrap_or_else(|e| {
        panic!(
            "a record refused {REFUSED_IN_A_ROW} times in a row, for a second or two, failed: {e:#}. Retrying must go on \
             until message.timeout.ms, not stop after a count of retries ({:?})",
            proxy.stats()
        )
    });
    assert_eq!(deliveries.len(), records.len(), "one delivery report per record");
    assert_eq!(
        proxy.stats().requests_failed,
        REFUSED_IN_A_ROW as u64,
        "{REFUSED_IN_A_ROW} requests were refused: {:?}",
        proxy.stats()
    );
    let read: Vec<ReadRecord> = read_topic(broker(), &topic, records.len() + 1, Duration::from_secs(5))
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() != Some(WARM_UP_KEY))
        .collect();
    let by_key = sequences(&read);
    assert_eq!(by_key.keys().map(String::as_str).collect::<Vec<_>>(), KEYS, "every key's records were read back");
    for (key, (_, seqs)) in by_key {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{key}: retries must not reorder records");
        sorted.dedup();
        assert_eq!(sorted.len(), seqs.len(), "{key}: retries must not write a record twice");
    }
    // The last refusal may hit the first of several batches in flight while the next one goes through: a broker
    // that checks sequence numbers rejects that one and the producer resends both; the embedded broker writes it
    // (see request_errors_are_retried_without_duplicates_or_reordering).
    if can_grade(broker(), Capability::IdempotentSequenceChecks, test) {
        assert_once_in_order(&read, per_key, "after refusals in a row");
    }
}

#[tokio::test]
async fn request_errors_are_retried_without_duplicates_or_reordering() {
    let test = "request_errors_are_retried_without_duplicates_or_reordering";
    let (proxy, topic, producer, _watch) = behind_a_proxy("lesson09-request-errors", 3, SMALL_BATCHES).await;
    // Retriable errors a real cluster answers during a leader election or with a slow replica, every other
    // request: a failed batch is retried while the next one, already in flight, succeeds. Without idempotence
    // the retried batch lands after it (measured on the embedded broker: reordered in every trial).
    proxy.fail_every_other_produce_request(9);

    let per_key = 30;
    let records = numbered_sequence(KEYS, per_key);
    // A missing record is waited for 5 s, the time the others take to arrive many times over.
    let read = send_through_fault(&proxy, &topic, &producer, 3, &records, async {}, Duration::from_secs(5)).await;
    assert_eq!(proxy.stats().requests_failed, 9, "nine requests were refused: {:?}", proxy.stats());
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
    // so the failed one, retried, would land after it; to keep the order the producer gives it up, and on the
    // embedded broker a few records may go missing although every delivery report says "delivered".
    if can_grade(broker(), Capability::IdempotentSequenceChecks, test) {
        assert_once_in_order(&read, per_key, "under request errors");
    }
}

#[tokio::test]
async fn a_broker_outage_is_ridden_out() {
    let test = "a_broker_outage_is_ridden_out";
    let Some(cluster) = OutageCluster::start(broker(), test).await else {
        return;
    };
    let private = cluster.broker();
    let topic = unique("lesson09-numbered");
    private.create_topic(&topic, 3).await.expect("topic");
    // The lesson's own bound (message.timeout.ms, graded above) would end the retries 30 s into the outage; a
    // restarted JVM on a loaded machine can take 20 s before it answers. The outage gets a bound of its own, so
    // the deadline below is the one that applies.
    let outage_tuning = [SMALL_BATCHES, &[("message.timeout.ms", "90000")]].concat();
    let (producer, watch) = watched_producer(private.bootstrap_servers(), &outage_tuning);
    let per_key = 20;
    let records = numbered_sequence(KEYS, per_key);
    let (before, after) = records.split_at(records.len() / 2);
    send_numbered(&producer, &topic, before).await.expect("the first half is delivered while the broker is up");

    cluster.broker_down().await.unwrap();
    let sending = send_numbered(&producer, &topic, after);
    let outage = async {
        // Bring the broker back only once the producer has noticed it is gone.
        state_when(&watch, "the producer to notice the outage", |s| s.brokers_up == 0).await;
        cluster.broker_up().await.unwrap();
    };
    // A deadline, not a timing: a restarted JVM recovers its log, and the producer reconnects after a backoff.
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(85), futures::future::join(sending, outage))
        .await
        .expect("the second half was not delivered within 85 s of the outage");
    sent.expect("records sent during the outage are delivered when the broker is back");

    let read = read_topic(private, &topic, records.len(), Duration::from_secs(20)).await;
    assert_once_in_order(&read, per_key, "across a broker outage");
    let check = check_once_in_order(&read, KEYS, per_key);
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("broker_outage", check));
}

/// Sends the numbered sequence through `proxy` while `fault` is under way, then reads the topic back from the
/// broker itself. The warm-up records (one per partition, sent before any fault) are left out of what is returned.
async fn send_through_fault(
    proxy: &FaultProxy,
    topic: &str,
    producer: &FutureProducer<Watch>,
    partitions: i32,
    records: &[Numbered],
    fault: impl std::future::Future<Output = ()>,
    missing_wait: Duration,
) -> Vec<ReadRecord> {
    let sending = send_numbered(producer, topic, records);
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(30), futures::future::join(sending, fault))
        .await
        .unwrap_or_else(|_| panic!("records were not delivered within 30 s of the fault ({:?})", proxy.stats()));
    sent.expect("every record is delivered in the end: the producer retries what it did not hear back about");
    read_topic(broker(), topic, records.len() + partitions as usize, missing_wait)
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() != Some(WARM_UP_KEY))
        .collect()
}

/// What every broker shows after lost or late acks: nothing missing, first arrivals in order, and the learner's
/// checker naming exactly the copies in the log. Whether there are copies at all depends on the broker checking
/// sequence numbers, graded where it does.
fn assert_retried_without_loss(read: &[ReadRecord], per_key: u32, test: &str, situation: &str) {
    let check = check_once_in_order(read, KEYS, per_key);
    let by_key = sequences(read);
    assert_eq!(by_key.keys().map(String::as_str).collect::<Vec<_>>(), KEYS, "every key's records were read back");
    for (key, (_, seqs)) in by_key {
        let report = &check.keys[&key];
        assert!(report.missing.is_empty(), "{key}: nothing is lost {situation}: {report:?}");
        assert!(report.out_of_order.is_empty(), "{key}: first arrivals keep their order: {report:?} from {seqs:?}");
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        seqs.iter().for_each(|s| *counts.entry(*s).or_default() += 1);
        let duplicated: Vec<u32> = counts.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
        assert_eq!(report.duplicated, duplicated, "{key}: the checker names exactly the copies found in the log");
    }
    // Real Kafka acknowledges a retried batch it already has (same producer id, epoch and sequence) without
    // writing it again. The embedded broker checks sequences only for transactional producers, so there the
    // retry is written a second time.
    if can_grade(broker(), Capability::IdempotentSequenceChecks, test) {
        assert_once_in_order(read, per_key, situation);
    }
}

/// A proxy in front of the shared broker and a fresh topic with a warm-up record in each partition, so the
/// producer has its id, its connections and its sequence numbers before the fault starts (see `warm_up`). The faults happen in the proxy, so
/// they hit this test's producer only, on every kind of broker.
async fn behind_a_proxy(
    prefix: &str,
    partitions: i32,
    tuning: &[(&str, &str)],
) -> (FaultProxy, String, FutureProducer<Watch>, Watch) {
    let topic = unique(prefix);
    broker().create_topic(&topic, partitions).await.expect("topic");
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let (producer, watch) = watched_producer(proxy.bootstrap_servers(), tuning);
    warm_up(&producer, &topic, partitions).await.expect("warm-up records");
    (proxy, topic, producer, watch)
}

#[tokio::test]
async fn a_lost_ack_is_retried_and_written_once() {
    let test = "a_lost_ack_is_retried_and_written_once";
    let (proxy, topic, producer, _watch) = behind_a_proxy("lesson09-lost-ack", 1, SMALL_BATCHES).await;
    let per_key = 10;
    let records = numbered_sequence(KEYS, per_key);
    // The broker writes the next three batches, but their acks never reach the producer: the connection drops
    // instead, as when a network path fails right after the broker answered.
    proxy.lose_produce_acks(3);
    let read = send_through_fault(&proxy, &topic, &producer, 1, &records, async {}, Duration::from_secs(20)).await;
    assert_eq!(proxy.stats().acks_lost, 3, "three acks were lost on the way: {:?}", proxy.stats());
    assert_retried_without_loss(&read, per_key, test, "after lost acks");
}

#[tokio::test]
async fn late_acks_are_retried_and_written_once() {
    let test = "late_acks_are_retried_and_written_once";
    // The producer gives up waiting for an ack after 1 s; the proxy holds every ack back for 3 s. librdkafka scans
    // for timed-out requests once a second, so an ack only a little late (1.5 s) sometimes slipped in before the
    // scan under load and no request timed out; 3 s is late for any scan.
    let tuning = [("request.timeout.ms", "1000"), ("socket.timeout.ms", "1000"), ("linger.ms", "0")];
    let (proxy, topic, producer, watch) = behind_a_proxy("lesson09-late-ack", 1, &tuning).await;
    let per_key = 10;
    let records = numbered_sequence(KEYS, per_key);
    proxy.delay_produce_acks(Duration::from_secs(3));
    let slow_acks = async {
        // The broker has written the records but its acks come too late: the producer times out and retries.
        state_when(&watch, "a request to time out", |s| s.request_timeouts > 0).await;
        proxy.delay_produce_acks(Duration::ZERO);
    };
    let read = send_through_fault(&proxy, &topic, &producer, 1, &records, slow_acks, Duration::from_secs(20)).await;
    assert!(proxy.stats().acks_delayed > 0, "{:?}", proxy.stats());
    assert_retried_without_loss(&read, per_key, test, "after late acks");
}

#[tokio::test]
async fn a_record_that_cannot_be_delivered_is_an_error_naming_it() {
    // Nothing listens on port 1: the record cannot be delivered, and the lowered bound makes it fail in 2 s.
    let mut config = producer_config("127.0.0.1:1");
    config.set("message.timeout.ms", "2000").set("delivery.timeout.ms", "2000");
    let producer: FutureProducer = config.create().unwrap_or_else(|e| panic!("librdkafka refuses the config: {e}"));
    let records = [Numbered { key: "user-7".to_string(), seq: 41 }];
    let result =
        tokio::time::timeout(Duration::from_secs(30), send_numbered(&producer, &unique("lesson09-nowhere"), &records))
            .await
            .expect("send_numbered did not return within 30 s of a record that cannot be delivered");
    let error = result.expect_err("nothing listens at 127.0.0.1:1: the record cannot have been delivered");
    let text = format!("{error:#}");
    assert!(
        text.contains("user-7") && text.contains("41"),
        "the error must name the record that failed (key user-7, seq 41), got: {text}"
    );
}
