//! What graded tests share: one broker per test binary, unique names, deadline-bound waits, reading a topic
//! back, and the "not graded on this broker" report.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::broker::{Broker, Capability};

/// Set by `cargo xtask` to a file where tests append one JSON line per "not graded on this broker" report.
pub const UNGRADED_LOG_ENV: &str = "WORKBOOK_UNGRADED_LOG";

/// The broker every test in this binary shares, resolved once (an embedded cluster by default). The embedded
/// cluster lives on its own thread, so tests on different tokio runtimes can all use it.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        crate::telemetry::init();
        Broker::resolve().unwrap_or_else(|e| panic!("no broker for the tests: {e:#}"))
    })
}

/// `prefix` plus a random suffix: topics and groups that no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Polls `probe` until it returns `Some`, or fails the test after `within` naming `what` it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::wait::until(what, within, || {
        let probed = probe();
        async move { Ok(probed.await) }
    })
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

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
        .set("group.id", unique("reader"))
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

/// Whether `broker` can show `capability`. When it cannot, the report "not graded on this broker" is printed
/// (past the test harness's capture, so it is always visible) and logged for `cargo xtask grade`/`test` to count;
/// the caller then skips only the assertions that need the capability.
pub fn can_grade(broker: &Broker, capability: Capability, test: &str) -> bool {
    if broker.supports(capability) {
        return true;
    }
    let line = format!(
        "NOT GRADED ON THIS BROKER: `{test}` needs {} — {}\n",
        capability.describe(),
        capability.where_graded()
    );
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, not this.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(path) = std::env::var(UNGRADED_LOG_ENV) {
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let entry = serde_json::json!({
                "crate": std::env::var("CARGO_PKG_NAME").unwrap_or_default(),
                "test": test,
                "capability": capability.describe(),
            });
            let _ = writeln!(file, "{entry}");
        }
    }
    false
}
