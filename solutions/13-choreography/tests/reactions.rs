//! Grades lesson 13's reactions, `Orders::on_inventory_event`, `Inventory::on_order_or_payment` and
//! `Payments::on_order_or_stock`, with no broker: each
//! event once, twice, after its order has ended, in either order, for orders never heard of and of kinds the
//! service does not handle, and what each rule of the exercises says the statuses, the stock and the money must
//! be. The payment service's gateway records every call, so a card charged twice, too early or with the wrong
//! amount is caught. Property tests then run random sequences of events: the inventory never makes or loses a
//! unit and takes any event twice as once; the payment service charges every order whose two events came exactly
//! once, and no other. A snapshot shows the three services reacting to one order, on its happy path and when its
//! card is declined.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::json;
use solution_13::{
    Event, Gateway, Inventory, Item, OrderStatus, Orders, Payment, Payments, PlaceOrder, Reservation, Source, Stock,
    out_of_stock_reason, payment_declined_reason,
};

const GOOD_CARD: &str = "4242-4242-4242-4242";
const OTHER_CARD: &str = "5555-5555-5555-4444";
const POOR_CARD: &str = "4000-0000-0000-9995";
/// Why the recording gateway declines: not the story's "card declined", so a reason made up is caught.
const NO_FUNDS: &str = "insufficient funds";

fn price_of(sku: &str) -> u64 {
    match sku {
        "LAPTOP" => 99_900,
        "MOUSE" => 2_500,
        "DOCK" => 15_000,
        _ => 700,
    }
}

fn item(sku: &str, quantity: u32) -> Item {
    Item { sku: sku.into(), quantity, unit_price_cents: price_of(sku) }
}

fn customer_of(order_id: &str) -> String {
    format!("customer-of-{order_id}")
}

fn order(order_id: &str, card: &str, items: &[Item]) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.into(),
        customer_id: customer_of(order_id),
        card: card.into(),
        items: items.to_vec(),
    }
}

/// What most tests order: 2 laptops and a mouse, 202 300 cents in all.
fn laptops_and_a_mouse() -> Vec<Item> {
    vec![item("LAPTOP", 2), item("MOUSE", 1)]
}

const ORDER_1_TOTAL: u64 = 2 * 99_900 + 2_500;

/// order-1: [`laptops_and_a_mouse`] on a good card.
fn order_1() -> PlaceOrder {
    order("order-1", GOOD_CARD, &laptops_and_a_mouse())
}

fn placed(order: &PlaceOrder) -> Event {
    Event::OrderPlaced { order: order.clone() }
}

fn confirmed(order_id: &str, total_cents: u64) -> Event {
    Event::OrderConfirmed { order_id: order_id.into(), customer_id: customer_of(order_id), total_cents }
}

fn cancelled(order_id: &str, reason: &str) -> Event {
    Event::OrderCancelled { order_id: order_id.into(), customer_id: customer_of(order_id), reason: reason.into() }
}

fn stock_reserved(order_id: &str) -> Event {
    Event::StockReserved { order_id: order_id.into() }
}

fn out_of_stock(order_id: &str, sku: &str, requested: u32, available: u32) -> Event {
    Event::OutOfStock { order_id: order_id.into(), sku: sku.into(), requested, available }
}

fn stock_committed(order_id: &str) -> Event {
    Event::StockCommitted { order_id: order_id.into() }
}

fn stock_released(order_id: &str, reason: &str) -> Event {
    Event::StockReleased { order_id: order_id.into(), reason: reason.into() }
}

fn payment_charged(order_id: &str, amount_cents: u64) -> Event {
    Event::PaymentCharged { order_id: order_id.into(), amount_cents }
}

fn payment_declined(order_id: &str, reason: &str) -> Event {
    Event::PaymentDeclined { order_id: order_id.into(), reason: reason.into() }
}

/// Every kind of event about `order_id`, ORDER_PLACED with `order`.
fn every_kind_of_event(order: &PlaceOrder) -> Vec<Event> {
    let id = order.order_id.as_str();
    vec![
        placed(order),
        confirmed(id, order.total_cents()),
        cancelled(id, "changed my mind"),
        stock_reserved(id),
        out_of_stock(id, "LAPTOP", 6, 5),
        stock_committed(id),
        stock_released(id, &payment_declined_reason(NO_FUNDS)),
        payment_charged(id, order.total_cents()),
        payment_declined(id, NO_FUNDS),
    ]
}

/// Deterministic property tests: a fixed seed, and no failure file written into the sources.
fn fixed(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(13), failure_persistence: None, ..ProptestConfig::default() }
}

// ─── The order service ────────────────────────────────────────────────────────────────────────────────────────

/// An order service that placed order-1 ([`order_1`]) and order-2 (a dock), both still PLACED.
fn orders() -> Orders {
    let mut orders = Orders::default();
    orders.place(order_1());
    orders.place(order("order-2", OTHER_CARD, &[item("DOCK", 1)]));
    orders
}

fn status_of(orders: &Orders, order_id: &str) -> Option<OrderStatus> {
    orders.orders.get(order_id).map(|record| record.status.clone())
}

