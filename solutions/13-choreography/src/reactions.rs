//! Each service's part of the choreography: how it reacts to the events it listens to. Pure functions over the
//! service's own state — no Kafka here; `services.rs` feeds them the records and writes what they return.
//!
//! No one holds the order's whole state. The order service knows what it announced, the inventory what it set
//! aside, the payment service what it charged; an order's progress is the trail of events on three topics. And
//! every service must take any event twice (a redelivery, a retried write), and events of one order from two
//! topics in either order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{Event, Item, PlaceOrder};

/// Why an order was cancelled because of stock, as the customer is told.
pub fn out_of_stock_reason(sku: &str, requested: u32, available: u32) -> String {
    format!("out of stock: {requested} × {sku} requested, {available} available")
}

/// Why the inventory released an order's stock.
pub fn payment_declined_reason(reason: &str) -> String {
    format!("payment declined: {reason}")
}

// ─── The order service ────────────────────────────────────────────────────────────────────────────────────────

// ANCHOR: order_status
/// Where an order is, as the order service announced it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Placed,
    Confirmed,
    Cancelled { reason: String },
}
// ANCHOR_END: order_status

impl OrderStatus {
    /// `PLACED`, `CONFIRMED` or `CANCELLED`.
    pub fn name(&self) -> &'static str {
        match self {
            OrderStatus::Placed => "PLACED",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled { .. } => "CANCELLED",
        }
    }
}

// ANCHOR: orders
/// An order as the order service keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order: PlaceOrder,
    pub status: OrderStatus,
}

/// The order service's state: every order it announced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orders {
    pub orders: BTreeMap<String, OrderRecord>,
}
// ANCHOR_END: orders

impl Orders {
    /// A client's order: announced once (`ORDER_PLACED`), however often the client sends it.
    pub fn place(&mut self, order: PlaceOrder) -> Vec<Event> {
        if self.orders.contains_key(&order.order_id) {
            return Vec::new();
        }
        let record = OrderRecord { order: order.clone(), status: OrderStatus::Placed };
        self.orders.insert(order.order_id.clone(), record);
        vec![Event::OrderPlaced { order }]
    }

    // EXERCISE: The order service's reaction to the other services' events: it ends each order it placed. The
    // inventory's STOCK_COMMITTED means the order is paid and its stock sold: CONFIRMED, announced with
    // ORDER_CONFIRMED (its customer and total). OUT_OF_STOCK and STOCK_RELEASED mean it will never be:
    // CANCELLED, announced with ORDER_CANCELLED and the reason the customer is told — `out_of_stock_reason(..)`
    // with the event's fields, or the release's own `reason`. An order ends once: an event for an order that has
    // already ended, for an order this service never placed, or of any other kind, changes nothing and announces
    // nothing. The tests give each event once, twice, after the end, and for unknown orders.
    // ANCHOR: react_orders
    /// The order service's reaction to `event` (the inventory's events end its orders): what it announces.
    pub fn on_inventory_event(&mut self, event: &Event) -> Vec<Event> {
        let Some(record) = self.orders.get_mut(event.order_id()) else {
            return Vec::new();
        };
        if record.status != OrderStatus::Placed {
            return Vec::new();
        }
        let order = &record.order;
        let cancelled = |reason: String| Event::OrderCancelled {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            reason,
        };
        let (status, announced) = match event {
            Event::StockCommitted { .. } => (
                OrderStatus::Confirmed,
                Event::OrderConfirmed {
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    total_cents: order.total_cents(),
                },
            ),
            Event::OutOfStock { sku, requested, available, .. } => {
                let reason = out_of_stock_reason(sku, *requested, *available);
                (OrderStatus::Cancelled { reason: reason.clone() }, cancelled(reason))
            }
            Event::StockReleased { reason, .. } => {
                (OrderStatus::Cancelled { reason: reason.clone() }, cancelled(reason.clone()))
            }
            _ => return Vec::new(),
        };
        record.status = status;
        vec![announced]
    }
    // ANCHOR_END: react_orders
}

// ─── The inventory ────────────────────────────────────────────────────────────────────────────────────────────

// ANCHOR: inventory
/// One SKU's units. `available + reserved + sold` never changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub available: u32,
    pub reserved: u32,
    pub sold: u32,
}

