//! Grades lesson 16's metrics: `record_throughput`, `record_broker_latency` and `record_consumer_lag` on
//! hand-made statistics, interval after interval (names, labels, kinds and values, as `/metrics` renders them),
//! then the whole chain on the broker: clients whose statistics feed a recorder, `/metrics` served over HTTP, and
//! the lag a consumer group has left on each partition.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use kit_testing::{broker, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Window;
use rdkafka::{Offset, TopicPartitionList};
use lesson_16::exposition::{self, Sample};
use lesson_16::statistics::{names, record_broker_latency, record_consumer_lag, record_throughput};
use lesson_16::{Metrics, StatsContext};

// ─── record_throughput ──────────────────────────────────────────────────────────────────────────────────────

/// A producer's interval: `sent` messages of `bytes` bytes in all, `queued` waiting.
fn producer_interval(client: &str, sent: i64, bytes: i64, queued: u64) -> rdkafka::statistics::Statistics {
    let mut s = stats(client, "producer");
    s.txmsgs = sent;
    s.txmsg_bytes = bytes;
    s.msg_cnt = queued;
    s
}

#[test]
fn throughput_counters_equal_librdkafkas_totals_per_client() {
    let metrics = Metrics::new();
    let mut consumer = stats("orders-in", "consumer");
    consumer.rxmsgs = 80;
    consumer.rxmsg_bytes = 40_960;
    metrics.record(|| {
        record_throughput(&producer_interval("orders-out", 120, 61_440, 0));
        record_throughput(&consumer);
    });
    let samples = scrape(&metrics);
    assert_eq!(
        series(&samples, names::MESSAGES_SENT),
        vec![(labels(&[("client_id", "orders-in")]), 0.0), (labels(&[("client_id", "orders-out")]), 120.0)],
        "messages sent, one series per client, labelled client_id"
    );
    assert_eq!(series(&samples, names::MESSAGE_BYTES_SENT)[1], (labels(&[("client_id", "orders-out")]), 61_440.0));
    assert_eq!(
        series(&samples, names::MESSAGES_RECEIVED),
        vec![(labels(&[("client_id", "orders-in")]), 80.0), (labels(&[("client_id", "orders-out")]), 0.0)]
    );
    let kinds = types(&metrics);
    for name in [names::MESSAGES_SENT, names::MESSAGE_BYTES_SENT, names::MESSAGES_RECEIVED] {
        assert_eq!(kinds.get(name).map(String::as_str), Some("counter"), "{name} is a counter");
    }

    // The same interval again changes nothing; the next one's totals replace the last ones.
    metrics.record(|| record_throughput(&producer_interval("orders-out", 120, 61_440, 0)));
    let again = scrape(&metrics);
    assert_eq!(exposition::value(&again, names::MESSAGES_SENT, &[("client_id", "orders-out")]), Some(120.0));
    metrics.record(|| record_throughput(&producer_interval("orders-out", 200, 102_400, 0)));
    let later = scrape(&metrics);
    assert_eq!(
        exposition::value(&later, names::MESSAGES_SENT, &[("client_id", "orders-out")]),
        Some(200.0),
        "a counter equals librdkafka's total, 200, not the sum of the totals seen"
    );
    assert_eq!(exposition::value(&later, names::MESSAGE_BYTES_SENT, &[("client_id", "orders-out")]), Some(102_400.0));
    assert_eq!(exposition::value(&later, names::MESSAGES_RECEIVED, &[("client_id", "orders-in")]), Some(80.0));
}

#[test]
fn the_producer_queue_is_a_gauge_that_goes_down_as_well_as_up() {
    let metrics = Metrics::new();
    metrics.record(|| record_throughput(&producer_interval("orders-out", 10, 5_120, 500)));
    assert_eq!(
        exposition::value(&scrape(&metrics), names::PRODUCER_QUEUE, &[("client_id", "orders-out")]),
        Some(500.0)
    );
    metrics.record(|| record_throughput(&producer_interval("orders-out", 490, 250_880, 20)));
    assert_eq!(
        series(&scrape(&metrics), names::PRODUCER_QUEUE),
        vec![(labels(&[("client_id", "orders-out")]), 20.0)],
        "the queue went down to 20"
    );
    assert_eq!(types(&metrics).get(names::PRODUCER_QUEUE).map(String::as_str), Some("gauge"));
}

