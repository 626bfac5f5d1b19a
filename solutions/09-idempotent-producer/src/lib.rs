//! Lesson 09 — the idempotent producer: configure a producer whose retries can neither duplicate nor reorder
//! records, send a numbered sequence per key with many requests in flight, and check from what was read back
//! that every record arrived once and in order within its partition.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them, under injected faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use kit::read::ReadRecord;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Statistics};
use serde::{Deserialize, Serialize};

/// One record of a numbered sequence: the `seq`-th record (from 0) sent for `key`. Carrying the number in the
/// payload is what lets a reader prove, after the fact, that nothing was lost, repeated or swapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered {
    pub key: String,
    pub seq: u32,
}

/// Where Kafka stored a record, from its delivery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// How long `send` may wait for room in the producer's local queue when it is full.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most requests an idempotent producer may have in flight per connection: the broker remembers the last
/// five batches of each producer and partition, so it can put up to five in order again after a retry.
pub const MAX_IN_FLIGHT: u32 = 5;

// EXERCISE: The configuration of a producer for the brokers at `bootstrap_servers` whose retries can neither
// duplicate nor reorder a record. Write down everything that guarantee needs, even where it is librdkafka's
// default: how many replicas must hold a record before it counts, at most `MAX_IN_FLIGHT` requests in flight per
// connection, and retries allowed. Bound the retrying by time, not by a count: a record the brokers refuse again and
// again, as they may while a partition changes leader, is retried on until 30 s have passed, and then fails. The
// tests read each of these back, have a proxy refuse your requests 30 times in a row (every record must still
// arrive, once and in order), and check that the broker gives your producer a producer id.
// ANCHOR: producer_config
/// The configuration of an idempotent producer for the brokers at `bootstrap_servers`.
pub fn producer_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", MAX_IN_FLIGHT.to_string())
        // i32::MAX is librdkafka's default: retry until message.timeout.ms says stop.
        .set("retries", i32::MAX.to_string())
        .set("message.timeout.ms", "30000");
    config
}
// ANCHOR_END: producer_config

/// The records of a numbered sequence, in the order they are sent: round by round, one record per key per
/// round (`a0 b0 c0 a1 b1 c1 …`), so the keys' records interleave in the producer's queues like real traffic.
pub fn numbered_sequence(keys: &[&str], per_key: u32) -> Vec<Numbered> {
    (0..per_key).flat_map(|seq| keys.iter().map(move |key| Numbered { key: key.to_string(), seq })).collect()
}

/// A producer context that keeps librdkafka's latest statistics (emitted every `statistics.interval.ms`), so a
/// program can watch what the producer sees: its idempotence state, its producer id, timeouts and outages.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    latest: Arc<Mutex<Option<Statistics>>>,
}

impl ClientContext for Watch {
    fn stats(&self, statistics: Statistics) {
        *self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(statistics);
    }
}

/// What the statistics say about a producer's safety net.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProducerState {
    /// librdkafka's idempotence state: `Assigned` once the broker gave the producer an id; `off` without
    /// idempotence.
    pub idempotence: String,
    /// The producer id the broker assigned (-1 when none): the broker tracks sequence numbers per id.
    pub producer_id: i64,
    pub producer_epoch: i64,
    /// Requests that got no answer within `request.timeout.ms` (their records are retried), over all brokers.
    pub request_timeouts: u64,
    /// Brokers the producer is connected to right now.
    pub brokers_up: usize,
}

impl Watch {
    /// How often to emit statistics: often enough that a short story or test sees fresh figures.
    pub const INTERVAL_MS: &str = "100";

    /// The state from the latest statistics, if any arrived yet.
    pub fn state(&self) -> Option<ProducerState> {
        let guard = self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stats = guard.as_ref()?;
        let (idempotence, producer_id, producer_epoch) = match &stats.eos {
            Some(eos) => (eos.idemp_state.clone(), eos.producer_id, eos.producer_epoch),
            None => ("off".to_string(), -1, -1),
        };
        Some(ProducerState {
            idempotence,
            producer_id,
            producer_epoch,
            request_timeouts: stats.brokers.values().map(|b| b.req_timeouts).sum(),
            // Bootstrap entries have no node id; count the cluster's brokers only.
            brokers_up: stats.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count(),
        })
    }
}

// EXERCISE: Send every record of `records` to `topic`, keyed by its `key` and carried as JSON, and return the
// delivery reports in the same order, one per record. Several requests must be in flight at once — never wait for
// one report before sending the next record — because that is when a retry could reorder: by the time your future
// is first pending, every record of `records` must be in the producer's hands. A record that could not be
// delivered, or that the producer refused to take (its local queue full), is an error that names it: a record is
// never skipped. The tests poll your future once and count the records the producer holds, count the Produce
// requests (a record that waits for the report of the one before it leaves in a request of its own), give the
// producer a queue too small for `records`, send through injected faults and read the topic back.
// ANCHOR: send_numbered
/// Sends `records` with many in flight and waits for every delivery report.
pub async fn send_numbered<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    records: &[Numbered],
) -> anyhow::Result<Vec<Delivery>> {
    let mut pending = Vec::with_capacity(records.len());
    for record in records {
        let payload = serde_json::to_string(record)?;
        let future = producer.send_result(FutureRecord::to(topic).key(&record.key).payload(&payload)).map_err(
            |(error, _message)| anyhow::anyhow!("could not enqueue {} #{}: {error}", record.key, record.seq),
        )?;
        pending.push(async move {
            match future.await {
                Ok(Ok(delivery)) => Ok(Delivery { partition: delivery.partition, offset: delivery.offset }),
                Ok(Err((error, _message))) => {
                    Err(anyhow::anyhow!("{} #{} was not delivered: {error}", record.key, record.seq))
                }
                Err(_canceled) => {
                    Err(anyhow::anyhow!("the producer closed before {} #{} was delivered", record.key, record.seq))
                }
            }
        });
    }
    try_join_all(pending).await
}
// ANCHOR_END: send_numbered

