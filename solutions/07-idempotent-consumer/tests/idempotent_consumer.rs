//! Grades lesson 07: the atomic apply-once step in Redis, the expiry of processed ids, and the consumer loop
//! that commits after the effect, so duplicates and a crash before the commit leave the aggregates exact.
//!
//! Needs Redis (`REDIS_URL`, default 127.0.0.1:6379). Every test works under a namespace of its own, so the
//! tests can run in parallel against one Redis, and deletes its keys when it ends, passed or failed.
//!
//! Two tests cut the Redis connection on purpose, through a relay (`kit_testing::redis_link`), to stand for a
//! worker that crashes between two Redis commands or loses Redis in the middle of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kit::UserEvent;
use kit::events::sample_events;
use kit::redis::ClearOnDrop;
use kit_testing::redis_link::RedisLink;
use kit_testing::{broker, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use redis::AsyncCommands;
use solution_07::{
    AggregateStore, Aggregates, ConsumeReport, DEFAULT_PROCESSED_TTL, Outcome, Until, apply_event, consume,
    consumer_config, decode,
};

/// A store under a fresh namespace of the shared Redis, and the guard that deletes the namespace's keys when the
/// test ends (keep it alive until then: `let (mut store, _cleanup) = …`).
async fn fresh_store(ttl: Duration) -> (AggregateStore, ClearOnDrop) {
    let namespace = unique("lesson07");
    let cleanup = ClearOnDrop::new(&namespace).expect("a Redis to clean up");
    (AggregateStore::new(kit::redis::test_connection().await, namespace, ttl), cleanup)
}

/// A connection to the test Redis through `link`, which the test can cut.
async fn connection_through(link: &RedisLink) -> redis::aio::MultiplexedConnection {
    redis::Client::open(link.url())
        .expect("the relay's URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to Redis through the relay")
}

fn test_redis_url() -> String {
    kit::redis::Redis::resolve().expect("a Redis for the tests").url().to_string()
}

/// `events` with some of them repeated, the way redeliveries and producer retries repeat them.
fn with_duplicates(events: &[UserEvent], repeat: &[usize]) -> Vec<UserEvent> {
    let mut all = events.to_vec();
    all.extend(repeat.iter().map(|&i| events[i].clone()));
    all
}

#[tokio::test]
async fn duplicates_are_skipped_without_touching_state() {
    let (mut store, _cleanup) = fresh_store(DEFAULT_PROCESSED_TTL).await;
    let events = sample_events(7, 24, 3);
    let deliveries = with_duplicates(&events, &[0, 5, 5, 11, 23]);

    let mut outcomes = BTreeMap::<&str, usize>::new();
    for event in &deliveries {
        let outcome = apply_event(&mut store, event).await.expect("apply_event");
        *outcomes.entry(if outcome == Outcome::Applied { "applied" } else { "duplicate" }).or_default() += 1;
    }
    assert_eq!(outcomes.get("applied"), Some(&events.len()), "each distinct event is applied once");
    assert_eq!(outcomes.get("duplicate"), Some(&5), "each repeated delivery is reported as a duplicate");

    let stored = store.all_aggregates().await.unwrap();
    assert_eq!(stored, Aggregates::expected(&events), "Redis holds the aggregates of the distinct events, exactly");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("aggregates_of_distinct_events", stored));

    // Applying everything again changes nothing at all.
    for event in &events {
        assert_eq!(apply_event(&mut store, event).await.unwrap(), Outcome::Duplicate, "{} again", event.event_id);
    }
    assert_eq!(store.all_aggregates().await.unwrap(), stored, "a replay of processed events leaves state as it was");
}

