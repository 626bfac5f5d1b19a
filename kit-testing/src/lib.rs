//! `kit-testing` — what the graded tests share and the runnable stories never need: one broker per test binary,
//! a wait that fails the test when time runs out, and the snapshot redactions.
//!
//! Lessons take it as a dev-dependency, so `cargo xtask lesson NN` builds none of it (insta above all). The
//! helpers that stories use too — reading a topic back, unique names, the "not graded on this broker" report —
//! live in `kit` and are re-exported here so a test imports from one place.

pub mod redact;
pub mod redis_link;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use kit::Broker;

pub use kit::grading::can_grade;
pub use kit::read::{ReadRecord, read_topic};
pub use kit::topics::unique;

/// The broker every test in this binary shares, resolved once (an embedded cluster by default). The embedded
/// cluster lives on its own thread, so tests on different tokio runtimes can all use it.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        kit::telemetry::init();
        Broker::resolve().unwrap_or_else(|e| panic!("no broker for the tests: {e:#}"))
    })
}

/// Polls `probe` until it returns `Some`, or fails the test after `within` naming `what` it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    kit::wait::until(what, within, || {
        let probed = probe();
        async move { Ok(probed.await) }
    })
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// Creates `topics` on the test binary's broker: (name, compacted, partitions) each, as the stage-based lessons
/// (12–14) describe their topic sets. Compacted ones get `cleanup.policy=compact` where the broker takes it.
pub async fn create_topics(topics: &[(&str, bool, i32)]) {
    for (topic, compacted, partitions) in topics {
        let configs = if *compacted { vec![("cleanup.policy", "compact".to_string())] } else { Vec::new() };
        broker().create_topic_with(topic, *partitions, &configs).await.expect("a topic");
    }
}

/// Every committed record of `topic` (`partitions` of them), read to its end on the blocking pool: an independent
/// view of what services wrote, outside any group.
pub async fn committed_records(topic: &str, partitions: i32) -> Vec<kit::read::LogRecord> {
    let mut config = broker().consumer_config(&unique("reader"));
    config.set("isolation.level", "read_committed");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || kit::read::read_to_end(config, &topic, partitions, Duration::from_secs(30)))
        .await
        .expect("the reader ran")
        .expect("the topic reads to its end")
}

/// The offsets `group` committed on `topic`'s first `partitions` partitions (`None`: nothing committed), asked of
/// the broker by a consumer of that group on the blocking pool (the call blocks) that never joins it.
pub async fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let (config, topic) = (broker().consumer_config(group), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().expect("a consumer");
        let offsets = {
            let mut wanted = TopicPartitionList::new();
            for partition in 0..partitions {
                wanted.add_partition(&topic, partition);
            }
            let found = consumer.committed_offsets(wanted, Duration::from_secs(10)).expect("committed offsets");
            (0..partitions)
                .map(|p| match found.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => Some(offset),
                    _ => None,
                })
                .collect()
            // `found` is dropped here, before the consumer: a live list blocks its drop for 30 s.
        };
        drop(consumer);
        offsets
    })
    .await
    .expect("the reader ran")
}

/// The latest value of each key of a changelog (`partitions` of them), as compaction would leave it: a key whose
/// latest record is a tombstone (no payload) is gone.
pub async fn latest_values(topic: &str, partitions: i32) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut values = std::collections::BTreeMap::new();
    for record in committed_records(topic, partitions).await {
        let key = record.key.unwrap_or_default();
        if record.payload.is_empty() {
            values.remove(&key);
        } else {
            values.insert(key, record.payload);
        }
    }
    values
}
