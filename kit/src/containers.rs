//! Brokers in containers, for `WORKBOOK_BROKER=testcontainers`: real Apache Kafka started once per test run.
//!
//! Needs a Docker engine; without one it says so and how to use the embedded broker instead.

use crate::broker::Broker;

/// Starts (once per process) an apache/kafka container and returns it as a broker.
pub fn kafka() -> anyhow::Result<Broker> {
    anyhow::bail!(
        "WORKBOOK_BROKER=testcontainers needs Docker, and testcontainers support is not built yet. \
         Unset WORKBOOK_BROKER to use the embedded broker, or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka."
    )
}

/// The URL of a Redis container started once per process (for lesson 07 and later under
/// `WORKBOOK_BROKER=testcontainers`).
pub fn redis_url() -> anyhow::Result<String> {
    anyhow::bail!(
        "WORKBOOK_BROKER=testcontainers needs Docker, and testcontainers support is not built yet. \
         Unset WORKBOOK_BROKER and start Redis locally (`redis-server --daemonize yes`), or set REDIS_URL."
    )
}
