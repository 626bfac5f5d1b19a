//! The write side: Kafka as the event store. `order-events` holds every event of every order, keyed by order id
//! (so one order's events share a partition and keep their order); `order-snapshots`, a compacted topic, holds
//! the latest snapshot of each order.
//!
//! Kafka has no conditional append ("write this event only if the order is still at version 4"), so two writers
//! for one order could both decide against version 4 and both append a version 5. The design that makes it safe:
//! each order has a single writer, the `OrderWriter` that owns its partition, which keeps every order's state in
//! memory, checks the version a command expects against it, and is the only one to append. Its producer is
//! transactional: a command's events (and the snapshot they complete) are appended all or nothing, and a second
//! writer started with the same `transactional.id` — the owner's replacement after a failover — fences the old
//! one, whose later appends fail instead of corrupting the log.
//!
//! One writer for every order would be one machine's worth of commands. Real systems shard the owners the way Kafka
//! shards the log: an order's events go to the partition its id hashes to ([`partition_of`], Kafka's own
//! default partitioner), and each partition has one owner — a writer that recovers and appends the orders of its
//! partitions only, and refuses to append to any other. Commands are routed to the owner by the same hash (the
//! service does). Each owner has a transactional id of its own, so an owner's replacement fences that owner only.
//!
//! Everything here blocks (librdkafka's transactional calls wait on the calling thread, lesson 10): async callers
//! run it in `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::codec::{self, Snapshot, StoredEvent};
use crate::order::{Command, OrderState, Rejection, decide, evolve};

/// The writer's producer: transactional, serving its own delivery reports.
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// The bound on each transactional call (`init_transactions`, `commit_transaction`, `abort_transaction`).
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a snapshot is taken by default: after every 5th event of an order (versions 5, 10, …).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5;

/// The two topics of the event store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTopics {
    /// Every event, keyed by order id: the source of truth (`order-events`).
    pub events: String,
    /// The latest snapshot per order, keyed by order id, compacted (`order-snapshots`).
    pub snapshots: String,
    /// How many partitions each of the two has: an order's events and snapshots are in the same one.
    pub partitions: i32,
}

impl StoreTopics {
    /// Every partition: what a writer that owns the whole store owns.
    pub fn all_partitions(&self) -> BTreeSet<i32> {
        (0..self.partitions).collect()
    }

    /// The partition of `order_id`'s events and snapshots.
    pub fn partition_of(&self, order_id: &str) -> i32 {
        partition_of(order_id, self.partitions)
    }
}

/// The partition Kafka's default partitioner (Java's, and librdkafka's `murmur2_random` for keyed records) gives
/// the key `order_id` among `partitions`: the positive part of the key's murmur2 hash, modulo the count. The
/// writer names the partition itself instead of leaving it to its producer's partitioner, so the owner of a
/// partition, the router that sends it commands and any other client agree on where an order lives. (librdkafka's
/// own default, `consistent_random`, hashes with CRC32 and would put keys elsewhere than Java clients do.)
pub fn partition_of(order_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(order_id.as_bytes()) & 0x7fff_ffff) as i32 % partitions
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), 32 bits, seed 0x9747b28c. Written out here,
/// twenty lines, rather than taken from a crate: what matters is that it is bit for bit Kafka's, which a test
/// checks against where librdkafka's Java-compatible partitioner puts the same keys.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Why loading an order's events failed: the log holds something a single writer could not have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("order {order_id}: two events claim version {version} (two writers appended to it)")]
    Conflict { order_id: String, version: u64 },
    #[error("order {order_id}: version {expected} is missing (the next event found is version {found})")]
    Gap { order_id: String, expected: u64, found: u64 },
}

// EXERCISE: Load an order from its latest snapshot (if any) and its events, which come in log order and may start
// before the snapshot (the caller passes the order's whole history, or only its tail). The result must equal a
// full replay of the events — without folding again what the snapshot already holds. Events must follow each
// other version by version: an event that claims a version already folded in (after the snapshot) means two
// writers appended to the order, `LoadError::Conflict`; a version skipped is `LoadError::Gap`. The tests load
// with and without snapshots, from histories and from tails, and corrupt histories both ways.
// ANCHOR: restore
/// The state of an order: its snapshot, if any, and the events after it.
pub fn restore(snapshot: Option<&Snapshot>, events: &[StoredEvent]) -> Result<OrderState, LoadError> {
    let mut state = snapshot.map(|s| s.state.clone()).unwrap_or_default();
    let from = state.version;
    for stored in events.iter().filter(|e| e.version > from) {
        let expected = state.version + 1;
        if stored.version < expected {
            return Err(LoadError::Conflict { order_id: stored.order_id.clone(), version: stored.version });
        }
        if stored.version > expected {
            return Err(LoadError::Gap { order_id: stored.order_id.clone(), expected, found: stored.version });
        }
        state = evolve(state, &stored.event);
    }
    Ok(state)
}
// ANCHOR_END: restore

