//! Kafka's side of the comparison, through librdkafka (rdkafka): every scenario on a fresh one-partition topic
//! (one partition, like one RabbitMQ queue: one ordered sequence, one consumer reading it), deleted afterwards.
//!
//! Only real Kafka is measured. The embedded mock cluster keeps records in memory inside the client process, so
//! its figures would say nothing about a broker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kit::{Broker as KafkaBroker, BrokerKind};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::report::{Broker, CrashRun, Durability, LatencyRun, LatencySummary, ReplayRun, ThroughputRun};
use crate::workload::{self, CrashPlan, Workload};

/// What to say when no real Kafka runs.
pub const NO_KAFKA: &str = "no real Kafka to compare: start real Kafka with `cargo xtask kafka --detach` (Java 17 \
     and Maven), or name one with --bootstrap or KAFKA_BOOTSTRAP_SERVERS; the embedded mock broker is no fair \
     comparison";

/// Producer settings per durability. Persistent: the leader answers once every in-sync replica has the batch, and
/// the idempotent producer keeps retries from writing copies. Not persistent: the leader answers once it has
/// appended the batch itself. Everything else is librdkafka's default (linger.ms=5, batch.size=1000000, no
/// compression).
pub const PERSISTENT_PRODUCER: &[(&str, &str)] = &[("acks", "all"), ("enable.idempotence", "true")];
pub const TRANSIENT_PRODUCER: &[(&str, &str)] = &[("acks", "1"), ("enable.idempotence", "false")];
/// A third latency run: persistent without the idempotent producer, whose limit of five requests in flight makes
/// the messages queued behind slow acknowledgements wait (seen while writing this, on a busy machine: p99 of 60 to
/// 170 ms with idempotence, under 3 ms without, minutes apart).
pub const NOT_IDEMPOTENT_PRODUCER: &[(&str, &str)] = &[("acks", "all"), ("enable.idempotence", "false")];
/// What [`NOT_IDEMPOTENT_PRODUCER`]'s row is called.
pub const NOT_IDEMPOTENT: &str = "no idempotence";
/// Added for the latency runs: send each message at once rather than wait up to 5 ms for a fuller batch.
pub const LATENCY_PRODUCER: &[(&str, &str)] = &[("linger.ms", "0")];
/// The latency consumer: a fetch the broker holds while the partition is empty returns after 10 ms at most (and
/// at once when a record arrives: fetch.min.bytes=1).
pub const LATENCY_CONSUMER: &[(&str, &str)] = &[("fetch.wait.max.ms", "10"), ("fetch.min.bytes", "1")];

/// Settings as the report prints them: "`acks=all`, `enable.idempotence=true`".
pub fn settings_text(settings: &[(&str, &str)]) -> String {
    settings.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(", ")
}

/// Which Kafka, and how to name it.
#[derive(Debug, Clone)]
pub struct Target {
    pub bootstrap: String,
    /// "Apache Kafka 4.1.0 on the JVM (Java 17.0.13), 1 broker at 127.0.0.1:9092; its JVM up for 12 min".
    pub description: String,
    /// How long its JVM has been running, when known (the "warm or cold" of the report).
    pub jvm_age: Option<Duration>,
    /// How many brokers the cluster has, when known.
    pub brokers: Option<u16>,
    from_xtask_kafka: bool,
}

