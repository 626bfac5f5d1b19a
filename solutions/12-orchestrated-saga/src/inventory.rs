//! The inventory service's logic: stock per SKU, and what it did for each order. Its one rule of conduct in a saga:
//! every command can arrive twice (the order service sends again after a time-out; Kafka redelivers after a
//! crash), and late (a reservation can arrive after the order service gave up on it and released). So the service
//! remembers, per order, what it did, and answers from that memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::messages::{Command, Item, Reply};

// ANCHOR: inventory
/// One SKU's units. `available + reserved + sold` never changes: stock is moved, never made or lost.
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
    /// The items are set aside.
    Reserved { items: Vec<Item> },
    /// Refused: not enough of `sku`. Nothing was set aside.
    Refused { sku: String, requested: u32, available: u32 },
    /// Given back — or released before anything was reserved: a reservation that comes later is refused.
    Released,
    /// Sold.
    Committed { items: Vec<Item> },
}

/// The inventory: stock per SKU, and a record per order it was asked about.
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

    // EXERCISE: Carry out an inventory command (RESERVE_STOCK, RELEASE_STOCK, COMMIT_STOCK) and answer it. Every
    // command may come more than once and in any order; a repeated command gets the answer its first copy got, and
    // nothing is applied twice. Rules:
    // - A reservation is all or nothing: every SKU of the order has enough `available` units (an order's lines of
    //   one SKU count together), or nothing is set aside and the answer is OUT_OF_STOCK naming the first SKU short
    //   (SKUs taken in the order of their first line), with what the order asks of it (`requested`) and what is
    //   `available`. Units move from `available` to `reserved`; a commit moves them from `reserved` to `sold`; a
    //   release moves them back to `available`.
    // - A release for an order that reserved nothing (not yet, or refused) is acknowledged all the same, and from
    //   then on that order can reserve nothing: a RESERVE_STOCK arriving after its release is answered
    //   STOCK_RELEASED, and sets nothing aside.
    // - A committed order stays sold: a release after the commit changes nothing and answers STOCK_COMMITTED; a
    //   commit of an order that holds no reservation changes nothing and answers with what the order's record says
    //   (or STOCK_RELEASED, for an order the inventory never heard of).
    // - `self.orders` records what was done per order; `available + reserved + sold` of each SKU never changes.
    // The tests send every command once, twice, and out of order, and check the stock and the answers.
    // Payment commands are never given to this function: answer them with `None`.
    // ANCHOR: handle_inventory
    /// Carries out `command` (an inventory command) and answers it; `None` for a command of another participant.
    pub fn handle_stock_command(&mut self, command: &Command) -> Option<Reply> {
        let reply = match command {
            Command::ReserveStock { order_id, items } => match self.orders.get(order_id) {
                Some(Reservation::Reserved { .. } | Reservation::Committed { .. }) => {
                    Reply::StockReserved { order_id: order_id.clone() }
                }
                Some(Reservation::Refused { sku, requested, available }) => Reply::OutOfStock {
                    order_id: order_id.clone(),
                    sku: sku.clone(),
                    requested: *requested,
                    available: *available,
                },
                Some(Reservation::Released) => Reply::StockReleased { order_id: order_id.clone() },
                None => {
                    // Lines of one SKU count together: two lines of 3 need 6.
                    let mut needed: Vec<(&str, u32)> = Vec::new();
                    for item in items {
                        match needed.iter_mut().find(|(sku, _)| *sku == item.sku) {
                            Some((_, quantity)) => *quantity += item.quantity,
                            None => needed.push((&item.sku, item.quantity)),
                        }
                    }
                    let short = needed.iter().find(|(sku, quantity)| self.stock_of(sku).available < *quantity);
                    if let Some((sku, requested)) = short {
                        let (sku, requested) = (sku.to_string(), *requested);
                        let available = self.stock_of(&sku).available;
                        self.orders
                            .insert(order_id.clone(), Reservation::Refused { sku: sku.clone(), requested, available });
                        Reply::OutOfStock { order_id: order_id.clone(), sku, requested, available }
                    } else {
                        for item in items {
                            let stock = self.stock.entry(item.sku.clone()).or_default();
                            stock.available -= item.quantity;
                            stock.reserved += item.quantity;
                        }
                        self.orders.insert(order_id.clone(), Reservation::Reserved { items: items.clone() });
                        Reply::StockReserved { order_id: order_id.clone() }
                    }
                }
            },
            Command::ReleaseStock { order_id } => match self.orders.get(order_id).cloned() {
                Some(Reservation::Committed { .. }) => Reply::StockCommitted { order_id: order_id.clone() },
                Some(Reservation::Reserved { items }) => {
                    for item in &items {
                        let stock = self.stock.entry(item.sku.clone()).or_default();
                        stock.reserved -= item.quantity;
                        stock.available += item.quantity;
                    }
                    self.orders.insert(order_id.clone(), Reservation::Released);
                    Reply::StockReleased { order_id: order_id.clone() }
                }
                Some(Reservation::Released | Reservation::Refused { .. }) | None => {
                    self.orders.insert(order_id.clone(), Reservation::Released);
                    Reply::StockReleased { order_id: order_id.clone() }
                }
            },
            Command::CommitStock { order_id } => match self.orders.get(order_id).cloned() {
                Some(Reservation::Reserved { items }) => {
                    for item in &items {
                        let stock = self.stock.entry(item.sku.clone()).or_default();
                        stock.reserved -= item.quantity;
                        stock.sold += item.quantity;
                    }
                    self.orders.insert(order_id.clone(), Reservation::Committed { items });
                    Reply::StockCommitted { order_id: order_id.clone() }
                }
                Some(Reservation::Committed { .. }) => Reply::StockCommitted { order_id: order_id.clone() },
                Some(Reservation::Refused { sku, requested, available }) => {
                    Reply::OutOfStock { order_id: order_id.clone(), sku, requested, available }
                }
                Some(Reservation::Released) | None => Reply::StockReleased { order_id: order_id.clone() },
            },
            Command::ChargePayment { .. } | Command::RefundPayment { .. } => return None,
        };
        Some(reply)
    }
    // ANCHOR_END: handle_inventory
}