#[test]
fn batch_size_is_recorded_per_topic_only_for_a_producers_intervals_with_batches() {
    let metrics = Metrics::new();
    let mut first = producer_interval("orders-out", 300, 153_600, 0);
    first.topics = [
        topic("orders", vec![partition(-1, -1, -1), partition(0, -1, -1)], window(16_384, 60_000, 12)),
        topic("payments", vec![partition(0, -1, -1)], window(0, 0, 0)),
    ]
    .into_iter()
    .collect();
    let mut fetched = stats("orders-in", "consumer");
    fetched.topics = [topic("orders", vec![partition(0, 5, 5)], window(9_000, 12_000, 40))].into_iter().collect();
    metrics.record(|| {
        record_throughput(&first);
        record_throughput(&fetched);
    });
    assert_eq!(
        series(&scrape(&metrics), names::BATCH_SIZE),
        vec![(labels(&[("client_id", "orders-out"), ("topic", "orders")]), 16_384.0)],
        "the producer's batches to `orders`; none for `payments` (no batch) or for the consumer"
    );
    assert_eq!(types(&metrics).get(names::BATCH_SIZE).map(String::as_str), Some("gauge"));

    // An interval with no batch to `orders` keeps the last value; a new average replaces it.
    let mut quiet = producer_interval("orders-out", 300, 153_600, 0);
    quiet.topics = [topic("orders", vec![partition(0, -1, -1)], window(0, 0, 0))].into_iter().collect();
    metrics.record(|| record_throughput(&quiet));
    assert_eq!(
        exposition::value(&scrape(&metrics), names::BATCH_SIZE, &[("topic", "orders")]),
        Some(16_384.0),
        "a quiet interval is not a batch size of 0"
    );
    let mut busy = producer_interval("orders-out", 900, 460_800, 0);
    busy.topics = [topic("orders", vec![partition(0, -1, -1)], window(65_536, 90_000, 30))].into_iter().collect();
    metrics.record(|| record_throughput(&busy));
    assert_eq!(exposition::value(&scrape(&metrics), names::BATCH_SIZE, &[("topic", "orders")]), Some(65_536.0));
}

// ─── record_broker_latency ──────────────────────────────────────────────────────────────────────────────────

/// A client's brokers as librdkafka lists them: two brokers of the cluster (node ids 1 and 0: Kafka's ids may
/// start at 0), the bootstrap address it started from and the internal pseudo-broker, each with round trips.
fn with_brokers(client: &str, rtt_1: Window, rtt_2: Option<Window>) -> rdkafka::statistics::Statistics {
    let mut s = stats(client, "producer");
    s.brokers = [
        broker_entry("kafka-1:9092/1", 1, "learned", Some(rtt_1)),
        broker_entry("kafka-0:9092/0", 0, "learned", rtt_2),
        broker_entry("kafka-1:9092/bootstrap", -1, "configured", Some(window(3_000, 9_000, 2))),
        broker_entry(":0/internal", -1, "internal", Some(window(100, 200, 1))),
    ]
    .into_iter()
    .collect();
    s
}

#[test]
fn round_trips_are_recorded_in_seconds_per_broker_known_by_its_node_id() {
    let metrics = Metrics::new();
    metrics.record(|| {
        record_broker_latency(&with_brokers("orders-out", window(1_500, 4_200, 10), Some(window(800, 2_000, 3))))
    });
    let samples = scrape(&metrics);
    assert_eq!(
        series(&samples, names::RTT_AVG),
        vec![
            (labels(&[("broker", "0"), ("client_id", "orders-out")]), 0.0008),
            (labels(&[("broker", "1"), ("client_id", "orders-out")]), 0.0015),
        ],
        "1,500 µs is 0.0015 s; one series per broker of the cluster, by node id (0 is one); no bootstrap or \
         internal entry"
    );
    assert_eq!(
        series(&samples, names::RTT_P99),
        vec![
            (labels(&[("broker", "0"), ("client_id", "orders-out")]), 0.002),
            (labels(&[("broker", "1"), ("client_id", "orders-out")]), 0.0042),
        ]
    );
    let kinds = types(&metrics);
    assert_eq!(kinds.get(names::RTT_AVG).map(String::as_str), Some("gauge"));
    assert_eq!(kinds.get(names::RTT_P99).map(String::as_str), Some("gauge"));
}

#[test]
fn a_broker_without_round_trips_in_the_interval_keeps_its_last_values() {
    let metrics = Metrics::new();
    metrics.record(|| record_broker_latency(&with_brokers("orders-out", window(1_500, 4_200, 10), None)));
    assert_eq!(
        series(&scrape(&metrics), names::RTT_AVG).len(),
        1,
        "a broker with no round-trip window at all is not recorded"
    );
    // The next interval: no round trip to broker 1, a first one to broker 0.
    metrics
        .record(|| record_broker_latency(&with_brokers("orders-out", window(0, 0, 0), Some(window(2_500, 7_000, 4)))));
    let samples = scrape(&metrics);
    assert_eq!(
        exposition::value(&samples, names::RTT_AVG, &[("broker", "1")]),
        Some(0.0015),
        "a quiet interval is not a round trip of 0"
    );
    assert_eq!(exposition::value(&samples, names::RTT_P99, &[("broker", "1")]), Some(0.0042));
    assert_eq!(exposition::value(&samples, names::RTT_P99, &[("broker", "0")]), Some(0.007));
    // Another client's brokers are series of their own.
    metrics.record(|| record_broker_latency(&with_brokers("orders-in", window(9_000, 20_000, 5), None)));
    let samples = scrape(&metrics);
    assert_eq!(
        exposition::value(&samples, names::RTT_AVG, &[("broker", "1"), ("client_id", "orders-in")]),
        Some(0.009)
    );
    assert_eq!(
        exposition::value(&samples, names::RTT_AVG, &[("broker", "1"), ("client_id", "orders-out")]),
        Some(0.0015)
    );
}