/// `--bootstrap`, else KAFKA_BOOTSTRAP_SERVERS, else the Kafka `cargo xtask kafka --detach` runs on 9092; else an
/// error saying how to start one. Never the embedded broker.
pub fn resolve(bootstrap: Option<String>) -> anyhow::Result<Target> {
    let named = bootstrap.or_else(|| std::env::var(kit::env::BOOTSTRAP_ENV).ok()).filter(|b| !b.trim().is_empty());
    let detached = kit::jvm_kafka::find_detached(9092);
    let bootstrap = match (&named, &detached) {
        (Some(named), _) => named.trim().to_string(),
        (None, Some(detached)) => detached.bootstrap_servers.clone(),
        (None, None) => bail!(NO_KAFKA),
    };
    let ours = detached.filter(|d| d.bootstrap_servers == bootstrap);
    Ok(match ours {
        Some(detached) => {
            let heap = detached.pids.first().and_then(|pid| crate::machine::jvm_heap(*pid));
            let java = match (crate::machine::java_version(), heap) {
                (Some(java), Some(heap)) => format!(" ({java}, heap {heap})"),
                (Some(java), None) => format!(" ({java})"),
                (None, Some(heap)) => format!(" (heap {heap})"),
                (None, None) => String::new(),
            };
            let jvm_age = detached.pids.first().and_then(|pid| crate::machine::process_age(*pid));
            let brokers =
                if detached.brokers == 1 { "1 broker".into() } else { format!("{} brokers", detached.brokers) };
            let age = jvm_age.map(|a| format!("; its JVM up for {}", crate::machine::human_age(a))).unwrap_or_default();
            Target {
                description: format!(
                    "Apache Kafka {} on the JVM{java}, {brokers} at {bootstrap} (`cargo xtask kafka --detach`){age}",
                    detached.version
                ),
                bootstrap,
                jvm_age,
                brokers: Some(detached.brokers),
                from_xtask_kafka: true,
            }
        }
        None => Target {
            description: format!(
                "Kafka at {bootstrap} (its version is not known here: not started by `cargo xtask kafka`)"
            ),
            bootstrap,
            jvm_age: None,
            brokers: None,
            from_xtask_kafka: false,
        },
    })
}

/// Counts delivery reports: how many messages the broker acknowledged, and the first failure.
#[derive(Default)]
struct Deliveries {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().expect("delivery errors").get_or_insert_with(|| error.to_string());
            }
        }
    }
}

type CountingProducer = ThreadedProducer<Deliveries>;

/// Real Kafka, and the topics this run made on it (deleted by [`KafkaSide::cleanup`]).
pub struct KafkaSide {
    broker: KafkaBroker,
    target: Target,
    topics: Mutex<Vec<String>>,
}