#[test]
fn stock_committed_confirms_the_order_with_its_customer_and_total() {
    let mut orders = orders();
    assert_eq!(
        orders.on_inventory_event(&stock_committed("order-1")),
        vec![confirmed("order-1", ORDER_1_TOTAL)],
        "STOCK_COMMITTED: ORDER_CONFIRMED, with order-1's customer and total"
    );
    assert_eq!(status_of(&orders, "order-1"), Some(OrderStatus::Confirmed));
    assert_eq!(orders.orders["order-1"].order, order_1(), "the order itself is kept as placed");
    assert_eq!(status_of(&orders, "order-2"), Some(OrderStatus::Placed), "the other order is untouched");
}

#[test]
fn out_of_stock_cancels_the_order_with_the_out_of_stock_reason() {
    let mut orders = orders();
    let reason = out_of_stock_reason("LAPTOP", 6, 5);
    assert_eq!(
        orders.on_inventory_event(&out_of_stock("order-1", "LAPTOP", 6, 5)),
        vec![cancelled("order-1", &reason)],
        "OUT_OF_STOCK: ORDER_CANCELLED, for order-1's customer, with `out_of_stock_reason` of the event's fields"
    );
    assert_eq!(status_of(&orders, "order-1"), Some(OrderStatus::Cancelled { reason }));

    let reason = out_of_stock_reason("DOCK", 4, 3);
    assert_eq!(
        orders.on_inventory_event(&out_of_stock("order-2", "DOCK", 4, 3)),
        vec![cancelled("order-2", &reason)],
        "requested 4, available 3: each figure in its place"
    );
    assert_eq!(status_of(&orders, "order-2"), Some(OrderStatus::Cancelled { reason }));
}

#[test]
fn stock_released_cancels_the_order_with_the_releases_reason() {
    let mut orders = orders();
    let reason = payment_declined_reason(NO_FUNDS);
    assert_eq!(
        orders.on_inventory_event(&stock_released("order-1", &reason)),
        vec![cancelled("order-1", &reason)],
        "STOCK_RELEASED: ORDER_CANCELLED with the release's own reason, as it is"
    );
    assert_eq!(status_of(&orders, "order-1"), Some(OrderStatus::Cancelled { reason }));
    assert_eq!(status_of(&orders, "order-2"), Some(OrderStatus::Placed), "the other order is untouched");
}

#[test]
fn an_order_ends_once() {
    let endings = [
        stock_committed("order-1"),
        out_of_stock("order-1", "LAPTOP", 6, 5),
        stock_released("order-1", &payment_declined_reason(NO_FUNDS)),
    ];
    for first in &endings {
        let mut orders = orders();
        assert_eq!(orders.on_inventory_event(first).len(), 1, "{} ends order-1", first.kind());
        let ended = orders.clone();
        for then in &endings {
            assert_eq!(
                orders.on_inventory_event(then),
                vec![],
                "{} after {}: order-1 has ended already",
                then.kind(),
                first.kind()
            );
            assert_eq!(orders, ended, "{} after {}: its status stays", then.kind(), first.kind());
        }
    }
}

#[test]
fn events_for_an_order_never_placed_change_nothing() {
    for start in [Orders::default(), orders()] {
        for event in [
            stock_committed("order-9"),
            out_of_stock("order-9", "LAPTOP", 6, 5),
            stock_released("order-9", &payment_declined_reason(NO_FUNDS)),
        ] {
            let mut orders = start.clone();
            assert_eq!(
                orders.on_inventory_event(&event),
                vec![],
                "{} for order-9, never placed: nothing announced",
                event.kind()
            );
            assert_eq!(orders, start, "{} for order-9: no record created, nothing changed", event.kind());
        }
    }
}

#[test]
fn events_of_other_kinds_change_nothing_for_the_order_service() {
    let mut orders = orders();
    let before = orders.clone();
    let others = [placed(&order("order-9", GOOD_CARD, &[item("MOUSE", 1)]))]
        .into_iter()
        .chain(every_kind_of_event(&order_1()))
        .filter(|e| {
            !matches!(e, Event::StockCommitted { .. } | Event::OutOfStock { .. } | Event::StockReleased { .. })
        });
    for event in others {
        assert_eq!(
            orders.on_inventory_event(&event),
            vec![],
            "{} for {}: nothing announced",
            event.kind(),
            event.order_id()
        );
        assert_eq!(orders, before, "{} for {}: nothing changed", event.kind(), event.order_id());
    }
    assert_eq!(
        orders.on_inventory_event(&stock_committed("order-1")),
        vec![confirmed("order-1", ORDER_1_TOTAL)],
        "and order-1, still PLACED, is confirmed when its stock is committed"
    );
}

// ─── The inventory ────────────────────────────────────────────────────────────────────────────────────────────

/// 5 laptops, 10 mice, 3 docks, nothing reserved or sold.
fn inventory() -> Inventory {
    Inventory::with_stock(&[("LAPTOP", 5), ("MOUSE", 10), ("DOCK", 3)])
}

fn stock(available: u32, reserved: u32, sold: u32) -> Stock {
    Stock { available, reserved, sold }
}

/// `(available, reserved, sold)` of every SKU of `inventory` that has any unit.
fn units(inventory: &Inventory) -> BTreeMap<String, (u32, u32, u32)> {
    inventory
        .stock
        .iter()
        .filter(|(_, s)| **s != Stock::default())
        .map(|(sku, s)| (sku.clone(), (s.available, s.reserved, s.sold)))
        .collect()
}

