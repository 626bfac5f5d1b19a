//! Grades lesson 03: keyed events keep one partition and their order per user; unkeyed events scatter; the
//! per-partition counts and each user's layout are read from what the topic really holds; and the sends are in
//! flight together, counted as Produce requests by a `kit::FaultProxy` in front of the broker and as records held by
//! a producer that cannot deliver them; and a delivery that fails is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kit::events::sample_events;
use kit_testing::{ReadRecord, broker, read_topic, unique};
use rdkafka::producer::{FutureProducer, Producer};
use serde::Serialize;
use lesson_03::{Keying, Placement, partition_counts, produce, producer_config, user_layout};

const EVENTS: usize = 300;
const USERS: u32 = 6;

/// Produces `EVENTS` sample events to a fresh 3-partition topic and returns the reports and the topic's content.
async fn produce_and_read_back(keying: Keying) -> (Vec<Placement>, Vec<ReadRecord>) {
    let broker = broker();
    let topic = unique("lesson03-user-events");
    broker.create_topic(&topic, 3).await.unwrap();
    let producer: FutureProducer = producer_config(broker).create().unwrap();
    let events = sample_events(3, EVENTS, USERS);
    let placements = tokio::time::timeout(Duration::from_secs(30), produce(&producer, &topic, &events, keying))
        .await
        .expect("no delivery reports within 30 s")
        .expect("delivery failed");
    assert_eq!(placements.len(), EVENTS, "one placement per event");
    let records = read_topic(broker, &topic, EVENTS, Duration::from_secs(30)).await;
    assert_eq!(records.len(), EVENTS, "the topic holds every event exactly once");

    // The placements must be the delivery reports, in the order of the events: check them against the log.
    let by_position: BTreeMap<(i32, i64), &ReadRecord> = records.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (event, placement) in events.iter().zip(&placements) {
        let record = by_position.get(&(placement.partition, placement.offset)).unwrap_or_else(|| {
            panic!("nothing at partition {}, offset {} as reported", placement.partition, placement.offset)
        });
        let stored: kit::UserEvent = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(&stored, event, "the placement of an event points at that event");
        assert_eq!(placement.user_id, event.user_id);
    }
    (placements, records)
}

/// What the snapshot shows of a keyed run: the counts per partition and which users each partition serves.
#[derive(Serialize)]
struct Distribution {
    events_per_partition: BTreeMap<i32, usize>,
    users_per_partition: BTreeMap<i32, BTreeSet<String>>,
}

#[tokio::test]
async fn keyed_events_keep_each_user_in_one_partition_in_order() {
    let (placements, records) = produce_and_read_back(Keying::ByUser).await;
    for record in &records {
        let event: kit::UserEvent = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(record.key.as_deref(), Some(event.user_id.as_str()), "every record is keyed by its user");
    }

    let layout = user_layout(&records).unwrap();
    assert_eq!(layout.len(), USERS as usize, "one layout per user");
    assert_eq!(layout.values().map(|l| l.events).sum::<usize>(), EVENTS, "the layouts account for every event");
    for (user, l) in &layout {
        assert_eq!(l.partitions.len(), 1, "{user}'s events must all be in one partition, found {:?}", l.partitions);
        assert!(l.in_order, "{user}'s events must be in the order the user acted");
    }

    let counts = partition_counts(&placements);
    let actual: BTreeMap<i32, usize> = records.iter().fold(BTreeMap::new(), |mut acc, r| {
        *acc.entry(r.partition).or_default() += 1;
        acc
    });
    assert_eq!(counts, actual, "the counts per partition are those of the topic");

    let mut users_per_partition: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for (user, l) in layout {
        for partition in l.partitions {
            users_per_partition.entry(partition).or_default().insert(user.clone());
        }
    }
    // The key decides the partition, so this is the same on every run and every broker.
    let distribution = Distribution { events_per_partition: counts, users_per_partition };
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("keyed_distribution", distribution));
}

#[tokio::test]
async fn without_a_key_a_users_events_scatter_and_lose_their_order() {
    let (placements, records) = produce_and_read_back(Keying::None).await;
    assert!(records.iter().all(|r| r.key.is_none()), "unkeyed records carry no key");

    let counts = partition_counts(&placements);
    assert_eq!(counts.values().sum::<usize>(), EVENTS, "the counts add up to every event");
    assert_eq!(counts.len(), 3, "without a key, records still reach every partition: {counts:?}");

    let layout = user_layout(&records).unwrap();
    assert_eq!(layout.values().map(|l| l.events).sum::<usize>(), EVENTS, "the layouts account for every event");
    let split: Vec<&String> = layout.iter().filter(|(_, l)| l.partitions.len() > 1).map(|(user, _)| user).collect();
    assert!(!split.is_empty(), "without a key, some user's events must land in several partitions");
    for user in split {
        assert!(!layout[user].in_order, "{user}'s events are split over partitions: they have no single order");
    }
}

