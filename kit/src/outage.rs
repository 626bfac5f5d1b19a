//! A private one-broker cluster a test may take down and bring back: a broker outage, on every broker kind that
//! can show one.
//!
//! The shared test broker cannot be stopped (other tests use it), so an outage test gets a cluster of its own:
//! - next to the embedded broker, another in-process mock, whose broker goes down and up on request;
//! - next to real Kafka, Apache Kafka on this machine's JVM (free ports, its JVM tied to the test process), whose
//!   broker is killed (SIGKILL, a crash) and started again on its data — the same outage, with the real broker's
//!   recovery. That needs Java and Maven ([`crate::jvm_kafka::available`]); without them the test reports
//!   "not graded on this broker" ([`Capability::BrokerOutage`]).

use std::sync::{Arc, Mutex};

use crate::broker::{Broker, BrokerKind, Capability};
use crate::embedded::EmbeddedCluster;
use crate::jvm_kafka::{self, JvmCluster, Spec};

/// A cluster of one broker that a test owns and may take down.
pub struct OutageCluster {
    broker: Broker,
    kind: Kind,
}

enum Kind {
    Embedded(EmbeddedCluster),
    Jvm(Arc<Mutex<JvmCluster>>),
}

impl OutageCluster {
    /// A private cluster of the kind that matches `shared` (the test's broker), or `None` — reported as
    /// "not graded on this broker" for `test` — when no such cluster can be had here.
    pub async fn start(shared: &Broker, test: &str) -> Option<OutageCluster> {
        if !crate::grading::can_grade(shared, Capability::BrokerOutage, test) {
            return None;
        }
        Some(OutageCluster::next_to(shared).await.expect("a private cluster for an outage"))
    }

    /// A private cluster for a story: Apache Kafka on the JVM next to real Kafka when this machine can run it,
    /// else an in-process mock.
    pub async fn next_to(shared: &Broker) -> anyhow::Result<OutageCluster> {
        if !(shared.kind().is_real_kafka() && jvm_kafka::available()) {
            let cluster = EmbeddedCluster::start(1)?;
            return Ok(OutageCluster { broker: Broker::from_embedded(cluster.clone()), kind: Kind::Embedded(cluster) });
        }
        let cluster = tokio::task::spawn_blocking(|| {
            JvmCluster::start(&Spec { port: None, ..Spec::default() }, &|step| tracing::info!("outage cluster: {step}"))
        })
        .await??;
        let broker =
            Broker::connect(BrokerKind::Jvm, cluster.bootstrap_servers(), "a private cluster for an outage".into())?;
        Ok(OutageCluster { broker, kind: Kind::Jvm(Arc::new(Mutex::new(cluster))) })
    }

    /// Apache Kafka on the JVM (true), or an in-process mock.
    pub fn is_real_kafka(&self) -> bool {
        matches!(self.kind, Kind::Jvm(_))
    }

    /// The private cluster, for clients and topic creation.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Takes the broker down: the mock stops answering; the JVM is killed without a clean shutdown.
    pub async fn broker_down(&self) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Embedded(cluster) => cluster.broker_down(1),
            Kind::Jvm(cluster) => {
                let cluster = cluster.clone();
                tokio::task::spawn_blocking(move || lock(&cluster).kill_broker(1)).await?
            }
        }
    }

    /// Brings the broker back and, for the JVM, waits until it answers again (recovering its log takes seconds).
    pub async fn broker_up(&self) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Embedded(cluster) => cluster.broker_up(1),
            Kind::Jvm(cluster) => {
                let cluster = cluster.clone();
                tokio::task::spawn_blocking(move || lock(&cluster).start_broker(1)).await?
            }
        }
    }
}

fn lock(cluster: &Mutex<JvmCluster>) -> std::sync::MutexGuard<'_, JvmCluster> {
    cluster.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an outage cluster can be had next to `shared`.
pub(crate) fn supported(shared: &Broker) -> bool {
    shared.embedded_cluster().is_some() || (shared.kind().is_real_kafka() && jvm_kafka::available())
}
