//! The order saga as a state machine: pure functions, no Kafka. The order service keeps one [`Saga`] per order,
//! feeds it every reply that names the order and every time-out, and sends what [`transition`] decides.
//!
//! ```text
//!            STOCK_RESERVED           PAYMENT_CHARGED            STOCK_COMMITTED
//!  PENDING ─────────────────▶ RESERVED ─────────────────▶ PAID ─────────────────▶ CONFIRMED
//!     │ OUT_OF_STOCK             │ PAYMENT_DECLINED or       │ time-out: COMMIT_STOCK again
//!     │                          │ time-out                  │ (past the payment, only forward)
//!     ▼                          ▼
//!  CANCELLED ◀──────────── COMPENSATING ◀── PENDING's time-out
//!           every compensation      RELEASE_STOCK (and REFUND_PAYMENT after a payment time-out),
//!           acknowledged            sent again on each time-out until acknowledged
//! ```
//!
//! The payment is the saga's *pivot*: before it, every step can be undone (stock released); after it, the saga
//! only goes forward — committing stock is retried, never undone, because a refund after a charge the customer saw
//! is worse than a retry.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::messages::{Command, Notification, OrderEvent, Outgoing, Participant, PlaceOrder, Reply};

// ANCHOR: status
/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting for the inventory to reserve the stock.
    Pending,
    /// Stock reserved; waiting for the payment.
    Reserved,
    /// Paid; waiting for the inventory to commit the stock.
    Paid,
    /// Undoing what was done; waiting for the compensations in [`Saga::compensating`] to be acknowledged.
    Compensating,
    /// Done: stock sold, card charged, customer told.
    Confirmed,
    /// Done: nothing reserved, nothing charged, customer told.
    Cancelled,
}
// ANCHOR_END: status

impl Status {
    /// Whether the saga is over: nothing moves it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Confirmed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Status::Pending => "PENDING",
            Status::Reserved => "RESERVED",
            Status::Paid => "PAID",
            Status::Compensating => "COMPENSATING",
            Status::Confirmed => "CONFIRMED",
            Status::Cancelled => "CANCELLED",
        };
        f.write_str(name)
    }
}

// ANCHOR: cancel_reason
/// Why an order was cancelled: what its customer is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    OutOfStock {
        sku: String,
        requested: u32,
        available: u32,
    },
    PaymentDeclined {
        reason: String,
    },
    /// `participant` did not answer within the step's time limit.
    NoAnswer {
        participant: Participant,
    },
}
// ANCHOR_END: cancel_reason

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::OutOfStock { sku, requested, available } => {
                write!(f, "out of stock: {requested} × {sku} requested, {available} available")
            }
            CancelReason::PaymentDeclined { reason } => write!(f, "payment declined: {reason}"),
            CancelReason::NoAnswer { participant: Participant::Inventory } => {
                f.write_str("the inventory did not answer in time")
            }
            CancelReason::NoAnswer { participant: Participant::Payment } => {
                f.write_str("the payment service did not answer in time")
            }
        }
    }
}

// ANCHOR: saga
/// One order's saga, as the order service keeps it (and persists it in `orders.sagas` after every change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub order: PlaceOrder,
    pub status: Status,
    /// In `Compensating`: the participants whose compensation has not been acknowledged yet.
    pub compensating: BTreeSet<Participant>,
    /// Why the saga is compensating or was cancelled.
    pub reason: Option<CancelReason>,
}
// ANCHOR_END: saga

impl Saga {
    pub fn order_id(&self) -> &str {
        &self.order.order_id
    }
}

// ANCHOR: input
/// What happens to a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Input {
    /// A participant answered a command about this order.
    Reply { reply: Reply },
    /// The step the saga waits for did not answer within its time limit.
    Timeout,
}

/// What a saga does about an input: its new state, and what to send — together, or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub saga: Saga,
    pub outgoing: Vec<Outgoing>,
}
// ANCHOR_END: input

impl Decision {
    /// Nothing changes and nothing is sent: a duplicate or late reply, or an input a finished saga ignores.
    pub fn unchanged(saga: &Saga) -> Decision {
        Decision { saga: saga.clone(), outgoing: Vec::new() }
    }
}

/// A new saga for `order`: `PENDING`, announcing the order and asking the inventory to reserve its items.
pub fn start(order: PlaceOrder) -> Decision {
    let outgoing = vec![
        Outgoing::Event(OrderEvent::OrderPlaced {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            total_cents: order.total_cents(),
        }),
        Outgoing::Command(Command::ReserveStock { order_id: order.order_id.clone(), items: order.items.clone() }),
    ];
    let saga = Saga { order, status: Status::Pending, compensating: BTreeSet::new(), reason: None };
    Decision { saga, outgoing }
}

/// The compensation that undoes `participant`'s step for `order_id`.
pub fn compensation(participant: Participant, order_id: &str) -> Command {
    match participant {
        Participant::Inventory => Command::ReleaseStock { order_id: order_id.to_string() },
        Participant::Payment => Command::RefundPayment { order_id: order_id.to_string() },
    }
}

/// What a saga sends when it ends `CONFIRMED`: the event, and the customer's notification (`order confirmed`).
pub fn confirmed(order: &PlaceOrder) -> Vec<Outgoing> {
    vec![
        Outgoing::Event(OrderEvent::OrderConfirmed {
            order_id: order.order_id.clone(),
            total_cents: order.total_cents(),
        }),
        Outgoing::Notify(Notification {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            message: "order confirmed".into(),
        }),
    ]
}

