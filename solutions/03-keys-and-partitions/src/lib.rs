//! Lesson 03 — keys and partitions: the key decides the partition, and a partition is the unit of order.
//!
//! Records with the same key go to the same partition, and Kafka keeps a partition in the order it was
//! written. So keying user events by `user_id` gives every user one ordered history, while the topic's
//! partitions spread the users (and the load) over the cluster. Without a key, the producer scatters records
//! over the partitions and a user's history is split into pieces that no consumer can put back in order.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::try_join_all;
use kit::UserEvent;
use kit::read::ReadRecord;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

/// Whether records carry the user as their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// The key is the event's `user_id`: the partition follows from it.
    ByUser,
    /// No key: the producer picks a partition for each record.
    None,
}

/// Where one event landed, as its delivery report said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub user_id: String,
    pub partition: i32,
    pub offset: i64,
}

/// How one user's events lie in the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserLayout {
    /// How many records of this user's events the topic holds: an event written twice (a retry) counts twice.
    pub events: usize,
    /// The partitions they are in: exactly one when the events are keyed by user.
    pub partitions: BTreeSet<i32>,
    /// True when one partition holds them all *and* its offsets follow the order in which the user acted, so a
    /// consumer of that partition replays the user's history as it happened.
    pub in_order: bool,
}

/// How long `send` may wait for room in the producer's local queue when it is full.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The lesson's producer: the broker's base producer settings plus two decisions made here.
pub fn producer_config(broker: &kit::Broker) -> ClientConfig {
    let mut config = broker.producer_config();
    // Idempotence lets the broker reject a retried batch that would land behind a later one, so the order of
    // the records of one partition survives retries. It is what makes "one key, one ordered history" hold.
    config.set("enable.idempotence", "true");
    // librdkafka's default partitioner (`consistent_random`, a CRC32 of the key) stays: lesson 01 wrote the
    // same users with it, and a user must keep their partition whichever lesson writes. Unkeyed records are
    // normally "sticky" (all go to one partition for 10 ms, to fill batches); 0 makes each pick a partition
    // of its own, so a short run shows the scatter that sticky batching only shows over a longer one.
    config.set("sticky.partitioning.linger.ms", "0");
    config
}

// EXERCISE: Send every event to `topic` as JSON (`event.to_json()`), keyed by its `user_id` for `Keying::ByUser`
// and with no key at all for `Keying::None`. Return one `Placement` per event, in the order of `events`, with the
// partition and offset its delivery report gave; an event whose delivery fails has no placement: the call is then an
// error. The sends must not wait for one another: every send is started, in the order of `events`, before any report
// is awaited, so the producer can batch them and writes each partition in that order. The tests read both topics
// back and check where and in which order each user's events are; count the requests the producer makes (sends that
// wait for one another take one request per event); poll your future once with a producer whose records cannot
// leave and expect it to hold every event; and expect an error when nothing can be delivered.
// ANCHOR: produce
/// Sends `events` in order and reports where each one landed.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    events: &[UserEvent],
    keying: Keying,
) -> anyhow::Result<Vec<Placement>> {
    let sends = events.iter().map(|event| async move {
        let payload = event.to_json();
        let mut record = FutureRecord::to(topic).payload(&payload);
        if keying == Keying::ByUser {
            record = record.key(&event.user_id);
        }
        let delivery = producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map_err(|(error, _message)| anyhow::anyhow!("could not deliver event {}: {error}", event.event_id))?;
        Ok::<_, anyhow::Error>(Placement {
            user_id: event.user_id.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
        })
    });
    try_join_all(sends).await
}
// ANCHOR_END: produce

// EXERCISE: Count how many of the `placements` landed in each partition, with the partitions in ascending order,
// so the result prints (and snapshots) the same way on every run. The tests count the placements of real runs and
// hand-made ones, as a topic written before would give them.
// ANCHOR: partition_counts
/// Events per partition.
pub fn partition_counts(placements: &[Placement]) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for placement in placements {
        *counts.entry(placement.partition).or_insert(0) += 1;
    }
    counts
}
// ANCHOR_END: partition_counts

// EXERCISE: Describe each user's events as the topic holds them, from the records a reader got back (each payload
// a `UserEvent` as JSON). Per user: how many records (each one counts, so an event written twice counts twice), in
// which partitions, and `in_order` — true only when one partition holds them all and, read in log order (by
// partition, then offset), their `timestamp`s never go backwards. A record whose payload is missing or is not an
// event is an error that names its partition and offset. The tests give you keyed and unkeyed read-backs, and
// hand-made records in and out of order, some of them duplicates.
// ANCHOR: user_layout
/// Each user's events as the topic holds them: how many, in which partitions, and whether in order.
pub fn user_layout(records: &[ReadRecord]) -> anyhow::Result<BTreeMap<String, UserLayout>> {
    let mut positioned: Vec<(i32, i64, UserEvent)> = Vec::with_capacity(records.len());
    for record in records {
        let payload = record.payload.as_deref().unwrap_or_default();
        let event: UserEvent = serde_json::from_str(payload).map_err(|e| {
            anyhow::anyhow!("partition {} offset {} is not a user event: {e}", record.partition, record.offset)
        })?;
        positioned.push((record.partition, record.offset, event));
    }
    // The order a consumer of each partition sees: by partition, then offset.
    positioned.sort_by_key(|(partition, offset, _)| (*partition, *offset));

    let mut histories: BTreeMap<String, Vec<(i32, UserEvent)>> = BTreeMap::new();
    for (partition, _offset, event) in positioned {
        histories.entry(event.user_id.clone()).or_default().push((partition, event));
    }
    Ok(histories
        .into_iter()
        .map(|(user, history)| {
            let partitions: BTreeSet<i32> = history.iter().map(|(partition, _)| *partition).collect();
            let time_never_goes_back = history.windows(2).all(|pair| pair[0].1.timestamp <= pair[1].1.timestamp);
            let layout = UserLayout {
                events: history.len(),
                in_order: partitions.len() == 1 && time_never_goes_back,
                partitions,
            };
            (user, layout)
        })
        .collect())
}
// ANCHOR_END: user_layout