/// What the inventory did for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reservation {
    Reserved { items: Vec<Item> },
    Refused { sku: String, requested: u32, available: u32 },
    Released { items: Vec<Item> },
    Committed { items: Vec<Item> },
}

/// The inventory's state: stock per SKU, and a record per order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub stock: BTreeMap<String, Stock>,
    pub orders: BTreeMap<String, Reservation>,
}
// ANCHOR_END: inventory

impl Inventory {
    /// An inventory with `available` units of each SKU.
    pub fn with_stock(available: &[(&str, u32)]) -> Inventory {
        let stock = available.iter().map(|(sku, n)| (sku.to_string(), Stock { available: *n, ..Stock::default() }));
        Inventory { stock: stock.collect(), orders: BTreeMap::new() }
    }

    /// The units of `sku` (none, for a SKU the inventory does not carry).
    pub fn stock_of(&self, sku: &str) -> Stock {
        self.stock.get(sku).copied().unwrap_or_default()
    }

    // EXERCISE: The inventory's reaction. To ORDER_PLACED: set the order's items aside, all or nothing (an order's
    // lines of one SKU count together), and announce STOCK_RESERVED — or, when a SKU is short, set nothing aside
    // and announce OUT_OF_STOCK naming the first SKU short (SKUs taken in the order of their first line), what the
    // order asks of it and what is available. To the
    // payment service's PAYMENT_CHARGED: the reserved units are sold (STOCK_COMMITTED). To PAYMENT_DECLINED: the
    // compensation, which in a choreography lives here — give the units back and announce STOCK_RELEASED with the
    // reason `payment_declined_reason(..)` of the decline. Units move `available` → `reserved` → `sold`, or back;
    // `available + reserved + sold` never changes. `self.orders` records what was done per order, and an event
    // whose work is done already (a duplicate), an event for an order in another state, or any other event changes
    // nothing and announces nothing. The tests give events once, twice and out of turn.
    // ANCHOR: react_inventory
    /// The inventory's reaction to `event` (an order placed, a payment charged or declined): what it announces.
    pub fn on_order_or_payment(&mut self, event: &Event) -> Vec<Event> {
        match event {
            Event::OrderPlaced { order } => {
                if self.orders.contains_key(&order.order_id) {
                    return Vec::new();
                }
                let order_id = order.order_id.clone();
                let mut needed: Vec<(&str, u32)> = Vec::new();
                for item in &order.items {
                    match needed.iter_mut().find(|(sku, _)| *sku == item.sku) {
                        Some((_, quantity)) => *quantity += item.quantity,
                        None => needed.push((&item.sku, item.quantity)),
                    }
                }
                if let Some((sku, requested)) = needed.iter().find(|(sku, n)| self.stock_of(sku).available < *n) {
                    let (sku, requested, available) = (sku.to_string(), *requested, self.stock_of(sku).available);
                    self.orders
                        .insert(order_id.clone(), Reservation::Refused { sku: sku.clone(), requested, available });
                    return vec![Event::OutOfStock { order_id, sku, requested, available }];
                }
                for item in &order.items {
                    let stock = self.stock.entry(item.sku.clone()).or_default();
                    stock.available -= item.quantity;
                    stock.reserved += item.quantity;
                }
                self.orders.insert(order_id.clone(), Reservation::Reserved { items: order.items.clone() });
                vec![Event::StockReserved { order_id }]
            }
            Event::PaymentCharged { order_id, .. } => {
                let Some(Reservation::Reserved { items }) = self.orders.get(order_id).cloned() else {
                    return Vec::new();
                };
                for item in &items {
                    let stock = self.stock.entry(item.sku.clone()).or_default();
                    stock.reserved -= item.quantity;
                    stock.sold += item.quantity;
                }
                self.orders.insert(order_id.clone(), Reservation::Committed { items });
                vec![Event::StockCommitted { order_id: order_id.clone() }]
            }
            Event::PaymentDeclined { order_id, reason } => {
                let Some(Reservation::Reserved { items }) = self.orders.get(order_id).cloned() else {
                    return Vec::new();
                };
                for item in &items {
                    let stock = self.stock.entry(item.sku.clone()).or_default();
                    stock.reserved -= item.quantity;
                    stock.available += item.quantity;
                }
                self.orders.insert(order_id.clone(), Reservation::Released { items });
                vec![Event::StockReleased { order_id: order_id.clone(), reason: payment_declined_reason(reason) }]
            }
            _ => Vec::new(),
        }
    }
    // ANCHOR_END: react_inventory
}

