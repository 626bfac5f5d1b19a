//! librdkafka's statistics as Prometheus metrics.
//!
//! With `statistics.interval.ms` set, librdkafka hands the client a JSON document of everything it counts every
//! interval: totals since the client started, per-broker request latencies, per-partition offsets and lag.
//! rdkafka parses it into [`Statistics`] and calls [`ClientContext::stats`]; [`StatsContext`] turns it into
//! metrics through the `metrics` facade (`counter!`, `gauge!`), and a [`Metrics`] renders them in Prometheus'
//! text format for `/metrics` ([`crate::exposition`]).
//!
//! Each [`Metrics`] has a recorder of its own instead of the process-wide one: the facade's global recorder can
//! be installed once per process, so two clients (or two tests) would share every series. The context runs the
//! recording under `metrics::with_local_recorder`, on whichever librdkafka thread calls it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

// ANCHOR: names
/// The metrics this lesson records, as `/metrics` shows them. Every one has the label `client_id` (the client's
/// `client.id`).
pub mod names {
    /// Counter: messages the client has sent to brokers since it started (librdkafka's `txmsgs`).
    pub const MESSAGES_SENT: &str = "kafka_messages_sent_total";
    /// Counter: bytes of those messages, framing included (`txmsg_bytes`).
    pub const MESSAGE_BYTES_SENT: &str = "kafka_message_bytes_sent_total";
    /// Counter: messages the client has received from brokers (`rxmsgs`).
    pub const MESSAGES_RECEIVED: &str = "kafka_messages_received_total";
    /// Gauge: messages waiting in the producer, not yet acknowledged (`msg_cnt`).
    pub const PRODUCER_QUEUE: &str = "kafka_producer_queue_messages";
    /// Gauge, labels `client_id` and `topic`: the average size of the batches sent to the topic in the last
    /// interval, in bytes (the topic's `batchsize` window).
    pub const BATCH_SIZE: &str = "kafka_producer_batch_size_avg_bytes";
    /// Gauges, labels `client_id` and `broker` (its node id): request round-trip time in the last interval, in
    /// seconds (the broker's `rtt` window, in microseconds).
    pub const RTT_AVG: &str = "kafka_broker_rtt_avg_seconds";
    pub const RTT_P99: &str = "kafka_broker_rtt_p99_seconds";
    /// Gauge, labels `client_id`, `topic` and `partition`: how many records the group's committed offset leaves
    /// to read (`consumer_lag`).
    pub const CONSUMER_LAG: &str = "kafka_consumer_lag";
}
// ANCHOR_END: names

// ANCHOR: record_statistics
/// Everything this lesson takes from one interval's statistics, through the current recorder.
pub fn record_statistics(stats: &Statistics) {
    record_throughput(stats);
    record_broker_latency(stats);
    record_consumer_lag(stats);
}
// ANCHOR_END: record_statistics

// EXERCISE: Record a client's throughput from one interval's statistics, each metric labelled
// `client_id` (the statistics' `client_id`). `kafka_messages_sent_total`, `kafka_message_bytes_sent_total`
// and `kafka_messages_received_total` are counters that always equal librdkafka's totals since the client
// started: the same statistics recorded twice change nothing, and the next interval's totals replace them,
// never add to them. `kafka_producer_queue_messages` is a gauge of the messages waiting in the producer,
// which goes down as well as up. `kafka_producer_batch_size_avg_bytes` (labels `client_id` and `topic`) is
// the average size of the batches sent to each topic in the interval: only for a topic that had batches in
// it (an interval with none keeps the last value), and only for a producer (a consumer's statistics have
// batch windows too, of what it fetched). The tests record hand-made statistics of two clients, interval
// after interval, and compare what `/metrics` shows: names, labels and kinds word for word.
// ANCHOR: record_throughput
/// The client's totals, its queue, and the batch size per topic.
pub fn record_throughput(stats: &Statistics) {
    let client = stats.client_id.clone();
    metrics::counter!(names::MESSAGES_SENT, "client_id" => client.clone()).absolute(stats.txmsgs.max(0) as u64);
    metrics::counter!(names::MESSAGE_BYTES_SENT, "client_id" => client.clone())
        .absolute(stats.txmsg_bytes.max(0) as u64);
    metrics::counter!(names::MESSAGES_RECEIVED, "client_id" => client.clone()).absolute(stats.rxmsgs.max(0) as u64);
    metrics::gauge!(names::PRODUCER_QUEUE, "client_id" => client.clone()).set(stats.msg_cnt as f64);
    if stats.client_type != "producer" {
        return;
    }
    for (topic, topic_stats) in &stats.topics {
        if topic_stats.batchsize.cnt > 0 {
            metrics::gauge!(names::BATCH_SIZE, "client_id" => client.clone(), "topic" => topic.clone())
                .set(topic_stats.batchsize.avg as f64);
        }
    }
}
// ANCHOR_END: record_throughput

