//! The performance lab: what producer settings do to throughput and to end-to-end latency, measured on the
//! broker the program runs against.
//!
//! Two measurements, because a producer is never fast and prompt at once:
//! - **throughput** ([`flood_raw`], [`flood_future`]): as many records as possible, as fast as possible; records
//!   per second from the first send to the last acknowledgement. No consumer: this is the producer's ceiling.
//! - **end-to-end latency** ([`paced`]): records sent at a steady, light rate, each stamped with its send time;
//!   a consumer reading them as they come measures send → receive for each, into an HDR histogram (p50, p99,
//!   p99.9). A flood would measure its own queue instead: a record sent behind 100,000 others waits for them.
//!
//! [`bench`] is the tuning exercise's benchmark: a raw `BaseProducer` loop on librdkafka's defaults against the
//! tuned `FutureProducer`, then the tuned pair's latency. [`sweep`] varies one producer setting at a time from
//! librdkafka's defaults. Figures depend on the machine, the broker and what else runs: they are printed and
//! written to `docs/generated/`, never asserted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use kit::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use crate::tuning::{tuned_consumer, tuned_producer};

/// The size of a lab record's payload: a small order as JSON.
pub const PAYLOAD_BYTES: usize = 512;

// ANCHOR: payloads
/// Lab payloads: 9 bytes the lab reads back — the send time (µs since the epoch, big-endian) and whether the
/// record is measured (1) or a warm-up (0) — then an order as JSON, compressible as real JSON is (repeated
/// field names, few distinct values), padded to [`PAYLOAD_BYTES`].
pub struct Payloads {
    bodies: Vec<Vec<u8>>,
}

impl Payloads {
    pub fn new() -> Payloads {
        let mut rng = fastrand::Rng::with_seed(16);
        let skus = ["KB-101", "MS-220", "HD-4TB", "USB-C-2M", "LAMP-7", "DESK-XL", "CHAIR-5"];
        let bodies = (0..64)
            .map(|i| {
                let lines: Vec<String> = (0..rng.usize(2..6))
                    .map(|_| {
                        format!(
                            r#"{{"sku":"{}","quantity":{},"unit_price_cents":{}}}"#,
                            skus[rng.usize(..skus.len())],
                            rng.u32(1..4),
                            rng.u32(199..49_999)
                        )
                    })
                    .collect();
                let mut body = format!(
                    r#"{{"order_id":"ord-{i:06}-{:08x}","customer":"cust-{:05}","currency":"EUR","country":"{}","#,
                    rng.u32(..),
                    rng.u32(..100_000),
                    ["FR", "DE", "NL", "BE", "ES"][rng.usize(..5)],
                )
                .into_bytes();
                body.extend_from_slice(format!(r#""lines":[{}],"note":""#, lines.join(",")).as_bytes());
                while body.len() < PAYLOAD_BYTES - 9 - 2 {
                    body.extend_from_slice(b"gift wrap please, ");
                }
                body.truncate(PAYLOAD_BYTES - 9 - 2);
                body.extend_from_slice(b"\"}");
                body
            })
            .collect();
        Payloads { bodies }
    }

    /// Record `seq`'s payload, stamped now.
    pub fn stamped(&self, seq: u64, measured: bool) -> Vec<u8> {
        let body = &self.bodies[seq as usize % self.bodies.len()];
        let mut payload = Vec::with_capacity(9 + body.len());
        payload.extend_from_slice(&now_us().to_be_bytes());
        payload.push(u8::from(measured));
        payload.extend_from_slice(body);
        payload
    }
}

impl Default for Payloads {
    fn default() -> Payloads {
        Payloads::new()
    }
}

/// Microseconds since the epoch: one clock for the sender and the receiver, on one machine.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The send time and the measured flag of a lab payload.
pub fn read_stamp(payload: &[u8]) -> Option<(u64, bool)> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some((sent, *payload.get(8)? == 1))
}

/// Records' keys: orders' ids, spread over the partitions.
fn key_of(seq: u64) -> String {
    format!("ord-{:06}", seq % 10_000)
}
// ANCHOR_END: payloads

// ANCHOR: report
/// A throughput measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Records handed to the producer.
    pub records: u64,
    /// Records the broker acknowledged, and those that failed.
    pub acknowledged: u64,
    pub failed: u64,
    /// Payload bytes sent (before compression).
    pub bytes: u64,
    /// From the first send to the last acknowledgement.
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    fn of(records: u64, acknowledged: u64, failed: u64, seconds: f64) -> Throughput {
        let bytes = records * PAYLOAD_BYTES as u64;
        Throughput {
            records,
            acknowledged,
            failed,
            bytes,
            seconds,
            records_per_s: acknowledged as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
        }
    }
}

