//! The four services of the choreographed shop as `kit::stage` stages (lesson 12's engine): each a consumer group
//! with its own transactional id and changelog, reacting to the topics it listens to and announcing on its own.
//!
//! | service | listens to | announces on |
//! | --- | --- | --- |
//! | order | `shop.requests`, `shop.inventory` | `shop.orders` |
//! | inventory | `shop.orders`, `shop.payments` | `shop.inventory` |
//! | payment | `shop.orders`, `shop.inventory` | `shop.payments` |
//! | notification | `shop.orders` | e-mail (and `shop.notifications.dlq`) |
//!
//! Read the table as a graph and the choreography's coupling shows: every service knows the events of the others
//! it reacts to, and no one sees the whole flow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kit::stage::{Input, Output, Stage, changes};
use serde::{Deserialize, Serialize};

use crate::events::{Event, PlaceOrder};
use crate::reactions::{Gateway, Inventory, OrderRecord, Orders, Payment, Payments, Reservation, Stock};

/// The shop's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopTopics {
    /// Clients' orders.
    pub requests: String,
    /// The order service's events.
    pub orders: String,
    /// The inventory's events.
    pub inventory: String,
    /// The payment service's events.
    pub payments: String,
    pub orders_state: String,
    pub inventory_state: String,
    pub payments_state: String,
    pub notifications_state: String,
    /// Notifications not sent after every attempt, with why.
    pub notifications_dlq: String,
    /// Records a service could not read, with why.
    pub dead_letters: String,
}

impl ShopTopics {
    /// The manifest's topics (`kit::topics::SHOP_TOPICS`).
    pub fn manifest() -> ShopTopics {
        use kit::topics::*;
        ShopTopics {
            requests: SHOP_REQUESTS.name.into(),
            orders: SHOP_ORDERS.name.into(),
            inventory: SHOP_INVENTORY.name.into(),
            payments: SHOP_PAYMENTS.name.into(),
            orders_state: SHOP_ORDERS_STATE.name.into(),
            inventory_state: SHOP_INVENTORY_STATE.name.into(),
            payments_state: SHOP_PAYMENTS_STATE.name.into(),
            notifications_state: SHOP_NOTIFICATIONS_STATE.name.into(),
            notifications_dlq: SHOP_NOTIFICATIONS_DLQ.name.into(),
            dead_letters: SHOP_DLQ.name.into(),
        }
    }

    /// Every topic with whether it is a changelog (compacted) and its partitions.
    pub fn all(&self) -> Vec<(&str, bool, i32)> {
        vec![
            (self.requests.as_str(), false, 3),
            (&self.orders, false, 3),
            (&self.inventory, false, 3),
            (&self.payments, false, 3),
            (&self.orders_state, true, 3),
            (&self.inventory_state, true, 3),
            (&self.payments_state, true, 3),
            (&self.notifications_state, true, 3),
            (&self.notifications_dlq, false, 1),
            (&self.dead_letters, false, 1),
        ]
    }
}

/// Decodes an event record.
fn event(input: &Input<'_>) -> anyhow::Result<Event> {
    serde_json::from_slice(input.payload).context("not a shop event")
}

/// `events`, each to the topic of the service that announces it (always `topic`: a service announces on its own).
fn announce(topic: &str, events: &[Event]) -> Vec<Output> {
    events.iter().map(|e| Output::json(topic, e.order_id(), e)).collect()
}

/// How many orders are in each status: the live view the story prints while the soak runs.
pub type Tally = Arc<Mutex<BTreeMap<&'static str, usize>>>;

/// The order service: takes clients' orders and ends each one on the inventory's word.
#[derive(Debug, Clone)]
pub struct OrderService {
    pub topics: ShopTopics,
    pub orders: Orders,
    /// The orders by status, for a live view: those whose id starts with `tally_prefix` (one run's, where the
    /// changelog also holds earlier runs').
    pub tally: Tally,
    pub tally_prefix: String,
}

impl OrderService {
    pub fn new(topics: ShopTopics, tally: Tally, tally_prefix: impl Into<String>) -> OrderService {
        OrderService { topics, orders: Orders::default(), tally, tally_prefix: tally_prefix.into() }
    }

