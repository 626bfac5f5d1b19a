//! Grades lesson 12's participants, `Inventory::handle` and `Payments::handle`, with no broker: every command
//! once, twice and out of order, and what each rule of the exercises says the stock, the money and the answers
//! must be. The payment service's gateway is a counting one, so a card charged twice is caught. Two property
//! tests then run random sequences of commands: the inventory never makes or loses a unit and answers any
//! command repeated at once as it did the first time; the payment service keeps exactly what its charged orders
//! paid, and never asks the gateway twice for one order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use lesson_12::payment::Gateway;
use lesson_12::{Command, Inventory, Item, Payment, Payments, Reply, Reservation, Stock};

fn item(sku: &str, quantity: u32) -> Item {
    Item { sku: sku.into(), quantity, unit_price_cents: 1_000 }
}

fn reserve(order_id: &str, items: &[Item]) -> Command {
    Command::ReserveStock { order_id: order_id.into(), items: items.to_vec() }
}

fn release(order_id: &str) -> Command {
    Command::ReleaseStock { order_id: order_id.into() }
}

fn commit(order_id: &str) -> Command {
    Command::CommitStock { order_id: order_id.into() }
}

fn charge(order_id: &str, card: &str, amount_cents: u64) -> Command {
    Command::ChargePayment {
        order_id: order_id.into(),
        customer_id: "customer-1".into(),
        card: card.into(),
        amount_cents,
    }
}

fn refund(order_id: &str) -> Command {
    Command::RefundPayment { order_id: order_id.into() }
}

fn stock_reserved(order_id: &str) -> Option<Reply> {
    Some(Reply::StockReserved { order_id: order_id.into() })
}

fn stock_released(order_id: &str) -> Option<Reply> {
    Some(Reply::StockReleased { order_id: order_id.into() })
}

fn stock_committed(order_id: &str) -> Option<Reply> {
    Some(Reply::StockCommitted { order_id: order_id.into() })
}

fn out_of_stock(order_id: &str, sku: &str, requested: u32, available: u32) -> Option<Reply> {
    Some(Reply::OutOfStock { order_id: order_id.into(), sku: sku.into(), requested, available })
}

fn stock(available: u32, reserved: u32, sold: u32) -> Stock {
    Stock { available, reserved, sold }
}

/// 5 laptops, 10 mice, 3 docks, nothing reserved or sold.
fn inventory() -> Inventory {
    Inventory::with_stock(&[("LAPTOP", 5), ("MOUSE", 10), ("DOCK", 3)])
}

/// The order most tests reserve: 2 laptops and a mouse.
fn laptops_and_a_mouse() -> Vec<Item> {
    vec![item("LAPTOP", 2), item("MOUSE", 1)]
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
fn a_reservation_sets_every_item_aside() {
    let mut inventory = inventory();
    assert_eq!(inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse())), stock_reserved("order-1"));
    assert_eq!(inventory.stock_of("LAPTOP"), stock(3, 2, 0), "2 laptops moved from available to reserved");
    assert_eq!(inventory.stock_of("MOUSE"), stock(9, 1, 0), "1 mouse moved from available to reserved");
    assert_eq!(inventory.stock_of("DOCK"), stock(3, 0, 0), "what the order does not hold is untouched");
    assert_eq!(
        inventory.orders.get("order-1"),
        Some(&Reservation::Reserved { items: laptops_and_a_mouse() }),
        "the inventory records what it set aside for the order"
    );
}

#[test]
fn an_orders_lines_of_one_sku_count_together() {
    // Five laptops: two lines of 3 need 6, more than there are, though each line alone would fit.
    let mut inventory = inventory();
    let before = units(&inventory);
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-1", &[item("LAPTOP", 3), item("MOUSE", 1), item("LAPTOP", 3)])),
        out_of_stock("order-1", "LAPTOP", 6, 5),
        "requested: what the order asks of the SKU, all its lines together"
    );
    assert_eq!(units(&inventory), before, "nothing set aside");
    // Two SKUs short: the first is the one whose first line comes first, though its own second line comes later.
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-3", &[item("MOUSE", 6), item("DOCK", 4), item("MOUSE", 6)])),
        out_of_stock("order-3", "MOUSE", 12, 10),
        "SKUs are taken in the order of their first line"
    );
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-2", &[item("LAPTOP", 2), item("LAPTOP", 2)])),
        stock_reserved("order-2")
    );
    assert_eq!(inventory.stock_of("LAPTOP"), Stock { available: 1, reserved: 4, sold: 0 }, "both lines set aside");
}

