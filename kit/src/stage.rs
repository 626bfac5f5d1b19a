//! The runtime every service of lessons 12 and 13 (the saga, orchestrated and choreographed) shares: a
//! consume-transform-produce loop with its state kept in Kafka, the way Kafka Streams keeps a state store (lesson
//! 10's transactions, applied to a whole service). Lesson 12 re-exports it as its `engine`.
//!
//! A service is a [`Stage`]: it rebuilds its state from its *changelog* (a compacted topic where each change of
//! its state is a record: the latest value per key), then handles its input records one by one. What it writes —
//! replies, commands, events, and the changelog records of what it changed — goes out in one transaction per
//! batch, with the offsets that follow the batch. So a service that crashes anywhere comes back with its state,
//! its outputs and its progress in step: what it committed is all there, what it did not is as if it never
//! happened, and it reads the uncommitted inputs again.
//!
//! Each instance has a `transactional.id` of its own service: a restarted instance fences the old one, whose
//! later writes fail. One instance per service is what this lesson runs: the state is the whole service's, so two
//! instances would each miss the other's changes (Kafka Streams splits state by partition to scale out; the
//! chapter says how).
//!
//! Everything here blocks (librdkafka's transactional calls do): each service runs on a thread of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

/// A service's transactional producer.
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// The bound on each transactional call.
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// At most this many input records per transaction.
pub const MAX_BATCH: usize = 200;

/// Milliseconds since the Unix epoch: the clock time-outs are measured on (wall time, so a deadline persisted in
/// the changelog means the same after a restart).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A record a stage writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Output {
    /// `value` as JSON, keyed by `key`, to `topic`.
    pub fn json(topic: &str, key: &str, value: &impl Serialize) -> Output {
        let payload = serde_json::to_vec(value).expect("the workbook's types serialise");
        Output { topic: topic.to_string(), key: key.to_string(), payload, headers: Vec::new() }
    }
}

/// An input record, as a stage sees it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a str>,
    pub payload: &'a [u8],
}

/// A service of the saga, as the engine runs it.
pub trait Stage {
    /// The service's name (`order`, `inventory`, …): its group and transactional id derive from it.
    fn name(&self) -> &str;
    /// The topics it consumes.
    fn inputs(&self) -> Vec<String>;
    /// Its changelog topic (compacted).
    fn changelog(&self) -> &str;
    /// Applies one changelog record (`payload` `None`: the key was deleted) to the state, at start-up.
    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()>;
    /// Handles one input record: what to write, changelog records included. An error here means the input cannot
    /// be handled at all (it is not what the topic carries): the engine sends it to the stage's dead letters.
    fn handle(&mut self, input: Input<'_>, now_ms: u64) -> anyhow::Result<Vec<Output>>;
    /// Called on every turn of the loop, after the batch's records (at least every [`TICK`]): what to write because
    /// time passed, or what the batch changed that is written once per batch.
    fn tick(&mut self, _now_ms: u64) -> Vec<Output> {
        Vec::new()
    }
    /// Where inputs that `handle` refuses go (with their reason in a header), instead of stopping the service.
    fn dead_letter_topic(&self) -> &str;
    /// At most this many input records per transaction: more makes a busy stage faster (fewer commits), and
    /// each transaction longer.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
    /// How long a batch waits for more records once it has one: 0 (the default) takes what the client has
    /// fetched at once, for the lowest latency; a few milliseconds fill batches under load, for throughput.
    fn batch_linger(&self) -> Duration {
        Duration::ZERO
    }
}

/// How often a stage's `tick` runs at least (the loop polls for this long when no record comes).
pub const TICK: Duration = Duration::from_millis(50);

/// The changelog records that turn `before` into `after`: the value of every key that changed or appeared, and a
/// tombstone (no payload) for every key that went. Keys are prefixed with `prefix` (`stock/`, `order/`, …).
pub fn changes<V: Serialize + PartialEq>(
    topic: &str,
    prefix: &str,
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<Output> {
    let mut outputs = Vec::new();
    for (key, value) in after {
        if before.get(key) != Some(value) {
            outputs.push(Output::json(topic, &format!("{prefix}{key}"), value));
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        outputs.push(Output {
            topic: topic.into(),
            key: format!("{prefix}{key}"),
            payload: Vec::new(),
            headers: Vec::new(),
        });
    }
    outputs
}

/// Where a service instance runs.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The broker's producer settings (`Broker::producer_config`): bootstrap servers and tuning.
    pub producer: ClientConfig,
    /// The broker's consumer settings (`Broker::consumer_config`, whose group id is replaced per service).
    pub consumer: ClientConfig,
    /// What makes this deployment's group and transactional ids its own (a run id, a test's unique name).
    pub id: String,
}

impl Deployment {
    /// A deployment on `broker` named `id`.
    pub fn on(broker: &crate::Broker, id: impl Into<String>) -> Deployment {
        let id = id.into();
        Deployment { producer: broker.producer_config(), consumer: broker.consumer_config(&id), id }
    }

    /// The consumer group of `service` in this deployment.
    pub fn group(&self, service: &str) -> String {
        format!("{}-{service}", self.id)
    }

    /// The transactional id of `service` in this deployment: the same for every instance of the service, so a
    /// new one fences the one before.
    pub fn transactional_id(&self, service: &str) -> String {
        format!("{}-{service}", self.id)
    }
}

/// What a run of a stage did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Changelog records applied at start-up.
    pub restored: usize,
    /// Input records handled (dead letters included).
    pub handled: usize,
    pub dead_letters: usize,
    /// Transactions committed.
    pub transactions: usize,
}

/// Runs `stage` until `stop` is set: restores its state from its changelog (after fencing any earlier instance),
/// then handles its inputs in transactions. Returns when stopped, or with the error that stopped it (the caller
/// starts a new instance, which begins again from what was committed).
pub fn run(stage: &mut dyn Stage, deployment: &Deployment, stop: &AtomicBool) -> anyhow::Result<RunReport> {
    run_until(stage, deployment, stop, &AtomicBool::new(false))
}

/// [`run`], and a crash on demand: once `crash` is set, the next batch with inputs is handled but never committed,
/// and the run ends with an error, as if the process had died between its work and its commit (what a soak test does to
/// a service).
pub fn run_until(
    stage: &mut dyn Stage,
    deployment: &Deployment,
    stop: &AtomicBool,
    crash: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let name = stage.name().to_string();
    let producer: TxnProducer = {
        let mut config = deployment.producer.clone();
        config.set("transactional.id", deployment.transactional_id(&name)).set("transaction.timeout.ms", "30000");
        config.create()?
    };
    // Fence first, then read the changelog: whatever the old instance committed is in it.
    producer.init_transactions(TXN_CALL_TIMEOUT)?;
    let changelog = stage.changelog().to_string();
    report.restored = restore(stage, deployment, &changelog)?;

    let mut config = deployment.consumer.clone();
    config
        .set("group.id", deployment.group(&name))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    let inputs = stage.inputs();
    consumer.subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())?;
    tracing::info!(service = %name, restored = report.restored, "started");