#[test]
fn a_placed_order_sets_every_item_aside() {
    let mut inventory = inventory();
    assert_eq!(inventory.on_order_or_payment(&placed(&order_1())), vec![stock_reserved("order-1")]);
    assert_eq!(inventory.stock_of("LAPTOP"), stock(3, 2, 0), "2 laptops moved from available to reserved");
    assert_eq!(inventory.stock_of("MOUSE"), stock(9, 1, 0), "1 mouse moved from available to reserved");
    assert_eq!(inventory.stock_of("DOCK"), stock(3, 0, 0), "what the order does not hold is untouched");
    assert_eq!(
        inventory.orders.get("order-1"),
        Some(&Reservation::Reserved { items: laptops_and_a_mouse() }),
        "the inventory records what it set aside for the order"
    );

    assert_eq!(
        inventory.on_order_or_payment(&placed(&order("order-2", GOOD_CARD, &[item("DOCK", 3), item("LAPTOP", 3)]))),
        vec![stock_reserved("order-2")],
        "an order may take every unit left"
    );
    assert_eq!(
        units(&inventory),
        BTreeMap::from([
            ("LAPTOP".to_string(), (0, 5, 0)),
            ("MOUSE".to_string(), (9, 1, 0)),
            ("DOCK".to_string(), (0, 3, 0)),
        ])
    );
}

#[test]
fn an_orders_lines_of_one_sku_count_together() {
    // Five laptops: two lines of 3 need 6, more than there are, though each line alone would fit.
    let mut inventory = inventory();
    let before = units(&inventory);
    let lines = [item("LAPTOP", 3), item("MOUSE", 1), item("LAPTOP", 3)];
    assert_eq!(
        inventory.on_order_or_payment(&placed(&order("order-1", GOOD_CARD, &lines))),
        vec![out_of_stock("order-1", "LAPTOP", 6, 5)],
        "requested: what the order asks of the SKU, all its lines together"
    );
    assert_eq!(units(&inventory), before, "nothing set aside");
    assert_eq!(
        inventory.on_order_or_payment(&placed(&order(
            "order-2",
            GOOD_CARD,
            &[item("LAPTOP", 3), item("LAPTOP", 3), item("LAPTOP", 1)]
        ))),
        vec![out_of_stock("order-2", "LAPTOP", 7, 5)],
        "requested: all the lines of the SKU, not only those read before it fell short"
    );
    assert_eq!(units(&inventory), before, "nothing set aside");
    // Two SKUs short: the first is the one whose first line comes first, though its own second line comes later.
    assert_eq!(
        inventory.on_order_or_payment(&placed(&order(
            "order-4",
            GOOD_CARD,
            &[item("MOUSE", 6), item("DOCK", 4), item("MOUSE", 6)]
        ))),
        vec![out_of_stock("order-4", "MOUSE", 12, 10)],
        "SKUs are taken in the order of their first line"
    );

    assert_eq!(
        inventory.on_order_or_payment(&placed(&order("order-3", GOOD_CARD, &[item("LAPTOP", 2), item("LAPTOP", 2)]))),
        vec![stock_reserved("order-3")]
    );
    assert_eq!(inventory.stock_of("LAPTOP"), stock(1, 4, 0), "both lines set aside");
}

#[test]
fn a_short_order_sets_nothing_aside_and_names_the_first_sku_short() {
    let mut inventory = inventory();
    let before = units(&inventory);
    // Mice and docks are both short; the mice come first in the order (not in the alphabet).
    let lines = [item("LAPTOP", 2), item("MOUSE", 11), item("DOCK", 4)];
    assert_eq!(
        inventory.on_order_or_payment(&placed(&order("order-1", GOOD_CARD, &lines))),
        vec![out_of_stock("order-1", "MOUSE", 11, 10)],
        "the mice are the first item short: 11 requested, 10 available"
    );
    assert_eq!(units(&inventory), before, "all or nothing: the laptops, which were there, are not set aside");
    assert_eq!(
        inventory.orders.get("order-1"),
        Some(&Reservation::Refused { sku: "MOUSE".into(), requested: 11, available: 10 }),
        "the inventory records the refusal"
    );

    assert_eq!(
        inventory.on_order_or_payment(&placed(&order("order-2", GOOD_CARD, &[item("MOUSE", 1), item("CABLE", 1)]))),
        vec![out_of_stock("order-2", "CABLE", 1, 0)],
        "a SKU the inventory does not carry has 0 available"
    );
    assert_eq!(units(&inventory), before, "nothing set aside, and no unit made for the unknown SKU");
    assert_eq!(
        inventory.orders.get("order-2"),
        Some(&Reservation::Refused { sku: "CABLE".into(), requested: 1, available: 0 })
    );
}

#[test]
fn a_charged_payment_sells_the_reserved_units() {
    let mut inventory = inventory();
    inventory.on_order_or_payment(&placed(&order_1()));
    assert_eq!(
        inventory.on_order_or_payment(&payment_charged("order-1", ORDER_1_TOTAL)),
        vec![stock_committed("order-1")]
    );
    assert_eq!(inventory.stock_of("LAPTOP"), stock(3, 0, 2), "the reserved laptops are sold");
    assert_eq!(inventory.stock_of("MOUSE"), stock(9, 0, 1), "the reserved mouse is sold");
    assert_eq!(inventory.stock_of("DOCK"), stock(3, 0, 0));
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Committed { items: laptops_and_a_mouse() }));
}

