//! What shoppers do, as events: a view, an item added to or removed from a cart, a purchase — each with the time
//! it happened on the shopper's device (`event_time_ms`), which is not the time it reaches Kafka. A phone in a
//! tunnel sends its events late, and two shoppers' events interleave in any order. The simulator below produces
//! sessions the way seed 004's producers did, with a share of events held back and sent late.

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

// ANCHOR: kind
/// What a shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    View,
    AddToCart,
    RemoveFromCart,
    Purchase,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::View, Kind::AddToCart, Kind::RemoveFromCart, Kind::Purchase];
}
// ANCHOR_END: kind

// ANCHOR: activity
/// One event of a shopper (`shop.activity`, keyed by user id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub event_id: String,
    pub user_id: String,
    pub product_id: String,
    pub kind: Kind,
    pub quantity: u32,
    /// When it happened, in ms since the epoch (event time).
    pub event_time_ms: i64,
}
// ANCHOR_END: activity

/// An event as the simulator emits it: the event, and how long after it happened it is sent (0: at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub activity: Activity,
    pub delay_ms: i64,
}

/// Simulated shopping sessions: each a user viewing a few products, adding some to the cart, sometimes removing one,
/// and buying with some chance — about seed 004's proportions. Event times advance from `start_ms` by a few
/// seconds per step; a share `late_share` of events is sent late, by up to `max_delay_ms`.
pub struct Sessions {
    rng: fastrand::Rng,
    products: Vec<String>,
    users: Vec<String>,
    clock_ms: i64,
    late_share: f64,
    max_delay_ms: i64,
    next_id: u64,
    prefix: String,
}

impl Sessions {
    pub fn new(catalog: Catalog, seed: u64, start_ms: i64, late_share: f64, max_delay_ms: i64) -> Sessions {
        let products = catalog.products.keys().cloned().collect();
        let users = catalog.users.keys().cloned().collect();
        Sessions {
            rng: fastrand::Rng::with_seed(seed),
            products,
            users,
            clock_ms: start_ms,
            late_share,
            max_delay_ms,
            next_id: 0,
            prefix: format!("s{seed}"),
        }
    }

    /// The simulated clock: the event time of the last event made.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// The events of one session, in the order they happen.
    pub fn session(&mut self) -> Vec<Emitted> {
        let user = self.users[self.rng.usize(..self.users.len())].clone();
        let mut events = Vec::new();
        let mut cart: Vec<(String, u32)> = Vec::new();
        for _ in 0..self.rng.usize(1..=5) {
            let product = self.products[self.rng.usize(..self.products.len())].clone();
            events.push(self.event(&user, &product, Kind::View, 1));
            if self.rng.f64() < 0.35 {
                let quantity = self.rng.u32(1..=2);
                events.push(self.event(&user, &product, Kind::AddToCart, quantity));
                cart.push((product, quantity));
            }
        }
        if !cart.is_empty() && self.rng.f64() < 0.2 {
            let (product, quantity) = cart.remove(self.rng.usize(..cart.len()));
            events.push(self.event(&user, &product, Kind::RemoveFromCart, quantity));
        }
        if !cart.is_empty() && self.rng.f64() < 0.5 {
            for (product, quantity) in cart {
                events.push(self.event(&user, &product, Kind::Purchase, quantity));
            }
        }
        events
    }

    fn event(&mut self, user: &str, product: &str, kind: Kind, quantity: u32) -> Emitted {
        self.clock_ms += self.rng.i64(200..=3_000);
        self.next_id += 1;
        let delay_ms = if self.rng.f64() < self.late_share { self.rng.i64(1..=self.max_delay_ms) } else { 0 };
        Emitted {
            activity: Activity {
                event_id: format!("{}-{}", self.prefix, self.next_id),
                user_id: user.to_string(),
                product_id: product.to_string(),
                kind,
                quantity,
                event_time_ms: self.clock_ms,
            },
            delay_ms,
        }
    }
}