#[test]
fn a_reservation_short_of_one_item_sets_nothing_aside_and_names_the_first_short() {
    let mut inventory = inventory();
    let before = units(&inventory);
    let items = [item("LAPTOP", 2), item("DOCK", 4), item("MOUSE", 11)];
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-1", &items)),
        out_of_stock("order-1", "DOCK", 4, 3),
        "the dock is the first item short (the mice are short too): 4 requested, 3 available"
    );
    assert_eq!(units(&inventory), before, "all or nothing: the laptops, which were there, are not set aside");
    assert_eq!(
        inventory.orders.get("order-1"),
        Some(&Reservation::Refused { sku: "DOCK".into(), requested: 4, available: 3 }),
        "the inventory records the refusal"
    );

    let mut inventory = self::inventory();
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-2", &[item("MOUSE", 1), item("CABLE", 1)])),
        out_of_stock("order-2", "CABLE", 1, 0),
        "a SKU the inventory does not carry has 0 available"
    );
    assert_eq!(units(&inventory), before, "nothing set aside, and no stock made for the unknown SKU");
}

#[test]
fn units_move_from_available_to_reserved_to_sold() {
    let mut inventory = inventory();
    inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse()));
    assert_eq!(inventory.handle_stock_command(&commit("order-1")), stock_committed("order-1"));
    assert_eq!(inventory.stock_of("LAPTOP"), stock(3, 0, 2), "the reserved laptops are sold");
    assert_eq!(inventory.stock_of("MOUSE"), stock(9, 0, 1), "the reserved mouse is sold");
    assert_eq!(inventory.stock_of("DOCK"), stock(3, 0, 0));
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Committed { items: laptops_and_a_mouse() }));
}

#[test]
fn a_release_gives_the_reserved_units_back() {
    let mut inventory = inventory();
    let before = units(&inventory);
    inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse()));
    assert_eq!(inventory.handle_stock_command(&release("order-1")), stock_released("order-1"));
    assert_eq!(units(&inventory), before, "the reserved units are available again");
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Released));
}

#[test]
fn a_repeated_command_gets_its_first_answer_and_changes_nothing() {
    let mut inventory = inventory();
    let order = laptops_and_a_mouse();
    for (command, answer) in [
        (reserve("order-1", &order), stock_reserved("order-1")),
        (commit("order-1"), stock_committed("order-1")),
        (reserve("order-2", &order), stock_reserved("order-2")),
        (release("order-2"), stock_released("order-2")),
        (reserve("order-3", &[item("DOCK", 9)]), out_of_stock("order-3", "DOCK", 9, 3)),
    ] {
        assert_eq!(inventory.handle_stock_command(&command), answer, "{command:?} the first time");
        let after_once = inventory.clone();
        for again in 2..=3 {
            assert_eq!(
                inventory.handle_stock_command(&command),
                answer,
                "{command:?} a time {again}: its first answer"
            );
            assert_eq!(inventory, after_once, "{command:?} a time {again}: nothing applied twice");
        }
    }

    // A repeated reservation answers as the first time, whatever the stock has become since.
    let mut inventory = self::inventory();
    assert_eq!(inventory.handle_stock_command(&reserve("order-1", &[item("LAPTOP", 3)])), stock_reserved("order-1"));
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-2", &[item("LAPTOP", 3)])),
        out_of_stock("order-2", "LAPTOP", 3, 2)
    );
    assert_eq!(inventory.handle_stock_command(&reserve("order-3", &[item("LAPTOP", 2)])), stock_reserved("order-3"));
    let now = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-1", &[item("LAPTOP", 3)])),
        stock_reserved("order-1"),
        "order-1 again, with no laptop available any more: it holds its reservation"
    );
    assert_eq!(inventory, now, "and nothing is set aside a second time");
    assert_eq!(inventory.handle_stock_command(&release("order-3")), stock_released("order-3"));
    assert_eq!(inventory.handle_stock_command(&release("order-1")), stock_released("order-1"));
    assert_eq!(inventory.stock_of("LAPTOP").available, 5, "every laptop is back");
    let now = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-2", &[item("LAPTOP", 3)])),
        out_of_stock("order-2", "LAPTOP", 3, 2),
        "order-2 again, once enough laptops are back: still its first answer, word for word (the saga cancelled on it)"
    );
    assert_eq!(inventory, now, "and nothing is set aside for it");
}

