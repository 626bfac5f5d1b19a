//! The order aggregate, as pure functions: what a command decides against the current state (`decide`), and how
//! an event changes that state (`evolve`). No I/O here: the write side (`store`) feeds these functions with what
//! it read from Kafka and appends what they return, and the tests call them directly (given events, when a
//! command, then these events or this rejection).

use serde::{Deserialize, Serialize};

/// The currency an order is in when nothing says otherwise: every order written before events carried a
/// currency (schema 1) was in euros.
pub const DEFAULT_CURRENCY: &str = "EUR";

// ANCHOR: commands
/// What a client asks of an order. A command may be refused; an event (below) is a fact that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Opens the order for a customer.
    PlaceOrder { customer_id: String },
    /// Adds `quantity` units of `sku` at `unit_price_cents` each, in `currency`.
    AddItem { sku: String, quantity: u32, unit_price_cents: u64, currency: String },
    /// Closes the order for changes: it is bought.
    ConfirmOrder,
    /// Calls the order off, before or after its confirmation.
    CancelOrder { reason: String },
}
// ANCHOR_END: commands

// ANCHOR: events
/// What happened to an order: the only thing stored. The state is whatever these events fold into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    OrderPlaced {
        customer_id: String,
    },
    /// `currency` is new in schema 2; schema 1 events are upcast to `DEFAULT_CURRENCY` when read.
    ItemAdded {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
        currency: String,
    },
    /// Carries the total it was confirmed at, so that readers need not add the items up again.
    OrderConfirmed {
        total_cents: u64,
    },
    OrderCancelled {
        reason: String,
    },
}
// ANCHOR_END: events

impl Event {
    /// The event's type as stored (`ORDER_PLACED`, …), for logs and snapshots of trails.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "ORDER_PLACED",
            Event::ItemAdded { .. } => "ITEM_ADDED",
            Event::OrderConfirmed { .. } => "ORDER_CONFIRMED",
            Event::OrderCancelled { .. } => "ORDER_CANCELLED",
        }
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// No event yet: the order does not exist.
    #[default]
    New,
    /// Placed, taking items.
    Open,
    Confirmed,
    Cancelled,
}

/// One line of an order: a SKU at one price. Adding the SKU again at that price adds to its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

// ANCHOR: state
/// An order as its events made it. `version` counts the events folded in: the state after event `n` has version
/// `n`, and a command is decided against one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub version: u64,
    pub status: Status,
    pub customer_id: Option<String>,
    /// Set by the first item; every later item must be in it.
    pub currency: Option<String>,
    pub lines: Vec<Line>,
    pub total_cents: u64,
}
// ANCHOR_END: state

/// Why `decide` refused a command. The messages are what the service answers, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "rejection", rename_all = "snake_case")]
pub enum Rejection {
    #[error("the order does not exist yet: place it first")]
    NotPlaced,
    #[error("the order is already placed")]
    AlreadyPlaced,
    #[error("the order is {status:?}: it takes no more changes")]
    Closed { status: Status },
    #[error("an order without items cannot be confirmed")]
    Empty,
    #[error("the order is in {order}, not {item}")]
    CurrencyMismatch { order: String, item: String },
    #[error("invalid command: {0}")]
    Invalid(String),
}