// ─── The payment service ──────────────────────────────────────────────────────────────────────────────────────

// ANCHOR: gateway
/// The card a test gateway always declines.
pub const DECLINED_CARD: &str = "4000-0000-0000-0002";

/// Whether a charge goes through.
pub trait Gateway {
    fn charge(&mut self, card: &str, amount_cents: u64) -> Result<(), String>;
}
// ANCHOR_END: gateway

/// The story's and tests' card network: declines [`DECLINED_CARD`] ("card declined"); counts what it took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestGateway {
    /// The charges it took, per card.
    pub charges: BTreeMap<String, u32>,
}

impl Gateway for TestGateway {
    fn charge(&mut self, card: &str, _amount_cents: u64) -> Result<(), String> {
        if card == DECLINED_CARD {
            return Err("card declined".into());
        }
        *self.charges.entry(card.to_string()).or_default() += 1;
        Ok(())
    }
}

// ANCHOR: payments
/// What the payment service knows and did for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Payment {
    /// The order is known (from ORDER_PLACED); its stock is not reserved yet.
    Known {
        card: String,
        amount_cents: u64,
    },
    /// The stock is reserved (STOCK_RESERVED came first); the order's details have not come yet.
    Reserved,
    Charged {
        amount_cents: u64,
    },
    Declined {
        reason: String,
    },
}

/// The payment service's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payments {
    pub orders: BTreeMap<String, Payment>,
    pub charged_cents: u64,
}
// ANCHOR_END: payments

impl Payments {
    // EXERCISE: The payment service's reaction. It charges an order's total to its card once the inventory has
    // reserved its stock — and it needs two events for that, from two topics: ORDER_PLACED (the card and the
    // amount) and STOCK_RESERVED (go ahead). Kafka keeps an order's events in order within a topic, not across
    // topics, so either may come first: whichever comes second triggers the charge. The gateway is asked once
    // per order, ever: the answer is announced as PAYMENT_CHARGED (its amount, added to `charged_cents`) or
    // PAYMENT_DECLINED (the gateway's reason). An order whose stock is never reserved is never charged. A
    // duplicate of either event, or any other event, changes nothing and announces nothing. `self.orders` holds
    // what is known and done per order. The tests deliver the two events in both orders, twice, and interleaved
    // across orders, and count the gateway's calls.
    // ANCHOR: react_payments
    /// The payment service's reaction to `event` (an order placed, its stock reserved), charging through
    /// `gateway`: what it announces.
    pub fn on_order_or_stock(&mut self, event: &Event, gateway: &mut dyn Gateway) -> Vec<Event> {
        let (order_id, details) = match event {
            Event::OrderPlaced { order } => (order.order_id.clone(), Some((order.card.clone(), order.total_cents()))),
            Event::StockReserved { order_id } => (order_id.clone(), None),
            _ => return Vec::new(),
        };
        let ready = match (self.orders.get(&order_id), details) {
            (None, Some((card, amount_cents))) => {
                self.orders.insert(order_id, Payment::Known { card, amount_cents });
                return Vec::new();
            }
            (None, None) => {
                self.orders.insert(order_id, Payment::Reserved);
                return Vec::new();
            }
            (Some(Payment::Reserved), Some((card, amount_cents))) => (card, amount_cents),
            (Some(Payment::Known { card, amount_cents }), None) => (card.clone(), *amount_cents),
            _ => return Vec::new(),
        };
        let (card, amount_cents) = ready;
        match gateway.charge(&card, amount_cents) {
            Ok(()) => {
                self.charged_cents += amount_cents;
                self.orders.insert(order_id.clone(), Payment::Charged { amount_cents });
                vec![Event::PaymentCharged { order_id, amount_cents }]
            }
            Err(reason) => {
                self.orders.insert(order_id.clone(), Payment::Declined { reason: reason.clone() });
                vec![Event::PaymentDeclined { order_id, reason }]
            }
        }
    }
    // ANCHOR_END: react_payments
}