#[test]
fn a_declined_payment_gives_the_units_back_with_the_declines_reason() {
    let mut inventory = inventory();
    let before = units(&inventory);
    inventory.on_order_or_payment(&placed(&order_1()));
    inventory.on_order_or_payment(&placed(&order("order-2", GOOD_CARD, &[item("DOCK", 1)])));
    assert_eq!(
        inventory.on_order_or_payment(&payment_declined("order-1", NO_FUNDS)),
        vec![stock_released("order-1", &payment_declined_reason(NO_FUNDS))],
        "STOCK_RELEASED, with `payment_declined_reason` of the decline's reason"
    );
    assert_eq!(inventory.stock_of("LAPTOP"), stock(5, 0, 0), "the reserved laptops are available again");
    assert_eq!(inventory.stock_of("MOUSE"), stock(10, 0, 0), "the reserved mouse is available again");
    assert_eq!(inventory.stock_of("DOCK"), stock(2, 1, 0), "order-2's dock stays reserved");
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Released { items: laptops_and_a_mouse() }));
    inventory.on_order_or_payment(&payment_declined("order-2", "card expired"));
    assert_eq!(units(&inventory), before, "every unit is back");
}

#[test]
fn a_duplicate_event_changes_nothing() {
    let mut inventory = inventory();
    for (event, answer) in [
        (placed(&order_1()), stock_reserved("order-1")),
        (payment_charged("order-1", ORDER_1_TOTAL), stock_committed("order-1")),
        (placed(&order("order-2", GOOD_CARD, &[item("MOUSE", 2)])), stock_reserved("order-2")),
        (payment_declined("order-2", NO_FUNDS), stock_released("order-2", &payment_declined_reason(NO_FUNDS))),
        (placed(&order("order-3", GOOD_CARD, &[item("DOCK", 9)])), out_of_stock("order-3", "DOCK", 9, 3)),
    ] {
        assert_eq!(
            inventory.on_order_or_payment(&event),
            vec![answer],
            "{} for {} the first time",
            event.kind(),
            event.order_id()
        );
        let after_once = inventory.clone();
        for again in 2..=3 {
            assert_eq!(
                inventory.on_order_or_payment(&event),
                vec![],
                "{} for {} a time {again}",
                event.kind(),
                event.order_id()
            );
            assert_eq!(
                inventory,
                after_once,
                "{} for {} a time {again}: nothing done twice",
                event.kind(),
                event.order_id()
            );
        }
    }

    // A repeated ORDER_PLACED is a duplicate whatever the stock has become since.
    let mut inventory = self::inventory();
    let three_laptops = |id: &str| placed(&order(id, GOOD_CARD, &[item("LAPTOP", 3)]));
    assert_eq!(inventory.on_order_or_payment(&three_laptops("order-1")), vec![stock_reserved("order-1")]);
    assert_eq!(inventory.on_order_or_payment(&three_laptops("order-2")), vec![out_of_stock("order-2", "LAPTOP", 3, 2)]);
    let now = inventory.clone();
    assert_eq!(
        inventory.on_order_or_payment(&three_laptops("order-1")),
        vec![],
        "order-1 again: its stock is set aside already"
    );
    assert_eq!(inventory, now, "and nothing is set aside a second time");
    inventory.on_order_or_payment(&payment_declined("order-1", NO_FUNDS));
    let now = inventory.clone();
    assert_eq!(
        inventory.on_order_or_payment(&three_laptops("order-2")),
        vec![],
        "order-2 again, once enough laptops are back: it was refused already"
    );
    assert_eq!(inventory, now, "and nothing is set aside for it");
    assert_eq!(inventory.on_order_or_payment(&three_laptops("order-1")), vec![], "order-1 again, after its release");
    assert_eq!(inventory, now, "and nothing is set aside for it");
}

#[test]
fn a_payment_for_an_order_not_reserved_changes_nothing() {
    let mut inventory = inventory();
    inventory.on_order_or_payment(&placed(&order("refused", GOOD_CARD, &[item("DOCK", 4)])));
    inventory.on_order_or_payment(&placed(&order("released", GOOD_CARD, &[item("LAPTOP", 1)])));
    inventory.on_order_or_payment(&payment_declined("released", NO_FUNDS));
    inventory.on_order_or_payment(&placed(&order("committed", GOOD_CARD, &[item("MOUSE", 2)])));
    inventory.on_order_or_payment(&payment_charged("committed", 5_000));
    assert_eq!(
        units(&inventory),
        BTreeMap::from([
            ("LAPTOP".to_string(), (5, 0, 0)),
            ("MOUSE".to_string(), (8, 0, 2)),
            ("DOCK".to_string(), (3, 0, 0)),
        ])
    );
    let before = inventory.clone();
    for order_id in ["never-placed", "refused", "released", "committed"] {
        for event in [payment_charged(order_id, 5_000), payment_declined(order_id, NO_FUNDS)] {
            assert_eq!(
                inventory.on_order_or_payment(&event),
                vec![],
                "{} for the {order_id} order: nothing announced",
                event.kind()
            );
            assert_eq!(inventory, before, "{} for the {order_id} order: no unit moved, no record made", event.kind());
        }
    }
}