impl KafkaSide {
    /// Checks that the broker answers (within 10 s).
    pub fn connect(target: Target) -> anyhow::Result<KafkaSide> {
        let kind = if target.from_xtask_kafka { BrokerKind::Jvm } else { BrokerKind::External };
        let broker = KafkaBroker::connect(kind, target.bootstrap.clone(), target.description.clone())
            .map_err(|e| anyhow::anyhow!("{e}\n{NO_KAFKA}"))?;
        Ok(KafkaSide { broker, target, topics: Mutex::new(Vec::new()) })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A fresh one-partition topic named `prefix-<random>`.
    async fn fresh_topic(&self, prefix: &str) -> anyhow::Result<String> {
        let topic = kit::topics::unique(prefix);
        self.topics.lock().expect("topics").push(topic.clone());
        self.broker.create_topic(&topic, 1).await.with_context(|| format!("creating topic {topic}"))?;
        Ok(topic)
    }

    /// Deletes every topic this run created so far.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let topics: Vec<String> = std::mem::take(&mut *self.topics.lock().expect("topics"));
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.broker.client_config().create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = tokio::time::timeout(Duration::from_secs(20), admin.delete_topics(&names, &options))
            .await
            .context("deleting the run's topics took over 20 s")??;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => bail!("could not delete topic {topic}: {code}"),
            }
        }
        Ok(())
    }

    fn producer(&self, settings: &[&[(&str, &str)]]) -> anyhow::Result<CountingProducer> {
        let mut config = self.broker.producer_config();
        for (key, value) in settings.iter().copied().flatten() {
            config.set(*key, *value);
        }
        Ok(config.create_with_context(Deliveries::default())?)
    }

    /// The configuration of a reader outside any group (see [`assigned_reader`]): it commits nothing.
    fn reader_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.broker.consumer_base();
        config.set("group.id", kit::topics::unique("compare-reader")).set("enable.auto.commit", "false");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    }

    /// A producer that is ready before the clock starts, as RabbitMQ's publisher has its connection and channel
    /// open: one probe message to partition 0 of `topic`, acknowledged, means the producer is connected, knows the
    /// topic's leader and (idempotent) has its producer id. Readers of the topic start after the probe (offset 1).
    async fn ready_producer(&self, settings: &[&[(&str, &str)]], topic: &str) -> anyhow::Result<CountingProducer> {
        let producer = self.producer(settings)?;
        let topic = topic.to_string();
        blocking(move || {
            let probe = workload::payload(u64::MAX, 0, workload::HEADER_BYTES);
            producer
                .send(BaseRecord::<(), [u8]>::to(&topic).payload(&probe[..]).partition(0))
                .map_err(|(e, _)| anyhow::anyhow!("could not send the probe message: {e}"))?;
            producer.flush(Duration::from_secs(30)).context("the probe message was not acknowledged within 30 s")?;
            let deliveries = producer.context();
            ensure!(deliveries.failed.load(Ordering::Relaxed) == 0, "the probe message failed");
            deliveries.acknowledged.store(0, Ordering::Relaxed);
            Ok(producer)
        })
        .await
    }

    /// A member of `group` that starts from the beginning when the group has no commit, and commits only when
    /// told to.
    fn group_member(&self, group: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
        let mut config: ClientConfig = self.broker.consumer_config(group);
        config.set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// Written and read once, not measured: the JVM compiles the produce and fetch paths before they count.
    pub async fn warm_up(&self, workload: &Workload) -> anyhow::Result<()> {
        let topic = self.fresh_topic("compare-warmup").await?;
        let producer = self.producer(&[PERSISTENT_PRODUCER])?;
        let (n, size) = (workload.warmup, workload.size);
        let within = deadline_for(n);
        let topic_for_producer = topic.clone();
        blocking(move || produce(&producer, &topic_for_producer, n, size, within).map(|_| ())).await?;
        let config = self.reader_config(&[]);
        blocking(move || drain(&assigned_reader(&config, &topic, 0)?, n, within).map(|_| ())).await
    }

    /// N messages written (until the last is acknowledged), then read back by one consumer from a full partition.
    pub async fn throughput(&self, workload: &Workload, durability: Durability) -> anyhow::Result<ThroughputRun> {
        let topic = self.fresh_topic("compare-throughput").await?;
        let settings = match durability {
            Durability::Persistent => PERSISTENT_PRODUCER,
            Durability::Transient => TRANSIENT_PRODUCER,
        };
        let producer = self.ready_producer(&[settings], &topic).await?;
        let (n, size) = (workload.messages, workload.size);
        let within = deadline_for(n);
        let topic_for_producer = topic.clone();
        let produce_time = blocking(move || produce(&producer, &topic_for_producer, n, size, within)).await?;
        let config = self.reader_config(&[]);
        let drain_time = blocking(move || drain(&assigned_reader(&config, &topic, 1)?, n, within)).await?;
        Ok(ThroughputRun {
            broker: Broker::Kafka,
            durability,
            messages: n,
            message_bytes: size,
            produce: produce_time,
            drain: drain_time,
        })
    }

    /// Messages sent at a fixed rate, each timed from its send to the moment the consumer holds it. `idempotent`
    /// false (persistent only) measures `acks=all` without the idempotent producer.
    pub async fn latency(
        &self,
        workload: &Workload,
        durability: Durability,
        idempotent: bool,
    ) -> anyhow::Result<LatencyRun> {
        let topic = self.fresh_topic("compare-latency").await?;
        let acks = match (durability, idempotent) {
            (Durability::Persistent, true) => PERSISTENT_PRODUCER,
            (Durability::Persistent, false) => NOT_IDEMPOTENT_PRODUCER,
            (Durability::Transient, _) => TRANSIENT_PRODUCER,
        };
        let producer = self.producer(&[acks, LATENCY_PRODUCER])?;
        let config = self.reader_config(LATENCY_CONSUMER);
        let topic_for_reader = topic.clone();
        let reader = blocking(move || assigned_reader(&config, &topic_for_reader, 0)).await?;
        let n = workload.latency_messages();
        let consumer_deadline = Instant::now() + workload.latency_duration + Duration::from_secs(30);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // The reader runs on a thread of its own (BaseConsumer::poll blocks), timing each message as it arrives.
        let reading = tokio::task::spawn_blocking(move || {
            let mut histogram = crate::report::latency_histogram();
            let mut ready = Some(ready_tx);
            let mut received = 0;
            while received < n && Instant::now() < consumer_deadline {
                let Some(message) = reader.poll(Duration::from_millis(100)) else { continue };
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!("Kafka latency reader: {e}");
                        continue;
                    }
                };
                let Some((seq, sent)) = message.payload().and_then(workload::read_header) else { continue };
                if seq == 0 {
                    // The probe: the reader is fetching, measuring can start.
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                } else {
                    histogram.saturating_record(workload::micros_since(sent));
                    received += 1;
                }
            }
            histogram
        });
        let size = workload.size;
        let mut buffer = workload::payload(0, workload::now_nanos(), size);
        send_now(&producer, &topic, &buffer)?;
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .context("the Kafka latency reader did not receive the probe message within 20 s")?
            .context("the Kafka latency reader stopped before the probe message")?;
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / workload.latency_rate as u32);
        // Open loop: a tick missed (a busy machine) is sent at once, so the rate holds on average.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for seq in 1..=n {
            ticker.tick().await;
            buffer[..8].copy_from_slice(&seq.to_le_bytes());
            buffer[8..16].copy_from_slice(&workload::now_nanos().to_le_bytes());
            send_now(&producer, &topic, &buffer)?;
        }
        let histogram = reading.await?;
        blocking(move || {
            producer
                .flush(Duration::from_secs(10))
                .context("the latency producer's last messages were not acknowledged")
        })
        .await?;
        Ok(LatencyRun {
            broker: Broker::Kafka,
            durability,
            variant: (durability == Durability::Persistent && !idempotent).then_some(NOT_IDEMPOTENT),
            sent: n,
            summary: LatencySummary::of(&histogram),
        })
    }

    /// A group member handles `plan.handled` messages, committing after each but the last `plan.unsettled`, and
    /// is dropped without committing those; the next member of the group resumes from the group's commit.
    pub async fn crash(&self, plan: CrashPlan, size: usize) -> anyhow::Result<CrashRun> {
        let topic = self.fresh_topic("compare-crash").await?;
        let producer = self.producer(&[PERSISTENT_PRODUCER])?;
        let within = deadline_for(plan.total) + Duration::from_secs(30);
        let topic_for_producer = topic.clone();
        blocking(move || produce(&producer, &topic_for_producer, plan.total, size, within).map(|_| ())).await?;

        let group = kit::topics::unique("compare-crash");
        let first = self.group_member(&group, &topic)?;
        blocking(move || {
            let deadline = Instant::now() + within;
            let mut handled = 0;
            while handled < plan.handled {
                ensure!(
                    Instant::now() < deadline,
                    "the first consumer handled {handled} of {} in {within:?}",
                    plan.handled
                );
                let Some(message) = first.poll(Duration::from_millis(100)) else { continue };
                let message = message?;
                handled += 1;
                if handled <= plan.settled() {
                    first.commit_message(&message, CommitMode::Sync)?;
                }
            }
            // The crash: the consumer goes away with its last messages handled and not committed. (Dropping it
            // leaves the group at once, so the next member need not wait for the session to time out; what it
            // reads next depends only on the commit.)
            drop(first);
            Ok(())
        })
        .await?;

        let second = self.group_member(&group, &topic)?;
        let expected = plan.total - plan.settled();
        let seqs = blocking(move || read_seqs(&second, expected, within)).await?;
        Ok(CrashRun {
            broker: Broker::Kafka,
            total: plan.total,
            handled: plan.handled,
            settled: plan.settled(),
            resumed_at: seqs.first().copied().unwrap_or(plan.total),
            handled_twice: seqs.iter().filter(|&&s| s < plan.handled).count() as u64,
            flagged_redelivered: None,
            received_after: seqs.len() as u64,
            in_order: workload::ascending(&seqs),
        })
    }

    /// A group reads and commits every message; then a new group, starting from the earliest offset, reads the
    /// same topic.
    pub async fn replay(&self, n: u64, size: usize) -> anyhow::Result<ReplayRun> {
        let topic = self.fresh_topic("compare-replay").await?;
        let producer = self.producer(&[PERSISTENT_PRODUCER])?;
        let within = deadline_for(n) + Duration::from_secs(30);
        let topic_for_producer = topic.clone();
        blocking(move || produce(&producer, &topic_for_producer, n, size, within).map(|_| ())).await?;
        let first = self.group_member(&kit::topics::unique("compare-replay-first"), &topic)?;
        let settled = blocking(move || {
            let seqs = read_seqs(&first, n, within)?;
            first.commit_consumer_state(CommitMode::Sync)?;
            Ok(seqs.len() as u64)
        })
        .await?;
        let fresh = self.group_member(&kit::topics::unique("compare-replay-fresh"), &topic)?;
        let got = blocking(move || read_seqs(&fresh, n, within)).await?;
        Ok(ReplayRun {
            what: "Kafka topic, a new consumer group from the earliest offset".into(),
            written: n,
            first_reader_settled: settled,
            fresh_reader_got: got.len() as u64,
        })
    }
}