/// An end-to-end latency measurement: send → receive, per record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Records sent at the pace, acknowledged, and received by the consumer.
    pub sent: u64,
    pub acknowledged: u64,
    pub received: u64,
    /// Samples in the histogram: one per record received.
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What `-- --bench` measures: the raw loop, the tuned producer, their ratio, and the tuned pair's latency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// A `BaseProducer` in a loop, on librdkafka's defaults: the ceiling.
    pub raw: Throughput,
    /// The same loop on `tuned_producer`'s settings.
    pub tuned: Throughput,
    /// `tuned.records_per_s / raw.records_per_s` (the best round of each): what the settings cost or gain.
    pub ratio: f64,
    /// A `FutureProducer` on the tuned settings, every delivery awaited, as a service sends: what the futures
    /// cost on top of the settings.
    pub service: Throughput,
    /// Records paced through `tuned_producer` and `tuned_consumer`.
    pub latency: Latency,
    /// The settings measured, as set: the tuned producer's and the tuned consumer's.
    pub producer_settings: Vec<(String, String)>,
    pub consumer_settings: Vec<(String, String)>,
}
// ANCHOR_END: report

/// Counts deliveries, for a `BaseProducer`.
#[derive(Default)]
struct Counting {
    acknowledged: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() { &self.acknowledged } else { &self.failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

// ANCHOR: flood_raw
/// The raw loop: a `BaseProducer` sending `records` records as fast as librdkafka takes them (waiting only when
/// its queue is full), then flushing. Blocking: run it on a blocking thread.
pub fn flood_raw(config: &ClientConfig, topic: &str, records: u64, payloads: &Payloads) -> anyhow::Result<Throughput> {
    let producer: BaseProducer<Counting> = config.create_with_context(Counting::default())?;
    // One record first, so that the connection and the topic's metadata are not in the measurement.
    producer.send(BaseRecord::to(topic).key("warm-up").payload(&payloads.stamped(0, false))).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    let warm = producer.context().acknowledged.swap(0, std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(warm == 1, "the warm-up record was not acknowledged");
    let started = Instant::now();
    for seq in 0..records {
        let (key, payload) = (key_of(seq), payloads.stamped(seq, false));
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1)); // serves delivery reports, which frees the queue
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        if seq.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let seconds = started.elapsed().as_secs_f64();
    let context = producer.context();
    let acknowledged = context.acknowledged.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Throughput::of(records, acknowledged, context.failed.load(std::sync::atomic::Ordering::Relaxed), seconds))
}
// ANCHOR_END: flood_raw

// ANCHOR: flood_future
/// The way a service sends: a `FutureProducer`, every record's delivery awaited — all of them at once, so that
/// batches form — and counted.
pub async fn flood_future(
    config: &ClientConfig,
    topic: &str,
    records: u64,
    payloads: &Payloads,
) -> anyhow::Result<Throughput> {
    let producer: FutureProducer = config.create()?;
    let warm = producer
        .send(FutureRecord::to(topic).key("warm-up").payload(&payloads.stamped(0, false)), Duration::from_secs(30))
        .await;
    warm.map_err(|(error, _)| error)?;
    let (mut acknowledged, mut failed) = (0, 0);
    let mut count = |delivered: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>| match delivered {
        Ok(Ok(_)) => acknowledged += 1,
        _ => failed += 1,
    };
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    for seq in 0..records {
        let (key, payload) = (key_of(seq), payloads.stamped(seq, false));
        let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match in_flight.next().await {
                        Some(delivered) => count(delivered),
                        None => tokio::task::yield_now().await,
                    }
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        while let Some(Some(delivered)) = in_flight.next().now_or_never() {
            count(delivered);
        }
    }
    while let Some(delivered) = in_flight.next().await {
        count(delivered);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Throughput::of(records, acknowledged, failed, seconds))
}
// ANCHOR_END: flood_future

/// The partitions of `topic` and each one's end (high watermark), from a short-lived consumer. Blocking.
fn ends(broker: &Broker, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    let probe: BaseConsumer = broker.client_config().create()?;
    let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    partitions.into_iter().map(|p| Ok((p, probe.fetch_watermarks(topic, p, Duration::from_secs(10))?.1))).collect()
}

// ANCHOR: paced
/// End-to-end latency at a light, steady pace: `records` records at `rate` per second through a producer on
/// `producer_config`, read by a consumer on `consumer_config` assigned to the topic's ends (no group join), which
/// measures each record's send → receive. Warm-up records go first, to every partition, until the consumer
/// receives them from all, so that connecting and the first fetches are not measured.
pub async fn paced(
    broker: &Broker,
    producer_config: &ClientConfig,
    consumer_config: &ClientConfig,
    topic: &str,
    rate: u64,
    records: u64,
    payloads: &Payloads,
) -> anyhow::Result<Latency> {
    let (b, t) = (broker.clone(), topic.to_string());
    let ends = tokio::task::spawn_blocking(move || ends(&b, &t)).await??;
    let mut consumer_config = consumer_config.clone();
    consumer_config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = consumer_config.create()?;
    {
        let mut assignment = TopicPartitionList::new();
        for (partition, end) in &ends {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*end))?;
        }
        consumer.assign(&assignment)?;
    }
    let (warmed_tx, mut warmed) = tokio::sync::watch::channel(0usize);
    let partitions = ends.len();
    let receiver = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        let mut warm_partitions = BTreeSet::new();
        let mut received = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut stream = consumer.stream();
        while received < records {
            let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else { break };
            let Some(message) = next else { break };
            let message = message?;
            let now = now_us();
            let Some((sent, measured)) = message.payload().and_then(read_stamp) else { continue };
            if measured {
                received += 1;
                histogram.record(now.saturating_sub(sent).max(1))?;
            } else if warm_partitions.insert(message.partition()) {
                let _ = warmed_tx.send(warm_partitions.len());
            }
        }
        anyhow::Ok((histogram, received))
    });

    let producer: FutureProducer = producer_config.create()?;
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    while *warmed.borrow() < partitions {
        anyhow::ensure!(Instant::now() < warm_deadline, "the consumer received no warm-up record within 20 s");
        anyhow::ensure!(!receiver.is_finished(), "the consumer stopped during the warm-up");
        for (partition, _) in &ends {
            let payload = payloads.stamped(0, false);
            let record = FutureRecord::to(topic).key("warm-up").payload(&payload).partition(*partition);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(error, _)| error)?;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), warmed.changed()).await;
    }

    // The pace: every millisecond, as many records as are due by then.
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = FuturesUnordered::new();
    let (mut acknowledged, mut failed) = (0u64, 0u64);
    let mut tally = |delivered: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>| match delivered {
        Ok(Ok(_)) => acknowledged += 1,
        _ => failed += 1,
    };
    let started = Instant::now();
    let mut sent = 0;
    while sent < records {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(records);
        while sent < due {
            let (key, payload) = (key_of(sent), payloads.stamped(sent, true));
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            in_flight.push(producer.send_result(record).map_err(|(error, _)| error)?);
            sent += 1;
        }
        while let Some(Some(delivered)) = in_flight.next().now_or_never() {
            tally(delivered);
        }
        ticks.tick().await;
    }
    while let Some(delivered) = in_flight.next().await {
        tally(delivered);
    }
    let (histogram, received) = receiver.await??;
    anyhow::ensure!(failed == 0, "{failed} of the paced records failed");
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(Latency {
        sent,
        acknowledged,
        received,
        samples: histogram.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}
// ANCHOR_END: paced

// ANCHOR: bench
/// How much the benchmark measures.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan {
    /// Records per throughput round, and rounds of each producer (the best round counts: the machine is shared).
    pub flood_records: u64,
    pub rounds: u32,
    /// The paced latency run: records per second, and how many.
    pub paced_rate: u64,
    pub paced_records: u64,
}

