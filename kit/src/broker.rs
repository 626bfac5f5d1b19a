//! Which Kafka a program talks to, and how to talk to it.
//!
//! [`Broker::resolve`] looks in this order:
//! 1. `KAFKA_BOOTSTRAP_SERVERS` — any real broker (docker compose, a cluster at work). It is checked for an
//!    answer before a lesson starts, so a stopped broker is reported at once, with how to start one.
//! 2. `WORKBOOK_BROKER=kafka` — real Apache Kafka on this machine's JVM: the one `cargo xtask kafka --detach`
//!    runs on 127.0.0.1:9092, started (and left running for the next tests) when none is (needs Java 17+ and
//!    Maven; see [`crate::jvm_kafka`]).
//! 3. `WORKBOOK_BROKER=testcontainers` — a throw-away apache/kafka container (needs Docker).
//! 4. otherwise the embedded mock cluster, started in this process: nothing to install.
//!
//! The [`Broker`] says which kind it is ([`BrokerKind`]), because the mock cannot show everything real Kafka
//! does (see [`Capability`]); tests ask before asserting such behaviour and report "not graded on this broker"
//! instead of passing silently.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::embedded::EmbeddedCluster;
use crate::topics::TopicSpec;

pub use crate::env::{BOOTSTRAP_ENV, BROKER_ENV, GROUP_PROTOCOL_ENV, HOSTED_KIND_ENV};

/// How to start a broker, for error messages.
pub const HOW_TO_START: &str = "Unset KAFKA_BOOTSTRAP_SERVERS to use the embedded broker, run `cargo xtask broker` \
     in another terminal (embedded, on 127.0.0.1:9092), or start real Kafka with `cargo xtask kafka --detach` \
     (on the JVM, no Docker) or `cargo xtask up` (docker compose) and set KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// librdkafka's mock cluster, in this process or hosted by `cargo xtask`.
    Embedded,
    /// A broker named by `KAFKA_BOOTSTRAP_SERVERS`.
    External,
    /// An apache/kafka container started for this run.
    Testcontainers,
    /// Apache Kafka on this machine's JVM (`WORKBOOK_BROKER=kafka`, `cargo xtask kafka`).
    Jvm,
}

impl BrokerKind {
    /// Real Kafka (external or container) as opposed to the mock.
    pub fn is_real_kafka(self) -> bool {
        !matches!(self, BrokerKind::Embedded)
    }
}

/// Behaviours real Kafka has and the mock lacks or only the mock offers. Measured with librdkafka 2.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// A `read_committed` consumer skips records of aborted transactions (the mock delivers them).
    ReadCommittedHidesAborted,
    /// Offsets sent inside a transaction are stored as the group's committed offsets (the mock drops them).
    TransactionalOffsetCommits,
    /// The broker checks an idempotent producer's sequence numbers: it acknowledges without writing a retried
    /// batch it already has (a lost ack) and rejects one that skips ahead of a failed batch, so the producer
    /// resends in order. The mock checks them only for transactional producers.
    IdempotentSequenceChecks,
    /// A producer that starts with the transactional id of another fences it: the broker refuses the older
    /// producer's writes and commits from then on (the mock lets both write and commit). A test can still show the
    /// fenced producer's side on the mock: [`crate::FaultProxy`] answers its next write as Kafka would
    /// (`INVALID_PRODUCER_EPOCH`).
    ProducerFencing,
    /// The CreateTopics/DeleteTopics admin API (the mock creates topics through its own API only).
    AdminTopics,
    /// Log compaction: on a topic with `cleanup.policy=compact` the broker's log cleaner keeps only the latest
    /// record of each key (the mock keeps every record and ignores topic configs).
    Compaction,
    /// Injecting request errors, broker outages and slow responses from inside the broker: only the in-process
    /// mock can. Lost and late acks can be injected in front of any broker with [`crate::FaultProxy`].
    FaultInjection,
    /// A private cluster whose broker a test may take down and bring back ([`crate::outage::OutageCluster`]):
    /// an in-process mock next to the embedded broker, Apache Kafka on the JVM next to real Kafka.
    BrokerOutage,
}