// EXERCISE: Decide what `command` does to an order in `state`: the events it causes (in order), or why it is
// refused. The rules:
// - `PlaceOrder` opens a new order for a non-blank customer id; an order exists only once.
// - `AddItem` needs an open order, a non-blank SKU, a quantity of at least 1, and the order's currency (the first
//   item sets it).
// - `ConfirmOrder` needs an open order with at least one item; its event carries the order's total.
// - `CancelOrder` works on an open or a confirmed order, and needs a non-blank reason.
// - Asking for what is already so (confirming a confirmed order, cancelling a cancelled one) is no error and
//   causes no event: a client that retries a command must not get an error for its own first attempt.
// - Anything else on a confirmed or cancelled order is `Closed`; anything but `PlaceOrder` on a new one is
//   `NotPlaced`.
// `decide` reads the state only: it never changes it (`evolve` does). The tests give a history of events, send
// one command and compare the events or the rejection, for every rule above.
// ANCHOR: decide
/// The events `command` causes on an order in `state`, or why it is refused.
pub fn decide(state: &OrderState, command: &Command) -> Result<Vec<Event>, Rejection> {
    let blank = |text: &str| text.trim().is_empty();
    match (state.status, command) {
        (Status::New, Command::PlaceOrder { customer_id }) => {
            if blank(customer_id) {
                return Err(Rejection::Invalid("a blank customer id".into()));
            }
            Ok(vec![Event::OrderPlaced { customer_id: customer_id.clone() }])
        }
        (_, Command::PlaceOrder { .. }) => Err(Rejection::AlreadyPlaced),
        (Status::New, _) => Err(Rejection::NotPlaced),
        (Status::Confirmed, Command::ConfirmOrder) | (Status::Cancelled, Command::CancelOrder { .. }) => Ok(vec![]),
        (Status::Open | Status::Confirmed, Command::CancelOrder { reason }) => {
            if blank(reason) {
                return Err(Rejection::Invalid("a cancellation needs a reason".into()));
            }
            Ok(vec![Event::OrderCancelled { reason: reason.clone() }])
        }
        (status @ (Status::Confirmed | Status::Cancelled), _) => Err(Rejection::Closed { status }),
        (Status::Open, Command::ConfirmOrder) => {
            if state.lines.is_empty() {
                return Err(Rejection::Empty);
            }
            Ok(vec![Event::OrderConfirmed { total_cents: state.total_cents }])
        }
        (Status::Open, Command::AddItem { sku, quantity, unit_price_cents, currency }) => {
            if blank(sku) {
                return Err(Rejection::Invalid("a blank SKU".into()));
            }
            if *quantity == 0 {
                return Err(Rejection::Invalid("a quantity of 0".into()));
            }
            if let Some(order) = &state.currency
                && order != currency
            {
                return Err(Rejection::CurrencyMismatch { order: order.clone(), item: currency.clone() });
            }
            Ok(vec![Event::ItemAdded {
                sku: sku.clone(),
                quantity: *quantity,
                unit_price_cents: *unit_price_cents,
                currency: currency.clone(),
            }])
        }
    }
}
// ANCHOR_END: decide

// EXERCISE: Fold one event into the state: the state after `event`, one version further. Every event counts:
// `OrderPlaced` opens the order for its customer; `ItemAdded` sets the currency if there is none yet, adds to the
// line of that SKU at that price (or starts one, after the others) and to the total; `OrderConfirmed` and
// `OrderCancelled` set the status. `evolve` never refuses an event: it happened, and `decide` made sure it made
// sense when it did. The tests fold histories and compare whole states, and a property test checks that for any
// sequence of commands, deciding and evolving one at a time gives the state a full replay gives.
// ANCHOR: evolve
/// The state after `event`.
pub fn evolve(mut state: OrderState, event: &Event) -> OrderState {
    state.version += 1;
    match event {
        Event::OrderPlaced { customer_id } => {
            state.status = Status::Open;
            state.customer_id = Some(customer_id.clone());
        }
        Event::ItemAdded { sku, quantity, unit_price_cents, currency } => {
            state.currency.get_or_insert_with(|| currency.clone());
            match state.lines.iter_mut().find(|line| &line.sku == sku && line.unit_price_cents == *unit_price_cents) {
                Some(line) => line.quantity += quantity,
                None => state.lines.push(Line {
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price_cents: *unit_price_cents,
                }),
            }
            state.total_cents += u64::from(*quantity) * unit_price_cents;
        }
        Event::OrderConfirmed { .. } => state.status = Status::Confirmed,
        Event::OrderCancelled { .. } => state.status = Status::Cancelled,
    }
    state
}
// ANCHOR_END: evolve

/// The state `events` fold into, from nothing: a full replay.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> OrderState {
    events.into_iter().fold(OrderState::default(), evolve)
}