#[test]
fn a_release_before_its_reservation_is_acknowledged_and_blocks_the_reservation() {
    let mut inventory = inventory();
    let before = units(&inventory);
    assert_eq!(
        inventory.handle_stock_command(&release("order-1")),
        stock_released("order-1"),
        "a release for an order the inventory never heard of is acknowledged"
    );
    assert_eq!(units(&inventory), before, "and moves no unit");
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Released), "it is remembered");
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse())),
        stock_released("order-1"),
        "the reservation that arrives after its release is answered STOCK_RELEASED"
    );
    assert_eq!(units(&inventory), before, "and sets nothing aside");
    assert_eq!(inventory.orders.get("order-1"), Some(&Reservation::Released));

    // Released after a refusal: acknowledged the same way.
    let mut inventory = self::inventory();
    inventory.handle_stock_command(&reserve("order-2", &[item("DOCK", 4)]));
    assert_eq!(
        inventory.handle_stock_command(&release("order-2")),
        stock_released("order-2"),
        "a refused order's release"
    );
    assert_eq!(units(&inventory), before, "moves no unit");
    assert_eq!(inventory.orders.get("order-2"), Some(&Reservation::Released), "and is remembered");
    assert_eq!(
        inventory.handle_stock_command(&reserve("order-2", &[item("DOCK", 1)])),
        stock_released("order-2"),
        "from then on its reservation is answered STOCK_RELEASED"
    );
    assert_eq!(units(&inventory), before, "and sets nothing aside");
}

#[test]
fn a_committed_order_stays_sold() {
    let mut inventory = inventory();
    inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse()));
    inventory.handle_stock_command(&commit("order-1"));
    let sold = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&release("order-1")),
        stock_committed("order-1"),
        "a release after the commit answers STOCK_COMMITTED"
    );
    assert_eq!(inventory, sold, "and gives nothing back");
    assert_eq!(inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse())), stock_reserved("order-1"));
    assert_eq!(inventory, sold, "a late repeated reservation of a sold order sets nothing aside");
}

#[test]
fn a_commit_without_a_reservation_changes_nothing() {
    let mut inventory = inventory();
    let untouched = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&commit("order-1")),
        stock_released("order-1"),
        "an order the inventory never heard of: STOCK_RELEASED"
    );
    assert_eq!(inventory, untouched, "nothing sold, nothing recorded");

    inventory.handle_stock_command(&reserve("order-2", &laptops_and_a_mouse()));
    inventory.handle_stock_command(&release("order-2"));
    let released = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&commit("order-2")),
        stock_released("order-2"),
        "a released order: its record"
    );
    assert_eq!(inventory, released, "nothing sold");

    inventory.handle_stock_command(&reserve("order-3", &[item("DOCK", 4)]));
    let refused = inventory.clone();
    assert_eq!(
        inventory.handle_stock_command(&commit("order-3")),
        out_of_stock("order-3", "DOCK", 4, 3),
        "a refused order: its record, the refusal"
    );
    assert_eq!(inventory, refused, "nothing sold");
}

#[test]
fn payment_commands_are_not_the_inventorys() {
    let mut inventory = inventory();
    inventory.handle_stock_command(&reserve("order-1", &laptops_and_a_mouse()));
    let before = inventory.clone();
    for command in [charge("order-1", "4242-4242-4242-4242", 202_498), refund("order-1"), refund("order-2")] {
        assert_eq!(inventory.handle_stock_command(&command), None, "{command:?}");
        assert_eq!(inventory, before, "{command:?} changes nothing");
    }
}

/// Deterministic property tests: a fixed seed, and no failure file written into the sources.
fn fixed(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(12), failure_persistence: None, ..ProptestConfig::default() }
}

const SKUS: [&str; 4] = ["LAPTOP", "MOUSE", "DOCK", "CABLE"];
const ORDERS: usize = 4;

/// An order's items: up to three distinct SKUs (one may be unknown to the inventory), 1 to 4 of each.
fn any_items() -> impl Strategy<Value = Vec<Item>> {
    prop::sample::subsequence(SKUS.to_vec(), 1..=3)
        .prop_flat_map(|skus| {
            let n = skus.len();
            (Just(skus), prop::collection::vec(1u32..=4, n))
        })
        .prop_map(|(skus, quantities)| skus.iter().zip(quantities).map(|(sku, q)| item(sku, q)).collect())
}

