//! The embedded broker: librdkafka's mock cluster, hosted on a thread of its own.
//!
//! The mock cluster speaks the real Kafka protocol on loopback ports, so every client (ours, Python's, kcat)
//! talks to it as to a broker. It is `!Send` and must be used from the thread that made it; [`EmbeddedCluster`]
//! is the `Send + Sync` handle that ships closures to that thread and waits for their answers. When the last
//! handle is dropped, the thread ends and the cluster is destroyed.
//!
//! The mock binds random ports. [`EmbeddedCluster::publish`] gives it a fixed address (for
//! `cargo xtask broker` on 127.0.0.1:9092): librdkafka can change the address a mock broker *advertises* in
//! metadata, but not the one it *listens* on, so a small TCP forwarder listens on the fixed port and relays to
//! the real one.

use std::ffi::CString;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
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

    fn raw(&self) -> *mut rdsys::rd_kafka_mock_cluster_t {
        // SAFETY: the pointer comes from a live client that owns a mock cluster; it is only used on this thread
        // while `self` (and so the client) is alive.
        unsafe { rdsys::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr()) }
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

    /// Publishes the cluster on fixed addresses: broker `k` (1-based) on `host:first_port + k - 1`. Clients that
    /// bootstrap there get metadata naming the fixed addresses, and a forwarder relays each to the real port.
    /// Returns the new bootstrap list.
    pub fn publish(&self, host: &str, first_port: u16) -> anyhow::Result<String> {
        let real_ports: Vec<u16> = self
            .bootstrap_servers
            .split(',')
            .map(|hp| hp.rsplit(':').next().and_then(|p| p.parse().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow::anyhow!("unexpected mock bootstrap list {:?}", self.bootstrap_servers))?;
        let mut published = Vec::new();
        for (index, real_port) in real_ports.into_iter().enumerate() {
            let fixed_port = first_port + index as u16;
            let listener = TcpListener::bind((host, fixed_port)).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {host}:{fixed_port} ({e}). Is another broker running there? \
                     Stop it, or pick another port with --port."
                )
            })?;
            let upstream: SocketAddr = ([127, 0, 0, 1], real_port).into();
            thread::Builder::new()
                .name(format!("forward-{fixed_port}"))
                .spawn(move || forward_all(listener, upstream))?;
            let broker_id = index as i32 + 1;
            let host_c = CString::new(host)?;
            self.with(move |h| {
                // SAFETY: `raw()` is valid on this thread while `h` lives; librdkafka copies the host string.
                unsafe {
                    rdsys::rd_kafka_mock_broker_set_host_port(
                        h.raw(),
                        broker_id,
                        host_c.as_ptr(),
                        i32::from(fixed_port),
                    )
                }
            });
            published.push(format!("{host}:{fixed_port}"));
        }
        Ok(published.join(","))
    }
}

/// Accepts connections forever and relays each one to `upstream`, both directions, on two threads.
fn forward_all(listener: TcpListener, upstream: SocketAddr) {
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) {
            thread::spawn(move || pipe(client, server));
            thread::spawn(move || pipe(server2, client2));
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