    while !stop.load(Ordering::Relaxed) {
        let batch = poll_batch(&consumer, stage.max_batch(), stage.batch_linger())?;
        let now = now_ms();
        let mut outputs = Vec::new();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in &batch {
            let input = Input {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().and_then(|k| std::str::from_utf8(k).ok()),
                payload: message.payload().unwrap_or_default(),
            };
            match stage.handle(input, now) {
                Ok(mut written) => outputs.append(&mut written),
                Err(error) => {
                    tracing::warn!(service = %name, topic = input.topic, offset = input.offset, "dead letter: {error:#}");
                    outputs.push(dead_letter(stage.dead_letter_topic(), &input, &error));
                    report.dead_letters += 1;
                }
            }
            next.insert((message.topic().to_string(), message.partition()), message.offset() + 1);
            report.handled += 1;
        }
        outputs.extend(stage.tick(now_ms()));
        // A crash waits for a batch with inputs: a death between work and commit is what it is there to show.
        if crash.load(Ordering::Relaxed) && !batch.is_empty() {
            anyhow::bail!(
                "{name} crashed on purpose, {} outputs and {} inputs uncommitted",
                outputs.len(),
                batch.len()
            );
        }
        if outputs.is_empty() && next.is_empty() {
            continue;
        }
        commit(&producer, &consumer, &outputs, &next)?;
        report.transactions += 1;
    }
    // Leave the group at once rather than after the session time-out: the next instance starts sooner.
    consumer.unsubscribe();
    Ok(report)
}

/// Reads the changelog to its end (committed records only) into `stage`.
fn restore(stage: &mut dyn Stage, deployment: &Deployment, changelog: &str) -> anyhow::Result<usize> {
    let mut config = deployment.consumer.clone();
    config.set("group.id", format!("{}-restore", deployment.id)).set("isolation.level", "read_committed");
    let partitions = partitions_of(&config, changelog)?;
    let records = crate::read::read_to_end(config, changelog, partitions, Duration::from_secs(60))?;
    for record in &records {
        let key = record.key.as_deref().unwrap_or_default();
        let payload = (!record.payload.is_empty()).then_some(record.payload.as_slice());
        stage.restore(key, payload)?;
    }
    Ok(records.len())
}

/// How many partitions `topic` has.
fn partitions_of(config: &ClientConfig, topic: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let count = metadata.topics().first().map_or(0, |t| t.partitions().len());
    anyhow::ensure!(count > 0, "topic {topic} has no partitions (was it created?)");
    Ok(count as i32)
}