// ─── record_consumer_lag ────────────────────────────────────────────────────────────────────────────────────

/// A consumer's interval: partitions of `orders` and `payments`, with committed lags and (different) stored lags.
fn lags(orders: [i64; 3], payments: i64) -> rdkafka::statistics::Statistics {
    let mut s = stats("orders-in", "consumer");
    s.topics = [
        topic(
            "orders",
            vec![
                partition(-1, -1, -1),
                partition(0, orders[0], 0),
                partition(1, orders[1], 0),
                partition(2, orders[2], 0),
            ],
            window(0, 0, 0),
        ),
        topic("payments", vec![partition(-1, -1, -1), partition(0, payments, 1)], window(0, 0, 0)),
    ]
    .into_iter()
    .collect();
    s
}

fn lag_series(samples: &[Sample]) -> Vec<(String, String, f64)> {
    let mut found: Vec<(String, String, f64)> = samples
        .iter()
        .filter(|s| s.name == names::CONSUMER_LAG)
        .map(|s| {
            assert_eq!(s.labels.get("client_id").map(String::as_str), Some("orders-in"), "labelled client_id: {s:?}");
            assert_eq!(s.labels.len(), 3, "labels client_id, topic and partition: {s:?}");
            (s.labels["topic"].clone(), s.labels["partition"].clone(), s.value)
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

#[test]
fn consumer_lag_is_recorded_per_topic_and_partition_from_the_committed_offsets() {
    let metrics = Metrics::new();
    metrics.record(|| record_consumer_lag(&lags([7, 0, 12], 3)));
    let expected = |o0: f64, o2: f64| {
        vec![
            ("orders".to_string(), "0".to_string(), o0),
            ("orders".to_string(), "1".to_string(), 0.0),
            ("orders".to_string(), "2".to_string(), o2),
            ("payments".to_string(), "0".to_string(), 3.0),
        ]
    };
    assert_eq!(lag_series(&scrape(&metrics)), expected(7.0, 12.0), "the committed lag of each partition");
    assert_eq!(types(&metrics).get(names::CONSUMER_LAG).map(String::as_str), Some("gauge"));
    // The group commits: the lags go down.
    metrics.record(|| record_consumer_lag(&lags([2, 0, 0], 3)));
    assert_eq!(lag_series(&scrape(&metrics)), expected(2.0, 0.0));
}

#[test]
fn a_lag_librdkafka_does_not_know_gets_no_value() {
    let metrics = Metrics::new();
    metrics.record(|| record_consumer_lag(&lags([-1, 4, -1], -1)));
    assert_eq!(
        lag_series(&scrape(&metrics)),
        vec![("orders".to_string(), "1".to_string(), 4.0)],
        "-1 is librdkafka's \"unknown\" (and the partition -1 is no partition): no value"
    );
    // Once the group has committed, the lag is known and appears.
    metrics.record(|| record_consumer_lag(&lags([5, 4, 9], 0)));
    assert_eq!(lag_series(&scrape(&metrics)).len(), 4);
}

// ─── on the broker ──────────────────────────────────────────────────────────────────────────────────────────

/// Scrapes `/metrics` at `base` over HTTP; fails the test with the body when it is not a 200 (recording panicked).
async fn scrape_http(client: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = client.get(format!("{base}/metrics")).send().await.expect("/metrics answers");
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = response.text().await.expect("a body");
    assert!(status.is_success(), "/metrics answered {status}: {body}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "Prometheus' text format: {content_type}");
    exposition::parse(&body)
}

/// The lag each partition of `topic` shows for `client`, by partition.
fn partition_lags(samples: &[Sample], client: &str, topic: &str) -> Vec<(String, f64)> {
    let mut lags: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.is(names::CONSUMER_LAG, &[("client_id", client), ("topic", topic)]))
        .map(|s| (s.labels.get("partition").cloned().unwrap_or_default(), s.value))
        .collect();
    lags.sort_by(|a, b| a.0.cmp(&b.0));
    lags
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_what_was_sent_and_the_lag_left_on_each_partition() {
    let broker = broker();
    let topic = unique("lesson16-metrics");
    broker.create_topic(&topic, 3).await.expect("a topic");
    let metrics = Metrics::new();
    let (address, server) = exposition::serve(metrics.clone(), 0).await.expect("/metrics served");
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let (producer_id, consumer_id) = (unique("producer"), unique("consumer"));
    let within = Duration::from_secs(20);

    let producer: FutureProducer<StatsContext> = broker
        .producer_config()
        .set("client.id", &producer_id)
        .set("statistics.interval.ms", "100")
        .create_with_context(StatsContext { metrics: metrics.clone() })
        .expect("a producer");
    let send = |partition: i32, count: usize| {
        let (producer, topic) = (&producer, &topic);
        async move {
            for i in 0..count {
                let payload = format!("record {i} of partition {partition}");
                let record = FutureRecord::to(topic).key("k").payload(&payload).partition(partition);
                producer.send(record, Duration::from_secs(10)).await.expect("acknowledged");
            }
        }
    };
    for partition in 0..3 {
        send(partition, 10).await;
    }
    let sent_is = |count: f64| {
        let (http, base, producer_id) = (&http, &base, &producer_id);
        async move {
            kit_testing::wait_until(&format!("{} = {count} for the producer", names::MESSAGES_SENT), within, || async {
                let samples = scrape_http(http, base).await;
                let sent = exposition::value(&samples, names::MESSAGES_SENT, &[("client_id", producer_id)]);
                (sent == Some(count)).then_some(samples)
            })
            .await
        }
    };
    let samples = sent_is(30.0).await;
    let bytes = exposition::value(&samples, names::MESSAGE_BYTES_SENT, &[("client_id", &producer_id)]);
    assert!(bytes.is_some_and(|b| b >= 30.0 * 20.0), "the bytes of 30 records of 20+ bytes: {bytes:?}");
    // The brokers' round trips: one series per broker of the cluster, by node id.
    let cluster: BTreeSet<String> = {
        let probe: BaseConsumer = broker.client_config().create().expect("a probe");
        let metadata = probe.fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
        metadata.brokers().iter().map(|b| b.id().to_string()).collect()
    };
    let rtt_brokers: BTreeSet<String> = samples
        .iter()
        .filter(|s| s.is(names::RTT_P99, &[("client_id", &producer_id)]))
        .filter_map(|s| s.labels.get("broker").cloned())
        .collect();
    assert!(
        !rtt_brokers.is_empty() && rtt_brokers.is_subset(&cluster),
        "rtt per broker of the cluster {cluster:?}, by node id: {rtt_brokers:?}"
    );

    // Counters grow: six more to partition 0.
    send(0, 6).await;
    sent_is(36.0).await;

    // A group reads everything, then commits 4 of partition 0's 16, all 10 of partition 1, 3 of partition 2's 10.
    let mut config = broker.consumer_config(&unique("lesson16-lag"));
    config.set("client.id", &consumer_id).set("statistics.interval.ms", "100").set("enable.auto.commit", "false");
    let consumer: BaseConsumer<StatsContext> =
        config.create_with_context(StatsContext { metrics: metrics.clone() }).expect("a consumer");
    consumer.subscribe(&[&topic]).expect("subscribed");
    let consumer = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut read = 0;
        while read < 36 {
            assert!(std::time::Instant::now() < deadline, "the group read {read} of 36 records within 30 s");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                message.expect("a record");
                read += 1;
            }
        }
        {
            let mut commit = TopicPartitionList::new();
            for (partition, offset) in [(0, 4), (1, 10), (2, 3)] {
                commit.add_partition_offset(&topic, partition, Offset::Offset(offset)).expect("an offset");
            }
            consumer.commit(&commit, CommitMode::Sync).expect("committed");
        }
        (consumer, topic)
    })
    .await
    .expect("the group read the records");
    let (consumer, topic) = consumer;
    let expected = vec![("0".to_string(), 12.0), ("1".to_string(), 0.0), ("2".to_string(), 7.0)];
    // A wait with a deadline that remembers what it last saw, for the failure message.
    let deadline = tokio::time::Instant::now() + within;
    let samples = loop {
        let _ = consumer.poll(Duration::ZERO); // serves the consumer's statistics callback
        let samples = scrape_http(&http, &base).await;
        let seen = partition_lags(&samples, &consumer_id, &topic);
        if seen == expected {
            break samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lags on /metrics should be {expected:?} (committed 4, 10 and 3 of 16, 10 and 10); the last scrape \
             showed {seen:?}"
        );
        tokio::time::sleep(kit::wait::POLL_INTERVAL).await; // the polling interval of a deadline-bound wait
    };
    assert_eq!(
        exposition::value(&samples, names::MESSAGES_RECEIVED, &[("client_id", &consumer_id)]),
        Some(36.0),
        "the consumer received the 36 records"
    );
    server.abort();
}