/// How long writing or reading `n` messages may take before the run gives up: generous (a busy machine), bounded.
fn deadline_for(n: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(n)
}

/// Runs blocking client code (BaseConsumer::poll, flush, a consumer's drop, which leaves its group) off the async
/// workers. Each piece bounds its own waits; every scenario has a backstop too (`Runner` in main.rs).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// A reader assigned partition 0 of `topic` from offset `from`. It fetches the topic's metadata first: assigned
/// a partition whose leader it does not know yet, librdkafka retries the offset lookup only after 500 ms, which
/// would be measured as reading time.
fn assigned_reader(config: &ClientConfig, topic: &str, from: i64) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = config.create()?;
    consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).context("the reader's topic metadata")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Hands one message to the producer (which sends it at once with linger.ms=0); a full local queue is an error.
fn send_now(producer: &CountingProducer, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    producer
        .send(BaseRecord::<(), [u8]>::to(topic).payload(payload))
        .map_err(|(e, _)| anyhow::anyhow!("could not hand a message to the producer: {e}"))
}

/// Writes `n` messages of `size` bytes to partition 0 of `topic` and waits until the broker acknowledged all;
/// returns the time from the first send to the last acknowledgement.
fn produce(
    producer: &CountingProducer,
    topic: &str,
    n: u64,
    size: usize,
    within: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + within;
    let mut buffer = workload::payload(0, 0, size);
    let started = Instant::now();
    for seq in 0..n {
        // librdkafka copies the payload: one buffer serves every message.
        buffer[..8].copy_from_slice(&seq.to_le_bytes());
        buffer[8..16].copy_from_slice(&workload::now_nanos().to_le_bytes());
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&buffer[..]).partition(0);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    ensure!(Instant::now() < deadline, "Kafka took over {within:?} to accept {n} messages");
                    record = returned;
                    // The local queue is full: the broker is behind. Wait for room (the producer's own thread
                    // serves the delivery reports meanwhile).
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("could not hand message {seq} to the producer: {e}"),
            }
        }
    }
    producer
        .flush(deadline.saturating_duration_since(Instant::now()))
        .with_context(|| format!("Kafka did not acknowledge {n} messages within {within:?}"))?;
    let took = started.elapsed();
    let deliveries = producer.context();
    let (acknowledged, failed) =
        (deliveries.acknowledged.load(Ordering::Relaxed), deliveries.failed.load(Ordering::Relaxed));
    if failed > 0 {
        let first = deliveries.first_error.lock().expect("delivery errors").clone().unwrap_or_default();
        bail!("{failed} of {n} messages failed (first: {first})");
    }
    ensure!(acknowledged == n, "Kafka acknowledged {acknowledged} of {n} messages");
    Ok(took)
}

/// Reads `n` messages; returns the time from the first poll until the n-th message was in hand.
fn drain(reader: &BaseConsumer, n: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + within;
    let mut received = 0;
    while received < n {
        ensure!(Instant::now() < deadline, "the Kafka reader received {received} of {n} messages in {within:?}");
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                if received == 0 {
                    tracing::debug!("Kafka reader: first message after {:?}", started.elapsed());
                }
                received += 1;
            }
            Some(Err(e)) => tracing::warn!("Kafka reader: {e}"),
            None => {}
        }
    }
    Ok(started.elapsed())
}

/// Reads `n` messages and returns their numbers in the order they arrived.
fn read_seqs(consumer: &BaseConsumer, n: u64, within: Duration) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + within;
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        ensure!(Instant::now() < deadline, "a Kafka consumer received {} of {n} messages in {within:?}", seqs.len());
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        if let Some((seq, _)) = message.payload().and_then(workload::read_header) {
            seqs.push(seq);
        }
    }
    Ok(seqs)
}