// EXERCISE: Record each broker's request round-trip time in the interval: `kafka_broker_rtt_avg_seconds`
// and `kafka_broker_rtt_p99_seconds`, gauges in seconds (librdkafka counts microseconds), labelled
// `client_id` and `broker` — the broker's node id, as `"1"`. Only the brokers of the cluster, known by their
// node id (0 or more): librdkafka also lists the bootstrap addresses it started from and an internal
// pseudo-broker, with the node id -1, and they must not appear. A broker with no round trip in the interval
// keeps its last values: a quiet interval is not a latency of zero. The tests give brokers with and without
// round trips, next to the bootstrap and internal entries, for two clients.
// ANCHOR: record_broker_latency
/// Round-trip time per broker.
pub fn record_broker_latency(stats: &Statistics) {
    for broker in stats.brokers.values() {
        let Some(rtt) = &broker.rtt else { continue };
        if broker.nodeid < 0 || rtt.cnt == 0 {
            continue;
        }
        let labels = [("client_id", stats.client_id.clone()), ("broker", broker.nodeid.to_string())];
        metrics::gauge!(names::RTT_AVG, &labels).set(rtt.avg as f64 / 1e6);
        metrics::gauge!(names::RTT_P99, &labels).set(rtt.p99 as f64 / 1e6);
    }
}
// ANCHOR_END: record_broker_latency

// EXERCISE: Record the consumer lag of every partition: `kafka_consumer_lag`, a gauge of how many records
// the group's committed offset leaves to read, labelled `client_id`, `topic` and `partition` (its number, as
// `"0"`). Where librdkafka does not know the lag it writes -1 — nothing committed yet, no high watermark, or
// the partition -1 it lists under each topic for messages not yet given a partition — and such an entry gets
// no value rather than a wrong one. A lag goes down as the group commits. The tests record the lags of
// several topics and partitions, unknown ones among them, interval after interval, then run a real consumer
// that commits part of what it read.
// ANCHOR: record_consumer_lag
/// The committed lag per partition.
pub fn record_consumer_lag(stats: &Statistics) {
    for (topic, topic_stats) in &stats.topics {
        for partition in topic_stats.partitions.values() {
            if partition.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!(
                names::CONSUMER_LAG,
                "client_id" => stats.client_id.clone(),
                "topic" => topic.clone(),
                "partition" => partition.partition.to_string()
            )
            .set(partition.consumer_lag as f64);
        }
    }
}
// ANCHOR_END: record_consumer_lag

// ANCHOR: metrics
/// A Prometheus recorder of its own and what renders it. Clones share the recorder.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Why recording last failed (a panic in a statistics callback), shown by `/metrics` instead of the metrics.
    failure: Arc<Mutex<Option<String>>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Metrics { recorder: Arc::new(recorder), handle, failure: Arc::default() }
    }

    /// Runs `record` with this recorder as the current one (on this thread, for the call only).
    pub fn record<T>(&self, record: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), record)
    }

    /// Records one interval's statistics. A panic is caught and kept (see [`Metrics::failure`]): it must not
    /// unwind into librdkafka's thread, which would abort the process.
    pub fn record_statistics(&self, stats: &Statistics) {
        let recorded = std::panic::catch_unwind(AssertUnwindSafe(|| self.record(|| record_statistics(stats))));
        if let Err(panic) = recorded {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            tracing::error!("recording statistics panicked: {message}");
            *self.failure.lock().expect("the failure") = Some(message);
        }
    }

    /// Why the last recording failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("the failure").clone()
    }

    /// Every metric, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The context of a client whose statistics become metrics (`statistics.interval.ms` must be set).
#[derive(Clone)]
pub struct StatsContext {
    pub metrics: Metrics,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_statistics(&statistics);
    }
}

impl ConsumerContext for StatsContext {}

impl rdkafka::producer::ProducerContext for StatsContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
// ANCHOR_END: metrics