#[test]
fn events_of_other_kinds_change_nothing_for_the_inventory() {
    let mut inventory = inventory();
    inventory.on_order_or_payment(&placed(&order_1()));
    let before = inventory.clone();
    let others = every_kind_of_event(&order_1())
        .into_iter()
        .chain(every_kind_of_event(&order("order-9", GOOD_CARD, &[item("MOUSE", 1)])))
        .filter(|e| {
            !matches!(e, Event::OrderPlaced { .. } | Event::PaymentCharged { .. } | Event::PaymentDeclined { .. })
        });
    for event in others {
        assert_eq!(
            inventory.on_order_or_payment(&event),
            vec![],
            "{} for {}: nothing announced",
            event.kind(),
            event.order_id()
        );
        assert_eq!(inventory, before, "{} for {}: nothing changed", event.kind(), event.order_id());
    }
    assert_eq!(
        inventory.on_order_or_payment(&payment_charged("order-1", ORDER_1_TOTAL)),
        vec![stock_committed("order-1")],
        "and order-1's stock, still reserved, is sold when it is paid"
    );
}

const SKUS: [&str; 4] = ["LAPTOP", "MOUSE", "DOCK", "CABLE"];
const ORDERS: usize = 4;

/// An order's lines: 1 to 4 lines of any SKU (one unknown to the inventory, and the same SKU maybe twice).
fn any_items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((0..SKUS.len(), 1u32..=3), 1..=4)
        .prop_map(|lines| lines.into_iter().map(|(sku, quantity)| item(SKUS[sku], quantity)).collect())
}

fn inventory_event(orders: &[PlaceOrder], (index, kind): (usize, u8)) -> Event {
    let order = &orders[index];
    let id = order.order_id.as_str();
    match kind {
        0 | 1 => placed(order),
        2 | 3 => payment_charged(id, order.total_cents()),
        4 => payment_declined(id, NO_FUNDS),
        5 => stock_reserved(id),
        _ => stock_released(id, &payment_declined_reason(NO_FUNDS)),
    }
}

proptest! {
    #![proptest_config(fixed(400))]

    /// Whatever the events and their order: no unit is made or lost, the reserved and sold units are exactly
    /// those of the orders recorded reserved and committed, an ORDER_PLACED is reserved exactly when every SKU
    /// has enough, and an event taken twice in a row does nothing the second time.
    #[test]
    fn stock_is_conserved_and_every_event_is_taken_once(
        items in prop::collection::vec(any_items(), ORDERS),
        steps in prop::collection::vec((0..ORDERS, 0u8..7), 0..40),
    ) {
        let orders: Vec<PlaceOrder> =
            items.iter().enumerate().map(|(i, items)| order(&format!("order-{i}"), GOOD_CARD, items)).collect();
        let mut inventory = Inventory::with_stock(&[("LAPTOP", 4), ("MOUSE", 6), ("DOCK", 2)]);
        let totals: BTreeMap<String, u32> =
            inventory.stock.iter().map(|(sku, s)| (sku.clone(), s.available + s.reserved + s.sold)).collect();
        for step in steps {
            let event = inventory_event(&orders, step);
            let known = inventory.orders.contains_key(event.order_id());
            let fits = match &event {
                Event::OrderPlaced { order } => {
                    let mut needed: BTreeMap<&str, u32> = BTreeMap::new();
                    for item in &order.items {
                        *needed.entry(&item.sku).or_default() += item.quantity;
                    }
                    needed.iter().all(|(sku, n)| inventory.stock_of(sku).available >= *n)
                }
                _ => false,
            };
            let was_reserved = matches!(inventory.orders.get(event.order_id()), Some(Reservation::Reserved { .. }));
            let answer = inventory.on_order_or_payment(&event);
            let kinds: Vec<&str> = answer.iter().map(Event::kind).collect();
            for announced in &answer {
                prop_assert_eq!(announced.order_id(), event.order_id(), "what is announced names the event's order");
            }
            let expected: &[&str] = match &event {
                Event::OrderPlaced { .. } if known => &[],
                Event::OrderPlaced { .. } if fits => &["STOCK_RESERVED"],
                Event::OrderPlaced { .. } => &["OUT_OF_STOCK"],
                Event::PaymentCharged { .. } if was_reserved => &["STOCK_COMMITTED"],
                Event::PaymentDeclined { .. } if was_reserved => &["STOCK_RELEASED"],
                _ => &[],
            };
            prop_assert_eq!(&kinds[..], expected, "{} for {}", event.kind(), event.order_id());

            let once = inventory.clone();
            let (kind, id) = (event.kind(), event.order_id());
            prop_assert_eq!(inventory.on_order_or_payment(&event), vec![], "{} for {} twice: nothing announced", kind, id);
            prop_assert_eq!(&inventory, &once, "{} for {} twice: nothing done twice", kind, id);

            for (sku, total) in &totals {
                let s = inventory.stock_of(sku);
                prop_assert_eq!(s.available + s.reserved + s.sold, *total, "{} after {:?}", sku, event);
            }
            for (sku, s) in &inventory.stock {
                prop_assert!(
                    totals.contains_key(sku) || *s == Stock::default(),
                    "no units of {} made after {:?}: {:?}", sku, event, s
                );
            }
            let mut reserved: BTreeMap<&str, u32> = BTreeMap::new();
            let mut sold: BTreeMap<&str, u32> = BTreeMap::new();
            for record in inventory.orders.values() {
                let (into, items) = match record {
                    Reservation::Reserved { items } => (&mut reserved, items),
                    Reservation::Committed { items } => (&mut sold, items),
                    Reservation::Refused { .. } | Reservation::Released { .. } => continue,
                };
                for item in items {
                    *into.entry(item.sku.as_str()).or_default() += item.quantity;
                }
            }
            for sku in SKUS {
                let s = inventory.stock_of(sku);
                let (want_reserved, want_sold) = (reserved.get(sku).copied(), sold.get(sku).copied());
                prop_assert_eq!(s.reserved, want_reserved.unwrap_or(0), "{} reserved, after {:?}", sku, event);
                prop_assert_eq!(s.sold, want_sold.unwrap_or(0), "{} sold, after {:?}", sku, event);
            }
        }
    }
}

