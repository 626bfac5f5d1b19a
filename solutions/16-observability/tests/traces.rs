//! Grades lesson 16's trace context: `parse_traceparent` on W3C's example and on near misses of every kind (and on
//! random bytes, which must never make it panic), `continue_trace` with and without a parent; then one order on
//! the broker, order service → shipping → tracker, whose four spans make one trace, each the parent of the next,
//! and orders with a malformed or missing header, which start new traces and still ship.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fail_if_ended;
use kit_testing::{broker, read_topic, unique};
use proptest::prelude::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_16::shipping::{self, Order, ShippingTopics};
use solution_16::spans::{CollectedSpan, SpanCollector};
use solution_16::trace::{self, SAMPLED, SpanContext, TraceParent, continue_trace, parse_traceparent};
use tracing::instrument::WithSubscriber;

/// W3C's own example (trace-context, section 3.2.2.1): sampled.
const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(text: &str) -> Option<TraceParent> {
    parse_traceparent(text.as_bytes())
}

/// `EXAMPLE` with the bytes from `at` replaced by `with`.
fn example_with(at: usize, with: &str) -> String {
    let mut text = EXAMPLE.to_string();
    text.replace_range(at..at + with.len(), with);
    text
}

// ─── parse_traceparent ─────────────────────────────────────────────────────────────────────────────────────

#[test]
fn w3cs_example_parses_into_its_trace_parent_and_flags() {
    assert_eq!(
        parse(EXAMPLE),
        Some(TraceParent { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, parent_id: 0x00f067aa0ba902b7, flags: 0x01 })
    );
    let not_sampled = example_with(53, "00");
    assert_eq!(parse(&not_sampled).map(|t| t.flags), Some(0x00), "flags 00: not sampled, still valid");
    assert_eq!(parse(&example_with(53, "ff")).map(|t| t.flags), Some(0xff), "every flag value is read");
    let small = "00-00000000000000000000000000000001-0000000000000002-01";
    assert_eq!(parse(small), Some(TraceParent { trace_id: 1, parent_id: 2, flags: 1 }), "leading zeros are digits");
}

#[test]
fn upper_case_hex_digits_are_refused() {
    for text in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        &example_with(3, "4B"),
        &example_with(36, "00F0"),
        &example_with(53, "0A"),
    ] {
        assert_eq!(parse(text), None, "{text}: W3C's hex is lower-case");
    }
}

#[test]
fn ids_and_flags_of_the_wrong_length_are_refused() {
    for text in [
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // trace id of 31 digits
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", // 33
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", // parent id of 15
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01", // 17
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", // flags of 1
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", // 3
        "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01", // dashes moved, length right
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", // something after
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736",
        "",
    ] {
        assert_eq!(parse(text), None, "{text:?}");
    }
}

#[test]
fn a_trace_id_or_parent_id_of_all_zeros_is_refused() {
    assert_eq!(parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None, "an all-zero trace id");
    assert_eq!(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), None, "an all-zero parent id");
}

#[test]
fn only_version_00_is_read() {
    for version in ["01", "ff", "0a", "10", "-0", "+0"] {
        let text = example_with(0, version);
        assert_eq!(parse(&text), None, "{text}");
    }
}

#[test]
fn anything_but_lower_case_hex_between_the_dashes_is_refused() {
    for text in [
        example_with(3, "+"),  // a sign, which u128::from_str_radix would take
        example_with(36, "+"), // in the parent id
        example_with(53, "+1"),
        example_with(3, "g"),
        example_with(3, " "),
        example_with(2, "_"),
        example_with(35, "."),
        example_with(52, " "),
        format!(" {EXAMPLE}"),
        format!("{EXAMPLE}\n"),
        format!(" {}", &EXAMPLE[..54]),
        EXAMPLE.replace('-', "_"),
    ] {
        assert_eq!(parse(&text), None, "{text:?}");
    }
}