#[tokio::test]
async fn processed_ids_expire_but_aggregates_do_not() {
    let ttl = Duration::from_secs(3600);
    let (mut store, _cleanup) = fresh_store(ttl).await;
    let purchase = UserEvent::purchase("user-1", 1_999);
    assert_eq!(apply_event(&mut store, &purchase).await.unwrap(), Outcome::Applied);

    let processed_key = store.processed_key(&purchase);
    let aggregates_key = store.aggregates_key("user-1");
    let connection = store.connection();
    let processed_ttl: i64 = connection.ttl(&processed_key).await.unwrap();
    assert!(
        processed_ttl > 0 && processed_ttl <= ttl.as_secs() as i64,
        "the processed-id key {processed_key} must expire within the store's TTL of {ttl:?} (TTL is {processed_ttl}; \
         -2 means the key is missing, -1 that it never expires)"
    );
    let aggregates_ttl: i64 = connection.ttl(&aggregates_key).await.unwrap();
    assert_eq!(aggregates_ttl, -1, "the aggregates hash {aggregates_key} is state: it must exist and never expire");
    assert_eq!(
        store.aggregates("user-1").await.unwrap(),
        Aggregates { clicks: 0, purchases: 1, purchase_total_cents: 1_999 },
        "a purchase counts once and adds its amount in cents"
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_apply_it_once() {
    // Eight workers receive the same purchase at the same moment (a rebalance can do that). Only an atomic
    // check-and-update lets exactly one of them apply it.
    let namespace = unique("lesson07");
    let _cleanup = ClearOnDrop::new(&namespace).expect("a Redis to clean up");
    let purchase = UserEvent::purchase("user-2", 4_250);
    let mut connections = Vec::new();
    for _ in 0..8 {
        connections.push(kit::redis::test_connection().await);
    }
    // Every worker waits at the barrier, so all of them deliver the event at the same moment.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(connections.len()));
    let mut workers = Vec::new();
    for connection in connections {
        let (namespace, purchase, start) = (namespace.clone(), purchase.clone(), start.clone());
        workers.push(tokio::spawn(async move {
            let mut store = AggregateStore::new(connection, namespace, DEFAULT_PROCESSED_TTL);
            start.wait().await;
            apply_event(&mut store, &purchase).await.expect("apply_event")
        }));
    }
    let mut applied = 0;
    for worker in workers {
        if worker.await.expect("worker task") == Outcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one of the concurrent deliveries applies the event");
    let mut store = AggregateStore::new(kit::redis::test_connection().await, namespace.clone(), DEFAULT_PROCESSED_TTL);
    assert_eq!(
        store.aggregates("user-2").await.unwrap(),
        Aggregates { clicks: 0, purchases: 1, purchase_total_cents: 4_250 }
    );
}

#[tokio::test]
async fn a_duplicate_leaves_the_processed_ids_expiry_as_it_was() {
    // A processed id is remembered for `processed_ttl` from its first delivery. A duplicate that renewed the mark
    // would keep an id that keeps being redelivered in Redis for good, and make its expiry depend on traffic. Time
    // passing is stood for by shortening the mark's expiry by hand, to 1000 s of the store's 3600 s: a duplicate
    // must leave it there, not put it back to 3600 s.
    let (mut store, _cleanup) = fresh_store(Duration::from_secs(3600)).await;
    let click = UserEvent::click("user-1");
    assert_eq!(apply_event(&mut store, &click).await.unwrap(), Outcome::Applied);
    let processed_key = store.processed_key(&click);
    let aged_ms: i64 = 1_000_000;
    let aged: bool = store.connection().pexpire(&processed_key, aged_ms).await.unwrap();
    assert!(aged, "the processed-id key {processed_key} must exist after a first delivery");

    assert_eq!(apply_event(&mut store, &click).await.unwrap(), Outcome::Duplicate);
    let left_ms: i64 = store.connection().pttl(&processed_key).await.unwrap();
    assert!(
        left_ms > 0 && left_ms <= aged_ms,
        "a duplicate changes nothing, not even when the processed id expires: {processed_key} had {aged_ms} ms \
         left before the duplicate and {left_ms} ms after (-2: the key is gone, -1: it never expires)"
    );
}

#[tokio::test]
async fn duplicates_and_a_crash_before_commit_still_count_each_event_once() {
    let broker = broker();
    let topic = unique("lesson07-user-events");
    let group = unique("lesson07-aggregator");
    broker.create_topic(&topic, 3).await.unwrap();
    let (mut store, _cleanup) = fresh_store(DEFAULT_PROCESSED_TTL).await;

    // The producer writes 30 distinct events and 5 copies (a retried batch, a replayed source).
    let events = sample_events(70, 30, 4);
    let deliveries = with_duplicates(&events, &[2, 9, 9, 17, 29]);
    kit::publish::publish_events(broker, &topic, &deliveries).await.unwrap();

    // A first worker applies 8 records and crashes before committing any of them.
    let mut applied_before_crash = 0;
    {
        let crashed: StreamConsumer = consumer_config(broker, &group).create().unwrap();
        crashed.subscribe(&[&topic]).unwrap();
        let mut stream = crashed.stream();
        for _ in 0..8 {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("the first worker got no record within 30 s")
                .expect("stream open")
                .expect("record");
            if apply_event(&mut store, &decode(&message).unwrap()).await.unwrap() == Outcome::Applied {
                applied_before_crash += 1;
            }
        }
    }

    // The group committed nothing, so the next worker is delivered every record again.
    // It runs the loop twice: the first run must stop after exactly the records it was asked for.
    let worker: StreamConsumer = consumer_config(broker, &group).create().unwrap();
    worker.subscribe(&[&topic]).unwrap();
    let mut report = ConsumeReport::default();
    for records in [10, deliveries.len() - 10] {
        let run = tokio::time::timeout(
            Duration::from_secs(60),
            consume(&worker, &mut store, Until { records, idle: Duration::from_secs(20) }),
        )
        .await
        .expect("consume did not return within 60 s")
        .expect("consume failed");
        assert_eq!(run.records, records, "consume handles `until.records` records, then returns");
        report.records += run.records;
        report.applied += run.applied;
        report.duplicates += run.duplicates;
    }
    // Every record is handled, and nothing more arrives: a run asking for one more record goes idle, which is a
    // normal end (the report of what it did: nothing), not an error.
    let idle = Duration::from_millis(500);
    let run = tokio::time::timeout(Duration::from_secs(30), consume(&worker, &mut store, Until { records: 1, idle }))
        .await
        .expect("consume did not return within 30 s although no record arrived for `until.idle` (500 ms)")
        .expect("going idle is a normal end of `consume`: it returns its report, not an error");
    assert_eq!(run, ConsumeReport::default(), "an idle run handled nothing");
    assert_eq!(
        report,
        ConsumeReport {
            records: deliveries.len(),
            applied: events.len() - applied_before_crash,
            duplicates: deliveries.len() - (events.len() - applied_before_crash),
        },
        "every record is read again after the crash; only the events not applied before it change state"
    );

    // Each record was committed after its effect: the group's position is the end of every partition.
    let committed = worker.committed(Duration::from_secs(10)).expect("committed offsets");
    let mut committed_offsets = BTreeMap::new();
    for element in committed.elements() {
        committed_offsets.insert(element.partition(), element.offset().to_raw().unwrap_or(-1));
    }
    drop(committed);
    for partition in 0..3 {
        let (_, high) = worker.fetch_watermarks(&topic, partition, Duration::from_secs(10)).unwrap();
        assert_eq!(
            committed_offsets.get(&partition).copied().filter(|o| *o >= 0).unwrap_or(0),
            high,
            "partition {partition}: the group must have committed every record it handled"
        );
    }
    drop(worker);

    let stored = store.all_aggregates().await.unwrap();
    assert_eq!(stored, Aggregates::expected(&events), "effectively once: the aggregates of the distinct events");
    let summary = serde_json::json!({
        "distinct_events": events.len(),
        "records_delivered_after_the_crash": report.records,
        "applied_in_total": applied_before_crash + report.applied,
        "aggregates": stored,
    });
    kit_testing::redact::settings()
        .bind(|| insta::assert_json_snapshot!("aggregates_after_duplicates_and_crash", summary));
}

#[tokio::test]
async fn a_crash_between_any_two_redis_commands_still_counts_the_event_once() {
    // A worker applies a purchase and crashes before Redis command 1, 2, 3, … of `apply_event`; another worker
    // is then delivered the same purchase (the first never committed it). Whichever command the crash fell
    // before, the purchase must count exactly once: marked-but-not-counted, or counted-but-not-marked, is wrong.
    let namespace = unique("lesson07");
    let _cleanup = ClearOnDrop::new(&namespace).expect("a Redis to clean up");
    let redis_url = test_redis_url();
    let mut completed = false;
    for commands_before_crash in 0..20u64 {
        let link = RedisLink::start(&redis_url).await;
        let mut crashing = AggregateStore::new(connection_through(&link).await, &namespace, DEFAULT_PROCESSED_TTL);
        let user = format!("user-crash-{commands_before_crash}");
        let purchase = UserEvent::purchase(&user, 1_000 + commands_before_crash);
        link.sever_after(commands_before_crash as usize);
        let first = tokio::time::timeout(Duration::from_secs(10), apply_event(&mut crashing, &purchase))
            .await
            .expect("apply_event did not return within 10 s of losing its connection");

        let mut redelivered =
            AggregateStore::new(kit::redis::test_connection().await, &namespace, DEFAULT_PROCESSED_TTL);
        let second = apply_event(&mut redelivered, &purchase).await.expect("apply_event on a healthy connection");
        assert_eq!(
            redelivered.aggregates(&user).await.unwrap(),
            Aggregates { clicks: 0, purchases: 1, purchase_total_cents: 1_000 + commands_before_crash },
            "a worker crashed after {commands_before_crash} Redis command(s) of apply_event (it returned {first:?}), \
             then the purchase was delivered again ({second:?}): it must count exactly once"
        );
        if first.is_ok() {
            completed = true; // apply_event needed no more commands than this: every crash point was tried
            break;
        }
    }
    assert!(completed, "apply_event never completed within 20 Redis commands");
}

#[tokio::test]
async fn losing_redis_mid_run_stops_the_loop_and_the_next_worker_loses_nothing() {
    let broker = broker();
    let topic = unique("lesson07-user-events");
    let group = unique("lesson07-aggregator");
    broker.create_topic(&topic, 3).await.unwrap();
    let (mut healthy, _cleanup) = fresh_store(DEFAULT_PROCESSED_TTL).await;
    let events = sample_events(71, 24, 4);
    kit::publish::publish_events(broker, &topic, &events).await.unwrap();

    // The first worker's Redis goes away after a few commands: some events are applied and committed, then a
    // command fails.
    let link = RedisLink::start(&test_redis_url()).await;
    let mut failing = AggregateStore::new(connection_through(&link).await, healthy.namespace(), DEFAULT_PROCESSED_TTL);
    link.sever_after(6);
    let first: StreamConsumer = consumer_config(broker, &group).create().unwrap();
    first.subscribe(&[&topic]).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        consume(&first, &mut failing, Until { records: events.len(), idle: Duration::from_secs(20) }),
    )
    .await
    .expect("consume did not return within 60 s");
    assert!(
        outcome.is_err(),
        "consume must stop with Redis's error when a command fails, not go on without it; it returned {outcome:?}"
    );
    assert!(link.forwarded() > 0, "the first worker never reached Redis");
    drop(first);

    // The next worker resumes from what the group committed. Every record committed had its effect, so the
    // records left are exactly the events not yet counted.
    let next: StreamConsumer = consumer_config(broker, &group).create().unwrap();
    next.subscribe(&[&topic]).unwrap();
    let committed: i64 = committed_offsets(&next, &topic).values().sum();
    let left = events.len() - usize::try_from(committed).unwrap();
    assert!(left > 0, "the first worker committed every record although Redis failed under it");
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        consume(&next, &mut healthy, Until { records: left, idle: Duration::from_secs(20) }),
    )
    .await
    .expect("consume did not return within 60 s")
    .expect("consume failed with a healthy Redis");
    assert_eq!(report.records, left, "the next worker reads every record the first one did not commit");
    drop(next);
    assert_eq!(
        healthy.all_aggregates().await.unwrap(),
        Aggregates::expected(&events),
        "an event whose record was committed before its effect reached Redis is lost for good"
    );
}

/// The group's committed offset of each partition of `topic` (0 where it committed nothing).
fn committed_offsets(consumer: &StreamConsumer, topic: &str) -> BTreeMap<i32, i64> {
    let mut wanted = rdkafka::TopicPartitionList::new();
    for partition in 0..3 {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).expect("committed offsets");
    let offsets =
        committed.elements().iter().map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1).max(0))).collect();
    drop(committed);
    offsets
}

