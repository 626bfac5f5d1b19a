//! Grades lesson 13's choreography on a broker, service by service: three orders through the four services (one
//! confirmed, one out of stock, one declined and compensated by the inventory), each order's events as each
//! topic holds them; and the payment service charging an order whose STOCK_RESERVED overtook its ORDER_PLACED.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kit::stage::Running;
use serde_json::json;
use lesson_13::services::{FlakyMailer, InventoryService, NotificationService, OrderService, PaymentService};
use lesson_13::soak::CountingGateway;
use lesson_13::{DECLINED_CARD, Event, Inventory, Item, OrderRecord, OrderStatus, Payment, PlaceOrder, Stock};

fn order(order_id: &str, card: &str, items: Vec<Item>) -> PlaceOrder {
    PlaceOrder { order_id: order_id.into(), customer_id: format!("customer-of-{order_id}"), card: card.into(), items }
}

fn item(sku: &str, quantity: u32, unit_price_cents: u64) -> Item {
    Item { sku: sku.into(), quantity, unit_price_cents }
}

/// Waits until the inventory has announced something about `order_id`.
async fn wait_for_inventory_answer(
    topics: &lesson_13::services::ShopTopics,
    order_id: &str,
    inventory: &Running<InventoryService>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !events_by_order(&topics.inventory).await.contains_key(order_id) {
        assert!(!inventory.has_ended(), "the inventory stopped by itself (see its error above)");
        assert!(Instant::now() < deadline, "the inventory never answered {order_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each order's events in `topic`, by kind, in log order.
async fn events_by_order(topic: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in committed_records(topic, 3).await {
        let event: Event = serde_json::from_slice(&record.payload).expect("a shop event");
        by_order.entry(event.order_id().to_string()).or_default().push(event.kind().to_string());
    }
    by_order
}

#[tokio::test(flavor = "multi_thread")]
async fn three_orders_end_confirmed_out_of_stock_and_released() {
    let topics = shop_topics().await;
    let deployment = deployment();
    let tally = Arc::default();
    let mailer = FlakyMailer::new(0.0, 1);
    let order_service = Running::start(OrderService::new(topics.clone(), tally, ""), deployment.clone());
    let stock = Inventory::with_stock(&[("LAPTOP", 5), ("MOUSE", 10)]);
    let inventory = Running::start(InventoryService::new(topics.clone(), stock), deployment.clone());
    let payment = Running::start(PaymentService::new(topics.clone(), CountingGateway::default()), deployment.clone());
    let notification = Running::start(NotificationService::new(topics.clone(), mailer.clone()), deployment.clone());

    let orders = [
        order("order-1", "card-1", vec![item("LAPTOP", 2, 99_999), item("MOUSE", 1, 2_500)]),
        order("order-2", "card-2", vec![item("MOUSE", 1, 2_500), item("LAPTOP", 10, 99_999)]),
        order("order-3", DECLINED_CARD, vec![item("LAPTOP", 3, 99_999)]),
    ];
    // The order out of stock first, alone, so that it meets all five laptops; then the two others.
    write_json(&topics.requests, "order-2", &orders[1]).await;
    wait_for_inventory_answer(&topics, "order-2", &inventory).await;
    for placed in [&orders[0], &orders[2]] {
        write_json(&topics.requests, &placed.order_id, placed).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records: BTreeMap<String, OrderRecord> = latest(&topics.orders_state)
            .await
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_slice(&v).unwrap()))
            .collect();
        if records.len() == 3 && records.values().all(|r| r.status != OrderStatus::Placed) {
            break records;
        }
        for running in [order_service.has_ended(), inventory.has_ended(), payment.has_ended(), notification.has_ended()]
        {
            assert!(!running, "a service stopped by itself (see its error above)");
        }
        assert!(Instant::now() < deadline, "the three orders did not end: {records:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records["order-1"].status, OrderStatus::Confirmed);
    assert_eq!(
        records["order-2"].status,
        OrderStatus::Cancelled { reason: "out of stock: 10 × LAPTOP requested, 5 available".into() }
    );
    assert_eq!(records["order-3"].status, OrderStatus::Cancelled { reason: "payment declined: card declined".into() });

    let stock = latest(&topics.inventory_state).await;
    let laptops: Stock = serde_json::from_slice(&stock["stock/LAPTOP"]).unwrap();
    assert_eq!(laptops, Stock { available: 3, reserved: 0, sold: 2 }, "order 3's laptops came back");
    let payments = latest(&topics.payments_state).await;
    let charged: Payment = serde_json::from_slice(&payments["order-1"]).unwrap();
    assert_eq!(charged, Payment::Charged { amount_cents: orders[0].total_cents() });
    assert!(
        !matches!(
            payments.get("order-2").map(|v| serde_json::from_slice::<Payment>(v).unwrap()),
            Some(Payment::Charged { .. })
        ),
        "an order out of stock is never charged"
    );

    let seen = json!({
        "shop.orders": events_by_order(&topics.orders).await,
        "shop.inventory": events_by_order(&topics.inventory).await,
        "shop.payments": events_by_order(&topics.payments).await,
    });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("three_orders_by_topic", seen));
    let deadline = Instant::now() + Duration::from_secs(30);
    while mailer.sent.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut told = mailer.sent.lock().unwrap().clone();
    told.sort();
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("customers_told", told));
    for (name, result) in [
        ("order", order_service.stop().0),
        ("inventory", inventory.stop().0),
        ("payment", payment.stop().0),
        ("notification", notification.stop().0),
    ] {
        result.unwrap_or_else(|e| panic!("the {name} service failed: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_that_overtakes_its_order_is_charged_once_the_order_comes() {
    let topics = shop_topics().await;
    let gateway = CountingGateway::default();
    let payment = Running::start(PaymentService::new(topics.clone(), gateway.clone()), deployment());
    // The inventory's STOCK_RESERVED is on its topic before the order's ORDER_PLACED is on the other one.
    let placed = order("order-9", "card-9", vec![item("MOUSE", 4, 2_500)]);
    write_json(&topics.inventory, "order-9", &Event::StockReserved { order_id: "order-9".into() }).await;
    write_json(&topics.orders, "order-9", &Event::OrderPlaced { order: placed.clone() }).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let announced = loop {
        let records = committed_records(&topics.payments, 3).await;
        if !records.is_empty() {
            break records;
        }
        assert!(!payment.has_ended(), "the payment service stopped by itself (see its error above)");
        assert!(Instant::now() < deadline, "no payment was announced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event: Event = serde_json::from_slice(&announced[0].payload).unwrap();
    assert_eq!(event, Event::PaymentCharged { order_id: "order-9".into(), amount_cents: 10_000 });
    // A duplicate of each, later, then another order's pair behind them in the same partitions (written under the
    // same key): once that order is charged, the duplicates have been read — and must have changed nothing.
    write_json(&topics.inventory, "order-9", &Event::StockReserved { order_id: "order-9".into() }).await;
    write_json(&topics.orders, "order-9", &Event::OrderPlaced { order: placed }).await;
    let behind = order("order-10", "card-10", vec![item("MOUSE", 1, 2_500)]);
    write_json(&topics.orders, "order-9", &Event::OrderPlaced { order: behind }).await;
    write_json(&topics.inventory, "order-9", &Event::StockReserved { order_id: "order-10".into() }).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let announced = loop {
        let records = committed_records(&topics.payments, 3).await;
        if records.len() >= 2 {
            break records;
        }
        assert!(!payment.has_ended(), "the payment service stopped by itself (see its error above)");
        assert!(Instant::now() < deadline, "order-10 was not charged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Keyed by order id, the two announcements may sit in different partitions: compared in order-id order.
    let mut kinds: Vec<Event> = announced.iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect();
    kinds.sort_by(|a, b| b.order_id().cmp(a.order_id()));
    assert_eq!(
        kinds,
        [
            Event::PaymentCharged { order_id: "order-9".into(), amount_cents: 10_000 },
            Event::PaymentCharged { order_id: "order-10".into(), amount_cents: 2_500 },
        ],
        "order-9 announced once, whatever the duplicates"
    );
    let (result, service) = payment.stop();
    result.expect("the payment service stops cleanly");
    assert_eq!(service.payments.orders.len(), 2);
    assert_eq!(gateway.charges.lock().unwrap().get("card-9"), Some(&1), "charged once");
}
