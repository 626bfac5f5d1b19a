//! What the services of the saga say to each other, as it travels on the topics: JSON, keyed by the order id, which
//! is also the saga's id — so every message of one order lands in one partition of its topic, in order, and a reply
//! finds its saga by its key alone (the correlation id is the key).
//!
//! Commands go to a participant's `*.commands` topic; each participant answers on its `*.responses` topic with a
//! [`Reply`] that names the order. The order service announces what happened to the order on `orders.events`
//! ([`OrderEvent`]) and asks the notification service to tell the customer ([`Notification`]).

use serde::{Deserialize, Serialize};

// ANCHOR: order
/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// A customer's order, as a client sends it to `orders.requests`: it starts a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub customer_id: String,
    /// The card the payment service charges (the story's gateway declines `4000-0000-0000-0002`, as test cards do).
    pub card: String,
    pub items: Vec<Item>,
}
// ANCHOR_END: order

impl PlaceOrder {
    /// What the order costs, in cents.
    pub fn total_cents(&self) -> u64 {
        self.items.iter().map(|i| u64::from(i.quantity) * i.unit_price_cents).sum()
    }
}

// ANCHOR: command
/// A command of the order service to a participant. Every command is safe to send twice: the participant answers
/// a repeated command with the reply it gave the first time, and never applies it twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Inventory: set the items aside for the order, all or none.
    ReserveStock { order_id: String, items: Vec<Item> },
    /// Inventory, compensation: give back what was set aside for the order (nothing, if nothing was).
    ReleaseStock { order_id: String },
    /// Inventory: the reserved items are sold.
    CommitStock { order_id: String },
    /// Payment: charge the customer's card.
    ChargePayment { order_id: String, customer_id: String, card: String, amount_cents: u64 },
    /// Payment, compensation: give back what was charged for the order (nothing, if nothing was).
    RefundPayment { order_id: String },
}
// ANCHOR_END: command

impl Command {
    pub fn order_id(&self) -> &str {
        match self {
            Command::ReserveStock { order_id, .. }
            | Command::ReleaseStock { order_id }
            | Command::CommitStock { order_id }
            | Command::ChargePayment { order_id, .. }
            | Command::RefundPayment { order_id } => order_id,
        }
    }

    /// The participant the command is for.
    pub fn participant(&self) -> Participant {
        match self {
            Command::ReserveStock { .. } | Command::ReleaseStock { .. } | Command::CommitStock { .. } => {
                Participant::Inventory
            }
            Command::ChargePayment { .. } | Command::RefundPayment { .. } => Participant::Payment,
        }
    }

    /// The command's name on the wire (`RESERVE_STOCK`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ReserveStock { .. } => "RESERVE_STOCK",
            Command::ReleaseStock { .. } => "RELEASE_STOCK",
            Command::CommitStock { .. } => "COMMIT_STOCK",
            Command::ChargePayment { .. } => "CHARGE_PAYMENT",
            Command::RefundPayment { .. } => "REFUND_PAYMENT",
        }
    }
}

// ANCHOR: reply
/// The services that take part in the saga and answer the order service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Participant {
    Inventory,
    Payment,
}

/// A participant's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reply {
    /// Every item is set aside for the order.
    StockReserved { order_id: String },
    /// Not enough of `sku`: nothing was set aside.
    OutOfStock { order_id: String, sku: String, requested: u32, available: u32 },
    /// What was set aside (if anything) is back in stock; the order can reserve nothing any more.
    StockReleased { order_id: String },
    /// The reserved items are sold.
    StockCommitted { order_id: String },
    /// The card was charged.
    PaymentCharged { order_id: String, amount_cents: u64 },
    /// The card was not charged.
    PaymentDeclined { order_id: String, reason: String },
    /// What was charged (`amount_cents`, 0 if nothing was) is given back; the order can be charged no more.
    PaymentRefunded { order_id: String, amount_cents: u64 },
}
// ANCHOR_END: reply

impl Reply {
    pub fn order_id(&self) -> &str {
        match self {
            Reply::StockReserved { order_id }
            | Reply::OutOfStock { order_id, .. }
            | Reply::StockReleased { order_id }
            | Reply::StockCommitted { order_id }
            | Reply::PaymentCharged { order_id, .. }
            | Reply::PaymentDeclined { order_id, .. }
            | Reply::PaymentRefunded { order_id, .. } => order_id,
        }
    }

    /// The reply's name on the wire (`STOCK_RESERVED`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::StockReserved { .. } => "STOCK_RESERVED",
            Reply::OutOfStock { .. } => "OUT_OF_STOCK",
            Reply::StockReleased { .. } => "STOCK_RELEASED",
            Reply::StockCommitted { .. } => "STOCK_COMMITTED",
            Reply::PaymentCharged { .. } => "PAYMENT_CHARGED",
            Reply::PaymentDeclined { .. } => "PAYMENT_DECLINED",
            Reply::PaymentRefunded { .. } => "PAYMENT_REFUNDED",
        }
    }
}

// ANCHOR: order_event
/// What happened to an order, for anyone who listens (`orders.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderEvent {
    OrderPlaced { order_id: String, customer_id: String, total_cents: u64 },
    OrderConfirmed { order_id: String, total_cents: u64 },
    OrderCancelled { order_id: String, reason: String },
}
// ANCHOR_END: order_event

impl OrderEvent {
    pub fn order_id(&self) -> &str {
        match self {
            OrderEvent::OrderPlaced { order_id, .. }
            | OrderEvent::OrderConfirmed { order_id, .. }
            | OrderEvent::OrderCancelled { order_id, .. } => order_id,
        }
    }
}

// ANCHOR: outgoing
/// A message for the customer (`notifications.requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub order_id: String,
    pub customer_id: String,
    /// `order confirmed` or `order cancelled: <reason>`.
    pub message: String,
}

/// Everything the order service sends when a saga moves on: commands to participants, events about the order and
/// notifications — written together with the saga's new state, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Outgoing {
    Command(Command),
    Event(OrderEvent),
    Notify(Notification),
}
// ANCHOR_END: outgoing
