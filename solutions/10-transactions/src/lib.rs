//! Lesson 10 — transactions and exactly-once: an order service writes an order and its stock request to two
//! topics in one transaction, all or nothing; an inventory service reads those requests and writes one reservation
//! per request, committing the offsets it read in the same transaction (consume-transform-produce), so a crash, a
//! processing error or a zombie instance never leaves a request processed twice or not at all — for readers that
//! read committed records only.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.
//!
//! Everything here is blocking, on purpose: librdkafka's transactional calls (`init_transactions`,
//! `commit_transaction`, `send_offsets_to_transaction`, …) wait for the broker on the calling thread, so async
//! code would have to move them off its runtime anyway. The consumer is a `BaseConsumer` polled on the same thread
//! and the producer a `ThreadedProducer`, which serves its delivery reports on a thread of its own. Callers on an
//! async runtime run these functions in `spawn_blocking`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// The RabbitMQ counterpart: publisher confirms, and consume-transform-publish in one AMQP transaction.
pub mod rabbit;

/// The producer every function here writes with: transactional, serving its own delivery reports.
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// The bound on each transactional call: how long `init_transactions`, `send_offsets_to_transaction`,
/// `commit_transaction` and `abort_transaction` may wait for the broker before they return a (retriable) timeout.
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the broker lets a transaction stay open before it aborts it itself: what a crashed producer that is
/// never restarted holds `read_committed` readers back at most (librdkafka's default is 60 s).
pub const TRANSACTION_TIMEOUT_MS: u32 = 30_000;

/// The topics the order service writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTopics {
    /// `ORDER_CREATED` events (`orders.events`).
    pub orders: String,
    /// Stock requests for the inventory service (`inventory.requests`).
    pub inventory_requests: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub product_id: String,
    pub quantity: u32,
}

/// An order a customer placed, as the order service receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<Item>,
}

/// What goes to `orders.events` for a new order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// Always `"ORDER_CREATED"`.
    pub event: String,
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<Item>,
}

/// What goes to `inventory.requests` for a new order: reserve its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    /// Always `"RESERVE"`.
    pub request: String,
    pub order_id: String,
    pub items: Vec<Item>,
}

/// What the inventory service writes to `inventory.events` for each request it processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    /// Always `"STOCK_RESERVED"`.
    pub event: String,
    pub order_id: String,
    /// How many units were reserved, over all items.
    pub units: u32,
}

impl Order {
    /// The two records an order makes, as the order service writes them.
    pub fn records(&self) -> (OrderCreated, ReserveStock) {
        (
            OrderCreated {
                event: "ORDER_CREATED".into(),
                order_id: self.order_id.clone(),
                customer_id: self.customer_id.clone(),
                items: self.items.clone(),
            },
            ReserveStock { request: "RESERVE".into(), order_id: self.order_id.clone(), items: self.items.clone() },
        )
    }
}

/// The inventory service's work for one request (a real one would check and decrement stock).
pub fn reserve(request: &ReserveStock) -> anyhow::Result<StockReserved> {
    anyhow::ensure!(!request.items.is_empty(), "order {} reserves no item", request.order_id);
    Ok(StockReserved {
        event: "STOCK_RESERVED".into(),
        order_id: request.order_id.clone(),
        units: request.items.iter().map(|i| i.quantity).sum(),
    })
}

/// `count` orders numbered from `first`, one or two items each: the same orders on every run.
pub fn sample_orders(first: u32, count: u32) -> Vec<Order> {
    (first..first + count)
        .map(|n| Order {
            order_id: format!("order-{n:04}"),
            customer_id: format!("customer-{}", n % 7),
            items: (0..1 + n % 2)
                .map(|i| Item { product_id: format!("SKU-{}", (n + i) % 5), quantity: 1 + i })
                .collect(),
        })
        .collect()
}

// EXERCISE: The configuration of the order and inventory services' producer: a transactional producer for the
// brokers at `bootstrap_servers` with the identity `transactional_id`, which outlives the process (a restarted
// instance uses the same id, and that is what lets the broker finish what a crashed one left open). A transaction
// a crashed producer leaves open must not hold readers back longer than `TRANSACTION_TIMEOUT_MS`. The tests read
// both settings back, then check the id on the wire (the `InitProducerId` request) and that the producer can run
// transactions at all.
// ANCHOR: producer_config
/// The configuration of a transactional producer with the identity `transactional_id`.
pub fn producer_config(bootstrap_servers: &str, transactional_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        // Implies enable.idempotence=true, acks=all and at most 5 requests in flight (lesson 09).
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string());
    config
}
// ANCHOR_END: producer_config

// EXERCISE: Adjust `base` (bootstrap servers, `group.id`, reset policy, tuning: keep them) into the configuration
// of a consumer at the head of an exactly-once stage, and of any reader that must only see what transactions
// committed. Two rules: it never sees records of aborted or still-open transactions, and it never commits offsets
// by itself (they are committed inside the stage's transactions). Write both down even where they are
// librdkafka's default: the tests read them back, and on real Kafka read a topic holding a committed, an aborted and
// an open transaction with it.
// ANCHOR: consumer_config
/// The configuration of a consumer that reads committed records only and leaves offsets to the transactions.
pub fn consumer_config(mut base: ClientConfig) -> ClientConfig {
    base.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    base
}
// ANCHOR_END: consumer_config