/// How many events the batching test sends, and how long the producer waits to fill a batch there.
const BATCHED_EVENTS: usize = 40;
const BATCH_LINGER_MS: &str = "50";

#[tokio::test]
async fn the_sends_are_in_flight_together_so_the_producer_batches_them() {
    // The proxy relays everything to the broker and counts the Produce requests the producer makes. A sender that
    // awaits each report before starting the next send hands librdkafka one record at a time, so each record
    // leaves in a request of its own: BATCHED_EVENTS requests. Sends started together are all queued before the
    // first batch leaves (the producer lingers 50 ms to fill a batch, and queueing 40 records takes microseconds),
    // so they go in about one request per partition: 3 here, a few more if a batch is retried or the machine
    // stalls the test past the linger. The bound, a quarter of the records (10), is far from both.
    let broker = broker();
    let topic = unique("lesson03-batched");
    broker.create_topic(&topic, 3).await.unwrap();
    let proxy = kit::FaultProxy::start(broker.bootstrap_servers()).expect("fault proxy");
    let mut config = producer_config(broker);
    config.set("bootstrap.servers", proxy.bootstrap_servers()).set("linger.ms", BATCH_LINGER_MS);
    let producer: FutureProducer = config.create().unwrap();
    let events = sample_events(13, BATCHED_EVENTS, USERS);
    let placements = tokio::time::timeout(Duration::from_secs(30), produce(&producer, &topic, &events, Keying::ByUser))
        .await
        .expect("no delivery reports within 30 s")
        .expect("delivery failed");
    assert_eq!(placements.len(), BATCHED_EVENTS, "one placement per event");

    let requests = proxy.stats().produce_requests;
    assert!(requests >= 1, "the records went through the proxy: {:?}", proxy.stats());
    assert!(
        requests <= BATCHED_EVENTS as u64 / 4,
        "{BATCHED_EVENTS} events took {requests} Produce requests: the sends waited for one another (one record per \
         request) instead of being started together so the producer could batch them"
    );
}

/// An address where nothing listens (port 1 refuses every connection): a producer aimed at it keeps every record
/// it is handed until `message.timeout.ms` fails it.
const NOWHERE: &str = "127.0.0.1:1";

/// The lesson's producer, aimed at `NOWHERE`, failing an undelivered record after `message_timeout_ms`.
fn producer_to_nowhere(message_timeout_ms: &str) -> FutureProducer {
    let mut config = producer_config(broker());
    config.set("bootstrap.servers", NOWHERE).set("message.timeout.ms", message_timeout_ms);
    config.create().unwrap_or_else(|e| panic!("librdkafka refuses the config: {e}"))
}

/// How many events the one-poll test sends: more than any window of sends a producer could be fed in.
const STARTED_EVENTS: usize = 100;

#[tokio::test]
async fn every_send_is_started_before_any_report_is_awaited() {
    // No record can leave this producer, so none is reported while the test looks: after one poll of `produce`, the
    // producer holds (`in_flight_count`) exactly the records whose sends have been started. Started together, that
    // is every event. Sends awaited one by one, or in windows, have started one or one window; sends left to spawned
    // tasks have started none (this runtime has one thread, and the test has not let them run). The count may also
    // include an error event about the refused connection, hence `>=`.
    let producer = producer_to_nowhere("30000");
    let events = sample_events(14, STARTED_EVENTS, USERS);
    let topic = unique("lesson03-nowhere");
    let mut sending = std::pin::pin!(produce(&producer, &topic, &events, Keying::ByUser));
    let first_poll = futures::poll!(sending.as_mut());
    assert!(first_poll.is_pending(), "nothing can be delivered yet, so produce cannot be done: {first_poll:?}");
    let started = producer.in_flight_count();
    assert!(
        started >= STARTED_EVENTS as i32,
        "after its first poll, produce had handed the producer {started} of {STARTED_EVENTS} records: every send must \
         be started, in the order of the events, before any delivery report is awaited"
    );
}

#[tokio::test]
async fn a_delivery_that_fails_is_an_error() {
    // Nothing listens at NOWHERE and the producer gives a record 2 s: every delivery fails, with no partition or
    // offset to report.
    let producer = producer_to_nowhere("2000");
    let events = sample_events(15, 3, USERS);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        produce(&producer, &unique("lesson03-nowhere"), &events, Keying::ByUser),
    )
    .await
    .expect("produce did not return within 30 s of deliveries that cannot succeed");
    result.expect_err("nothing listens at 127.0.0.1:1: no event was delivered, so there is no placement to report");
}

