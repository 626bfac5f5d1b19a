//! Grades lesson 16's tuning: `tuned_producer` and `tuned_consumer` as librdkafka will apply them (aliases and
//! defaults included: `tuning::effective`), and the benchmark's report on the broker — every figure present and
//! every count adding up. Never the figures themselves: throughput and latency depend on the machine.

use std::time::Duration;

use kit_testing::{broker, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;
use solution_16::perf::{self, BenchPlan, PAYLOAD_BYTES};
use solution_16::tuning::{builtin_features, effective, tuned_consumer, tuned_producer};

/// A producer base as `kit::Broker::producer_config` makes it, for a broker nobody needs to reach.
fn producer_base() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", "127.0.0.1:9").set("message.timeout.ms", "30000");
    config
}

/// A consumer base as `kit::Broker::consumer_config` makes it on the embedded broker.
fn consumer_base() -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("group.protocol", "consumer")
        .set("fetch.wait.max.ms", "10")
        .set("group.id", "shipping")
        .set("auto.offset.reset", "earliest");
    config
}

/// `property` as librdkafka applies `config`, or the test fails saying why librdkafka refused it.
fn applied(config: &ClientConfig, property: &str) -> String {
    effective(config, property).unwrap_or_else(|e| panic!("librdkafka refuses the config {config:?}: {e}"))
}

fn number(config: &ClientConfig, property: &str) -> u64 {
    let value = applied(config, property);
    value.parse().unwrap_or_else(|_| panic!("{property} = {value}"))
}

// ─── the producer ──────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn the_tuned_producer_is_acknowledged_by_every_in_sync_replica_and_never_writes_twice() {
    let config = tuned_producer(producer_base());
    let acks = applied(&config, "acks");
    assert!(
        acks == "-1" || acks == "all",
        "acks = {acks}: a record is acknowledged only once every in-sync replica has it (acks=0 and acks=1 lose \
         acknowledged records when a leader fails)"
    );
    assert_eq!(applied(&config, "enable.idempotence"), "true", "a retry must not duplicate or reorder a record");
}

#[test]
fn the_tuned_producer_keeps_the_base_config_and_makes_a_producer() {
    let config = tuned_producer(producer_base());
    assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9"), "the base's brokers");
    assert_eq!(config.get("message.timeout.ms"), Some("30000"), "the base's time-out");
    config.create::<BaseProducer>().expect("a producer from the tuned settings");
}

#[test]
fn the_tuned_producer_lets_batches_form_for_at_most_two_ms() {
    let config = tuned_producer(producer_base());
    let linger = number(&config, "linger.ms");
    assert!(linger >= 1, "linger.ms = {linger}: with 0, a record goes out alone whenever the producer is idle");
    assert!(
        linger <= 2,
        "linger.ms = {linger}: of the 10 ms budget, the producer's share is 2 ms (the consumer's fetch wait and the \
         round trips take the rest)"
    );
}

#[test]
fn the_tuned_producers_batches_may_hold_at_least_64_kib() {
    let config = tuned_producer(producer_base());
    let batch = number(&config, "batch.size");
    assert!(batch >= 64 * 1024, "batch.size = {batch}: small batches mean a request per few records");
    let per_batch = number(&config, "batch.num.messages");
    assert!(
        per_batch * PAYLOAD_BYTES as u64 >= 64 * 1024,
        "batch.num.messages = {per_batch}: a batch of {PAYLOAD_BYTES} B records must be able to reach 64 KiB too"
    );
}

#[test]
fn the_tuned_producer_compresses_with_a_cheap_codec_this_build_has() {
    let config = tuned_producer(producer_base());
    let codec = applied(&config, "compression.type");
    assert!(
        ["lz4", "snappy", "zstd"].contains(&codec.as_str()),
        "compression.type = {codec}: compress (the network and the broker's disk carry less), with a codec cheap \
         in CPU (gzip costs several times lz4's)"
    );
    assert!(builtin_features().contains(&codec), "{codec} is in this build of librdkafka");
}

// ─── the consumer ──────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn the_tuned_consumer_is_answered_as_soon_as_one_record_is_there() {
    let config = tuned_consumer(consumer_base());
    let min_bytes = number(&config, "fetch.min.bytes");
    assert_eq!(min_bytes, 1, "fetch.min.bytes = {min_bytes}: a fetch waits for that many bytes before it answers");
}

#[test]
fn the_tuned_consumers_empty_fetches_wait_one_to_five_ms() {
    let config = tuned_consumer(consumer_base());
    let wait = number(&config, "fetch.wait.max.ms");
    assert!(wait <= 5, "fetch.wait.max.ms = {wait}: an empty fetch may hold a new record back that long");
    assert!(wait >= 1, "fetch.wait.max.ms = {wait}: fetches with no wait at all keep a broker and a core busy");
}

#[test]
fn the_tuned_consumer_keeps_the_base_config_and_makes_a_consumer() {
    let config = tuned_consumer(consumer_base());
    for (key, value) in
        [("bootstrap.servers", "127.0.0.1:9"), ("group.id", "shipping"), ("auto.offset.reset", "earliest")]
    {
        assert_eq!(config.get(key), Some(value), "the base's {key}");
    }
    config.create::<BaseConsumer>().expect("a consumer from the tuned settings");
}

// ─── the benchmark ─────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmarks_report_has_every_figure_and_its_counts_add_up() {
    let topic = unique("lesson16-bench");
    broker().create_topic(&topic, 3).await.expect("a topic");
    let plan = BenchPlan { flood_records: 3_000, rounds: 2, paced_rate: 1_000, paced_records: 300 };
    let report = tokio::time::timeout(Duration::from_secs(90), perf::bench(broker(), &topic, &plan))
        .await
        .expect("the benchmark ends within 90 s")
        .expect("the benchmark runs");

    for (what, run) in [("raw", &report.raw), ("tuned", &report.tuned), ("service", &report.service)] {
        assert_eq!(run.records, 3_000, "{what}: the records of a round");
        assert_eq!((run.acknowledged, run.failed), (3_000, 0), "{what}: every record acknowledged");
        assert_eq!(run.bytes, 3_000 * PAYLOAD_BYTES as u64, "{what}: the payload bytes");
        assert!(run.seconds > 0.0, "{what}: a duration");
        let rate = run.acknowledged as f64 / run.seconds;
        assert!((run.records_per_s - rate).abs() <= rate * 1e-9, "{what}: records/s = acknowledged / seconds");
    }
    assert!((report.ratio - report.tuned.records_per_s / report.raw.records_per_s).abs() < 1e-9, "tuned / raw");
    let latency = &report.latency;
    assert_eq!(
        (latency.sent, latency.acknowledged, latency.received, latency.samples),
        (300, 300, 300, 300),
        "every paced record sent, acknowledged, received and measured once"
    );
    assert!(
        0.0 < latency.p50_ms
            && latency.p50_ms <= latency.p99_ms
            && latency.p99_ms <= latency.p999_ms
            && latency.p999_ms <= latency.max_ms,
        "percentiles in order: {latency:?}"
    );
    let tuned = tuned_producer(broker().producer_config());
    let expected: Vec<(String, String)> =
        tuned.config_map().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(report.producer_settings, expected, "the report names the tuned producer's settings");
    let consumer_settings: Vec<&str> = report.consumer_settings.iter().map(|(k, _)| k.as_str()).collect();
    let consumer = tuned_consumer(broker().consumer_config("any"));
    for key in consumer.config_map().keys() {
        assert!(consumer_settings.contains(key), "the report names the tuned consumer's {key}");
    }
}