#[tokio::test]
async fn a_record_that_is_not_an_event_stops_the_loop_uncommitted() {
    let broker = broker();
    let topic = unique("lesson07-user-events");
    let group = unique("lesson07-aggregator");
    broker.create_topic(&topic, 1).await.unwrap();
    let (mut store, _cleanup) = fresh_store(DEFAULT_PROCESSED_TTL).await;
    let events = sample_events(72, 6, 2);
    kit::publish::publish_events(broker, &topic, &events).await.unwrap();
    // After the valid events, one record that is not an event at all, at offset `events.len()`.
    let producer: rdkafka::producer::FutureProducer = broker.producer_config().create().unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic).key("user-1").payload("{not an event"),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("the bad record is written");
    let bad_offset = i64::try_from(events.len()).unwrap();

    let worker: StreamConsumer = consumer_config(broker, &group).create().unwrap();
    worker.subscribe(&[&topic]).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        consume(&worker, &mut store, Until { records: events.len() + 1, idle: Duration::from_secs(20) }),
    )
    .await
    .expect("consume did not return within 60 s");
    assert!(outcome.is_err(), "a record decode refuses ends the loop with that error; consume returned {outcome:?}");
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = worker.committed_offsets(wanted, Duration::from_secs(10)).expect("committed offsets");
    let committed_offset = committed.elements().first().and_then(|e| e.offset().to_raw());
    drop(committed);
    assert_eq!(
        committed_offset,
        Some(bad_offset),
        "every event before the bad record is committed, and the bad record is not: the group's offset is the bad \
         record's ({bad_offset})"
    );
    drop(worker);
    assert_eq!(store.all_aggregates().await.unwrap(), Aggregates::expected(&events), "the valid events count once");
}