/// A command about one of [`ORDERS`] orders: mostly the inventory's, sometimes the payment service's.
fn any_inventory_step() -> impl Strategy<Value = (usize, u8)> {
    (0..ORDERS, 0u8..5)
}

fn inventory_command(orders: &[Vec<Item>], (index, kind): (usize, u8)) -> Command {
    let order_id = format!("order-{index}");
    match kind {
        0 | 1 => reserve(&order_id, &orders[index]),
        2 => release(&order_id),
        3 => commit(&order_id),
        _ => charge(&order_id, "4242-4242-4242-4242", 1_000),
    }
}

proptest! {
    #![proptest_config(fixed(400))]

    /// Whatever the commands and their order: no unit is made or lost, the reserved and sold units are exactly
    /// those of the orders recorded reserved and committed, and a command handled twice in a row answers and
    /// leaves the inventory as handling it once did.
    #[test]
    fn stock_is_conserved_and_every_command_is_idempotent(
        orders in prop::collection::vec(any_items(), ORDERS),
        steps in prop::collection::vec(any_inventory_step(), 0..40),
    ) {
        let mut inventory = Inventory::with_stock(&[("LAPTOP", 4), ("MOUSE", 6), ("DOCK", 2)]);
        let totals: BTreeMap<String, u32> =
            inventory.stock.iter().map(|(sku, s)| (sku.clone(), s.available + s.reserved + s.sold)).collect();
        for step in steps {
            let command = inventory_command(&orders, step);
            let answer = inventory.handle_stock_command(&command);
            let once = inventory.clone();
            prop_assert_eq!(answer.is_none(), command.participant() != lesson_12::Participant::Inventory);
            if let Some(reply) = &answer {
                prop_assert_eq!(reply.order_id(), command.order_id(), "the answer names the command's order");
            }
            prop_assert_eq!(&inventory.handle_stock_command(&command), &answer, "{:?} twice: its first answer", command);
            prop_assert_eq!(&inventory, &once, "{:?} twice: nothing applied twice", command);

            for (sku, total) in &totals {
                let s = inventory.stock_of(sku);
                prop_assert_eq!(s.available + s.reserved + s.sold, *total, "{} after {:?}", sku, command);
            }
            for (sku, s) in &inventory.stock {
                prop_assert!(
                    totals.contains_key(sku) || *s == Stock::default(),
                    "no units of {} made after {:?}: {:?}", sku, command, s
                );
            }
            let mut reserved: BTreeMap<&str, u32> = BTreeMap::new();
            let mut sold: BTreeMap<&str, u32> = BTreeMap::new();
            for record in inventory.orders.values() {
                let (into, items) = match record {
                    Reservation::Reserved { items } => (&mut reserved, items),
                    Reservation::Committed { items } => (&mut sold, items),
                    Reservation::Refused { .. } | Reservation::Released => continue,
                };
                for item in items {
                    *into.entry(item.sku.as_str()).or_default() += item.quantity;
                }
            }
            for sku in SKUS {
                let s = inventory.stock_of(sku);
                prop_assert_eq!(s.reserved, reserved.get(sku).copied().unwrap_or(0), "{} reserved, after {:?}", sku, command);
                prop_assert_eq!(s.sold, sold.get(sku).copied().unwrap_or(0), "{} sold, after {:?}", sku, command);
            }
        }
    }
}

/// A card network that counts its calls per card and declines the cards it was told to, with their reason.
#[derive(Debug, Default)]
struct CountingGateway {
    /// card → why it is declined.
    declines: BTreeMap<String, String>,
    /// card → how many times it was asked to charge it.
    calls: BTreeMap<String, u32>,
    /// What the charges that went through took, in cents.
    taken_cents: u64,
}

impl CountingGateway {
    fn declining(card: &str, reason: &str) -> CountingGateway {
        CountingGateway { declines: [(card.to_string(), reason.to_string())].into(), ..CountingGateway::default() }
    }

    fn calls(&self) -> u32 {
        self.calls.values().sum()
    }
}

impl Gateway for CountingGateway {
    fn charge(&mut self, card: &str, amount_cents: u64) -> Result<(), String> {
        *self.calls.entry(card.to_string()).or_default() += 1;
        match self.declines.get(card) {
            Some(reason) => Err(reason.clone()),
            None => {
                self.taken_cents += amount_cents;
                Ok(())
            }
        }
    }
}

const GOOD_CARD: &str = "4242-4242-4242-4242";
const POOR_CARD: &str = "4000-0000-0000-9995";