    fn count(&self) {
        let mut counts = BTreeMap::new();
        for record in self.orders.orders.range(self.tally_prefix.clone()..).map(|(_, r)| r) {
            if !record.order.order_id.starts_with(&self.tally_prefix) {
                break;
            }
            *counts.entry(record.status.name()).or_insert(0) += 1;
        }
        *self.tally.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }
}

impl Stage for OrderService {
    fn name(&self) -> &str {
        "order"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.requests.clone(), self.topics.inventory.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.orders_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        match payload {
            Some(p) => self.orders.orders.insert(key.into(), serde_json::from_slice::<OrderRecord>(p)?),
            None => self.orders.orders.remove(key),
        };
        self.count();
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let before = self.orders.orders.clone();
        let announced = if input.topic == self.topics.requests {
            let order: PlaceOrder = serde_json::from_slice(input.payload).context("not a PlaceOrder")?;
            anyhow::ensure!(!order.items.is_empty(), "order {} has no items", order.order_id);
            self.orders.place(order)
        } else {
            self.orders.on_inventory_event(&event(&input)?)
        };
        let mut outputs = announce(&self.topics.orders, &announced);
        outputs.extend(changes(&self.topics.orders_state, "", &before, &self.orders.orders));
        if !announced.is_empty() {
            self.count();
        }
        Ok(outputs)
    }
}

/// The inventory service.
#[derive(Debug, Clone)]
pub struct InventoryService {
    pub topics: ShopTopics,
    pub inventory: Inventory,
}

impl InventoryService {
    /// An inventory whose stock starts as `initial` where its changelog says nothing else.
    pub fn new(topics: ShopTopics, initial: Inventory) -> InventoryService {
        InventoryService { topics, inventory: initial }
    }
}

impl Stage for InventoryService {
    fn name(&self) -> &str {
        "inventory"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.orders.clone(), self.topics.payments.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.inventory_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        if let Some(sku) = key.strip_prefix("stock/") {
            match payload {
                Some(p) => self.inventory.stock.insert(sku.into(), serde_json::from_slice::<Stock>(p)?),
                None => self.inventory.stock.remove(sku),
            };
        } else if let Some(order_id) = key.strip_prefix("order/") {
            match payload {
                Some(p) => self.inventory.orders.insert(order_id.into(), serde_json::from_slice::<Reservation>(p)?),
                None => self.inventory.orders.remove(order_id),
            };
        }
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let event = event(&input)?;
        let before = self.inventory.clone();
        let announced = self.inventory.on_order_or_payment(&event);
        let mut outputs = announce(&self.topics.inventory, &announced);
        outputs.extend(changes(&self.topics.inventory_state, "stock/", &before.stock, &self.inventory.stock));
        outputs.extend(changes(&self.topics.inventory_state, "order/", &before.orders, &self.inventory.orders));
        Ok(outputs)
    }
}

/// The payment service, with the card network it charges through.
#[derive(Debug, Clone)]
pub struct PaymentService<G> {
    pub topics: ShopTopics,
    pub payments: Payments,
    pub gateway: G,
}

impl<G: Gateway> PaymentService<G> {
    pub fn new(topics: ShopTopics, gateway: G) -> PaymentService<G> {
        PaymentService { topics, payments: Payments::default(), gateway }
    }
}

impl<G: Gateway> Stage for PaymentService<G> {
    fn name(&self) -> &str {
        "payment"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.orders.clone(), self.topics.inventory.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.payments_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        match payload {
            Some(p) => self.payments.orders.insert(key.into(), serde_json::from_slice::<Payment>(p)?),
            None => self.payments.orders.remove(key),
        };
        // The money taken is what the records say was charged: recomputed, never a separate counter to drift.
        self.payments.charged_cents = self
            .payments
            .orders
            .values()
            .map(|p| if let Payment::Charged { amount_cents } = p { *amount_cents } else { 0 })
            .sum();
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let event = event(&input)?;
        let before = self.payments.orders.clone();
        let announced = self.payments.on_order_or_stock(&event, &mut self.gateway);
        let mut outputs = announce(&self.topics.payments, &announced);
        outputs.extend(changes(&self.topics.payments_state, "", &before, &self.payments.orders));
        Ok(outputs)
    }
}

/// Where notifications go.
pub trait Mailer: Send {
    fn send(&mut self, customer_id: &str, message: &str) -> Result<(), String>;
}