/// Why a command was not carried out. The messages are what the service answers.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The client decided on an older (or newer) state than the order's: it must read the order again.
    #[error("stale version: the command expects order {order_id} at version {expected}, it is at version {actual}")]
    Stale { order_id: String, expected: u64, actual: u64 },
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The events could not be appended: nothing of the command was written, and the order is as it was.
    #[error("order {order_id}: the events could not be appended: {cause:#}")]
    Append { order_id: String, cause: anyhow::Error },
}

/// The configuration of the writer's producer: transactional with the identity `transactional_id`.
pub fn producer_config(bootstrap_servers: &str, transactional_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        // Implies idempotence, acks=all and at most 5 requests in flight (lessons 09 and 10).
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "30000");
    config
}

/// The single writer of the orders of some partitions (see the module comment).
pub struct OrderWriter {
    producer: TxnProducer,
    topics: StoreTopics,
    /// The partitions whose orders this writer owns: it appends to these only.
    owned: BTreeSet<i32>,
    snapshot_every: u64,
    orders: HashMap<String, OrderState>,
}

impl OrderWriter {
    /// A writer appending through `producer` (created from [`producer_config`]) the orders of the partitions
    /// `owned`, taking a snapshot after every `snapshot_every`-th event of an order, with the orders `load`
    /// returns (from [`recover`] of the same partitions) as its state.
    ///
    /// Fence first, then read: `start` initialises the producer's transactions — which fences any earlier writer
    /// with the same id and aborts what it left open — and only then calls `load`. Read the other way round, an
    /// append the old writer committed between the read and the fencing would be missing from the new writer's
    /// state, and its next command would append a second event of that version.
    pub fn start(
        producer: TxnProducer,
        topics: StoreTopics,
        owned: BTreeSet<i32>,
        snapshot_every: u64,
        load: impl FnOnce() -> anyhow::Result<HashMap<String, OrderState>>,
    ) -> anyhow::Result<OrderWriter> {
        anyhow::ensure!(snapshot_every >= 1, "a snapshot every 0 events");
        anyhow::ensure!(
            !owned.is_empty() && owned.iter().all(|p| (0..topics.partitions).contains(p)),
            "a writer owns some of the store's partitions 0..{}, not {owned:?}",
            topics.partitions
        );
        producer.init_transactions(TXN_CALL_TIMEOUT)?;
        let known = load()?;
        Ok(OrderWriter { producer, topics, owned, snapshot_every, orders: known })
    }

    pub fn topics(&self) -> &StoreTopics {
        &self.topics
    }

    /// The partitions whose orders this writer owns.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// Whether `order_id` is an order of this writer's partitions.
    pub fn owns(&self, order_id: &str) -> bool {
        self.owned.contains(&self.topics.partition_of(order_id))
    }

    pub fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    /// The order's state as this writer knows it (version 0, `New`, for an order it never saw).
    pub fn state(&self, order_id: &str) -> OrderState {
        self.orders.get(order_id).cloned().unwrap_or_default()
    }

    /// Records `state` as the order's current state. Call it only with a state whose events are in the log.
    pub fn remember(&mut self, order_id: &str, state: OrderState) {
        self.orders.insert(order_id.to_string(), state);
    }

    /// Appends `events` of `order_id` — and `snapshot`, if given — in one transaction: all are written or none,
    /// to the order's partition of each topic. On an error the transaction is aborted (unless the producer was
    /// fenced: then nothing more can be written by it, and the error says so). An order of a partition this writer
    /// does not own is refused before anything is written: its owner is another writer, whose versions this one
    /// does not know.
    pub fn append(&self, order_id: &str, events: &[StoredEvent], snapshot: Option<&Snapshot>) -> anyhow::Result<()> {
        let partition = self.topics.partition_of(order_id);
        anyhow::ensure!(
            self.owned.contains(&partition),
            "order {order_id} is in partition {partition} of {}, which this writer does not own (it owns {:?})",
            self.topics.events,
            self.owned
        );
        self.producer.begin_transaction()?;
        let written = (|| -> anyhow::Result<()> {
            for event in events {
                anyhow::ensure!(event.order_id == order_id, "event of order {} among {order_id}'s", event.order_id);
                let (key, payload) = codec::encode_event(event);
                self.producer
                    .send(BaseRecord::to(&self.topics.events).partition(partition).key(&key).payload(&payload))
                    .map_err(|(error, _)| error)?;
            }
            if let Some(snapshot) = snapshot {
                let (key, payload) = codec::encode_snapshot(snapshot);
                self.producer
                    .send(BaseRecord::to(&self.topics.snapshots).partition(partition).key(&key).payload(&payload))
                    .map_err(|(error, _)| error)?;
            }
            self.producer.commit_transaction(TXN_CALL_TIMEOUT)?;
            Ok(())
        })();
        if let Err(error) = written {
            if !is_fatal(&error) {
                self.producer
                    .abort_transaction(TXN_CALL_TIMEOUT)
                    .map_err(|abort| anyhow::anyhow!("{error:#}; and the abort failed: {abort}"))?;
            }
            return Err(error);
        }
        Ok(())
    }