fn charged(order_id: &str, amount_cents: u64) -> Option<Reply> {
    Some(Reply::PaymentCharged { order_id: order_id.into(), amount_cents })
}

fn declined(order_id: &str, reason: &str) -> Option<Reply> {
    Some(Reply::PaymentDeclined { order_id: order_id.into(), reason: reason.into() })
}

fn refunded(order_id: &str, amount_cents: u64) -> Option<Reply> {
    Some(Reply::PaymentRefunded { order_id: order_id.into(), amount_cents })
}

#[test]
fn a_charge_asks_the_gateway_once_however_often_it_comes() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::default();
    for time in 1..=3 {
        assert_eq!(
            payments.handle_payment_command(&charge("order-1", GOOD_CARD, 202_498), &mut gateway),
            charged("order-1", 202_498),
            "CHARGE_PAYMENT a time {time}: PAYMENT_CHARGED"
        );
        assert_eq!(gateway.calls(), 1, "CHARGE_PAYMENT a time {time}: the gateway was asked once in all");
        assert_eq!(payments.charged_cents, 202_498, "CHARGE_PAYMENT a time {time}: charged once");
    }
    assert_eq!(gateway.taken_cents, 202_498);
    assert_eq!(payments.refunded_cents, 0);
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Charged { amount_cents: 202_498 }));

    assert_eq!(
        payments.handle_payment_command(&charge("order-2", GOOD_CARD, 2_500), &mut gateway),
        charged("order-2", 2_500)
    );
    assert_eq!(gateway.calls(), 2, "another order is another charge");
    assert_eq!(payments.charged_cents, 202_498 + 2_500);
}

#[test]
fn a_declined_charge_answers_the_gateways_reason_and_takes_nothing() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::declining(POOR_CARD, "insufficient funds");
    for time in 1..=2 {
        assert_eq!(
            payments.handle_payment_command(&charge("order-1", POOR_CARD, 202_498), &mut gateway),
            declined("order-1", "insufficient funds"),
            "CHARGE_PAYMENT a time {time}: declined, for the gateway's reason"
        );
        assert_eq!(gateway.calls(), 1, "CHARGE_PAYMENT a time {time}: the gateway was asked once in all");
        assert_eq!(payments.charged_cents, 0, "CHARGE_PAYMENT a time {time}: nothing charged");
    }
    assert_eq!(payments.refunded_cents, 0);
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Declined { reason: "insufficient funds".into() }));
}

#[test]
fn a_refund_gives_back_the_charged_amount_once() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::default();
    payments.handle_payment_command(&charge("order-1", GOOD_CARD, 202_498), &mut gateway);
    payments.handle_payment_command(&charge("order-2", GOOD_CARD, 2_500), &mut gateway);
    for time in 1..=3 {
        assert_eq!(
            payments.handle_payment_command(&refund("order-1"), &mut gateway),
            refunded("order-1", 202_498),
            "REFUND_PAYMENT a time {time}: the amount charged"
        );
        assert_eq!(payments.refunded_cents, 202_498, "REFUND_PAYMENT a time {time}: given back once");
        assert_eq!(payments.charged_cents, 202_498 + 2_500, "what was charged stays counted as charged");
    }
    assert_eq!(gateway.calls(), 2, "a refund does not go through the gateway's charge");
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Refunded { amount_cents: 202_498 }));
    assert_eq!(payments.orders.get("order-2"), Some(&Payment::Charged { amount_cents: 2_500 }), "untouched");
}

#[test]
fn a_refund_of_a_declined_or_never_charged_order_gives_back_nothing() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::declining(POOR_CARD, "insufficient funds");
    payments.handle_payment_command(&charge("order-1", POOR_CARD, 202_498), &mut gateway);
    assert_eq!(
        payments.handle_payment_command(&refund("order-1"), &mut gateway),
        refunded("order-1", 0),
        "declined: 0 back"
    );
    assert_eq!(
        payments.handle_payment_command(&refund("order-2"), &mut gateway),
        refunded("order-2", 0),
        "never charged: 0 back"
    );
    assert_eq!((payments.charged_cents, payments.refunded_cents), (0, 0), "no money moved");
    assert_eq!(payments.orders.get("order-1"), Some(&Payment::Refunded { amount_cents: 0 }));
    assert_eq!(payments.orders.get("order-2"), Some(&Payment::Refunded { amount_cents: 0 }));
}

