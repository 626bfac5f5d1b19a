//! Lesson 05 — offsets: where a group starts, when it commits, how to go back, and how far behind it is.
//!
//! A consumer group remembers its place in each partition as a **committed offset**: the offset of the next
//! record to read. Everything in this lesson follows from when that number is written and read:
//! - a group with no committed offset starts where `auto.offset.reset` says (`earliest` or `latest`);
//! - committing *after* processing means a crash repeats work (at-least-once); auto-commit writes the offsets
//!   of records handed to the code, processed or not, so a crash can skip them;
//! - a consumer can be pointed at any offset to replay history; the log is still there;
//! - lag, the high watermark minus the committed offset, is how much a group has left to do.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

/// The RabbitMQ counterpart (`--rabbitmq`): per-message settlement on a classic queue, and streams, RabbitMQ's log.
pub mod rabbit;

use std::collections::BTreeMap;
use std::time::Duration;

use kit::{Broker, UserEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use uuid::Uuid;

/// Where a group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record still in the log: the group processes the history.
    Earliest,
    /// The end of the log: the group sees only what is written from now on.
    Latest,
}

/// Who commits the group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// The client, in the background, every `auto.commit.interval.ms`: the offsets of records it has handed
    /// to the code, whether or not the code has finished with them.
    Auto,
    /// The code, explicitly, once a record is processed.
    AfterProcessing,
}

/// How often auto-commit runs in this lesson: 200 ms instead of the default 5 s, so the story and the tests see
/// a commit happen quickly. The risk it shows is the same at any interval.
pub const AUTO_COMMIT_INTERVAL_MS: &str = "200";

// EXERCISE: The configuration of a consumer in `group`, built on `broker.consumer_base()`. Where a group with no
// committed offset starts follows `start`. Who commits follows `commits`: with `Commits::Auto` the client commits
// in the background every `AUTO_COMMIT_INTERVAL_MS`; with `Commits::AfterProcessing` it never commits on its own,
// your code does. The tests run the combinations and watch what a new group reads and what a crash leaves
// committed.
// ANCHOR: consumer_config
/// A consumer of `group` that starts at `start` when the group has no committed offset and commits as `commits`.
pub fn consumer_config(broker: &Broker, group: &str, start: StartFrom, commits: Commits) -> ClientConfig {
    let mut config = broker.consumer_base();
    config.set("group.id", group);
    config.set(
        "auto.offset.reset",
        match start {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        },
    );
    match commits {
        Commits::Auto => {
            config.set("enable.auto.commit", "true").set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
        }
        Commits::AfterProcessing => config.set("enable.auto.commit", "false"),
    };
    config
}
// ANCHOR_END: consumer_config

/// One record a consumer handled: where it was, and which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handled {
    pub partition: i32,
    pub offset: i64,
    pub event_id: Uuid,
}

/// Reads the event in `message`, or says which record is not one.
fn handle(message: &impl Message) -> anyhow::Result<Handled> {
    let event: UserEvent = serde_json::from_slice(message.payload().unwrap_or_default()).map_err(|e| {
        anyhow::anyhow!("partition {} offset {} is not a user event: {e}", message.partition(), message.offset())
    })?;
    Ok(Handled { partition: message.partition(), offset: message.offset(), event_id: event.event_id })
}

/// How long one read may wait for a record before the lesson's functions give up and say so.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Receives `count` records, committing nothing itself.
pub async fn receive(consumer: &StreamConsumer, count: usize) -> anyhow::Result<Vec<Handled>> {
    let mut handled = Vec::with_capacity(count);
    while handled.len() < count {
        let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv()).await.map_err(|_| {
            anyhow::anyhow!("no record within {RECEIVE_TIMEOUT:?} after {} of {count}", handled.len())
        })??;
        handled.push(handle(&message)?);
    }
    Ok(handled)
}

/// Simulates the process dying at this point: no code runs for `consumer` any more, and in particular not its
/// close. A clean close is no crash: it drains the records already fetched and, with auto-commit, commits them
/// all. The leaked client is the price of the simulation; a real crash takes its process with it.
pub fn crash(consumer: StreamConsumer) {
    std::mem::forget(consumer);
}

/// A simulated crash: the process dies right after processing record number `after_processing` (1-based),
/// before it could commit that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    pub after_processing: usize,
}

