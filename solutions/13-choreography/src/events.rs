//! What the services of the choreographed shop announce. No service commands another: each publishes what it did
//! on a topic of its own (`shop.orders`, `shop.inventory`, `shop.payments`), and whoever cares reacts. Every event
//! is keyed by its order's id, so one order's events keep their order within each topic — but not across topics:
//! a service that reads two topics can see an order's events in either order (the payment service does).

use serde::{Deserialize, Serialize};

// ANCHOR: order
/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// A customer's order, as a client sends it (`shop.requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub customer_id: String,
    pub card: String,
    pub items: Vec<Item>,
}

impl PlaceOrder {
    pub fn total_cents(&self) -> u64 {
        self.items.iter().map(|i| u64::from(i.quantity) * i.unit_price_cents).sum()
    }
}
// ANCHOR_END: order

// ANCHOR: event
/// Everything that happens in the shop, by the service that announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    // The order service (`shop.orders`).
    /// A new order, with everything the others need to act on it.
    OrderPlaced {
        order: PlaceOrder,
    },
    OrderConfirmed {
        order_id: String,
        customer_id: String,
        total_cents: u64,
    },
    OrderCancelled {
        order_id: String,
        customer_id: String,
        reason: String,
    },
    // The inventory (`shop.inventory`).
    StockReserved {
        order_id: String,
    },
    OutOfStock {
        order_id: String,
        sku: String,
        requested: u32,
        available: u32,
    },
    StockCommitted {
        order_id: String,
    },
    /// The reservation was given back (the payment was declined): `reason` says why, for the order service.
    StockReleased {
        order_id: String,
        reason: String,
    },
    // The payment service (`shop.payments`).
    PaymentCharged {
        order_id: String,
        amount_cents: u64,
    },
    PaymentDeclined {
        order_id: String,
        reason: String,
    },
}
// ANCHOR_END: event

impl Event {
    pub fn order_id(&self) -> &str {
        match self {
            Event::OrderPlaced { order } => &order.order_id,
            Event::OrderConfirmed { order_id, .. }
            | Event::OrderCancelled { order_id, .. }
            | Event::StockReserved { order_id }
            | Event::OutOfStock { order_id, .. }
            | Event::StockCommitted { order_id }
            | Event::StockReleased { order_id, .. }
            | Event::PaymentCharged { order_id, .. }
            | Event::PaymentDeclined { order_id, .. } => order_id,
        }
    }

    /// The event's name on the wire (`ORDER_PLACED`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "ORDER_PLACED",
            Event::OrderConfirmed { .. } => "ORDER_CONFIRMED",
            Event::OrderCancelled { .. } => "ORDER_CANCELLED",
            Event::StockReserved { .. } => "STOCK_RESERVED",
            Event::OutOfStock { .. } => "OUT_OF_STOCK",
            Event::StockCommitted { .. } => "STOCK_COMMITTED",
            Event::StockReleased { .. } => "STOCK_RELEASED",
            Event::PaymentCharged { .. } => "PAYMENT_CHARGED",
            Event::PaymentDeclined { .. } => "PAYMENT_DECLINED",
        }
    }

    /// The service that announces this kind of event.
    pub fn source(&self) -> Source {
        match self {
            Event::OrderPlaced { .. } | Event::OrderConfirmed { .. } | Event::OrderCancelled { .. } => Source::Orders,
            Event::StockReserved { .. }
            | Event::OutOfStock { .. }
            | Event::StockCommitted { .. }
            | Event::StockReleased { .. } => Source::Inventory,
            Event::PaymentCharged { .. } | Event::PaymentDeclined { .. } => Source::Payments,
        }
    }
}

/// The services that announce events, each on its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Orders,
    Inventory,
    Payments,
}