/// What a saga sends when it ends `CANCELLED` for `reason`: the event, and the customer's notification
/// (`order cancelled: <reason>`).
pub fn cancelled(order: &PlaceOrder, reason: &CancelReason) -> Vec<Outgoing> {
    vec![
        Outgoing::Event(OrderEvent::OrderCancelled { order_id: order.order_id.clone(), reason: reason.to_string() }),
        Outgoing::Notify(Notification {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            message: format!("order cancelled: {reason}"),
        }),
    ]
}

// EXERCISE: Decide what `input` does to `saga`: its next state and what to send (commands, and the `confirmed` or
// `cancelled` messages when it ends). The happy path is PENDING → RESERVED → PAID → CONFIRMED: the inventory
// reserves, then the payment service charges the order's total to its card, then the inventory commits the stock.
// Failures, and what must hold:
// - Out of stock while PENDING: nothing was reserved, so nothing to undo — CANCELLED at once.
// - Anything that fails after a step may have taken effect is undone: COMPENSATING, with the reason, sending each
//   undone step's `compensation` and waiting for every one of them to be acknowledged (STOCK_RELEASED,
//   PAYMENT_REFUNDED) before the saga is CANCELLED. A declined payment took no money; a payment that did not
//   answer in time may have — and so may a reservation that did not answer in time.
// - After the payment (PAID) nothing is undone: a time-out sends the stock commit again.
// - In COMPENSATING, a time-out sends again every compensation not yet acknowledged.
// - A reply the saga is not waiting for (a duplicate, a late answer, anything after the end) changes nothing and
//   sends nothing. Replies for another order are never given to this function.
// The tests run every state against every reply and a time-out, and check what is sent, word for word.
// ANCHOR: transition
/// The next state of `saga` after `input`, and what to send.
pub fn transition(saga: &Saga, input: &Input) -> Decision {
    let order = &saga.order;
    let id = order.order_id.clone();
    let mut next = saga.clone();
    let outgoing = match (saga.status, input) {
        (Status::Pending, Input::Reply { reply: Reply::StockReserved { .. } }) => {
            next.status = Status::Reserved;
            vec![Outgoing::Command(Command::ChargePayment {
                order_id: id,
                customer_id: order.customer_id.clone(),
                card: order.card.clone(),
                amount_cents: order.total_cents(),
            })]
        }
        (Status::Pending, Input::Reply { reply: Reply::OutOfStock { sku, requested, available, .. } }) => {
            let reason = CancelReason::OutOfStock { sku: sku.clone(), requested: *requested, available: *available };
            next.status = Status::Cancelled;
            let outgoing = cancelled(order, &reason);
            next.reason = Some(reason);
            outgoing
        }
        (Status::Pending, Input::Timeout) => compensate(
            &mut next,
            CancelReason::NoAnswer { participant: Participant::Inventory },
            &[Participant::Inventory],
        ),
        (Status::Reserved, Input::Reply { reply: Reply::PaymentCharged { .. } }) => {
            next.status = Status::Paid;
            vec![Outgoing::Command(Command::CommitStock { order_id: id })]
        }
        (Status::Reserved, Input::Reply { reply: Reply::PaymentDeclined { reason, .. } }) => {
            compensate(&mut next, CancelReason::PaymentDeclined { reason: reason.clone() }, &[Participant::Inventory])
        }
        (Status::Reserved, Input::Timeout) => compensate(
            &mut next,
            CancelReason::NoAnswer { participant: Participant::Payment },
            &[Participant::Payment, Participant::Inventory],
        ),
        (Status::Paid, Input::Reply { reply: Reply::StockCommitted { .. } }) => {
            next.status = Status::Confirmed;
            confirmed(order)
        }
        (Status::Paid, Input::Timeout) => vec![Outgoing::Command(Command::CommitStock { order_id: id })],
        (Status::Compensating, Input::Reply { reply }) => {
            let acknowledged = match reply {
                Reply::StockReleased { .. } => Participant::Inventory,
                Reply::PaymentRefunded { .. } => Participant::Payment,
                _ => return Decision::unchanged(saga),
            };
            if !next.compensating.remove(&acknowledged) {
                return Decision::unchanged(saga);
            }
            if !next.compensating.is_empty() {
                return Decision { saga: next, outgoing: Vec::new() };
            }
            next.status = Status::Cancelled;
            match &next.reason {
                Some(reason) => cancelled(order, reason),
                None => Vec::new(),
            }
        }
        (Status::Compensating, Input::Timeout) => {
            next.compensating.iter().map(|p| Outgoing::Command(compensation(*p, &id))).collect()
        }
        _ => return Decision::unchanged(saga),
    };
    Decision { saga: next, outgoing }
}
// ANCHOR_END: transition

// ANCHOR: compensate
/// Moves `saga` to `COMPENSATING` for `reason`, waiting for `undo`'s compensations, and returns them to send.
fn compensate(saga: &mut Saga, reason: CancelReason, undo: &[Participant]) -> Vec<Outgoing> {
    saga.status = Status::Compensating;
    saga.reason = Some(reason);
    saga.compensating = undo.iter().copied().collect();
    undo.iter().map(|p| Outgoing::Command(compensation(*p, &saga.order.order_id))).collect()
}
// ANCHOR_END: compensate