/// A mail server that fails a share of attempts (an outage, seen from the client), and keeps what it sent.
#[derive(Debug, Clone)]
pub struct FlakyMailer {
    /// The share of attempts that fail, 0.0 to 1.0.
    pub failure_rate: f64,
    /// Customers whose mail server is down for good.
    pub down_for: BTreeSet<String>,
    rng: Arc<Mutex<fastrand::Rng>>,
    /// What was sent: (order id, message) — shared, so the soak can look for duplicates.
    pub sent: Arc<Mutex<Vec<(String, String)>>>,
    pub attempts: Arc<Mutex<usize>>,
}

impl FlakyMailer {
    pub fn new(failure_rate: f64, seed: u64) -> FlakyMailer {
        FlakyMailer {
            failure_rate,
            down_for: BTreeSet::new(),
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            sent: Arc::default(),
            attempts: Arc::default(),
        }
    }
}

/// The order a notification is about travels with it, so the mailer's log names it.
impl FlakyMailer {
    fn deliver(&mut self, order_id: &str, customer_id: &str, message: &str) -> Result<(), String> {
        *self.attempts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let unlucky = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < self.failure_rate;
        if unlucky || self.down_for.contains(customer_id) {
            return Err("the mail server did not answer".into());
        }
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push((order_id.to_string(), message.to_string()));
        Ok(())
    }
}

/// What the notification service did with an order's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Delivery {
    Sent,
    DeadLettered,
}

/// The notification service: tells each customer how their order ended, once, with three attempts.
#[derive(Debug, Clone)]
pub struct NotificationService {
    pub topics: ShopTopics,
    pub mailer: FlakyMailer,
    pub attempts: u32,
    pub first_backoff: Duration,
    pub done: BTreeMap<String, Delivery>,
    /// How many notifications this service brought to an end (sent or dead-lettered), shared with whoever waits
    /// for them (the soak).
    pub ended: Arc<AtomicUsize>,
}

impl NotificationService {
    /// Three attempts, 20 ms then 40 ms apart (short: a soak sends a thousand).
    pub fn new(topics: ShopTopics, mailer: FlakyMailer) -> NotificationService {
        NotificationService {
            topics,
            mailer,
            attempts: 3,
            first_backoff: Duration::from_millis(20),
            done: BTreeMap::new(),
            ended: Arc::default(),
        }
    }
}

impl Stage for NotificationService {
    fn name(&self) -> &str {
        "notification"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.orders.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.notifications_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        match payload {
            Some(p) => self.done.insert(key.into(), serde_json::from_slice(p)?),
            None => self.done.remove(key),
        };
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let (order_id, customer_id, message) = match event(&input)? {
            Event::OrderConfirmed { order_id, customer_id, .. } => (order_id, customer_id, "order confirmed".into()),
            Event::OrderCancelled { order_id, customer_id, reason } => {
                (order_id, customer_id, format!("order cancelled: {reason}"))
            }
            _ => return Ok(Vec::new()),
        };
        if self.done.contains_key(&order_id) {
            return Ok(Vec::new());
        }
        let mut backoff = self.first_backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.attempts {
            match self.mailer.deliver(&order_id, &customer_id, &message) {
                Ok(()) => {
                    self.done.insert(order_id.clone(), Delivery::Sent);
                    self.ended.fetch_add(1, Ordering::Relaxed);
                    return Ok(vec![Output::json(&self.topics.notifications_state, &order_id, &Delivery::Sent)]);
                }
                Err(error) => {
                    last_error = error;
                    if attempt < self.attempts {
                        std::thread::sleep(backoff);
                        backoff *= 2;
                    }
                }
            }
        }
        self.done.insert(order_id.clone(), Delivery::DeadLettered);
        self.ended.fetch_add(1, Ordering::Relaxed);
        let dead = Output {
            topic: self.topics.notifications_dlq.clone(),
            key: order_id.clone(),
            payload: input.payload.to_vec(),
            headers: vec![("dlq.reason".into(), last_error), ("dlq.attempts".into(), self.attempts.to_string())],
        };
        Ok(vec![dead, Output::json(&self.topics.notifications_state, &order_id, &Delivery::DeadLettered)])
    }
}
