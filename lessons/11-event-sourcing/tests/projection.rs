//! Grades lesson 11's read side: `project` through the read model in Redis — every event delivered twice,
//! deliveries out of order, a gap that waits for its missing event, customer totals that take a cancelled
//! confirmation back out — then the live projector behind the single writer through real topics, stopping
//! uncommitted on a gap and on a record that is no event, and a rebuild from offset 0 equal to the live read model.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kit_testing::{broker, unique, wait_until};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use lesson_11::projection::{
    CustomerTotals, OrderSummary, Outcome, Projected, ProjectorError, ReadModel, project, rebuild,
};
use lesson_11::{Line, Status, StoredEvent, encode_event};

/// Applies `events` one by one and returns each outcome.
async fn apply_all(read_model: &mut ReadModel, events: &[StoredEvent]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for event in events {
        outcomes.push(read_model.apply(event).await.unwrap_or_else(|e| panic!("applying {event:?}: {e:#}")));
    }
    outcomes
}

/// The whole read model, for comparisons and snapshots.
#[derive(Debug, PartialEq, Serialize)]
struct Everything {
    orders: BTreeMap<String, OrderSummary>,
    customers: BTreeMap<String, CustomerTotals>,
}

async fn everything(read_model: &mut ReadModel) -> Everything {
    Everything {
        orders: read_model.summaries().await.expect("the summaries"),
        customers: read_model.customers().await.expect("the customers"),
    }
}