#[test]
fn a_partition_counts_the_placements_that_landed_in_it_whatever_their_offsets() {
    // A topic written before this run: its events landed far from offset 0, and not at consecutive offsets.
    let at = |user: u32, partition: i32, offset: i64| Placement { user_id: format!("user-{user}"), partition, offset };
    let placements = [at(1, 0, 100), at(2, 2, 7), at(1, 0, 101), at(3, 1, 40), at(3, 1, 45)];
    assert_eq!(
        partition_counts(&placements),
        BTreeMap::from([(0, 2), (1, 2), (2, 1)]),
        "two placements in partition 0, two in 1, one in 2: a count of placements, not a position in the log"
    );
}

/// A record at `partition`/`offset` holding `user`'s sample event number `nth` (later `nth`, later timestamp).
fn record(partition: i32, offset: i64, user: u32, nth: usize) -> ReadRecord {
    let mut event = sample_events(9, 10, 1).remove(nth);
    event.user_id = format!("user-{user}");
    ReadRecord { partition, offset, key: None, payload: Some(event.to_json()), headers: BTreeMap::new() }
}

#[test]
fn a_layout_is_in_order_only_in_one_partition_with_time_moving_forward() {
    let records = vec![
        // user-1: one partition, in order.
        record(0, 0, 1, 0),
        record(0, 1, 1, 1),
        record(0, 2, 1, 2),
        // user-2: one partition, but the log holds a later action before an earlier one.
        record(1, 0, 2, 3),
        record(1, 1, 2, 1),
        // user-3: time moves forward, but over two partitions.
        record(1, 2, 3, 0),
        record(2, 0, 3, 5),
    ];
    let layout = user_layout(&records).unwrap();
    let summary: BTreeMap<&str, (usize, Vec<i32>, bool)> = layout
        .iter()
        .map(|(user, l)| (user.as_str(), (l.events, l.partitions.iter().copied().collect(), l.in_order)))
        .collect();
    assert_eq!(
        summary,
        BTreeMap::from([
            ("user-1", (3, vec![0], true)),
            ("user-2", (2, vec![1], false)),
            ("user-3", (2, vec![1, 2], false)),
        ])
    );

    let mut broken = records.clone();
    broken[4].payload = Some("not json".into());
    let error = user_layout(&broken).expect_err("a payload that is not an event is an error").to_string();
    assert!(error.contains("partition 1") && error.contains("offset 1"), "the error names the record: {error}");
}

#[test]
fn equal_timestamps_are_in_order_since_time_did_not_go_backwards() {
    let mut same_moment = vec![record(0, 0, 1, 2), record(0, 1, 1, 2)];
    // Two different actions of the user, at the same instant.
    let mut second: kit::UserEvent = serde_json::from_str(same_moment[1].payload.as_deref().unwrap()).unwrap();
    second.event_id = uuid::Uuid::from_u128(0x0303);
    same_moment[1].payload = Some(second.to_json());
    let layout = user_layout(&same_moment).unwrap();
    assert_eq!(layout["user-1"].events, 2);
    assert!(layout["user-1"].in_order, "two events with the same timestamp: time did not go backwards, so in order");
}

#[test]
fn log_order_is_by_partition_then_offset_whatever_order_the_records_come_in() {
    // One partition's records handed over with their offsets reversed: the log holds the earlier action first.
    let in_log_order = vec![record(0, 1, 1, 4), record(0, 0, 1, 1)];
    let layout = user_layout(&in_log_order).unwrap();
    assert!(layout["user-1"].in_order, "offset 0 holds the earlier action, offset 1 the later: in order");

    // And the other way round: the log holds the later action first, however the records were handed over.
    let out_of_log_order = vec![record(0, 1, 1, 1), record(0, 0, 1, 4)];
    let layout = user_layout(&out_of_log_order).unwrap();
    assert!(!layout["user-1"].in_order, "offset 0 holds the later action, offset 1 the earlier: out of order");
}

#[test]
fn a_record_without_a_payload_is_an_error_naming_its_place() {
    let mut records = vec![record(0, 0, 1, 0), record(2, 7, 1, 1)];
    records[1].payload = None;
    let error = user_layout(&records).expect_err("a record with no payload is not an event: an error").to_string();
    assert!(error.contains("partition 2") && error.contains("offset 7"), "the error names the record: {error}");
}

#[test]
fn every_record_counts_even_a_second_copy_of_an_event() {
    // A retry without idempotence can write one event twice: the topic then holds two records of it.
    let records = vec![record(0, 0, 1, 0), record(0, 1, 1, 1), record(0, 2, 1, 1)];
    let layout = user_layout(&records).unwrap();
    assert_eq!(layout["user-1"].events, 3, "three records of user-1, one of them a second copy: each record counts");
}