#[test]
fn a_charge_after_its_refund_never_reaches_the_gateway() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::default();
    assert_eq!(payments.handle_payment_command(&refund("order-1"), &mut gateway), refunded("order-1", 0));
    for time in 1..=2 {
        assert_eq!(
            payments.handle_payment_command(&charge("order-1", GOOD_CARD, 202_498), &mut gateway),
            refunded("order-1", 0),
            "a charge overtaken by its refund, a time {time}: PAYMENT_REFUNDED again"
        );
        assert_eq!(gateway.calls(), 0, "the gateway is never asked");
        assert_eq!((payments.charged_cents, payments.refunded_cents), (0, 0));
    }

    payments.handle_payment_command(&charge("order-2", GOOD_CARD, 2_500), &mut gateway);
    payments.handle_payment_command(&refund("order-2"), &mut gateway);
    assert_eq!(
        payments.handle_payment_command(&charge("order-2", GOOD_CARD, 2_500), &mut gateway),
        refunded("order-2", 2_500),
        "charged, refunded, then the charge again: PAYMENT_REFUNDED, with what was given back"
    );
    assert_eq!(gateway.calls(), 1, "the card was charged once");
    assert_eq!((payments.charged_cents, payments.refunded_cents), (2_500, 2_500));
}

#[test]
fn inventory_commands_are_not_the_payment_services() {
    let mut payments = Payments::default();
    let mut gateway = CountingGateway::default();
    payments.handle_payment_command(&charge("order-1", GOOD_CARD, 202_498), &mut gateway);
    let before = payments.clone();
    for command in [reserve("order-1", &laptops_and_a_mouse()), release("order-1"), commit("order-1")] {
        assert_eq!(payments.handle_payment_command(&command, &mut gateway), None, "{command:?}");
        assert_eq!(payments, before, "{command:?} changes nothing");
    }
    assert_eq!(gateway.calls(), 1);
}

/// A step of the payments' property test: an order (each has a card of its own, a declined one for order-1) and
/// what is sent about it.
fn any_payment_step() -> impl Strategy<Value = (usize, u8)> {
    (0..ORDERS, 0u8..5)
}

fn card_of(index: usize) -> String {
    format!("card-{index}")
}

fn payment_command((index, kind): (usize, u8)) -> Command {
    let order_id = format!("order-{index}");
    match kind {
        0 | 1 => charge(&order_id, &card_of(index), 1_000 * (index as u64 + 1)),
        2 | 3 => refund(&order_id),
        _ => release(&order_id),
    }
}

proptest! {
    #![proptest_config(fixed(400))]

    /// Whatever the commands and their order: the money kept is what the orders recorded as charged paid, the
    /// money charged is what the gateway took, the gateway is asked at most once per order, and a command handled
    /// twice in a row answers and leaves the records as handling it once did.
    #[test]
    fn money_kept_matches_the_charged_orders_and_no_card_is_charged_twice(
        steps in prop::collection::vec(any_payment_step(), 0..40),
    ) {
        let mut payments = Payments::default();
        let mut gateway = CountingGateway::declining(&card_of(1), "card declined");
        for step in steps {
            let command = payment_command(step);
            let answer = payments.handle_payment_command(&command, &mut gateway);
            let once = payments.clone();
            let calls = gateway.calls();
            prop_assert_eq!(answer.is_none(), command.participant() != lesson_12::Participant::Payment);
            if let Some(reply) = &answer {
                prop_assert_eq!(reply.order_id(), command.order_id(), "the answer names the command's order");
            }
            prop_assert_eq!(&payments.handle_payment_command(&command, &mut gateway), &answer, "{:?} twice: its first answer", command);
            prop_assert_eq!(&payments, &once, "{:?} twice: nothing applied twice", command);
            prop_assert_eq!(gateway.calls(), calls, "{:?} twice: the gateway is not asked again", command);

            let kept: u64 = payments
                .orders
                .values()
                .map(|p| match p {
                    Payment::Charged { amount_cents } => *amount_cents,
                    _ => 0,
                })
                .sum();
            prop_assert!(payments.charged_cents >= payments.refunded_cents, "more refunded than charged");
            prop_assert_eq!(payments.charged_cents - payments.refunded_cents, kept, "money kept, after {:?}", command);
            prop_assert_eq!(payments.charged_cents, gateway.taken_cents, "charged is what the gateway took");
            for (card, calls) in &gateway.calls {
                prop_assert!(*calls <= 1, "the gateway was asked {} times for {}", calls, card);
            }
        }
    }
}