/// Up to `max` records: waits up to [`TICK`] for the first, then up to `linger` (from the first) for more — so a
/// busy stage commits full batches, not whatever the client had fetched at that instant.
fn poll_batch(
    consumer: &BaseConsumer,
    max: usize,
    linger: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    let mut batch = Vec::new();
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    while batch.len() < max {
        let wait = match first {
            None => TICK.saturating_sub(started.elapsed()),
            Some(first) => linger.saturating_sub(first.elapsed()),
        };
        match consumer.poll(wait) {
            None => break,
            Some(Ok(message)) => {
                first.get_or_insert_with(Instant::now);
                batch.push(message.detach());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => {
                // The client retries by itself (a broker away, a leader moving): say so and go on.
                tracing::warn!("receive failed: {error}");
                break;
            }
        }
        if batch.is_empty() && started.elapsed() >= TICK {
            break;
        }
    }
    Ok(batch)
}

/// The dead letter of an input `handle` refused: the record as it came, its origin and the reason in headers.
fn dead_letter(topic: &str, input: &Input<'_>, error: &anyhow::Error) -> Output {
    Output {
        topic: topic.to_string(),
        key: input.key.unwrap_or_default().to_string(),
        payload: input.payload.to_vec(),
        headers: vec![
            ("dlq.reason".into(), format!("{error:#}")),
            ("dlq.source".into(), format!("{}/{}/{}", input.topic, input.partition, input.offset)),
        ],
    }
}

/// One transaction: `outputs`, and the offsets `next` for the consumer's group. On a failure the transaction is
/// aborted (unless the producer is fenced) and the error returned: the stage's state in memory is now ahead of
/// what was committed, so the instance must stop and a new one start from the changelog.
fn commit(
    producer: &TxnProducer,
    consumer: &BaseConsumer,
    outputs: &[Output],
    next: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<()> {
    producer.begin_transaction()?;
    let result = (|| -> anyhow::Result<()> {
        for output in outputs {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &output.headers {
                headers = headers.insert(Header { key: name, value: Some(value.as_bytes()) });
            }
            let mut record = BaseRecord::to(&output.topic).key(&output.key).headers(headers);
            if !output.payload.is_empty() {
                record = record.payload(&output.payload);
            }
            producer.send(record).map_err(|(error, _)| error)?;
        }
        if !next.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            let group = consumer.group_metadata().ok_or_else(|| anyhow::anyhow!("the consumer has no group"))?;
            producer.send_offsets_to_transaction(&offsets, &group, TXN_CALL_TIMEOUT)?;
        }
        producer.commit_transaction(TXN_CALL_TIMEOUT)?;
        Ok(())
    })();
    if let Err(error) = result {
        let fatal = matches!(error.downcast_ref::<KafkaError>(), Some(KafkaError::Transaction(e)) if e.is_fatal());
        if !fatal {
            let _ = producer.abort_transaction(TXN_CALL_TIMEOUT);
        }
        return Err(error);
    }
    Ok(())
}

/// A service running on a thread of its own until [`Running::stop`].
pub struct Running<S> {
    name: String,
    stop: Arc<AtomicBool>,
    crash: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(anyhow::Result<RunReport>, S)>,
}

impl<S: Stage + Send + 'static> Running<S> {
    /// Starts `stage` on a thread of its own.
    pub fn start(mut stage: S, deployment: Deployment) -> Running<S> {
        let stop = Arc::new(AtomicBool::new(false));
        let crash = Arc::new(AtomicBool::new(false));
        let (stop_flag, crash_flag) = (Arc::clone(&stop), Arc::clone(&crash));
        let name = stage.name().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-service"))
            .spawn(move || {
                let result = run_until(&mut stage, &deployment, &stop_flag, &crash_flag);
                if let Err(error) = &result {
                    tracing::error!(service = stage.name(), "stopped: {error:#}");
                }
                (result, stage)
            })
            .expect("a thread for the service");
        Running { name, stop, crash, thread }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the service's loop has ended (stopped, or failed).
    pub fn has_ended(&self) -> bool {
        self.thread.is_finished()
    }

    /// Makes the service die between the work and the commit of its next batch that has inputs: nothing of that
    /// batch is written, and its inputs stay uncommitted. Waits up to `within` for such a batch; returns whether
    /// the service crashed (if no input came, it is stopped cleanly instead). Its stage is dropped with it, as a
    /// dead process's memory is.
    pub fn crash(self, within: Duration) -> bool {
        self.crash.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let crashed = self.thread.is_finished();
        let _ = self.stop();
        crashed
    }

    /// Stops the service; what its run returned, and the stage as it ended (its state in memory).
    pub fn stop(self) -> (anyhow::Result<RunReport>, S) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}