// EXERCISE: Write `order` as its two records (`Order::records`): the `OrderCreated` to `topics.orders` and the
// `ReserveStock` to `topics.inventory_requests`, as JSON, both keyed by the order id, in one transaction of
// `producer` (already initialised for transactions): readers of committed records see both or neither. If
// anything fails, return an error and leave `producer` ready for the next order. The tests check on the wire that
// both topics joined one transaction that was committed, read both records back, and make the broker refuse the
// writes of one order: that order must end in an abort, return an error, and the next order must go through.
// ANCHOR: place_order
/// Writes the order's event and its stock request in one transaction.
pub fn place_order(producer: &TxnProducer, topics: &OrderTopics, order: &Order) -> anyhow::Result<()> {
    let (created, reserve) = order.records();
    let created = serde_json::to_string(&created)?;
    let reserve = serde_json::to_string(&reserve)?;
    producer.begin_transaction()?;
    let written = (|| -> anyhow::Result<()> {
        for (topic, payload) in [(&topics.orders, &created), (&topics.inventory_requests, &reserve)] {
            producer
                .send(BaseRecord::to(topic).key(&order.order_id).payload(payload))
                .map_err(|(error, _record)| anyhow::anyhow!("could not enqueue to {topic}: {error}"))?;
        }
        // Flushes both records; fails if either could not be written.
        producer.commit_transaction(TXN_CALL_TIMEOUT)?;
        Ok(())
    })();
    if let Err(error) = written {
        // A fatal error (fenced) leaves nothing to abort: the producer is done for. Otherwise abort, so that
        // neither record is ever visible to read_committed readers and the producer can begin the next order.
        if !is_fatal(&error) {
            producer
                .abort_transaction(TXN_CALL_TIMEOUT)
                .map_err(|abort| anyhow::anyhow!("order {}: {error}; and the abort failed: {abort}", order.order_id))?;
        }
        return Err(error.context(format!("order {} was not placed", order.order_id)));
    }
    Ok(())
}
// ANCHOR_END: place_order

/// Whether `error` is a fatal error of a transactional producer (fenced by a newer instance, above all): the
/// producer can do nothing more, not even abort.
pub fn is_fatal(error: &anyhow::Error) -> bool {
    error.downcast_ref::<KafkaError>().is_some_and(kafka_error_is_fatal)
}

fn kafka_error_is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}

/// The most records one transaction of [`process_batch`] carries.
pub const MAX_BATCH: usize = 50;

/// How long [`poll_batch`] waits for the first record of a batch before it reports none.
pub const FIRST_RECORD_WAIT: Duration = Duration::from_secs(2);

/// Once a batch has a record, how long [`poll_batch`] waits for the next before it closes the batch.
pub const NEXT_RECORD_WAIT: Duration = Duration::from_millis(200);

/// Up to `max` records from `consumer`, in the order it hands them over: none if no record came within
/// [`FIRST_RECORD_WAIT`]. A consumer error (not a missing record) is an error.
pub fn poll_batch(consumer: &BaseConsumer, max: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let mut batch = Vec::new();
    while batch.len() < max {
        let wait = if batch.is_empty() { FIRST_RECORD_WAIT } else { NEXT_RECORD_WAIT };
        match consumer.poll(wait) {
            None => break,
            Some(Ok(message)) => batch.push(message.detach()),
            Some(Err(error)) => anyhow::bail!("the consumer failed: {error}"),
        }
    }
    Ok(batch)
}