#[test]
fn bytes_that_are_not_utf8_or_not_ascii_are_refused_without_a_panic() {
    let mut bytes = EXAMPLE.as_bytes().to_vec();
    bytes[10] = 0xff;
    assert_eq!(parse_traceparent(&bytes), None, "a byte that is not UTF-8");
    // "é" is two bytes: 55 bytes in all, and a character boundary inside the trace id.
    let accented = format!("00-{}é-00f067aa0ba902b7-01", &EXAMPLE[3..33]);
    assert_eq!(accented.len(), 55);
    assert_eq!(parse(&accented), None, "a character that is not a hex digit");
    let shifted = format!("00é{}", &EXAMPLE[4..]);
    assert_eq!(parse(&shifted), None, "{shifted}");
    // And one where the dash after the trace id should be: a character boundary at neither 35 nor 36.
    let straddling = format!("00-{}é{}", &EXAMPLE[3..34], &EXAMPLE[36..]);
    assert_eq!(straddling.len(), 55);
    assert_eq!(parse(&straddling), None, "{straddling}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the bytes, parsing answers, and it answers `Some` only for a header written exactly as a context
    /// writes it.
    #[test]
    fn parsing_never_panics_and_accepts_only_what_a_context_writes(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..70),
            // Near misses: W3C's example with a byte or two changed.
            (0..55usize, any::<u8>(), 0..55usize, any::<u8>()).prop_map(|(i, a, j, b)| {
                let mut bytes = EXAMPLE.as_bytes().to_vec();
                bytes[i] = a;
                bytes[j] = b;
                bytes
            }),
            (0..55usize, "[0-9a-fA-F+ _-]").prop_map(|(i, c)| {
                let mut bytes = EXAMPLE.as_bytes().to_vec();
                bytes[i] = c.as_bytes()[0];
                bytes
            }),
        ]
    ) {
        if let Some(parent) = parse_traceparent(&bytes) {
            let written =
                SpanContext { trace_id: parent.trace_id, span_id: parent.parent_id, parent_id: None, flags: parent.flags };
            let header = written.traceparent();
            prop_assert_eq!(header.as_bytes(), &bytes[..]);
        }
    }

    /// Every header a context writes parses back to it.
    #[test]
    fn a_written_header_parses_back(trace_id in 1..=u128::MAX, span_id in 1..=u64::MAX, flags in any::<u8>()) {
        let context = SpanContext { trace_id, span_id, parent_id: None, flags };
        prop_assert_eq!(parse(&context.traceparent()), Some(context.as_parent()));
    }
}

// ─── continue_trace ────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn a_continued_span_keeps_the_trace_and_its_flags_with_the_sender_as_parent() {
    let mut rng = fastrand::Rng::with_seed(16);
    for flags in [0x01, 0x00] {
        let incoming =
            TraceParent { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, parent_id: 0x00f067aa0ba902b7, flags };
        let span = continue_trace(Some(&incoming), &mut rng);
        assert_eq!(span.trace_id, incoming.trace_id, "the same trace");
        assert_eq!(span.parent_id, Some(incoming.parent_id), "the sender's span is the parent");
        assert_eq!(span.flags, flags, "the trace's sampling decision, as it came");
    }
}

#[test]
fn a_continued_span_has_a_fresh_id_of_its_own() {
    let mut rng = fastrand::Rng::with_seed(16);
    let incoming = parse(EXAMPLE).expect("W3C's example");
    let ids: Vec<u64> = (0..20).map(|_| continue_trace(Some(&incoming), &mut rng).span_id).collect();
    assert!(!ids.contains(&incoming.parent_id), "a span never takes its parent's id (that would forward the header)");
    assert!(!ids.contains(&0), "never all zeros");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 20, "a fresh id each time: {ids:x?}");
    let successor = ids.iter().filter(|id| **id == incoming.parent_id.wrapping_add(1)).count();
    assert!(successor < 2, "ids drawn at random, not counted from the parent's");
}

#[test]
fn without_a_parent_a_new_sampled_trace_starts() {
    let mut rng = fastrand::Rng::with_seed(16);
    let roots: Vec<SpanContext> = (0..20).map(|_| continue_trace(None, &mut rng)).collect();
    for root in &roots {
        assert_eq!(root.parent_id, None, "the first span of a trace has no parent");
        assert_eq!(root.flags, SAMPLED, "a new trace is sampled");
        assert_ne!(root.trace_id, 0);
        assert_ne!(root.span_id, 0);
        assert_ne!(root.trace_id, u128::from(root.span_id), "the trace id is drawn on its own");
        let halves = [root.trace_id as u64, (root.trace_id >> 64) as u64];
        assert!(!halves.contains(&root.span_id), "the span id is drawn on its own too, not cut from the trace id");
    }
    assert_eq!(roots.iter().map(|r| r.trace_id).collect::<BTreeSet<_>>().len(), 20, "a fresh trace each time");
    assert!(roots.iter().any(|r| r.trace_id > u128::from(u64::MAX)), "trace ids of 128 random bits");
}

// ─── across Kafka ──────────────────────────────────────────────────────────────────────────────────────────

/// Fresh topics and the shipping service running on them, its spans collected by `collector`.
struct Flow {
    topics: ShippingTopics,
    service: tokio::task::JoinHandle<anyhow::Result<u64>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Flow {
    async fn start(collector: &SpanCollector) -> Flow {
        let broker = broker();
        let topics = ShippingTopics { orders: unique("lesson16-orders"), shipments: unique("lesson16-shipments") };
        kit_testing::create_topics(&[(&topics.orders, false, 3), (&topics.shipments, false, 3)]).await;
        let mut config = broker.consumer_config(&unique("lesson16-shipping"));
        config.set("enable.auto.commit", "false");
        let consumer = config.create().expect("a consumer");
        let producer: FutureProducer = broker.producer_config().create().expect("a producer");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = shipping::run_shipping(consumer, producer, topics.clone(), async {
            let _ = stopped.await;
        });
        let service = tokio::spawn(service.with_subscriber(collector.dispatch()));
        Flow { topics, service, stop }
    }

    /// The shipments, once `count` are on the topic; fails at once if the service ends.
    async fn shipments(&mut self, count: usize) -> Vec<kit_testing::ReadRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        loop {
            fail_if_ended(&mut self.service, "the shipping service").await;
            let records = read_topic(broker(), &self.topics.shipments, count, Duration::from_secs(2)).await;
            if records.len() >= count {
                return records;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} shipments within 45 s: only {} arrived",
                records.len()
            );
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.service.await.expect("the service ran").expect("the service stops cleanly");
    }
}