/// The settings `config` sets, sorted, for the report.
fn settings(config: &ClientConfig) -> Vec<(String, String)> {
    config.config_map().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The tuning exercise's benchmark on `topic`: the tuned producer and consumer's end-to-end latency at a light
/// pace; then the raw loop on librdkafka's defaults and on the tuned settings, in turn, round after round; and a
/// `FutureProducer` on the tuned settings.
pub async fn bench(broker: &Broker, topic: &str, plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    let payloads = std::sync::Arc::new(Payloads::new());
    let tuned_config = tuned_producer(broker.producer_config());
    let consumer_config = tuned_consumer(broker.consumer_config(&kit::topics::unique("lab")));
    // The latency first, on a quiet broker (see `sweep`).
    let latency =
        paced(broker, &tuned_config, &consumer_config, topic, plan.paced_rate, plan.paced_records, &payloads).await?;
    let (mut raw, mut tuned): (Option<Throughput>, Option<Throughput>) = (None, None);
    let best = |kept: Option<Throughput>, new: Throughput| match kept {
        Some(kept) if kept.records_per_s >= new.records_per_s => Some(kept),
        _ => Some(new),
    };
    for _ in 0..plan.rounds.max(1) {
        for (config, kept) in [(broker.producer_config(), &mut raw), (tuned_config.clone(), &mut tuned)] {
            let (t, p, records) = (topic.to_string(), payloads.clone(), plan.flood_records);
            let measured = tokio::task::spawn_blocking(move || flood_raw(&config, &t, records, &p)).await??;
            *kept = best(kept.take(), measured);
        }
    }
    let (raw, tuned) = (raw.expect("one round"), tuned.expect("one round"));
    let service = flood_future(&tuned_config, topic, plan.flood_records, &payloads).await?;
    Ok(BenchReport {
        ratio: tuned.records_per_s / raw.records_per_s,
        raw,
        tuned,
        service,
        latency,
        producer_settings: settings(&tuned_config),
        consumer_settings: settings(&consumer_config),
    })
}
// ANCHOR_END: bench

// ANCHOR: sweep
/// The settings the sweep varies, one at a time, each from librdkafka's default (the other settings stay at
/// theirs): `linger.ms` 5, `batch.size` 1,000,000, `compression.type` none, `acks` all.
pub const SWEEP: &[(&str, &[&str])] = &[
    ("linger.ms", &["0", "1", "5", "20", "100"]),
    ("batch.size", &["16384", "65536", "262144", "1000000"]),
    ("compression.type", &["none", "gzip", "snappy", "lz4", "zstd"]),
    ("acks", &["0", "1", "all"]),
];

/// One point of the sweep: a setting's value and what it gave, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub setting: String,
    pub value: String,
    pub throughput: Option<Throughput>,
    pub latency: Option<Latency>,
    pub skipped: Option<String>,
}