/// What one call of [`process_batch`] did, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Batch {
    /// No record came: nothing was done.
    Idle,
    /// `records` records were processed and their outputs and offsets committed in one transaction.
    Committed { records: usize },
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The transaction was aborted and the consumer rewound to where the batch began (what the last transaction
    /// committed): calling [`process_batch`] again processes the same records again.
    #[error("batch aborted and rewound: {0:#}")]
    Aborted(anyhow::Error),
    /// The producer can do nothing more — above all, a newer instance with the same transactional id fenced it.
    /// Stop this instance; retrying would either fail again or, with a new producer, fence the instance that
    /// replaced this one.
    #[error("fatal, stop: {0}")]
    Fatal(KafkaError),
    /// Something failed before the transaction began (reading the input, beginning the transaction).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

// EXERCISE: One transaction of the inventory service: take up to `MAX_BATCH` requests from `consumer`
// (`poll_batch`), write `transform`'s result for each (a `ReserveStock` read from the JSON payload; a
// `StockReserved` written as JSON to `output`, keyed by the order id), and commit, with those outputs, the offsets
// that resume after the batch for `consumer`'s group — all or nothing. No record: `Batch::Idle`. If reading a
// request or `transform` fails, or the transaction cannot commit, nothing of the batch may be visible or committed,
// and the next call must process the same requests again: return `BatchError::Aborted`. A payload that is not a
// `ReserveStock` is no exception (this stage has no dead-letter topic): the error names that request's offset. If
// the producer has a fatal error (another instance took over its transactional id), return `BatchError::Fatal` at
// once: no abort, no retry. The tests read the transactions on the wire (which partitions and offsets, commit or
// abort), fail `transform` once, publish a request that is not JSON, make the broker refuse a batch's outputs once,
// fence the producer with a second instance, and on real Kafka crash it before its commit and count the outputs:
// exactly one per request.
// ANCHOR: process_batch
/// Reads a batch of requests, writes one reservation per request and commits the input offsets, in one transaction.
pub fn process_batch(
    consumer: &BaseConsumer,
    producer: &TxnProducer,
    output: &str,
    transform: &mut dyn FnMut(&ReserveStock) -> anyhow::Result<StockReserved>,
) -> Result<Batch, BatchError> {
    let batch = poll_batch(consumer, MAX_BATCH).map_err(BatchError::Failed)?;
    if batch.is_empty() {
        return Ok(Batch::Idle);
    }
    // Where the batch begins in each partition: what the last transaction committed, where to rewind to.
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    // Where the group resumes after the batch: the offset after the last record of each partition.
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in &batch {
        let at = (message.topic().to_string(), message.partition());
        first.entry(at.clone()).or_insert(message.offset());
        next.insert(at, message.offset() + 1);
    }
    producer.begin_transaction().map_err(|e| BatchError::Failed(e.into()))?;

    let written = (|| -> anyhow::Result<()> {
        for message in &batch {
            let at = format!("request {}/{}", message.partition(), message.offset());
            let request: ReserveStock = serde_json::from_slice(message.payload().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{at} is not a ReserveStock: {e}"))?;
            let reserved = transform(&request).map_err(|e| e.context(at))?;
            let payload = serde_json::to_string(&reserved)?;
            producer.send(BaseRecord::to(output).key(&reserved.order_id).payload(&payload)).map_err(|(e, _)| e)?;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        let group = consumer.group_metadata().ok_or_else(|| anyhow::anyhow!("the consumer has no group"))?;
        producer.send_offsets_to_transaction(&offsets, &group, TXN_CALL_TIMEOUT)?;
        producer.commit_transaction(TXN_CALL_TIMEOUT)?;
        Ok(())
    })();

    let Err(error) = written else {
        return Ok(Batch::Committed { records: batch.len() });
    };
    // Fenced (or otherwise fatal): the producer can neither abort nor write again. Stop here.
    let error = match error.downcast::<KafkaError>() {
        Ok(kafka) if kafka_error_is_fatal(&kafka) => return Err(BatchError::Fatal(kafka)),
        Ok(kafka) => anyhow::Error::from(kafka),
        Err(other) => other,
    };
    match producer.abort_transaction(TXN_CALL_TIMEOUT) {
        Err(abort) if kafka_error_is_fatal(&abort) => return Err(BatchError::Fatal(abort)),
        Err(abort) => return Err(BatchError::Failed(anyhow::anyhow!("{error:#}; and the abort failed: {abort}"))),
        Ok(()) => {}
    }
    // The consumer is past the batch: back to where it began, which is what the last transaction committed.
    for ((topic, partition), offset) in &first {
        consumer
            .seek(topic, *partition, Offset::Offset(*offset), TXN_CALL_TIMEOUT)
            .map_err(|e| BatchError::Failed(anyhow::anyhow!("could not rewind {topic}/{partition}: {e}")))?;
    }
    Err(BatchError::Aborted(error))
}
// ANCHOR_END: process_batch

/// What [`run_until_idle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Run {
    /// Transactions committed, and the records they carried.
    pub committed: usize,
    pub records: usize,
    /// Batches aborted (and processed again).
    pub aborted: usize,
}

// ANCHOR: run_until_idle
/// An inventory service instance's loop: [`process_batch`] until a batch finds no record. An aborted batch is
/// processed again (up to `max_aborts` in a row: a request that fails every time needs a dead-letter queue, lesson
/// 08, not an endless retry); a fatal error ends the instance at once.
pub fn run_until_idle(
    consumer: &BaseConsumer,
    producer: &TxnProducer,
    output: &str,
    transform: &mut dyn FnMut(&ReserveStock) -> anyhow::Result<StockReserved>,
    max_aborts: usize,
) -> Result<Run, BatchError> {
    let mut run = Run::default();
    let mut aborts_in_a_row = 0;
    loop {
        match process_batch(consumer, producer, output, transform) {
            Ok(Batch::Idle) => return Ok(run),
            Ok(Batch::Committed { records }) => {
                run.committed += 1;
                run.records += records;
                aborts_in_a_row = 0;
            }
            Err(BatchError::Aborted(cause)) => {
                run.aborted += 1;
                aborts_in_a_row += 1;
                if aborts_in_a_row > max_aborts {
                    return Err(BatchError::Aborted(
                        cause.context(format!("aborted {aborts_in_a_row} times in a row")),
                    ));
                }
            }
            Err(stop) => return Err(stop),
        }
    }
}
// ANCHOR_END: run_until_idle

/// The context of a reader that reads to the end of each partition, quiet about each end (kit's).
pub use kit::read::ReadToEnd;
