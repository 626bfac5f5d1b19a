//! The embedded broker: librdkafka's mock cluster, hosted on a thread of its own.
//!
//! The mock cluster speaks the real Kafka protocol on loopback ports, so every client (ours, Python's, kcat)
//! talks to it as to a broker. It is `!Send` and must be used from the thread that made it; [`EmbeddedCluster`]
//! is the `Send + Sync` handle that ships closures to that thread and waits for their answers. When the last
//! handle is dropped, the thread ends and the cluster is destroyed.
//!
//! The mock binds random ports. To give it a fixed address (`cargo xtask broker` on 127.0.0.1:9092), put a
//! [`crate::FaultProxy`] started with [`crate::FaultProxy::start_on`] in front of it: the proxy listens on the
//! fixed ports and rewrites Metadata so clients keep to them.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The mock cluster as the hosting thread sees it.
pub type Mock<'a> = MockCluster<'a, DefaultProducerContext>;

type Job = Box<dyn FnOnce(&HostedMock) + Send>;

/// What lives on the hosting thread: the client that owns the mock cluster.
pub struct HostedMock {
    owner: BaseProducer,
}

impl HostedMock {
    /// The safe rdkafka API over the mock (topics, faults, round-trip times).
    pub fn mock(&self) -> Mock<'_> {
        self.owner.client().mock_cluster().expect("the owning client was created with test.mock.num.brokers")
    }
}

/// A `Send + Sync` handle to a mock cluster hosted on its own thread.
#[derive(Clone)]
pub struct EmbeddedCluster {
    bootstrap_servers: String,
    broker_count: i32,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("broker_count", &self.broker_count)
            .finish()
    }
}

impl EmbeddedCluster {
    /// Starts a mock cluster of `broker_count` brokers on loopback.
    pub fn start(broker_count: i32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (jobs, job_rx) = mpsc::channel::<Job>();
        thread::Builder::new().name("embedded-kafka".into()).spawn(move || {
            let owner = ClientConfig::new()
                .set("test.mock.num.brokers", broker_count.to_string())
                // The owner never produces; keep its own logging quiet.
                .set("log_level", "3")
                .create::<BaseProducer>();
            let hosted = match owner {
                Ok(owner) => HostedMock { owner },
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("could not start the embedded Kafka mock cluster: {e}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(hosted.mock().bootstrap_servers()));
            // Serve jobs until every handle is gone; then `hosted` drops and destroys the cluster.
            for job in job_rx {
                job(&hosted);
            }
        })?;
        let bootstrap_servers = ready_rx.recv().map_err(|_| anyhow::anyhow!("the embedded broker thread died"))??;
        Ok(Self { bootstrap_servers, broker_count, jobs })
    }

    /// `host:port,…` of the brokers as they listen (random loopback ports).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub fn broker_count(&self) -> i32 {
        self.broker_count
    }

    /// Runs `f` on the hosting thread with the mock and returns its result. This is the door to everything the
    /// mock can do; the methods below name the common cases.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&HostedMock) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |hosted: &HostedMock| {
                let _ = tx.send(f(hosted));
            }))
            .expect("the embedded broker thread is alive while a handle exists");
        rx.recv().expect("the embedded broker thread answers every job")
    }

    /// Creates `topic` with `partitions` partitions. The mock has no CreateTopics API; this is its own door.
    /// Creating a topic that exists already is not an error.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let topic = topic.to_owned();
        let replication = self.broker_count.min(3);
        self.with(move |h| h.mock().create_topic(&topic, partitions, replication))
            .map_err(|e| anyhow::anyhow!("embedded broker could not create the topic: {e}"))
    }

    /// Makes the next requests of kind `api` fail with `errors`, one error per request, in order.
    pub fn fail_requests(&self, api: RDKafkaApiKey, errors: Vec<RDKafkaRespErr>) {
        self.with(move |h| h.mock().request_errors(api, &errors));
    }

    /// Takes broker `id` (1-based) down: its connections close and new ones are refused until [`Self::broker_up`].
    pub fn broker_down(&self, id: i32) -> anyhow::Result<()> {
        self.with(move |h| h.mock().broker_down(id)).map_err(|e| anyhow::anyhow!("broker_down({id}): {e}"))
    }

    pub fn broker_up(&self, id: i32) -> anyhow::Result<()> {
        self.with(move |h| h.mock().broker_up(id)).map_err(|e| anyhow::anyhow!("broker_up({id}): {e}"))
    }

    /// Delays every response of broker `id` by `delay` (a slow network or a slow disk).
    pub fn round_trip_time(&self, id: i32, delay: Duration) -> anyhow::Result<()> {
        self.with(move |h| h.mock().broker_round_trip_time(id, delay))
            .map_err(|e| anyhow::anyhow!("broker_round_trip_time({id}): {e}"))
    }
}
