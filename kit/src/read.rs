//! Reading a topic back, from the beginning of every partition and outside any consumer group: the independent
//! view of what a program really wrote, which graded tests assert on and some stories print.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::broker::Broker;

/// One record as read back from a topic, in a form tests can compare and snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning of every partition, outside any consumer group, until `expected` records
/// have arrived (then waits `settle` more to catch any extra) or `within` runs out. Sorted by partition and
/// offset. This is the tests' independent view of what a lesson really wrote.
pub async fn read_topic(broker: &Broker, topic: &str, expected: usize, within: Duration) -> Vec<ReadRecord> {
    let consumer: StreamConsumer = broker
        .consumer_base()
        .set("group.id", crate::topics::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader consumer");
    let partitions = {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0)
    };
    assert!(partitions > 0, "topic {topic} has no partitions (was it created?)");
    {
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            assignment.add_partition_offset(topic, p, Offset::Beginning).expect("offset");
        }
        consumer.assign(&assignment).expect("assign");
        // `assignment` is dropped here, before the consumer: a live list would make the consumer's drop hang.
    }
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut stream = consumer.stream();
    loop {
        // Once the expected count is in, linger briefly so extra (duplicate) records are caught too.
        let until = if records.len() >= expected {
            (tokio::time::Instant::now() + Duration::from_millis(300)).min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(m))) => records.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            // A broker that is down (a test killed it) is reported as an error, but the client carries on with
            // the others: only other errors end the read.
            Ok(Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            )))) => continue,
            Ok(Some(Err(e))) => panic!("reading {topic}: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    drop(stream);
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// The context of a reader that reads to the end of each partition (`enable.partition.eof=true`): librdkafka
/// reports each end as an error, which rdkafka's default context logs as one. Here it is the expected end of a
/// read, not worth an ERROR line; every other error is logged as usual.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadToEnd;

impl rdkafka::ClientContext for ReadToEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !end {
            tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEnd {}

/// A record as [`read_to_end`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// Every record of `topic` (all `partitions`) a consumer made from `config` reads from the beginning to the end
/// of each partition, in log order per partition; outside any group (nothing is committed). The end is
/// librdkafka's end-of-partition event — the high watermark, or the last stable offset for a `read_committed`
/// config — so no timer decides what was read; `within` only bounds a read that never ends. Blocking: async
/// callers run it in `spawn_blocking`.
pub fn read_to_end(
    config: rdkafka::ClientConfig,
    topic: &str,
    partitions: i32,
    within: Duration,
) -> anyhow::Result<Vec<LogRecord>> {
    let all: Vec<i32> = (0..partitions).collect();
    read_partitions_to_end(config, topic, &all, within)
}

/// [`read_to_end`] of some partitions of `topic` only: what a reader that owns those partitions reads.
pub fn read_partitions_to_end(
    mut config: rdkafka::ClientConfig,
    topic: &str,
    partitions: &[i32],
    within: Duration,
) -> anyhow::Result<Vec<LogRecord>> {
    use rdkafka::consumer::BaseConsumer;
    config.set("enable.partition.eof", "true").set("enable.auto.commit", "false");
    let consumer: BaseConsumer<ReadToEnd> = config.create_with_context(ReadToEnd)?;
    {
        // Dropped before the consumer: a partition list alive at its drop blocks the drop for 30 s.
        let mut assignment = TopicPartitionList::new();
        for &partition in partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
    }
    let mut records = Vec::new();
    let mut ended = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + within;
    let wanted: std::collections::BTreeSet<i32> = partitions.iter().copied().collect();
    while ended.len() < wanted.len() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{topic}: not read to its end within {within:?}: {ended:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => records.push(LogRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: message.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ended.insert(partition);
            }
            Some(Err(error)) => return Err(anyhow::Error::new(error).context(format!("reading {topic}"))),
        }
    }
    Ok(records)
}
