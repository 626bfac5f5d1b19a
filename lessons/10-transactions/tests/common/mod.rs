//! What lesson 10's test files share: clients made from the learner's configurations, the requests of a topic
//! written as plain records, readers that choose their isolation level, and the transactions of a
//! `kit::FaultProxy` log summed up per transaction, with topics named by their role so snapshots stay the same
//! from run to run.
//!
//! librdkafka's transactional calls block their thread, so the tests run on tokio's multi-threaded runtime and
//! call the lesson's (blocking) functions through [`blocking`], which moves them to tokio's blocking pool: an
//! async test's own thread stays free for the async helpers (topic creation, reading back).

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kit::TxnRequest;
use kit_testing::broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use lesson_10::{Order, ReserveStock, TXN_CALL_TIMEOUT, TxnProducer, consumer_config, producer_config};

/// Runs blocking lesson code on tokio's blocking pool and waits for it; a panic there fails the test.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A producer from the learner's configuration, at `bootstrap` (the broker's, or a proxy's), ready for
/// transactions.
pub async fn ready_producer(bootstrap: &str, transactional_id: &str) -> Arc<TxnProducer> {
    let producer: TxnProducer = producer_config(bootstrap, transactional_id).create().expect("a producer");
    blocking(move || {
        producer.init_transactions(TXN_CALL_TIMEOUT).expect("init_transactions (is transactional.id set?)");
        Arc::new(producer)
    })
    .await
}

/// A consumer from the learner's configuration for `group`, at `bootstrap`, assigned every partition of `topic`.
/// It starts where `group` committed, or at the beginning. Assigned rather than subscribed: no group join to wait
/// for (seconds on either broker), and a restarted instance takes over at once; the offsets still belong to the
/// group, and it is the group's offsets the transactions commit.
pub fn assigned_consumer(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Arc<BaseConsumer> {
    let mut config = consumer_config(broker().consumer_config(group));
    config.set("bootstrap.servers", bootstrap);
    let consumer: BaseConsumer = config.create().expect("a consumer");
    {
        // Dropped before the consumer can be: a partition list alive at its drop blocks it for 30 s.
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Stored).expect("a partition");
        }
        consumer.assign(&assignment).expect("assign");
    }
    Arc::new(consumer)
}

/// Writes the `ReserveStock` of each order to `topic`, as plain (non-transactional) records in the partition
/// given with it, and waits for every delivery report: the inventory service's input.
pub async fn publish_requests(topic: &str, orders: &[(i32, Order)]) {
    let records: Vec<(i32, String, String)> = orders
        .iter()
        .map(|(partition, order)| {
            let (_, request) = order.records();
            (*partition, order.order_id.clone(), serde_json::to_string(&request).unwrap())
        })
        .collect();
    publish_records(topic, &records).await;
}