// ─── The payment service ──────────────────────────────────────────────────────────────────────────────────────

/// A card network that records every call, in order, and declines the cards it was told to, with their reason.
#[derive(Debug, Default)]
struct RecordingGateway {
    /// card → why it is declined.
    declines: BTreeMap<String, String>,
    /// Every call: the card and the amount asked.
    calls: Vec<(String, u64)>,
}

impl RecordingGateway {
    fn declining(card: &str, reason: &str) -> RecordingGateway {
        RecordingGateway { declines: [(card.to_string(), reason.to_string())].into(), calls: Vec::new() }
    }

    fn calls_for(&self, card: &str) -> Vec<u64> {
        self.calls.iter().filter(|(c, _)| c == card).map(|(_, amount)| *amount).collect()
    }
}

impl Gateway for RecordingGateway {
    fn charge(&mut self, card: &str, amount_cents: u64) -> Result<(), String> {
        self.calls.push((card.to_string(), amount_cents));
        match self.declines.get(card) {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

fn call(card: &str, amount_cents: u64) -> (String, u64) {
    (card.to_string(), amount_cents)
}

#[test]
fn order_placed_then_stock_reserved_charges_the_card_on_the_second() {
    let mut payments = Payments::default();
    let mut gateway = RecordingGateway::default();
    assert_eq!(
        payments.on_order_or_stock(&placed(&order_1()), &mut gateway),
        vec![],
        "ORDER_PLACED alone: nothing announced"
    );
    assert_eq!(gateway.calls, vec![], "the gateway is not asked before the stock is reserved");
    assert_eq!(payments.charged_cents, 0);
    assert_eq!(
        payments.on_order_or_stock(&stock_reserved("order-1"), &mut gateway),
        vec![payment_charged("order-1", ORDER_1_TOTAL)],
        "STOCK_RESERVED second: PAYMENT_CHARGED, with the order's total"
    );
    assert_eq!(gateway.calls, vec![call(GOOD_CARD, ORDER_1_TOTAL)], "one call, with the order's card and total");
    assert_eq!(payments.charged_cents, ORDER_1_TOTAL);
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Charged { amount_cents: ORDER_1_TOTAL }));
}

#[test]
fn stock_reserved_then_order_placed_charges_the_card_on_the_second() {
    let mut payments = Payments::default();
    let mut gateway = RecordingGateway::default();
    assert_eq!(
        payments.on_order_or_stock(&stock_reserved("order-1"), &mut gateway),
        vec![],
        "STOCK_RESERVED alone: nothing"
    );
    assert_eq!(gateway.calls, vec![], "the gateway is not asked before the order's card and amount are known");
    assert_eq!(payments.charged_cents, 0);
    assert_eq!(
        payments.on_order_or_stock(&placed(&order_1()), &mut gateway),
        vec![payment_charged("order-1", ORDER_1_TOTAL)],
        "ORDER_PLACED second: PAYMENT_CHARGED, with the order's total"
    );
    assert_eq!(gateway.calls, vec![call(GOOD_CARD, ORDER_1_TOTAL)], "one call, with the order's card and total");
    assert_eq!(payments.charged_cents, ORDER_1_TOTAL);
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Charged { amount_cents: ORDER_1_TOTAL }));
}

#[test]
fn a_declined_charge_announces_the_gateways_reason_and_takes_nothing() {
    let poor = order("order-1", POOR_CARD, &laptops_and_a_mouse());
    for (first, second) in [(placed(&poor), stock_reserved("order-1")), (stock_reserved("order-1"), placed(&poor))] {
        let mut payments = Payments::default();
        let mut gateway = RecordingGateway::declining(POOR_CARD, NO_FUNDS);
        assert_eq!(payments.on_order_or_stock(&first, &mut gateway), vec![], "{} first: nothing", first.kind());
        assert_eq!(
            payments.on_order_or_stock(&second, &mut gateway),
            vec![payment_declined("order-1", NO_FUNDS)],
            "{} second: PAYMENT_DECLINED, with the gateway's own reason",
            second.kind()
        );
        assert_eq!(gateway.calls, vec![call(POOR_CARD, ORDER_1_TOTAL)], "the gateway was asked once");
        assert_eq!(payments.charged_cents, 0, "nothing charged");
        assert_eq!(payments.orders.get("order-1"), Some(&Payment::Declined { reason: NO_FUNDS.into() }));
    }
}