impl Capability {
    pub fn describe(self) -> &'static str {
        match self {
            Capability::ReadCommittedHidesAborted => "read_committed hiding aborted records",
            Capability::TransactionalOffsetCommits => "storing offsets committed in a transaction",
            Capability::IdempotentSequenceChecks => {
                "checking an idempotent producer's sequence numbers (no copy after a lost ack, no gap after an error)"
            }
            Capability::ProducerFencing => "fencing a producer when another starts with its transactional id",
            Capability::AdminTopics => "the CreateTopics admin API",
            Capability::Compaction => "log compaction (only the latest record per key kept)",
            Capability::FaultInjection => "fault injection (the in-process embedded broker)",
            Capability::BrokerOutage => "a private cluster to take down (in-process, or Kafka on this machine's JVM)",
        }
    }

    /// Where a test that needs this capability is graded, for the "not graded on this broker" report.
    pub fn where_graded(self) -> &'static str {
        match self {
            Capability::FaultInjection => {
                "run it on the embedded broker (leave KAFKA_BOOTSTRAP_SERVERS and WORKBOOK_BROKER unset)"
            }
            Capability::BrokerOutage => {
                "run it on the embedded broker, or install Java 17+ and Maven so real Kafka runs on the JVM"
            }
            _ => {
                "run it against real Kafka (WORKBOOK_BROKER=kafka, KAFKA_BOOTSTRAP_SERVERS=… or WORKBOOK_BROKER=testcontainers)"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no Kafka broker answered at {bootstrap} (from {origin}) within {waited:?}: {cause}.\n{HOW_TO_START}")]
    Unreachable { bootstrap: String, origin: String, waited: Duration, cause: String },
    #[error("{0}")]
    Other(String),
}

/// A resolved broker: where it is, what kind it is, and (for the in-process mock) the handle to its controls.
#[derive(Debug, Clone)]
pub struct Broker {
    kind: BrokerKind,
    bootstrap_servers: String,
    origin: String,
    embedded: Option<EmbeddedCluster>,
}

impl Broker {
    /// Picks the broker from the environment (see the module docs) and checks that it answers.
    pub fn resolve() -> anyhow::Result<Broker> {
        if let Some(bootstrap) = std::env::var(BOOTSTRAP_ENV).ok().filter(|s| !s.trim().is_empty()) {
            let kind = match std::env::var(HOSTED_KIND_ENV).as_deref() {
                Ok("embedded") => BrokerKind::Embedded,
                _ => BrokerKind::External,
            };
            return Ok(Broker::connect(kind, bootstrap, BOOTSTRAP_ENV.to_string())?);
        }
        match std::env::var(BROKER_ENV).as_deref() {
            Ok("kafka") => Broker::jvm(),
            Ok("testcontainers") => {
                let bootstrap = crate::containers::kafka_bootstrap()?;
                Ok(Broker::connect(BrokerKind::Testcontainers, bootstrap, "an apache/kafka test container".into())?)
            }
            Ok("embedded") | Ok("") | Err(_) => Broker::embedded(),
            Ok(other) => anyhow::bail!(
                "{BROKER_ENV}={other:?} is not a broker source: use `embedded`, `kafka` or `testcontainers`"
            ),
        }
    }

    /// Starts an embedded mock cluster (one broker) in this process.
    pub fn embedded() -> anyhow::Result<Broker> {
        Ok(Broker::from_embedded(EmbeddedCluster::start(1)?))
    }

    /// Apache Kafka on the JVM on 127.0.0.1:9092: the cluster `cargo xtask kafka --detach` runs, started
    /// detached when none is running (so the next test binaries reuse it).
    pub fn jvm() -> anyhow::Result<Broker> {
        let port = 9092;
        let reused = crate::jvm_kafka::find_detached(port).is_some();
        let cluster = crate::jvm_kafka::ensure_detached(port, &|step| eprintln!("WORKBOOK_BROKER=kafka: {step}…"))?;
        let origin = if reused {
            "WORKBOOK_BROKER=kafka, the cluster `cargo xtask kafka --detach` runs".to_string()
        } else {
            eprintln!(
                "WORKBOOK_BROKER=kafka: Apache Kafka {} is up at {}; it keeps running for the next tests \
                 (`cargo xtask kafka --stop` stops it)",
                cluster.version, cluster.bootstrap_servers
            );
            "WORKBOOK_BROKER=kafka, started for this run and left running".to_string()
        };
        Ok(Broker::connect(BrokerKind::Jvm, cluster.bootstrap_servers, origin)?)
    }

    /// Wraps a cluster this process hosts.
    pub fn from_embedded(cluster: EmbeddedCluster) -> Broker {
        Broker {
            kind: BrokerKind::Embedded,
            bootstrap_servers: cluster.bootstrap_servers().to_string(),
            origin: "the embedded mock cluster in this process".into(),
            embedded: Some(cluster),
        }
    }

    /// A broker at `bootstrap` that must answer a metadata request first.
    pub fn connect(kind: BrokerKind, bootstrap: String, origin: String) -> Result<Broker, BrokerError> {
        let broker = Broker { kind, bootstrap_servers: bootstrap, origin, embedded: None };
        broker.check_reachable(Duration::from_secs(10))?;
        Ok(broker)
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The mock's controls, when this process hosts it (fault injection, topic creation).
    pub fn embedded_cluster(&self) -> Option<&EmbeddedCluster> {
        self.embedded.as_ref()
    }

    /// One line for humans: which broker, where, and why this one.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            BrokerKind::Embedded => "embedded mock cluster (librdkafka)",
            BrokerKind::External => "Kafka",
            BrokerKind::Testcontainers => "Kafka in a test container",
            BrokerKind::Jvm => "Apache Kafka on this machine's JVM",
        };
        format!("{what} at {} — {}", self.bootstrap_servers, self.origin)
    }

    /// Whether this broker can show `capability`.
    pub fn supports(&self, capability: Capability) -> bool {
        match capability {
            Capability::FaultInjection => self.embedded.is_some(),
            Capability::BrokerOutage => crate::outage::supported(self),
            Capability::ReadCommittedHidesAborted
            | Capability::TransactionalOffsetCommits
            | Capability::IdempotentSequenceChecks
            | Capability::ProducerFencing
            | Capability::AdminTopics
            | Capability::Compaction => self.kind.is_real_kafka(),
        }
    }

    // ANCHOR: client_configs
    /// What every client needs: where to bootstrap. The bootstrap list only has to reach one live broker; the
    /// client learns the rest of the cluster from its metadata.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }

    /// A producer's base: fail a send after 30 s instead of librdkafka's 5 minutes, so a stopped broker shows
    /// up quickly while still riding out short outages with retries.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config.set("message.timeout.ms", "30000");
        config
    }

    /// A consumer's base, without a group or a reset policy (lesson 02 adds those): tuned so groups form and
    /// records arrive quickly on this kind of broker.
    pub fn consumer_base(&self) -> ClientConfig {
        let mut config = self.client_config();
        let protocol = std::env::var(GROUP_PROTOCOL_ENV).ok().unwrap_or_else(|| match self.kind {
            // The mock rebalances the classic protocol only after session.timeout.ms and once took 47 s;
            // KIP-848's `consumer` protocol (the default on Kafka 4.0+) rebalanced in 3 s in every trial.
            BrokerKind::Embedded => "consumer".into(),
            // `classic` works on every Kafka version a learner may point us at.
            BrokerKind::External | BrokerKind::Testcontainers | BrokerKind::Jvm => "classic".into(),
        });
        config.set("group.protocol", &protocol);
        if protocol == "classic" {
            // Quick failure detection for exercises (the broker's minimum is 6 s); production keeps 45 s.
            config.set("session.timeout.ms", "6000").set("heartbeat.interval.ms", "500");
        }
        // The mock does not wake a waiting fetch when data arrives: poll often. On real Kafka a short wait
        // costs a little broker work and keeps the exercises snappy.
        let fetch_wait = if self.kind == BrokerKind::Embedded { "10" } else { "100" };
        config.set("fetch.wait.max.ms", fetch_wait);
        config
    }

    /// A group member that starts from the beginning of the log when its group has no committed offset.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.consumer_base();
        config.set("group.id", group_id).set("auto.offset.reset", "earliest");
        config
    }
    // ANCHOR_END: client_configs

    /// Creates `name` with `partitions` partitions, the way this broker allows, and waits until clients can
    /// see it. Creating an existing topic with the same partition count is fine.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.create_topic_with(name, partitions, &[]).await
    }

    /// Creates a topic from the workbook's manifest, with its retention, compression and cleanup policy on real
    /// Kafka.
    pub async fn create_topic_spec(&self, spec: &TopicSpec) -> anyhow::Result<()> {
        let retention = spec.retention_ms.map(|ms| ms.to_string());
        let mut configs = vec![("compression.type", spec.compression.to_string())];
        if let Some(ms) = retention {
            configs.push(("retention.ms", ms));
        }
        if spec.compacted {
            configs.push(("cleanup.policy", "compact".to_string()));
        }
        self.create_topic_with(spec.name, spec.partitions, &configs).await
    }

    /// Creates `name` with `partitions` partitions and the topic configs `configs` (`cleanup.policy`,
    /// `segment.ms`, …), which only real Kafka applies; the mock creates the topic and ignores them.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, String)],
    ) -> anyhow::Result<()> {
        if let Some(cluster) = &self.embedded {
            cluster.create_topic(name, partitions)?;
        } else if self.kind.is_real_kafka() {
            let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
            // -1 = the broker's default.replication.factor: 1 on a single node, 3 on a production cluster.
            let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
            for (key, value) in configs {
                topic = topic.set(key, value);
            }
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            for result in admin.create_topics([&topic], &options).await? {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => anyhow::bail!("could not create topic {topic}: {code}"),
                }
            }
        }
        // A mock hosted by another process cannot be asked to create topics: it made the manifest's topics at
        // start-up. In every case, wait until the metadata shows the topic.
        self.wait_for_topic(name, partitions, Duration::from_secs(15)).await
    }

    async fn wait_for_topic(&self, name: &str, partitions: i32, within: Duration) -> anyhow::Result<()> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let deadline = Instant::now() + within;
        let topic = name.to_string();
        let seen = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            loop {
                let found = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .ok()
                    .and_then(|m| m.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len()))
                    .unwrap_or(0);
                if found > 0 || Instant::now() >= deadline {
                    return Ok(found);
                }
                std::thread::sleep(Duration::from_millis(50)); // polling interval of a deadline-bound wait
            }
        })
        .await??;
        match seen {
            0 if self.kind == BrokerKind::Embedded && self.embedded.is_none() => anyhow::bail!(
                "topic {name:?} does not exist on the hosted embedded broker, which cannot create topics on request; \
                 add it to kit::topics::WORKBOOK_TOPICS and restart `cargo xtask broker`"
            ),
            0 => anyhow::bail!("topic {name:?} did not appear within {within:?}"),
            n if n as i32 != partitions => {
                anyhow::bail!(
                    "topic {name:?} exists with {n} partitions, not {partitions}; delete it or use another name"
                )
            }
            _ => Ok(()),
        }
    }

    fn check_reachable(&self, within: Duration) -> Result<(), BrokerError> {
        let unreachable = |cause: String| BrokerError::Unreachable {
            bootstrap: self.bootstrap_servers.clone(),
            origin: self.origin.clone(),
            waited: within,
            cause,
        };
        let probe: BaseConsumer =
            self.client_config().set("log_level", "0").create().map_err(|e| unreachable(e.to_string()))?;
        probe.fetch_metadata(None, within).map(|_| ()).map_err(|e| unreachable(e.to_string()))
    }
}