/// Writes each `(partition, key, payload)` to `topic` as a plain record, in order, and waits for every delivery
/// report: input of any shape, a request that is not JSON included.
pub async fn publish_records(topic: &str, records: &[(i32, String, String)]) {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    for (partition, key, payload) in records {
        producer
            .send(FutureRecord::to(topic).partition(*partition).key(key).payload(payload), Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .expect("an input record is delivered");
    }
}

/// Every record of `topic` (all partitions) as a reader with `isolation_level` sees it, read up to the end of
/// each partition: the high watermark for read_uncommitted, the last stable offset for read_committed (records
/// after an open transaction's first one are not "there yet" for it). The end is librdkafka's partition EOF
/// event, so no time decides what was read; the bound only fails a read that never ends.
pub async fn read_to_end(topic: &str, partitions: i32, isolation_level: &str) -> Vec<Read> {
    let mut base = broker().consumer_config(&kit_testing::unique("lesson10-reader"));
    base.set("enable.auto.commit", "false");
    read_to_end_with(base, topic, partitions, isolation_level).await
}

/// [`read_to_end`] with the configuration `config` (its isolation level set to `isolation_level` unless empty).
pub async fn read_to_end_with(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
    isolation_level: &str,
) -> Vec<Read> {
    if !isolation_level.is_empty() {
        config.set("isolation.level", isolation_level);
    }
    let topic = topic.to_string();
    blocking(move || {
        kit::read::read_to_end(config, &topic, partitions, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_iter()
            .map(|record| Read {
                partition: record.partition,
                key: record.key.unwrap_or_default(),
                payload: String::from_utf8_lossy(&record.payload).into_owned(),
            })
            .collect()
    })
    .await
}

/// A record as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub key: String,
    pub payload: String,
}

/// The order ids in `records` (JSON payloads with an `order_id`), each with how many times it was found.
pub fn order_counts(records: &[Read]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for Read { payload, .. } in records {
        let value: serde_json::Value = serde_json::from_str(payload).expect("a JSON record");
        *counts.entry(value["order_id"].as_str().expect("an order_id").to_string()).or_default() += 1;
    }
    counts
}

/// The requests a test's orders make, with the partition each goes to: `counts[p]` orders to partition `p`,
/// numbered from `first`.
pub fn spread(first: u32, counts: &[u32]) -> Vec<(i32, Order)> {
    let mut next = first;
    let mut out = Vec::new();
    for (partition, count) in counts.iter().enumerate() {
        for order in lesson_10::sample_orders(next, *count) {
            out.push((partition as i32, order));
        }
        next += count;
    }
    out
}

/// The ids of `orders`.
pub fn ids(orders: &[(i32, Order)]) -> BTreeSet<String> {
    orders.iter().map(|(_, o)| o.order_id.clone()).collect()
}

/// One transaction as the proxy saw it: the partitions it wrote to and the offsets it committed, by topic role,
/// and how it ended (`commit`, `abort`, or `open`: no EndTxn reached the broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Txn {
    pub partitions: BTreeSet<String>,
    pub offsets_for: BTreeSet<String>,
    pub offsets: BTreeMap<String, i64>,
    pub end: &'static str,
}

/// The transactions of `log`, in order, with each topic (and group) replaced by its role in `roles`
/// (`(name, role)`). librdkafka resends a request the coordinator answered with a retriable error (an
/// AddPartitionsToTxn while the previous transaction's markers are written, an EndTxn while the coordinator
/// loads): the partitions are a set, and an EndTxn that repeats the one just before it, with nothing in between,
/// is the same end sent again.
pub fn transactions(log: &[TxnRequest], roles: &[(&str, &str)]) -> Vec<Txn> {
    let role = |topic: &str| roles.iter().find(|(t, _)| *t == topic).map_or("(another topic)", |(_, r)| r).to_string();
    let mut done = Vec::new();
    let mut current: Option<Txn> = None;
    let mut last_end: Option<(bool, i16)> = None;
    let blank =
        || Txn { partitions: BTreeSet::new(), offsets_for: BTreeSet::new(), offsets: BTreeMap::new(), end: "open" };
    for entry in log {
        match entry {
            TxnRequest::AddPartitionsToTxn { partitions, .. } => {
                last_end = None;
                let txn = current.get_or_insert_with(blank);
                txn.partitions.extend(partitions.iter().map(|(t, p)| format!("{}/{p}", role(t))));
            }
            TxnRequest::AddOffsetsToTxn { group, .. } => {
                last_end = None;
                current.get_or_insert_with(blank).offsets_for.insert(role(group));
            }
            TxnRequest::TxnOffsetCommit { offsets, .. } => {
                last_end = None;
                let txn = current.get_or_insert_with(blank);
                txn.offsets.extend(offsets.iter().map(|(t, p, o)| (format!("{}/{p}", role(t)), *o)));
            }
            TxnRequest::EndTxn { committed, producer_epoch, .. } => {
                let repeated = matches!(last_end, Some((c, e)) if c == *committed && e == *producer_epoch);
                last_end = Some((*committed, *producer_epoch));
                if current.is_none() && repeated {
                    continue;
                }
                let mut txn = current.take().unwrap_or_else(blank);
                txn.end = if *committed { "commit" } else { "abort" };
                done.push(txn);
            }
            TxnRequest::InitProducerId { .. } => {}
            TxnRequest::Unreadable { .. } => panic!("the proxy could not read a transactional request: {entry:?}"),
        }
    }
    done.extend(current);
    done
}

/// The inputs of a test's orders read as `ReserveStock`, to check what a transform was called with.
pub fn request_of(order: &Order) -> ReserveStock {
    order.records().1
}
