//! The environment variables the workbook's programs read, in one place that builds without any Kafka client:
//! xtask (built without kit's `clients`) passes them to the lessons it runs and the tests it grades.

/// Names a real broker; set it to use one instead of the embedded mock.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";
/// `kafka` uses (or starts) Apache Kafka on the JVM; `testcontainers` starts a Kafka container; `embedded` (the
/// default) the in-process mock.
pub const BROKER_ENV: &str = "WORKBOOK_BROKER";
/// Set by `cargo xtask lesson` / `cargo xtask broker` next to `KAFKA_BOOTSTRAP_SERVERS` when the address is an
/// embedded mock hosted by another process, so clients are tuned for the mock.
pub const HOSTED_KIND_ENV: &str = "WORKBOOK_BROKER_KIND";
/// `consumer` (KIP-848) or `classic`: overrides the group protocol chosen for the broker kind.
pub const GROUP_PROTOCOL_ENV: &str = "WORKBOOK_GROUP_PROTOCOL";
/// Set by `cargo xtask` to a file where tests append one JSON line per "not graded on this broker" report.
pub const UNGRADED_LOG_ENV: &str = "WORKBOOK_UNGRADED_LOG";