#[test]
fn an_order_whose_stock_is_never_reserved_is_never_charged() {
    let mut payments = Payments::default();
    let mut gateway = RecordingGateway::default();
    for event in [
        placed(&order_1()),
        placed(&order_1()),
        out_of_stock("order-1", "LAPTOP", 2, 0),
        placed(&order_1()),
        stock_reserved("order-2"),
    ] {
        assert_eq!(
            payments.on_order_or_stock(&event, &mut gateway),
            vec![],
            "{} for {}",
            event.kind(),
            event.order_id()
        );
        assert_eq!(gateway.calls, vec![], "{} for {}: the gateway is not asked", event.kind(), event.order_id());
    }
    assert_eq!(payments.charged_cents, 0);
}

#[test]
fn duplicates_before_and_after_the_charge_change_nothing() {
    for card in [GOOD_CARD, POOR_CARD] {
        let order = order("order-1", card, &laptops_and_a_mouse());
        for (first, second) in
            [(placed(&order), stock_reserved("order-1")), (stock_reserved("order-1"), placed(&order))]
        {
            let path = format!("{} then {} on {card}", first.kind(), second.kind());
            let mut payments = Payments::default();
            let mut gateway = RecordingGateway::declining(POOR_CARD, NO_FUNDS);
            payments.on_order_or_stock(&first, &mut gateway);
            let waiting = payments.clone();
            for again in 2..=3 {
                assert_eq!(
                    payments.on_order_or_stock(&first, &mut gateway),
                    vec![],
                    "{path}: the first a time {again}"
                );
                assert_eq!(payments, waiting, "{path}: the first a time {again} changes nothing");
                assert_eq!(gateway.calls, vec![], "{path}: the first a time {again} asks the gateway nothing");
            }
            assert_eq!(payments.on_order_or_stock(&second, &mut gateway).len(), 1, "{path}: the second is answered");
            let done = payments.clone();
            for (again, event) in [&second, &first, &second, &first].into_iter().enumerate() {
                assert_eq!(
                    payments.on_order_or_stock(event, &mut gateway),
                    vec![],
                    "{path}: {} after the charge",
                    event.kind()
                );
                assert_eq!(payments, done, "{path}: {} after the charge changes nothing ({again})", event.kind());
                assert_eq!(gateway.calls, vec![call(card, ORDER_1_TOTAL)], "{path}: the gateway was asked once in all");
            }
        }
    }
}

#[test]
fn events_of_other_kinds_change_nothing_and_charge_nothing() {
    let setups: [&[Event]; 4] =
        [&[], &[placed(&order_1())], &[stock_reserved("order-1")], &[placed(&order_1()), stock_reserved("order-1")]];
    for setup in setups {
        let mut payments = Payments::default();
        let mut gateway = RecordingGateway::default();
        for event in setup {
            payments.on_order_or_stock(event, &mut gateway);
        }
        let before = payments.clone();
        let calls = gateway.calls.clone();
        let seen: Vec<&str> = setup.iter().map(Event::kind).collect();
        let others = every_kind_of_event(&order_1())
            .into_iter()
            .filter(|e| !matches!(e, Event::OrderPlaced { .. } | Event::StockReserved { .. }));
        for event in others {
            assert_eq!(
                payments.on_order_or_stock(&event, &mut gateway),
                vec![],
                "{} after {seen:?}: nothing announced",
                event.kind()
            );
            assert_eq!(payments, before, "{} after {seen:?}: nothing changed", event.kind());
            assert_eq!(gateway.calls, calls, "{} after {seen:?}: the gateway is not asked", event.kind());
        }
    }
}

#[test]
fn interleaved_orders_are_each_charged_once_with_their_own_card_and_amount() {
    let a = order("order-a", GOOD_CARD, &[item("LAPTOP", 1)]);
    let b = order("order-b", OTHER_CARD, &[item("MOUSE", 2), item("DOCK", 1)]);
    let mut payments = Payments::default();
    let mut gateway = RecordingGateway::default();
    for (event, answer) in [
        (placed(&a), vec![]),
        (stock_reserved("order-b"), vec![]),
        (placed(&b), vec![payment_charged("order-b", 20_000)]),
        (stock_reserved("order-a"), vec![payment_charged("order-a", 99_900)]),
    ] {
        assert_eq!(
            payments.on_order_or_stock(&event, &mut gateway),
            answer,
            "{} for {}",
            event.kind(),
            event.order_id()
        );
    }
    assert_eq!(gateway.calls, vec![call(OTHER_CARD, 20_000), call(GOOD_CARD, 99_900)], "each order on its own card");
    assert_eq!(payments.charged_cents, 20_000 + 99_900, "charged_cents adds up every charge");
    assert_eq!(payments.orders.get("order-a"), Some(&Payment::Charged { amount_cents: 99_900 }));
    assert_eq!(payments.orders.get("order-b"), Some(&Payment::Charged { amount_cents: 20_000 }));
}