    // EXERCISE: Carry out `command` on order `order_id` for a client that read the order at `expected_version`,
    // and return the order's version afterwards. This writer is the order's only writer, and `self.state(..)` is
    // the order as the log has it. Rules:
    // - A client that expected another version than the order's gets `HandleError::Stale` (with both versions),
    //   whatever the command: it decided on a state that is not the order's.
    // - A rejected command is `HandleError::Rejected`; a command that causes no event writes nothing.
    // - The events are numbered on from the order's version (its first event is version 1) and appended with
    //   `append`, in one call; after every `self.snapshot_every()`-th event of the order (versions N, 2N, …) a
    //   snapshot of the state at that version goes with them, in the same call.
    // - If `append` fails, return `HandleError::Append`, and the order stays as it was: its next command is
    //   decided against the same state and version as if this one had never come.
    // The tests send commands with right and wrong versions, read the events and snapshots back from the topics,
    // make the broker refuse a transaction, and load the orders again from the log.
    // ANCHOR: handle
    /// Carries out `command` on `order_id`, which the client read at `expected_version`; the new version.
    pub fn handle(&mut self, order_id: &str, expected_version: u64, command: &Command) -> Result<u64, HandleError> {
        let current = self.state(order_id);
        if expected_version != current.version {
            return Err(HandleError::Stale {
                order_id: order_id.to_string(),
                expected: expected_version,
                actual: current.version,
            });
        }
        let events = decide(&current, command)?;
        if events.is_empty() {
            return Ok(current.version);
        }
        let mut state = current;
        let mut stored = Vec::with_capacity(events.len());
        let mut snapshot = None;
        for event in events {
            state = evolve(state, &event);
            stored.push(StoredEvent { order_id: order_id.to_string(), version: state.version, event });
            if state.version.is_multiple_of(self.snapshot_every) {
                snapshot = Some(Snapshot { order_id: order_id.to_string(), state: state.clone() });
            }
        }
        self.append(order_id, &stored, snapshot.as_ref())
            .map_err(|cause| HandleError::Append { order_id: order_id.to_string(), cause })?;
        let version = state.version;
        self.remember(order_id, state);
        Ok(version)
    }
    // ANCHOR_END: handle
}

/// Whether `error` is a fatal error of a transactional producer (fenced by a newer writer, above all).
pub fn is_fatal(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<KafkaError>() {
        Some(KafkaError::Transaction(e)) => e.is_fatal(),
        Some(other) => other.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced),
        None => false,
    }
}

/// A record as the event store's reader saw it.
pub use kit::read::LogRecord;

/// Every committed record of the `partitions` of `topic`, in log order per partition, read to the end from the
/// beginning with a consumer made from `config` (bootstrap servers and tuning; a group id is needed by librdkafka
/// but nothing is committed): `kit::read::read_partitions_to_end` as a `read_committed` reader.
pub fn read_log(
    mut config: ClientConfig,
    topic: &str,
    partitions: &BTreeSet<i32>,
    within: Duration,
) -> anyhow::Result<Vec<LogRecord>> {
    config.set("isolation.level", "read_committed");
    let partitions: Vec<i32> = partitions.iter().copied().collect();
    kit::read::read_partitions_to_end(config, topic, &partitions, within)
}

/// What recovering from the log found: the orders, and how much work the snapshots saved.
#[derive(Debug, Default)]
pub struct Recovered {
    pub orders: HashMap<String, OrderState>,
    /// Events read from the log.
    pub events_read: usize,
    /// Events folded (the others were already in a snapshot).
    pub events_folded: usize,
    pub snapshots_used: usize,
}

/// Loads every order of the store's `partitions` from its latest snapshot and the events after it: what a writer
/// does when it starts, before it takes commands, for the partitions it owns. Fails on a record that is not an
/// event, and on a corrupted order.
pub fn recover(
    config: &ClientConfig,
    topics: &StoreTopics,
    partitions: &BTreeSet<i32>,
    within: Duration,
) -> anyhow::Result<Recovered> {
    let mut snapshots: BTreeMap<String, Snapshot> = BTreeMap::new();
    for record in read_log(config.clone(), &topics.snapshots, partitions, within)? {
        // Later records of a key replace earlier ones: what compaction does on disk, done here on read.
        if let Some(snapshot) = codec::decode_snapshot(&record.payload) {
            snapshots.insert(snapshot.order_id.clone(), snapshot);
        }
    }
    let mut histories: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    let mut events_read = 0;
    for record in read_log(config.clone(), &topics.events, partitions, within)? {
        let event = codec::decode_event(&record.payload).map_err(|error| {
            anyhow::anyhow!("{} partition {} offset {}: {error}", topics.events, record.partition, record.offset)
        })?;
        events_read += 1;
        histories.entry(event.order_id.clone()).or_default().push(event);
    }
    let mut recovered = Recovered { events_read, ..Recovered::default() };
    for (order_id, events) in histories {
        let snapshot = snapshots.get(&order_id);
        let from = snapshot.map_or(0, |s| s.state.version);
        recovered.snapshots_used += usize::from(snapshot.is_some());
        recovered.events_folded += events.iter().filter(|e| e.version > from).count();
        let state = restore(snapshot, &events)?;
        recovered.orders.insert(order_id, state);
    }
    Ok(recovered)
}