// EXERCISE: Process `count` records at least once: a record must never be committed before it is processed
// (processing is `handle(&message)`; return its results). A record whose processing fails is an error that ends the
// call, and that record stays uncommitted. No wait for a record may outlast `RECEIVE_TIMEOUT`: giving up is an error
// too, not a shorter batch. `crash` makes the process die right after processing its `after_processing`-th record:
// return there, with that record processed but not committed. The tests crash after offset 3, then check that the
// committed offset is still 3 and that a restart processes offset 3 again and skips nothing; they put a record that
// is not an event at offset 3 and expect an error with the committed offset still 3; and they wait on an empty
// topic, on tokio's paused clock, for your function to give up by `RECEIVE_TIMEOUT` with an error.
// ANCHOR: process_then_commit
/// Processes records one by one and commits each only after it is processed; stops early at a simulated crash.
pub async fn process_then_commit(
    consumer: &StreamConsumer,
    count: usize,
    crash: Option<Crash>,
) -> anyhow::Result<Vec<Handled>> {
    let mut processed = Vec::with_capacity(count);
    while processed.len() < count {
        let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv()).await.map_err(|_| {
            anyhow::anyhow!("no record within {RECEIVE_TIMEOUT:?} after {} of {count}", processed.len())
        })??;
        processed.push(handle(&message)?);
        if crash.is_some_and(|c| c.after_processing == processed.len()) {
            return Ok(processed); // the crash: processed, never committed
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
    Ok(processed)
}
// ANCHOR_END: process_then_commit

// EXERCISE: Point `consumer` at `offset` of `topic`/`partition` so that its next records replay the log from
// exactly there, whatever the group committed and without waiting for a rebalance, whether or not it has any partition
// assigned yet. The tests replay from offset 4, on a consumer that has read the log and on a fresh one, and expect
// offsets 4–9, with the same events as the first read.
// ANCHOR: replay_from
/// Rewinds (or fast-forwards) `consumer` to `offset` of one partition.
pub fn replay_from(consumer: &StreamConsumer, topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    Ok(())
}
// ANCHOR_END: replay_from

/// Resumes `consumer` on `partitions` of `topic` from the group's committed offsets, as a restarted member does
/// (a partition without one starts where `auto.offset.reset` says). Assigning by hand skips the group join,
/// which takes seconds on the embedded broker; the committed offsets are read the same way.
pub fn resume(consumer: &StreamConsumer, topic: &str, partitions: &[i32]) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    for &partition in partitions {
        assignment.add_partition_offset(topic, partition, Offset::Stored)?;
    }
    consumer.assign(&assignment)?;
    Ok(())
}

/// How far a group is behind on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// The partition's high watermark: the end of what is replicated to every in-sync replica, which is what a
    /// consumer may read. (The offset the next record will get is the log-end offset; on one broker, or once the
    /// followers have caught up, the two are equal.)
    pub high_watermark: i64,
    /// The group's committed offset: the next record it will read. `None` when it has committed nothing.
    pub committed: Option<i64>,
    /// Records written but not yet processed by the group.
    pub lag: i64,
}

// EXERCISE: Measure how far `consumer`'s group is behind on each partition `0..partitions` of `topic`: the high
// watermark minus the group's committed offset. Where the group committed nothing, `committed` is `None` and
// everything still in the log counts (high watermark − low watermark). The tests commit different amounts on three
// partitions (one caught up, one untouched) and compare your figures with what they wrote; and they measure a
// partition whose oldest records are gone, so its log starts above offset 0.
// ANCHOR: lag
/// The group's lag per partition: high watermark − committed offset.
pub fn lag(consumer: &StreamConsumer, topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, PartitionLag>> {
    let timeout = Duration::from_secs(10);
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let committed: BTreeMap<i32, Option<i64>> = {
        // Dropped at the end of this block, long before the consumer: a live list makes the consumer's drop hang.
        let list = consumer.committed_offsets(wanted, timeout)?;
        list.elements()
            .iter()
            .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { Some(o) } else { None }))
            .collect()
    };
    let mut lags = BTreeMap::new();
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let committed = committed.get(&partition).copied().flatten();
        let lag = high - committed.unwrap_or(low);
        lags.insert(partition, PartitionLag { high_watermark: high, committed, lag });
    }
    Ok(lags)
}
// ANCHOR_END: lag

/// Publishes `events` to `topic` one at a time until `consumer` receives one of them, and returns how many it
/// published. A `latest` consumer only learns where the end of the log is when it first fetches, and records
/// written before that moment are never shown to it; once it has received one record, everything written later
/// reaches it. (librdkafka's `position()` cannot tell: it only moves when the code consumes a record.)
pub async fn publish_until_received(
    broker: &Broker,
    topic: &str,
    consumer: &StreamConsumer,
    events: &[UserEvent],
) -> anyhow::Result<usize> {
    for (published, event) in events.iter().enumerate() {
        kit::publish::publish_events(broker, topic, std::slice::from_ref(event)).await?;
        // A short wait per event bounds the whole loop; a miss just means "not reading yet": publish the next.
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            handle(&message?)?;
            return Ok(published + 1);
        }
    }
    anyhow::bail!("the consumer received none of {} events published one by one", events.len())
}
