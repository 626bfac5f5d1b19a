//! The payment service's logic: a card gateway (which the story and the tests script) and what it charged per
//! order. The same rule of conduct as the inventory's: a command may come twice or late, so the service answers
//! from what it recorded per order — and a refund that overtakes its charge (the order service gave up waiting for
//! the payment, and refunded) must stop that charge from ever happening.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::messages::{Command, Reply};

/// The card a test gateway always declines (as card networks' test numbers do).
pub const DECLINED_CARD: &str = "4000-0000-0000-0002";

// ANCHOR: gateway
/// Whether a charge goes through: the card network, as far as the payment service can tell.
pub trait Gateway {
    /// Charges `amount_cents` to `card`: `Ok` or why it was declined.
    fn charge(&mut self, card: &str, amount_cents: u64) -> Result<(), String>;
}
// ANCHOR_END: gateway

/// The story's and tests' card network: declines [`DECLINED_CARD`] ("card declined") and any charge over
/// `limit_cents` ("over the card's limit"); counts the charges it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestGateway {
    pub limit_cents: u64,
    pub charges: u32,
}

impl Default for TestGateway {
    fn default() -> Self {
        TestGateway { limit_cents: 100_000_000, charges: 0 }
    }
}

impl Gateway for TestGateway {
    fn charge(&mut self, card: &str, amount_cents: u64) -> Result<(), String> {
        if card == DECLINED_CARD {
            return Err("card declined".into());
        }
        if amount_cents > self.limit_cents {
            return Err("over the card's limit".into());
        }
        self.charges += 1;
        Ok(())
    }
}

// ANCHOR: payments
/// What the payment service did for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Payment {
    Charged {
        amount_cents: u64,
    },
    Declined {
        reason: String,
    },
    /// Given back (`amount_cents`; 0 when the refund came before any charge): the order can be charged no more.
    Refunded {
        amount_cents: u64,
    },
}

/// The payment service's records: per order, and the money in and out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payments {
    pub orders: BTreeMap<String, Payment>,
    pub charged_cents: u64,
    pub refunded_cents: u64,
}
// ANCHOR_END: payments

impl Payments {
    // EXERCISE: Carry out a payment command (CHARGE_PAYMENT, REFUND_PAYMENT) through `gateway` and answer it. As
    // with the inventory, any command may come again or late; a repeated command gets its first answer and the card
    // is never charged twice. Rules:
    // - A charge asks the gateway once per order: PAYMENT_CHARGED (adding to `charged_cents`) or PAYMENT_DECLINED
    //   with the gateway's reason.
    // - A refund gives back what the order was charged (adding to `refunded_cents`), and answers PAYMENT_REFUNDED
    //   with that amount — 0 for an order that was declined or never charged. From then on the order can be
    //   charged no more: a charge that arrives after its refund is not sent to the gateway, and is answered
    //   PAYMENT_REFUNDED again.
    // - `self.orders` records what was done per order; `charged_cents - refunded_cents` is the money kept.
    // The tests count the gateway's calls, and send every command once, twice and out of order.
    // Inventory commands are never given to this function: answer them with `None`.
    // ANCHOR: handle_payment
    /// Carries out `command` (a payment command) through `gateway` and answers it; `None` for another
    /// participant's command.
    pub fn handle_payment_command(&mut self, command: &Command, gateway: &mut dyn Gateway) -> Option<Reply> {
        let reply = match command {
            Command::ChargePayment { order_id, card, amount_cents, .. } => match self.orders.get(order_id) {
                Some(Payment::Charged { amount_cents }) => {
                    Reply::PaymentCharged { order_id: order_id.clone(), amount_cents: *amount_cents }
                }
                Some(Payment::Declined { reason }) => {
                    Reply::PaymentDeclined { order_id: order_id.clone(), reason: reason.clone() }
                }
                Some(Payment::Refunded { amount_cents }) => {
                    Reply::PaymentRefunded { order_id: order_id.clone(), amount_cents: *amount_cents }
                }
                None => match gateway.charge(card, *amount_cents) {
                    Ok(()) => {
                        self.charged_cents += amount_cents;
                        self.orders.insert(order_id.clone(), Payment::Charged { amount_cents: *amount_cents });
                        Reply::PaymentCharged { order_id: order_id.clone(), amount_cents: *amount_cents }
                    }
                    Err(reason) => {
                        self.orders.insert(order_id.clone(), Payment::Declined { reason: reason.clone() });
                        Reply::PaymentDeclined { order_id: order_id.clone(), reason }
                    }
                },
            },
            Command::RefundPayment { order_id } => {
                let amount_cents = match self.orders.get(order_id) {
                    Some(Payment::Refunded { amount_cents }) => *amount_cents,
                    Some(Payment::Charged { amount_cents }) => {
                        self.refunded_cents += amount_cents;
                        *amount_cents
                    }
                    Some(Payment::Declined { .. }) | None => 0,
                };
                self.orders.insert(order_id.clone(), Payment::Refunded { amount_cents });
                Reply::PaymentRefunded { order_id: order_id.clone(), amount_cents }
            }
            Command::ReserveStock { .. } | Command::ReleaseStock { .. } | Command::CommitStock { .. } => return None,
        };
        Some(reply)
    }
    // ANCHOR_END: handle_payment
}