/// How much each point of the sweep measures.
#[derive(Debug, Clone, Copy)]
pub struct SweepPlan {
    pub flood_records: u64,
    pub paced_rate: u64,
    pub paced_records: u64,
}

/// Which measurement of a point is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Latency,
    Throughput,
}

/// Every point of [`SWEEP`] on `topic`: the paced latency (through `tuned_consumer`) and the raw loop's
/// throughput, each setting on librdkafka's defaults otherwise. Every latency first, then every throughput: a
/// flood leaves the broker busy writing it out (and, on real Kafka, the machine flushing it to disk), which a
/// latency measured right after would show. `progress` sees each point as each pass is done with it.
pub async fn sweep(
    broker: &Broker,
    topic: &str,
    plan: &SweepPlan,
    mut progress: impl FnMut(Pass, &SweepPoint),
) -> anyhow::Result<Vec<SweepPoint>> {
    let payloads = std::sync::Arc::new(Payloads::new());
    let consumer_config = tuned_consumer(broker.consumer_config(&kit::topics::unique("lab")));
    let mut points = Vec::new();
    for (setting, values) in SWEEP {
        for value in *values {
            let mut config = broker.producer_config();
            config.set(*setting, *value);
            let skipped = config.create_native_config().err().map(|error| match error.to_string() {
                e if e.contains("not available at build time") => "not in this build of librdkafka".to_string(),
                e => format!("librdkafka refuses it: {e}"),
            });
            let point = SweepPoint {
                setting: setting.to_string(),
                value: value.to_string(),
                throughput: None,
                latency: None,
                skipped,
            };
            points.push((point, config));
        }
    }

    // A run that is not kept: a broker on the JVM compiles its hot paths during the first seconds of traffic.
    paced(broker, &broker.producer_config(), &consumer_config, topic, plan.paced_rate, plan.paced_rate / 2, &payloads)
        .await?;
    for (point, config) in points.iter_mut().filter(|(p, _)| p.skipped.is_none()) {
        let latency = paced(broker, config, &consumer_config, topic, plan.paced_rate, plan.paced_records, &payloads);
        point.latency = Some(latency.await?);
        progress(Pass::Latency, point);
    }

    // Not kept either: the first flood of a process meets cold caches.
    let (c, t, p, n) = (broker.producer_config(), topic.to_string(), payloads.clone(), plan.flood_records / 2);
    tokio::task::spawn_blocking(move || flood_raw(&c, &t, n, &p)).await??;
    for (point, config) in points.iter_mut() {
        // The best of two floods: a machine that runs other things slows one down now and then.
        for _ in 0..if point.skipped.is_none() { 2 } else { 0 } {
            let (c, t, p, n) = (config.clone(), topic.to_string(), payloads.clone(), plan.flood_records);
            let measured = tokio::task::spawn_blocking(move || flood_raw(&c, &t, n, &p)).await??;
            if point.throughput.as_ref().is_none_or(|kept| kept.records_per_s < measured.records_per_s) {
                point.throughput = Some(measured);
            }
        }
        progress(Pass::Throughput, point);
    }
    Ok(points.into_iter().map(|(point, _)| point).collect())
}
// ANCHOR_END: sweep
