//! Grades lesson 11's write side on a broker: the single writer's `handle` (version check, numbering, snapshots
//! every N events in the command's transaction, an order left as it was when the append fails) and `restore`
//! through recovery from the log — including the corrupted log two writers for one order leave behind, and, on
//! real Kafka, the compaction that keeps one snapshot per order.
//!
//! librdkafka's transactional calls block: the tests run on tokio's multi-threaded runtime and call the writer
//! through `blocking`, on tokio's blocking pool.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::fault_proxy::TxnRequest;
use kit::{Capability, FaultProxy};
use kit_testing::{broker, can_grade, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use serde::Serialize;
use solution_11::codec::{Snapshot, decode_event, decode_snapshot};
use solution_11::store::{
    LoadError, OrderWriter, StoreTopics, partition_of, producer_config, read_log, recover, restore,
};
use solution_11::{Command, Event, HandleError, OrderState, Status, StoredEvent, replay};

const PARTITIONS: i32 = 3;

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A fresh pair of store topics (the snapshots one compacted on real Kafka, with `snapshot_configs` added).
async fn store_topics(snapshot_configs: &[(&str, String)]) -> StoreTopics {
    let topics = StoreTopics {
        events: unique("lesson11-events"),
        snapshots: unique("lesson11-snapshots"),
        partitions: PARTITIONS,
    };
    broker().create_topic(&topics.events, PARTITIONS).await.expect("events topic");
    let mut configs = vec![("cleanup.policy", "compact".to_string())];
    configs.extend(snapshot_configs.iter().cloned());
    broker().create_topic_with(&topics.snapshots, PARTITIONS, &configs).await.expect("snapshots topic");
    topics
}

/// A writer of every partition at `bootstrap` (the broker's or a proxy's) with nothing known yet, shared with
/// blocking closures.
async fn writer(bootstrap: &str, topics: &StoreTopics, snapshot_every: u64) -> Arc<Mutex<OrderWriter>> {
    owner(bootstrap, topics, topics.all_partitions(), snapshot_every).await
}

/// A writer of the partitions `owned`, with an identity of its own and nothing known yet.
async fn owner(
    bootstrap: &str,
    topics: &StoreTopics,
    owned: BTreeSet<i32>,
    snapshot_every: u64,
) -> Arc<Mutex<OrderWriter>> {
    let producer = producer_config(bootstrap, &unique("lesson11-writer")).create().expect("a producer");
    let topics = topics.clone();
    blocking(move || {
        let writer = OrderWriter::start(producer, topics, owned, snapshot_every, || Ok(HashMap::new()))
            .expect("the writer starts");
        Arc::new(Mutex::new(writer))
    })
    .await
}

/// Sends `commands` to order `order_id`, each at the version the previous one returned (the first at
/// `first_version`), and returns each result, as the service would answer it.
async fn send(
    writer: &Arc<Mutex<OrderWriter>>,
    order_id: &str,
    first_version: u64,
    commands: Vec<Command>,
) -> Vec<Result<u64, String>> {
    let (writer, order_id) = (Arc::clone(writer), order_id.to_string());
    blocking(move || {
        let mut writer = writer.lock().unwrap();
        let mut version = first_version;
        let mut results = Vec::new();
        for command in commands {
            let result = writer.handle(&order_id, version, &command).map_err(|e| e.to_string());
            if let Ok(new_version) = result {
                version = new_version;
            }
            results.push(result);
        }
        results
    })
    .await
}

fn place(customer: &str) -> Command {
    Command::PlaceOrder { customer_id: customer.into() }
}

fn add(sku: &str, quantity: u32, unit_price_cents: u64) -> Command {
    Command::AddItem { sku: sku.into(), quantity, unit_price_cents, currency: "EUR".into() }
}

/// The events in `topic`, decoded, in log order per partition.
async fn events_in(topic: &str) -> Vec<(String, StoredEvent)> {
    let (config, topic) = (broker().consumer_config(&unique("lesson11-reader")), topic.to_string());
    blocking(move || {
        read_log(config, &topic, &(0..PARTITIONS).collect(), Duration::from_secs(30))
            .expect("the events topic reads to its end")
            .into_iter()
            .map(|r| (r.key.unwrap_or_default(), decode_event(&r.payload).expect("an event record")))
            .collect()
    })
    .await
}

/// The snapshots in `topic`, decoded, with their keys, in log order per partition.
async fn snapshots_in(topic: &str) -> Vec<(String, Snapshot)> {
    let (config, topic) = (broker().consumer_config(&unique("lesson11-reader")), topic.to_string());
    blocking(move || {
        read_log(config, &topic, &(0..PARTITIONS).collect(), Duration::from_secs(30))
            .expect("the snapshots topic reads to its end")
            .into_iter()
            .map(|r| (r.key.unwrap_or_default(), decode_snapshot(&r.payload).expect("a snapshot record")))
            .collect()
    })
    .await
}

async fn recovered(topics: &StoreTopics) -> anyhow::Result<solution_11::store::Recovered> {
    recovered_of(topics, topics.all_partitions()).await
}

/// What a writer of the partitions `owned` recovers.
async fn recovered_of(topics: &StoreTopics, owned: BTreeSet<i32>) -> anyhow::Result<solution_11::store::Recovered> {
    let (config, topics) = (broker().consumer_config(&unique("lesson11-recover")), topics.clone());
    blocking(move || recover(&config, &topics, &owned, Duration::from_secs(30))).await
}

/// An event as the trail snapshot shows it.
#[derive(Serialize)]
struct TrailEntry {
    key: String,
    version: u64,
    event: Event,
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_append_numbered_events_and_a_snapshot_every_nth() {
    let topics = store_topics(&[]).await;
    let writer = writer(broker().bootstrap_servers(), &topics, 3).await;
    let results = send(
        &writer,
        "order-1",
        0,
        vec![
            place("customer-7"),
            add("LAPTOP", 1, 99_900),
            add("MOUSE", 2, 2_500),
            add("DOCK", 1, 18_900),
            Command::ConfirmOrder,
            Command::ConfirmOrder, // already so: no event, the same version
            Command::CancelOrder { reason: "returned".into() },
        ],
    )
    .await;
    assert_eq!(results, [Ok(1), Ok(2), Ok(3), Ok(4), Ok(5), Ok(5), Ok(6)], "each command returns the new version");

    let events = events_in(&topics.events).await;
    let versions: Vec<u64> = events.iter().map(|(_, e)| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6], "one event per change, numbered from 1; nothing for the repeated confirm");
    assert!(events.iter().all(|(key, e)| key == "order-1" && e.order_id == "order-1"), "keyed by order id");
    let trail: Vec<TrailEntry> =
        events.into_iter().map(|(key, e)| TrailEntry { key, version: e.version, event: e.event }).collect();
    insta::assert_json_snapshot!("trail", trail);

    let snapshots = snapshots_in(&topics.snapshots).await;
    let at: Vec<(String, u64)> = snapshots.iter().map(|(key, s)| (key.clone(), s.state.version)).collect();
    assert_eq!(at, [("order-1".to_string(), 3), ("order-1".to_string(), 6)], "a snapshot after events 3 and 6");
    let state = writer.lock().unwrap().state("order-1");
    assert_eq!(snapshots[1].1.state, state, "the snapshot at 6 is the order's state at 6");
    assert_eq!(state.status, Status::Cancelled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commands_events_and_its_snapshot_are_one_transaction() {
    // The writer goes through a proxy that records each transaction's partitions and its end.
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let topics = store_topics(&[]).await;
    let writer = writer(proxy.bootstrap_servers(), &topics, 2).await;
    let results = send(&writer, "order-1", 0, vec![place("customer-7"), add("LAPTOP", 1, 99_900)]).await;
    assert_eq!(results, [Ok(1), Ok(2)]);

    // One transaction per command; the second writes event 2 and the snapshot at 2, together.
    let mut transactions: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
    for request in proxy.transaction_log() {
        match request {
            TxnRequest::AddPartitionsToTxn { partitions, .. } => {
                transactions.last_mut().unwrap().extend(partitions.into_iter().map(|(topic, _)| topic));
            }
            TxnRequest::EndTxn { committed, .. } => {
                assert!(committed, "nothing was refused, nothing aborted");
                transactions.push(BTreeSet::new());
            }
            _ => {}
        }
    }
    transactions.pop();
    let both = BTreeSet::from([topics.events.clone(), topics.snapshots.clone()]);
    assert_eq!(
        transactions,
        [BTreeSet::from([topics.events.clone()]), both],
        "a transaction per command, the snapshot in its command's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_order_counts_its_own_versions_and_gets_its_own_snapshots() {
    let topics = store_topics(&[]).await;
    let writer = writer(broker().bootstrap_servers(), &topics, 2).await;
    // Three orders at once keep the writer's orders apart: each counts its own versions.
    for order in ["order-a", "order-b", "order-c"] {
        let results =
            send(&writer, order, 0, vec![place("customer-1"), add("LAPTOP", 1, 99_900), add("MOUSE", 1, 2_500)]).await;
        assert_eq!(results, [Ok(1), Ok(2), Ok(3)], "{order}");
    }
    let snapshots = snapshots_in(&topics.snapshots).await;
    let mut at: Vec<(String, u64)> = snapshots.iter().map(|(key, s)| (key.clone(), s.state.version)).collect();
    at.sort();
    let expected: Vec<(String, u64)> = ["order-a", "order-b", "order-c"].iter().map(|o| (o.to_string(), 2)).collect();
    assert_eq!(at, expected, "one snapshot per order, at version 2, keyed by its order");
    for (key, snapshot) in &snapshots {
        assert_eq!(snapshot.order_id, *key);
        assert_eq!(snapshot.state.lines.len(), 1, "{key}: the state at version 2 has one line, not the later one");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_version_or_a_rejected_command_writes_nothing() {
    let topics = store_topics(&[]).await;
    let writer = writer(broker().bootstrap_servers(), &topics, 100).await;
    assert_eq!(send(&writer, "order-1", 0, vec![place("customer-7"), add("LAPTOP", 1, 99_900)]).await, [Ok(1), Ok(2)]);
    let confirmed = vec![place("customer-3"), add("DOCK", 1, 18_900), Command::ConfirmOrder];
    assert_eq!(send(&writer, "order-3", 0, confirmed).await, [Ok(1), Ok(2), Ok(3)]);

    let w = Arc::clone(&writer);
    let outcomes = blocking(move || {
        let mut writer = w.lock().unwrap();
        let behind = writer.handle("order-1", 1, &add("MOUSE", 1, 2_500));
        let ahead = writer.handle("order-1", 3, &add("MOUSE", 1, 2_500));
        let stale_even_if_harmless = writer.handle("order-1", 0, &Command::ConfirmOrder);
        let new_order_behind = writer.handle("order-2", 4, &place("customer-8"));
        let rejected = writer.handle("order-1", 2, &place("customer-9"));
        // Stale first, whatever the command: one decide would refuse, or find nothing to do, is still Stale.
        let stale_and_refused = writer.handle("order-1", 1, &place("customer-9"));
        let stale_and_nothing_to_do = writer.handle("order-3", 1, &Command::ConfirmOrder);
        [behind, ahead, stale_even_if_harmless, new_order_behind, rejected, stale_and_refused, stale_and_nothing_to_do]
    })
    .await;
    let [behind, ahead, harmless, new_order, rejected, refused, nothing_to_do] = outcomes;
    for (outcome, expected, actual) in [
        (&behind, 1, 2),
        (&ahead, 3, 2),
        (&harmless, 0, 2),
        (&new_order, 4, 0),
        (&refused, 1, 2),
        (&nothing_to_do, 1, 3),
    ] {
        match outcome {
            Err(HandleError::Stale { expected: e, actual: a, .. }) => {
                assert_eq!((*e, *a), (expected, actual), "Stale carries both versions");
            }
            other => panic!("a command expecting version {expected} of an order at {actual} must be Stale: {other:?}"),
        }
    }
    assert_eq!(
        behind.unwrap_err().to_string(),
        "stale version: the command expects order order-1 at version 1, it is at version 2"
    );
    assert!(
        matches!(rejected, Err(HandleError::Rejected(solution_11::Rejection::AlreadyPlaced))),
        "a command decide refuses is Rejected: {rejected:?}"
    );

    let versions: Vec<(String, u64)> = events_in(&topics.events)
        .await
        .into_iter()
        .map(|(key, e)| (key, e.version))
        .filter(|(k, _)| k != "order-3")
        .collect();
    assert_eq!(versions, [("order-1".to_string(), 1), ("order-1".to_string(), 2)], "nothing more was appended");
    assert_eq!(writer.lock().unwrap().state("order-2"), OrderState::default(), "order-2 was never placed");
    assert_eq!(send(&writer, "order-1", 2, vec![add("MOUSE", 1, 2_500)]).await, [Ok(3)], "the right version works");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_append_leaves_the_order_as_it_was() {
    let test = "a_failed_append_leaves_the_order_as_it_was";
    let topics = store_topics(&[]).await;
    let proxy = Arc::new(FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy"));
    let writer = writer(proxy.bootstrap_servers(), &topics, 3).await;
    assert_eq!(send(&writer, "order-1", 0, vec![place("customer-7"), add("LAPTOP", 1, 99_900)]).await, [Ok(1), Ok(2)]);
    let before = writer.lock().unwrap().state("order-1");

    // The broker refuses the next write (the producer's id unknown to it, as after its state expired): the
    // command's transaction cannot commit. Its command adds the 3rd event, so a snapshot goes with it too.
    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
    let (w, failing) = (Arc::clone(&writer), add("MOUSE", 2, 2_500));
    let failed = blocking(move || w.lock().unwrap().handle("order-1", 2, &failing)).await;
    assert!(matches!(failed, Err(HandleError::Append { .. })), "a refused append is HandleError::Append: {failed:?}");
    assert_eq!(proxy.stats().requests_failed, 1, "one write was refused");
    assert_eq!(writer.lock().unwrap().state("order-1"), before, "the order is as it was before the failed command");

    let results = send(&writer, "order-1", 2, vec![add("DOCK", 1, 18_900), Command::ConfirmOrder]).await;
    assert_eq!(
        results,
        [Ok(3), Ok(4)],
        "the next command is decided against version 2, as if the failed one never came"
    );
    let state = writer.lock().unwrap().state("order-1");
    assert_eq!(state.lines.iter().map(|l| l.sku.as_str()).collect::<Vec<_>>(), ["LAPTOP", "DOCK"]);

    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        // What of the failed command reached the log was aborted: recovery (read_committed) never sees it.
        let recovered = recovered(&topics).await.expect("the log recovers");
        assert_eq!(recovered.orders.get("order-1"), Some(&state), "the log holds exactly the order the writer has");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_from_snapshots_and_tails_gives_the_writers_orders() {
    let topics = store_topics(&[]).await;
    let writer = writer(broker().bootstrap_servers(), &topics, 3).await;
    let orders: Vec<(String, Vec<Command>)> = (0..6u32)
        .map(|n| {
            let mut commands = vec![place(&format!("customer-{}", n % 2))];
            commands.extend(
                (0..n).map(|i| add(["LAPTOP", "MOUSE", "DOCK"][i as usize % 3], 1 + i, 1_000 * u64::from(n + 1))),
            );
            if n % 3 == 2 {
                commands.push(Command::ConfirmOrder);
            }
            (format!("order-{n}"), commands)
        })
        .collect();
    for (order_id, commands) in &orders {
        let results = send(&writer, order_id, 0, commands.clone()).await;
        assert!(results.iter().all(Result::is_ok), "{order_id}: {results:?}");
    }
    let recovered = recovered(&topics).await.expect("the log recovers");
    let expected: HashMap<String, OrderState> =
        orders.iter().map(|(id, _)| (id.clone(), writer.lock().unwrap().state(id))).collect();
    assert_eq!(recovered.orders, expected, "recovery gives every order as the writer has it");
    let events = events_in(&topics.events).await;
    assert_eq!(recovered.events_read, events.len());
    // Orders of 3 events or more have a snapshot; their first 3 (or 6) events are not folded again.
    let skipped: u64 = expected.values().map(|s| s.version / 3 * 3).sum();
    assert!(skipped > 0);
    assert_eq!(recovered.events_folded as u64, events.len() as u64 - skipped, "the snapshots saved that many folds");
}

/// Where librdkafka's Java-compatible partitioner (`murmur2_random`, what Java clients do by default) puts each of
/// `keys` in a fresh topic of `PARTITIONS` partitions.
async fn placed_by_kafkas_partitioner(keys: &[String]) -> Vec<i32> {
    let topic = unique("lesson11-partitioner");
    broker().create_topic(&topic, PARTITIONS).await.expect("topic");
    let mut config = broker().producer_config();
    config.set("partitioner", "murmur2_random");
    let producer: FutureProducer = config.create().expect("a producer");
    let mut partitions = Vec::new();
    for key in keys {
        let record = FutureRecord::to(&topic).key(key).payload("");
        let delivery = producer.send(record, Duration::from_secs(10)).await.expect("delivered");
        partitions.push(delivery.partition);
    }
    partitions
}

#[tokio::test(flavor = "multi_thread")]
async fn each_writer_appends_and_recovers_the_orders_of_its_own_partitions_only() {
    // The partition of an order is where Kafka's default partitioner puts its id: every client agrees.
    let keys: Vec<String> = (0..24).map(|i| unique(&format!("order-{i}"))).collect();
    let placed = placed_by_kafkas_partitioner(&keys).await;
    let computed: Vec<i32> = keys.iter().map(|k| partition_of(k, PARTITIONS)).collect();
    assert_eq!(computed, placed, "partition_of agrees with Kafka's murmur2 partitioner for {keys:?}");
    let ours = keys.iter().find(|k| partition_of(k, PARTITIONS) == 0).expect("a key of partition 0").clone();
    let theirs = keys.iter().find(|k| partition_of(k, PARTITIONS) != 0).expect("a key of another partition").clone();

    // Two writers, each with an identity of its own, share the store: one owns partition 0, the other the rest.
    let topics = store_topics(&[]).await;
    let first = owner(broker().bootstrap_servers(), &topics, BTreeSet::from([0]), 2).await;
    let rest = owner(broker().bootstrap_servers(), &topics, BTreeSet::from([1, 2]), 2).await;
    assert_eq!(send(&first, &ours, 0, vec![place("customer-1"), add("LAPTOP", 1, 99_900)]).await, [Ok(1), Ok(2)]);
    let misrouted = send(&first, &theirs, 0, vec![place("customer-2")]).await;
    let refusal = misrouted[0].clone().expect_err("a writer refuses an order of a partition it does not own");
    assert!(refusal.contains("does not own"), "the refusal says why: {refusal}");
    assert_eq!(send(&rest, &theirs, 0, vec![place("customer-2")]).await, [Ok(1)], "its owner takes it");

    // Each order's events and snapshots are in its partition, and the misrouted command wrote nothing.
    let (config, events) = (broker().consumer_config(&unique("lesson11-reader")), topics.events.clone());
    let records = blocking(move || read_log(config, &events, &(0..PARTITIONS).collect(), Duration::from_secs(30)))
        .await
        .expect("the events topic reads to its end");
    let mut seen: Vec<(String, u64, i32)> = records
        .iter()
        .map(|r| {
            let event = decode_event(&r.payload).expect("an event record");
            (event.order_id, event.version, r.partition)
        })
        .collect();
    seen.sort();
    let mut expected =
        vec![(ours.clone(), 1, 0), (ours.clone(), 2, 0), (theirs.clone(), 1, topics.partition_of(&theirs))];
    expected.sort();
    assert_eq!(seen, expected, "every event in its order's partition, none of the refused command");
    let snapshot_partitions: Vec<(String, i32)> = {
        let (config, snapshots) = (broker().consumer_config(&unique("lesson11-reader")), topics.snapshots.clone());
        blocking(move || read_log(config, &snapshots, &(0..PARTITIONS).collect(), Duration::from_secs(30)))
            .await
            .expect("the snapshots topic reads to its end")
            .into_iter()
            .map(|r| (r.key.unwrap_or_default(), r.partition))
            .collect()
    };
    assert_eq!(snapshot_partitions, [(ours.clone(), 0)], "the snapshot (every 2 events) is in its order's partition");

    // A writer that restarts recovers the orders of its partitions: between them, the whole store.
    let of_first = recovered_of(&topics, BTreeSet::from([0])).await.expect("recovery of partition 0");
    let of_rest = recovered_of(&topics, BTreeSet::from([1, 2])).await.expect("recovery of partitions 1 and 2");
    let ids = |r: &solution_11::store::Recovered| r.orders.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(ids(&of_first), BTreeSet::from([ours.clone()]));
    assert_eq!(ids(&of_rest), BTreeSet::from([theirs.clone()]));
    let all = recovered(&topics).await.expect("recovery of every partition");
    assert_eq!(all.orders[&ours], of_first.orders[&ours]);
    assert_eq!(all.orders[&theirs], of_rest.orders[&theirs]);
    assert_eq!(all.orders[&ours].version, 2);

    // Ownership is of the store's partitions, and at least one.
    let producer =
        producer_config(broker().bootstrap_servers(), &unique("lesson11-writer")).create().expect("a producer");
    let topics_again = topics.clone();
    let outside = blocking(move || {
        OrderWriter::start(producer, topics_again, BTreeSet::from([PARTITIONS]), 2, || Ok(HashMap::new())).map(drop)
    })
    .await;
    assert!(outside.is_err(), "a writer cannot own partition {PARTITIONS} of a {PARTITIONS}-partition store");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_what_a_single_writer_cannot_have_written() {
    let placed =
        |v| StoredEvent { order_id: "o".into(), version: v, event: Event::OrderPlaced { customer_id: "c".into() } };
    let added = |v, sku: &str| StoredEvent {
        order_id: "o".into(),
        version: v,
        event: Event::ItemAdded { sku: sku.into(), quantity: 1, unit_price_cents: 100, currency: "EUR".into() },
    };
    let history = [placed(1), added(2, "A"), added(3, "B"), added(4, "C")];
    assert_eq!(restore(None, &history), Ok(replay(history.iter().map(|e| &e.event))));
    assert_eq!(
        restore(None, &[placed(1), added(2, "A"), added(2, "B")]),
        Err(LoadError::Conflict { order_id: "o".into(), version: 2 })
    );
    assert_eq!(
        restore(None, &[placed(1), added(3, "B")]),
        Err(LoadError::Gap { order_id: "o".into(), expected: 2, found: 3 })
    );
    assert_eq!(restore(None, &[added(2, "A")]), Err(LoadError::Gap { order_id: "o".into(), expected: 1, found: 2 }));
    let at_2 = Snapshot { order_id: "o".into(), state: replay(history[..2].iter().map(|e| &e.event)) };
    assert_eq!(restore(Some(&at_2), &history[2..]), restore(None, &history), "snapshot + tail = full replay");
    assert_eq!(restore(Some(&at_2), &history), restore(None, &history), "snapshot + whole history = full replay");
    // What the snapshot holds is not folded again: a snapshot the events before it do not match (marked here
    // with a customer no event names) is taken as it is, and only the events after it are folded.
    let marked = Snapshot {
        order_id: "o".into(),
        state: OrderState { customer_id: Some("from-the-snapshot".into()), ..at_2.state.clone() },
    };
    let loaded = restore(Some(&marked), &history).expect("the snapshot and the events after it");
    assert_eq!(loaded.customer_id.as_deref(), Some("from-the-snapshot"), "started from the snapshot: {loaded:?}");
    assert_eq!(loaded.version, 4);
    assert_eq!(restore(Some(&at_2), &[]), Ok(at_2.state.clone()), "a snapshot with no tail is the state");
    assert_eq!(
        restore(Some(&at_2), &[added(4, "C")]),
        Err(LoadError::Gap { order_id: "o".into(), expected: 3, found: 4 }),
        "the tail must follow the snapshot"
    );
    assert_eq!(
        restore(Some(&at_2), &[placed(1), added(2, "A"), added(3, "B"), added(3, "X")]),
        Err(LoadError::Conflict { order_id: "o".into(), version: 3 })
    );

    // Two writers for one order, on a real log: each decided against version 0 and appended a version 1.
    let topics = store_topics(&[]).await;
    let first = writer(broker().bootstrap_servers(), &topics, 100).await;
    let second = writer(broker().bootstrap_servers(), &topics, 100).await;
    assert_eq!(send(&first, "order-1", 0, vec![place("customer-7")]).await, [Ok(1)]);
    assert_eq!(send(&second, "order-1", 0, vec![place("customer-8")]).await, [Ok(1)], "nothing stops the second");
    let error = recovered(&topics).await.expect_err("recovery refuses a corrupted order");
    assert_eq!(
        error.downcast_ref::<LoadError>(),
        Some(&LoadError::Conflict { order_id: "order-1".into(), version: 1 }),
        "{error:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_the_latest_snapshot_of_each_order() {
    let test = "compaction_keeps_the_latest_snapshot_of_each_order";
    // Small segments that roll quickly and a cleaner that takes any dirty log, so compaction shows in seconds.
    let topics = store_topics(&[
        ("segment.ms", "100".to_string()),
        ("min.cleanable.dirty.ratio", "0.01".to_string()),
        ("delete.retention.ms", "100".to_string()),
    ])
    .await;
    let writer = writer(broker().bootstrap_servers(), &topics, 1).await;
    let commands: Vec<Command> =
        std::iter::once(place("customer-7")).chain((1..=5).map(|i| add("LAPTOP", i, 99_900))).collect();
    assert_eq!(send(&writer, "order-1", 0, commands).await.len(), 6);
    let snapshots = snapshots_in(&topics.snapshots).await;
    let versions: Vec<u64> = snapshots.iter().map(|(_, s)| s.state.version).collect();
    // On real Kafka the cleaner may already have been at work (segments roll every 100 ms): what is there is
    // some of the six, in order, the latest always among them.
    assert_eq!(versions.last(), Some(&6), "the latest snapshot is at version 6: {versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "snapshots in version order: {versions:?}");
    if !can_grade(broker(), Capability::Compaction, test) {
        assert_eq!(versions, [1, 2, 3, 4, 5, 6], "with a snapshot every event, six snapshots are written");
        return;
    }
    // The active segment is never compacted: keep writing another order's snapshots so segments roll, until the
    // cleaner has left a single snapshot of order-1, the latest. The broker's one cleaner thread serves every
    // compacted log on it, and a pass keeps the latest snapshot *of what it cleaned*: on a broker busy with other
    // compacted topics, a later snapshot that was still dirty at the last pass may sit next to the latest for a
    // while. So the test waits a minute for a single one, then settles for a compacted log (older snapshots gone,
    // the latest there), and says so.
    let mut version = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let command = if version == 0 { place("customer-1") } else { add("MOUSE", 1, 2_500) };
        version = send(&writer, "roll", version, vec![command]).await[0].clone().expect("a roll command");
        let kept: Vec<u64> = snapshots_in(&topics.snapshots)
            .await
            .into_iter()
            .filter(|(key, _)| key == "order-1")
            .map(|(_, s)| s.state.version)
            .collect();
        assert_eq!(kept.last(), Some(&6), "compaction never loses the latest snapshot: {kept:?}");
        if kept == [6] {
            break;
        }
        if std::time::Instant::now() >= deadline {
            assert!(kept.len() < 6, "compaction removed none of order-1's older snapshots within a minute: {kept:?}");
            println!("the cleaner had compacted order-1 to {kept:?} (the latest of its last pass, and the latest)");
            break;
        }
    }
    let recovered = recovered(&topics).await.expect("recovery after compaction");
    assert_eq!(recovered.orders["order-1"], writer.lock().unwrap().state("order-1"));
}
