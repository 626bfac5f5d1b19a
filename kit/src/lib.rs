//! `kit` — the one library every lesson, test and chore shares.
//!
//! # Layout
//!
//! - [`broker`]: decides which Kafka a program talks to (a real one named by `KAFKA_BOOTSTRAP_SERVERS`, or the
//!   embedded mock cluster), hands out client configurations tuned for that broker, and creates topics the way
//!   that broker allows. Every lesson starts here, so the choice is made in one place.
//! - [`env`]: the environment variables the workbook's programs read (`KAFKA_BOOTSTRAP_SERVERS`, …).
//! - [`containers`]: the testcontainers source (`WORKBOOK_BROKER=testcontainers`): real Kafka, Redis in Docker.
//! - [`embedded`]: hosts librdkafka's mock cluster on a thread of its own (the mock is `!Send`) and exposes its
//!   fault injection.
//! - [`fault_proxy`]: a Kafka-aware TCP proxy that loses or delays Produce acks in front of any broker, real Kafka
//!   included, for the behaviours that only real Kafka gets right under faults (lesson 09's lost ack), and logs
//!   the transactional requests it forwards (lesson 10's grading on the embedded broker); without
//!   faults, it publishes the embedded broker on a fixed address such as `127.0.0.1:9092` for other processes.
//! - [`wire`]: Kafka's frames through the `kafka-protocol` crate, and a blocking Metadata probe that needs no
//!   librdkafka (how [`jvm_kafka`] waits for its brokers).
//! - [`jvm_kafka`]: real Apache Kafka on this machine's JVM (jars from Maven Central, no Docker), for
//!   `cargo xtask kafka` and `WORKBOOK_BROKER=kafka`; also private clusters a test can crash brokers of.
//! - [`outage`]: a private one-broker cluster a test takes down and brings back, on every broker kind.
//! - [`topics`]: the manifest of the workbook's named topics (partitions, retention, compression), read by the
//!   lessons' runnable stories and by `cargo xtask broker` / `cargo xtask topics`.
//! - [`events`]: the user-activity event the lessons produce and consume, and a deterministic sample generator.
//! - [`publish`]: putting known events into a topic (keyed, acknowledged) before a story or test reads them.
//! - [`read`]: reading a topic back from the beginning, outside any group: what a program really wrote.
//! - [`grading`]: the "not graded on this broker" report, counted by `cargo xtask grade` and `test`.
//! - [`redis`]: which Redis holds derived state (`REDIS_URL`, a test container, or the local default), and
//!   connecting to it with a clear "start Redis with …" message when it is absent.
//! - [`rabbitmq`]: which RabbitMQ the comparison uses (`RABBITMQ_URL`, a test container, or the local default),
//!   and connecting to it with lapin, with a clear "start RabbitMQ with …" message when it is absent.
//! - [`story`]: the opening every lesson's runnable story shares (logs, the broker named, its topics created).
//! - [`wait`]: waiting on a condition with a deadline, the one polling loop tests and stories share.
//! - [`telemetry`]: tracing set-up for the runnable stories and tools.
//!
//! Everything that is a Kafka or Redis client needs the default feature `clients`; xtask builds kit without it
//! (`env`, `topics`, `jvm_kafka`, `containers`, `telemetry` and [`machine_dir`] remain). [`redis`] needs the
//! feature `redis` (lessons 07 on), [`rabbitmq`] the feature `rabbitmq` (lessons 04, 05, 08, 10 and the comparison).
//!
//! What only tests use (the broker a test binary shares, snapshot redactions, insta) is in the dev-only crate
//! `kit-testing`, so the stories a learner runs never build it.

#[cfg(feature = "clients")]
pub mod broker;
pub mod containers;
#[cfg(feature = "clients")]
pub mod embedded;
pub mod env;
#[cfg(feature = "clients")]
pub mod events;
#[cfg(feature = "clients")]
pub mod fault_proxy;
#[cfg(feature = "clients")]
pub mod grading;
pub mod jvm_kafka;
#[cfg(feature = "clients")]
pub mod outage;
#[cfg(feature = "clients")]
pub mod publish;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "clients")]
pub mod read;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "clients")]
pub mod stage;
#[cfg(feature = "clients")]
pub mod story;
pub mod telemetry;
pub mod topics;
#[cfg(feature = "clients")]
pub mod wait;
pub mod wire;

#[cfg(feature = "clients")]
pub use broker::{Broker, BrokerError, BrokerKind, Capability};
#[cfg(feature = "clients")]
pub use embedded::EmbeddedCluster;
#[cfg(feature = "clients")]
pub use events::{EventType, UserEvent};
#[cfg(feature = "clients")]
pub use fault_proxy::{FaultProxy, ProxyStats, TxnRequest};

/// The workbook's folder on this machine, outside any clone, for what is worth keeping between clones and runs
/// (Kafka's resolved classpath, the book's tools): `$KAFKA_WORKBOOK_HOME`, else `$XDG_CACHE_HOME/kafka-workbook`,
/// else `~/.cache/kafka-workbook`.
pub fn machine_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("KAFKA_WORKBOOK_HOME").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("kafka-workbook")
}