/// The orders of the payments' property test: a card of their own each (order-1's is declined), and amounts
/// that differ.
fn payment_order(index: usize) -> PlaceOrder {
    order(&format!("order-{index}"), &format!("card-{index}"), &[item("MOUSE", index as u32 + 1)])
}

proptest! {
    #![proptest_config(fixed(400))]

    /// Whatever the interleaving of ORDER_PLACED and STOCK_RESERVED, duplicates included: the event that brings
    /// an order's second half asks the gateway, once, with its card and total, and announces the answer; every
    /// other event announces nothing and asks nothing; `charged_cents` is what the charged orders paid.
    #[test]
    fn every_order_with_both_events_is_charged_exactly_once(
        steps in prop::collection::vec((0..ORDERS, any::<bool>()), 0..30),
    ) {
        let mut payments = Payments::default();
        let mut gateway = RecordingGateway::declining("card-1", NO_FUNDS);
        let mut placed_seen = BTreeSet::new();
        let mut reserved_seen = BTreeSet::new();
        for (index, is_placed) in steps {
            let order = payment_order(index);
            let id = order.order_id.as_str();
            let event = if is_placed { placed(&order) } else { stock_reserved(id) };
            let (this, other) =
                if is_placed { (&mut placed_seen, &reserved_seen) } else { (&mut reserved_seen, &placed_seen) };
            let completes = this.insert(index) && other.contains(&index);
            let calls = gateway.calls.len();
            let answer = payments.on_order_or_stock(&event, &mut gateway);
            if completes {
                let expected = if index == 1 {
                    payment_declined(id, NO_FUNDS)
                } else {
                    payment_charged(id, order.total_cents())
                };
                prop_assert_eq!(answer, vec![expected], "{} completes {}", event.kind(), id);
                prop_assert_eq!(&gateway.calls[calls..], &[call(&order.card, order.total_cents())][..]);
            } else {
                prop_assert_eq!(answer, vec![], "{} for {}: not the second half", event.kind(), id);
                prop_assert_eq!(gateway.calls.len(), calls, "{} for {}: the gateway is not asked", event.kind(), id);
            }
            let once = payments.clone();
            prop_assert_eq!(payments.on_order_or_stock(&event, &mut gateway), vec![], "{} for {} twice in a row", event.kind(), id);
            prop_assert_eq!(&payments, &once, "{} for {} twice in a row: nothing changed", event.kind(), id);

            let paid: u64 = payments
                .orders
                .values()
                .map(|p| match p {
                    Payment::Charged { amount_cents } => *amount_cents,
                    _ => 0,
                })
                .sum();
            prop_assert_eq!(payments.charged_cents, paid, "charged_cents is what the charged orders paid");
        }
        for index in 0..ORDERS {
            let order = payment_order(index);
            let both = placed_seen.contains(&index) && reserved_seen.contains(&index);
            let expected = if both { vec![order.total_cents()] } else { vec![] };
            prop_assert_eq!(gateway.calls_for(&order.card), expected, "the calls for {}", order.order_id);
        }
    }
}

// ─── The three together ───────────────────────────────────────────────────────────────────────────────────────

/// One order through the three services: every event goes to each service that listens to its topic (all but
/// its own), in the order they were announced, and each step shows what each of them announced in reaction.
fn choreography(order: &PlaceOrder, gateway: &mut RecordingGateway) -> serde_json::Value {
    let mut orders = Orders::default();
    let mut inventory = Inventory::with_stock(&[("LAPTOP", 5), ("MOUSE", 10)]);
    let mut payments = Payments::default();
    let mut queue: VecDeque<Event> = orders.place(order.clone()).into();
    let mut steps = Vec::new();
    while let Some(event) = queue.pop_front() {
        assert!(steps.len() < 20, "the choreography of one order never ends: {steps:#?}");
        let mut out = serde_json::Map::new();
        if event.source() != Source::Orders {
            let announced = orders.on_inventory_event(&event);
            out.insert("orders".into(), json!(announced));
            queue.extend(announced);
        }
        if event.source() != Source::Inventory {
            let announced = inventory.on_order_or_payment(&event);
            out.insert("inventory".into(), json!(announced));
            queue.extend(announced);
        }
        if event.source() != Source::Payments {
            let announced = payments.on_order_or_stock(&event, gateway);
            out.insert("payments".into(), json!(announced));
            queue.extend(announced);
        }
        steps.push(json!({ "in": event, "out": out }));
    }
    json!({
        "steps": steps,
        "end": {
            "order": orders.orders[&order.order_id].status,
            "stock": inventory.stock,
            "charged_cents": payments.charged_cents,
            "gateway_calls": gateway.calls,
        },
    })
}

#[test]
fn one_order_through_the_three_services() {
    let mut gateway = RecordingGateway::declining(POOR_CARD, NO_FUNDS);
    let happy = choreography(&order("order-1", GOOD_CARD, &laptops_and_a_mouse()), &mut gateway);
    let mut gateway = RecordingGateway::declining(POOR_CARD, NO_FUNDS);
    let declined = choreography(&order("order-1", POOR_CARD, &laptops_and_a_mouse()), &mut gateway);
    kit_testing::redact::settings()
        .bind(|| insta::assert_json_snapshot!("reactions__one_order", json!({ "happy": happy, "declined": declined })));
}