/// The key of the records [`warm_up`] writes; readers leave them out.
pub const WARM_UP_KEY: &str = "warm-up";

// ANCHOR: warm_up
/// Writes one record to each of `partitions` partitions of `topic` before any fault is injected, so the
/// producer has its id, its connections, and a sequence number the broker has stored for every partition.
///
/// The last part matters on real Kafka: a broker that holds no state for a producer on a partition accepts the
/// producer's first batch there *at any sequence number* (its state may have been removed by retention). If that
/// first batch is refused and the next one, already in flight, is accepted, the retried first batch then comes
/// "before" what the broker has and is rejected — and a producer that has just started can lose it without an
/// error. A warmed-up producer is checked batch by batch from the start.
pub async fn warm_up<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    for partition in 0..partitions {
        producer
            .send(FutureRecord::to(topic).partition(partition).key(WARM_UP_KEY).payload("{}"), QUEUE_TIMEOUT)
            .await
            .map_err(|(error, _)| anyhow::anyhow!("the warm-up record for partition {partition}: {error}"))?;
    }
    Ok(())
}
// ANCHOR_END: warm_up

/// What a reader found for one key: how many records, and what was wrong with them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    /// The partitions the key's records were found in (one, when the key decides the partition).
    pub partitions: Vec<i32>,
    /// How many of the key's records were read.
    pub read: usize,
    /// Sequence numbers below `per_key` that never arrived.
    pub missing: Vec<u32>,
    /// Sequence numbers that arrived more than once (each listed once).
    pub duplicated: Vec<u32>,
    /// Sequence numbers that arrived after a higher one of the same key, in log order.
    pub out_of_order: Vec<u32>,
}

/// The verdict on a read-back topic: one report per key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrderCheck {
    pub keys: BTreeMap<String, KeyReport>,
    /// Records whose payload is not a [`Numbered`] record, as `partition/offset`.
    pub unreadable: Vec<String>,
}

impl OrderCheck {
    /// Every expected record arrived once and in order, and nothing else was found.
    pub fn once_and_in_order(&self) -> bool {
        self.unreadable.is_empty()
            && self.keys.values().all(|k| {
                k.missing.is_empty() && k.duplicated.is_empty() && k.out_of_order.is_empty() && k.partitions.len() <= 1
            })
    }
}

// EXERCISE: Check "once and in order per partition" from what was read back. `records` are in log order (by
// partition, then offset). A record whose payload is not a `Numbered` (a record with no payload at all included)
// goes to `unreadable` as "partition/offset". For every key in `keys` fill a `KeyReport`, a key none of whose
// records was read included: the partitions its records were in, how many were read, which numbers in 0..per_key
// are `missing` (up to `per_key`, whatever the highest number read), which came more than once (`duplicated`),
// and which first arrived after a higher number of the same key (`out_of_order`; a later copy of a record is a
// duplicate, not a reordering). Keep the lists sorted, without repeats. The tests hand you logs with each fault in
// them.
// ANCHOR: check_once_in_order
/// Checks that each of `keys` has the records `0..per_key`, each once, in log order.
pub fn check_once_in_order(records: &[ReadRecord], keys: &[&str], per_key: u32) -> OrderCheck {
    let mut check = OrderCheck::default();
    // Per key: the sequence numbers in log order, and the partitions they came from.
    let mut seen: BTreeMap<String, (Vec<u32>, Vec<i32>)> =
        keys.iter().map(|k| (k.to_string(), (Vec::new(), Vec::new()))).collect();
    for record in records {
        let parsed = record.payload.as_deref().and_then(|p| serde_json::from_str::<Numbered>(p).ok());
        let Some(numbered) = parsed else {
            check.unreadable.push(format!("{}/{}", record.partition, record.offset));
            continue;
        };
        let (seqs, partitions) = seen.entry(numbered.key).or_default();
        seqs.push(numbered.seq);
        if !partitions.contains(&record.partition) {
            partitions.push(record.partition);
        }
    }
    for (key, (seqs, mut partitions)) in seen {
        partitions.sort_unstable();
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        let mut highest: Option<u32> = None;
        let mut out_of_order = Vec::new();
        for &seq in &seqs {
            let count = counts.entry(seq).or_default();
            *count += 1;
            // Order is judged on first arrivals: a later copy of a record is a duplicate, not a reordering.
            if *count > 1 {
                continue;
            }
            match highest {
                Some(high) if seq < high => out_of_order.push(seq),
                _ => highest = Some(seq),
            }
        }
        out_of_order.sort_unstable();
        let report = KeyReport {
            partitions,
            read: seqs.len(),
            missing: (0..per_key).filter(|seq| !counts.contains_key(seq)).collect(),
            duplicated: counts.iter().filter(|(_, n)| **n > 1).map(|(seq, _)| *seq).collect(),
            out_of_order,
        };
        check.keys.insert(key, report);
    }
    check
}
// ANCHOR_END: check_once_in_order