/// Two orders of one customer: one confirmed, with a SKU added twice at one price (one line), one cancelled open.
fn two_orders() -> Vec<StoredEvent> {
    let mut events = numbered(
        "order-1",
        1,
        vec![placed("customer-7"), item("LAPTOP", 1, 99_900), item("MOUSE", 1, 2_500), item("MOUSE", 1, 2_500)],
    );
    events.extend(numbered("order-1", 5, vec![confirmed(104_900)]));
    events.extend(numbered("order-2", 1, vec![placed("customer-7"), item("DOCK", 1, 18_900), cancelled("too dear")]));
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_delivered_twice_counts_once() {
    let (mut read_model, _clear) = read_model("lesson11-twice").await;
    let history = two_orders();
    let twice: Vec<StoredEvent> = history.iter().flat_map(|event| [event.clone(), event.clone()]).collect();
    let outcomes = apply_all(&mut read_model, &twice).await;
    let expected: Vec<Outcome> = history.iter().flat_map(|_| [Outcome::Applied, Outcome::Duplicate]).collect();
    assert_eq!(outcomes, expected, "each event is applied on its first delivery, a duplicate on its second");

    let order_1 = read_model.summary("order-1").await.unwrap().expect("order-1 is in the read model");
    assert_eq!(
        order_1,
        OrderSummary {
            order_id: "order-1".into(),
            version: 5,
            customer_id: "customer-7".into(),
            status: Status::Confirmed,
            currency: Some("EUR".into()),
            lines: vec![
                Line { sku: "LAPTOP".into(), quantity: 1, unit_price_cents: 99_900 },
                Line { sku: "MOUSE".into(), quantity: 2, unit_price_cents: 2_500 },
            ],
            units: 3,
            total_cents: 104_900,
        },
        "order-1 as its five events made it, each counted once"
    );
    let all = everything(&mut read_model).await;
    assert_eq!(
        all.customers,
        CustomerTotals::of(all.orders.values()),
        "the customer's totals add up to its orders' summaries"
    );
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("read_model_after_every_event_twice", all));

    // Any earlier version, once more, long after: still nothing changes.
    let before = everything(&mut read_model).await;
    let late = apply_all(&mut read_model, &history[..3]).await;
    assert_eq!(late, [Outcome::Duplicate; 3], "old versions redelivered later are duplicates too");
    assert_eq!(everything(&mut read_model).await, before, "a duplicate changes nothing at all");
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_out_of_order_end_as_deliveries_in_order() {
    let (mut in_order, _clear_a) = read_model("lesson11-in-order").await;
    let (mut reordered, _clear_b) = read_model("lesson11-reordered").await;
    let events = numbered("order-3", 1, vec![placed("customer-8"), item("DESK", 1, 45_000), confirmed(45_000)]);
    let [v1, v2, v3] = [&events[0], &events[1], &events[2]].map(Clone::clone);

    let outcomes = apply_all(&mut reordered, &[v1.clone(), v2.clone(), v1.clone(), v3.clone(), v2.clone()]).await;
    assert_eq!(
        outcomes,
        [Outcome::Applied, Outcome::Applied, Outcome::Duplicate, Outcome::Applied, Outcome::Duplicate],
        "v1, v2, v1 again, v3, v2 again"
    );
    assert_eq!(apply_all(&mut in_order, &[v1, v2, v3]).await, [Outcome::Applied; 3]);
    let (expected, found) = (everything(&mut in_order).await, everything(&mut reordered).await);
    assert_eq!(found, expected, "redelivered and reordered, the read model is the one in-order delivery makes");
    assert_eq!(found.orders["order-3"].version, 3);
    assert_eq!(
        found.customers["customer-8"],
        CustomerTotals { orders_placed: 1, orders_confirmed: 1, orders_cancelled: 0, confirmed_total_cents: 45_000 }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_changes_nothing_until_the_missing_event_arrives() {
    let (mut read_model, _clear) = read_model("lesson11-gap").await;
    let events = numbered(
        "order-4",
        1,
        vec![placed("customer-9"), item("CHAIR", 2, 12_000), confirmed(24_000), cancelled("moved house")],
    );

    // Decided without Redis: what `project` says of a version that skips one.
    let fresh = OrderSummary::new("order-4");
    assert_eq!(project(&fresh, &events[1]), Projected::Gap { expected: 1, found: 2 }, "v2 before v1 is a gap");
    assert_eq!(project(&fresh, &events[3]), Projected::Gap { expected: 1, found: 4 });

    assert_eq!(apply_all(&mut read_model, &events[..1]).await, [Outcome::Applied]);
    let after_v1 = everything(&mut read_model).await;
    let outcomes = apply_all(&mut read_model, &[events[2].clone(), events[3].clone()]).await;
    assert_eq!(
        outcomes,
        [Outcome::Gap { expected: 2, found: 3 }, Outcome::Gap { expected: 2, found: 4 }],
        "v3 and v4 cannot be applied while v2 is missing"
    );
    assert_eq!(
        everything(&mut read_model).await,
        after_v1,
        "a gap changes nothing: neither the order nor its customer"
    );

    // The missing event arrives; the ones after it come again (they were not committed) and now apply.
    let outcomes = apply_all(&mut read_model, &events[1..]).await;
    assert_eq!(outcomes, [Outcome::Applied; 3], "v2, then v3 and v4 delivered again");
    let order = read_model.summary("order-4").await.unwrap().expect("order-4");
    assert_eq!((order.version, order.status, order.units, order.total_cents), (4, Status::Cancelled, 2, 24_000));
    assert_eq!(
        read_model.customer("customer-9").await.unwrap(),
        CustomerTotals { orders_placed: 1, orders_confirmed: 0, orders_cancelled: 1, confirmed_total_cents: 0 },
        "confirmed, then cancelled: the order no longer stands confirmed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_totals_take_a_cancelled_confirmation_back_out() {
    let (mut read_model, _clear) = read_model("lesson11-customers").await;
    let kept = numbered("order-5", 1, vec![placed("customer-1"), item("BOOK", 3, 1_500), confirmed(4_500)]);
    let regretted = numbered("order-6", 1, vec![placed("customer-1"), item("PHONE", 1, 59_900), confirmed(59_900)]);
    let dropped = numbered("order-7", 1, vec![placed("customer-1"), item("CASE", 1, 1_900), cancelled("changed mind")]);
    let other = numbered("order-8", 1, vec![placed("customer-2"), item("PEN", 10, 150), confirmed(1_500)]);
    for events in [&kept, &regretted, &dropped, &other] {
        apply_all(&mut read_model, events).await;
    }
    let confirmed_both = read_model.customer("customer-1").await.unwrap();
    assert_eq!(
        confirmed_both,
        CustomerTotals { orders_placed: 3, orders_confirmed: 2, orders_cancelled: 1, confirmed_total_cents: 64_400 },
        "two confirmed orders (45.00 + 599.00), one cancelled while open"
    );

    // The phone is sent back: its confirmation no longer stands.
    let cancel = numbered("order-6", 4, vec![cancelled("sent back")]);
    assert_eq!(apply_all(&mut read_model, &cancel).await, [Outcome::Applied]);
    let all = everything(&mut read_model).await;
    assert_eq!(
        all.customers["customer-1"],
        CustomerTotals { orders_placed: 3, orders_confirmed: 1, orders_cancelled: 2, confirmed_total_cents: 4_500 },
        "cancelling a confirmed order takes it and its total back out of the confirmed ones"
    );
    assert_eq!(all.customers["customer-2"].confirmed_total_cents, 1_500, "another customer's totals are their own");
    assert_eq!(all.customers, CustomerTotals::of(all.orders.values()), "the totals add up to the orders' summaries");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("customer_totals", all.customers));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_projector_follows_the_writer_and_a_rebuild_equals_it() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (live, _clear_live) = read_model("lesson11-live").await;
    let group = unique("lesson11-projector");
    let projector = Projector::start(&topics.events, &group, &live);

    // Nine orders of three customers, through the single writer and the events topic.
    let mut last_versions = BTreeMap::new();
    for n in 0..9 {
        let order_id = format!("order-{n}");
        let mut commands = vec![place(&format!("customer-{}", n % 3)), add("LAPTOP", 1, 99_900)];
        commands.extend((0..n % 3).map(|k| add("CABLE", k + 1, 990)));
        match n % 4 {
            0 => commands.push(lesson_11::Command::ConfirmOrder),
            1 => commands.extend([
                lesson_11::Command::ConfirmOrder,
                lesson_11::Command::CancelOrder { reason: "sent back".into() },
            ]),
            2 => commands.push(lesson_11::Command::CancelOrder { reason: "changed mind".into() }),
            _ => {}
        }
        last_versions.insert(order_id.clone(), send(&writer, &order_id, commands).await);
    }
    let expected_orders: BTreeMap<String, OrderSummary> = {
        let writer = writer.lock().unwrap();
        last_versions.keys().map(|id| (id.clone(), OrderSummary::of(id, &writer.state(id)))).collect()
    };

    let mut probe = live.clone();
    let wanted = last_versions.clone();
    // Waits until the read model has every order's last version, or the projector ended (on an error).
    let caught_up = wait_until("the projector to reach every order's last version", Duration::from_secs(60), || {
        let (mut probe, wanted, ended) = (probe.clone(), wanted.clone(), projector.has_ended());
        async move {
            let orders = probe.summaries().await.ok()?;
            let versions: BTreeMap<String, u64> = orders.iter().map(|(id, s)| (id.clone(), s.version)).collect();
            if ended {
                return Some(None);
            }
            (versions == wanted).then_some(Some(orders))
        }
    })
    .await;
    let report = projector.stop().await.expect("the projector stops without an error when asked");
    let orders = caught_up.expect("the projector ended by itself before it caught up");
    assert_eq!(orders, expected_orders, "every order's summary is the writer's state of it");
    let events: u64 = last_versions.values().sum();
    assert_eq!(report.applied as u64, events, "every event applied once: {report:?}");
    assert_eq!(report.records, report.applied + report.duplicates);
    let committed = kit_testing::committed_offsets(&group, &topics.events, PARTITIONS).await;
    let committed: i64 = committed.iter().map(|offset| offset.unwrap_or(0)).sum();
    assert!(
        committed >= events as i64,
        "the group committed past every event ({committed} offsets committed over the partitions, {events} events)"
    );

    // A rebuild reads the log from offset 0 into a fresh namespace: the same read model.
    let live_everything = everything(&mut probe).await;
    assert_eq!(live_everything.customers, CustomerTotals::of(expected_orders.values()));
    let (mut rebuilt, _clear_rebuilt) = read_model("lesson11-rebuilt").await;
    let config = broker().consumer_config(&unique("lesson11-rebuild"));
    let rebuild_report = rebuild(config.clone(), &topics.events, PARTITIONS, &mut rebuilt, Duration::from_secs(30))
        .await
        .expect("the rebuild");
    assert_eq!(everything(&mut rebuilt).await, live_everything, "the rebuilt read model equals the live one");
    kit_testing::redact::settings().bind(|| {
        insta::assert_json_snapshot!("rebuild_report", rebuild_report);
        insta::assert_json_snapshot!("customers_rebuilt", live_everything.customers);
    });

    // A rebuild never writes over a read model: into a namespace that is not fresh, it refuses.
    let again = rebuild(config, &topics.events, PARTITIONS, &mut rebuilt, Duration::from_secs(30)).await;
    let error = again.expect_err("a rebuild into a namespace that holds keys refuses").to_string();
    assert!(error.contains("is not fresh"), "{error}");
}

/// Writes `records` (key and payload) to `topic`, partition 0, plain (not transactional) records.
async fn write_raw(topic: &str, records: Vec<(String, Vec<u8>)>) {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    for (key, payload) in records {
        producer
            .send(FutureRecord::to(topic).partition(0).key(&key).payload(&payload), Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .expect("a record is delivered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_projector_stops_uncommitted_on_a_gap() {
    let topic = unique("lesson11-gappy-events");
    broker().create_topic(&topic, 1).await.expect("topic");
    // What a broken writer might leave: order-9's version 2 never written.
    let events = numbered("order-9", 1, vec![placed("customer-3"), item("LAMP", 1, 3_000), confirmed(3_000)]);
    write_raw(&topic, vec![encode_event(&events[0]), encode_event(&events[2])]).await;

    let (live, _clear) = read_model("lesson11-gappy").await;
    let group = unique("lesson11-gappy-projector");
    let error = Projector::start(&topic, &group, &live)
        .ended(Duration::from_secs(60))
        .await
        .expect_err("a gap stops the projector with an error");
    match error.downcast_ref::<ProjectorError>() {
        Some(ProjectorError::Gap { order_id, expected: 2, found: 3, offset: 1, .. }) if order_id == "order-9" => {}
        _ => panic!("the error is ProjectorError::Gap at offset 1 (order-9 expects 2, found 3): {error:#}"),
    }
    assert_eq!(
        kit_testing::committed_offsets(&group, &topic, 1).await,
        [Some(1)],
        "v1 committed; v3, not applied, not committed"
    );
    let mut probe = live.clone();
    let order = probe.summary("order-9").await.unwrap().expect("order-9's v1 is in");
    assert_eq!(order.version, 1, "the event after the gap changed nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_no_event_stops_the_projector_and_the_rebuild_with_an_error() {
    let topic = unique("lesson11-bad-events");
    broker().create_topic(&topic, 1).await.expect("topic");
    let events = numbered("order-10", 1, vec![placed("customer-4")]);
    write_raw(&topic, vec![encode_event(&events[0]), ("order-10".into(), b"{\"not\": \"an event\"".to_vec())]).await;

    let (live, _clear) = read_model("lesson11-bad").await;
    let group = unique("lesson11-bad-projector");
    let error = Projector::start(&topic, &group, &live)
        .ended(Duration::from_secs(60))
        .await
        .expect_err("a record that is no event stops the projector with an error");
    assert!(
        matches!(error.downcast_ref::<ProjectorError>(), Some(ProjectorError::BadRecord { offset: 1, .. })),
        "the error names the record at offset 1: {error:#}"
    );
    assert!(error.to_string().contains("offset 1 is not an order event"), "{error}");
    assert_eq!(
        kit_testing::committed_offsets(&group, &topic, 1).await,
        [Some(1)],
        "the good record committed, the bad one not"
    );
    let mut probe = live.clone();
    assert_eq!(probe.summary("order-10").await.unwrap().map(|s| s.version), Some(1));

    let (mut rebuilt, _clear_rebuilt) = read_model("lesson11-bad-rebuilt").await;
    let config = broker().consumer_config(&unique("lesson11-bad-rebuild"));
    let error = rebuild(config, &topic, 1, &mut rebuilt, Duration::from_secs(30))
        .await
        .expect_err("a rebuild refuses a log with a record that is no event");
    assert!(error.to_string().contains("offset 1 is not an order event"), "{error:#}");
}