fn order(id: &str) -> Order {
    Order { order_id: id.into(), customer: "cust-00042".into(), items: 4, total_cents: 12_990 }
}

/// The spans of `order_id` once there are `count`.
async fn spans_of(collector: &SpanCollector, order_id: &str, count: usize) -> Vec<CollectedSpan> {
    kit_testing::wait_until(&format!("{count} spans of {order_id}"), Duration::from_secs(10), || {
        let spans = collector.spans_of(order_id);
        async move { (spans.len() >= count).then_some(spans) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_orders_spans_share_one_trace_across_both_hops_each_the_parent_of_the_next() {
    let collector = SpanCollector::new();
    let mut flow = Flow::start(&collector).await;
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    let mut rng = fastrand::Rng::with_seed(16);
    let placed = shipping::place_order(&producer, &flow.topics.orders, &order("ord-000001"), &mut rng)
        .with_subscriber(collector.dispatch())
        .await
        .expect("the order is sent");

    let orders = read_topic(broker(), &flow.topics.orders, 1, Duration::from_secs(10)).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0].headers.get("traceparent"),
        Some(&placed.traceparent()),
        "the order carries its span's context in the header `traceparent`"
    );
    let shipments = flow.shipments(1).await;
    let header = shipments[0].headers.get("traceparent").map(|h| h.as_bytes().to_vec());
    let tracked = tracing::dispatcher::with_default(&collector.dispatch(), || {
        shipping::track_shipment("ord-000001", header.as_deref(), &mut rng)
    });
    let spans = spans_of(&collector, "ord-000001", 4).await;
    flow.stop().await;

    let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.name.as_str(), s.service.as_str())).collect();
    assert_eq!(
        names,
        [
            ("send order", "order-service"),
            ("process order", "shipping"),
            ("send shipment", "shipping"),
            ("process shipment", "tracker"),
        ]
    );
    let trace = trace::trace_hex(placed.trace_id);
    assert!(spans.iter().all(|s| s.trace_id == trace), "one trace id across both hops: {spans:#?}");
    assert_eq!(spans[0].parent_id, "", "the order service's span starts the trace");
    for pair in spans.windows(2) {
        assert_eq!(pair[1].parent_id, pair[0].span_id, "{} is the parent of {}", pair[0].name, pair[1].name);
    }
    assert_eq!(spans.iter().map(|s| &s.span_id).collect::<BTreeSet<_>>().len(), 4, "four spans, four ids");
    assert_eq!(
        shipments[0].headers.get("traceparent").map(String::as_str),
        Some(format!("00-{trace}-{}-01", spans[2].span_id).as_str()),
        "the shipment carries the context of the span that sent it"
    );
    assert_eq!(tracked.trace_id, placed.trace_id, "the tracker continues the same trace");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_or_missing_traceparent_starts_a_new_trace_and_the_order_still_ships() {
    let collector = SpanCollector::new();
    let mut flow = Flow::start(&collector).await;
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let orders: [(&str, Option<&[u8]>); 4] = [
        ("ord-upper", Some(upper.as_bytes())),
        ("ord-zeros", Some(zeros.as_bytes())),
        ("ord-bytes", Some(&[0xff, 0xfe, 0x00])),
        ("ord-none", None),
    ];
    for (id, header) in orders {
        let payload = serde_json::to_vec(&order(id)).unwrap();
        let mut record = FutureRecord::to(&flow.topics.orders).key(id).payload(&payload);
        if let Some(value) = header {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(value) }));
        }
        producer.send(record, Duration::from_secs(10)).await.expect("sent");
    }
    let shipments = flow.shipments(4).await;
    let mut traces = BTreeSet::new();
    for (id, _) in orders {
        let spans = spans_of(&collector, id, 2).await;
        let process = spans.iter().find(|s| s.name == "process order").expect("a `process order` span");
        assert_eq!(process.parent_id, "", "{id}: the header is no parent, a new trace starts");
        assert_ne!(process.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{id}: not the refused header's trace");
        assert_ne!(process.trace_id, "00000000000000000000000000000000", "{id}");
        traces.insert(process.trace_id.clone());
        let shipment = shipments.iter().find(|r| r.key.as_deref() == Some(id)).expect("shipped");
        let header = shipment.headers.get("traceparent").expect("the shipment carries a traceparent");
        let parent = parse(header).expect("a valid traceparent on the shipment");
        assert_eq!(trace::trace_hex(parent.trace_id), process.trace_id, "{id}: the shipment continues the new trace");
    }
    assert_eq!(traces.len(), 4, "a new trace per order");
    flow.stop().await;
}
