//! The four services of the saga as [`Stage`]s of the engine: the order service (the orchestrator), the inventory,
//! the payment service and the notification service. Each is an independent consumer group with its own
//! transactional id and changelog; the story runs them as threads of one process, and `--service NAME` runs one
//! alone, as its own process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::engine::{Input, Output, Stage, changes};
use crate::inventory::{Inventory, Reservation, Stock};
use crate::messages::{Command, Notification, Outgoing, Participant, PlaceOrder, Reply};
use crate::payment::{Gateway, Payment, Payments, TestGateway};
use crate::saga::{self, Decision, Saga, Status};

/// The saga's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaTopics {
    /// Clients' `PlaceOrder`s: what starts a saga.
    pub order_requests: String,
    /// What happened to each order: placed, confirmed, cancelled.
    pub order_events: String,
    /// The order service's changelog: the latest state of each saga (compacted).
    pub sagas: String,
    pub inventory_commands: String,
    pub inventory_responses: String,
    /// The inventory's changelog: stock per SKU, what was done per order (compacted).
    pub inventory_state: String,
    pub payment_commands: String,
    pub payment_responses: String,
    /// The payment service's changelog (compacted).
    pub payment_state: String,
    pub notifications: String,
    /// The notification service's changelog: what it has sent (compacted).
    pub notification_state: String,
    /// Notifications that could not be sent, with why.
    pub notifications_dlq: String,
    /// Inputs of the other services that are not what their topic carries.
    pub dead_letters: String,
}

impl SagaTopics {
    /// The manifest's topics (`kit::topics::SAGA_TOPICS`): what the story and `--service` use.
    pub fn manifest() -> SagaTopics {
        use kit::topics::*;
        SagaTopics {
            order_requests: ORDERS_REQUESTS.name.into(),
            order_events: ORDERS_EVENTS.name.into(),
            sagas: ORDERS_SAGAS.name.into(),
            inventory_commands: INVENTORY_COMMANDS.name.into(),
            inventory_responses: INVENTORY_RESPONSES.name.into(),
            inventory_state: INVENTORY_STATE.name.into(),
            payment_commands: PAYMENTS_COMMANDS.name.into(),
            payment_responses: PAYMENTS_RESPONSES.name.into(),
            payment_state: PAYMENTS_STATE.name.into(),
            notifications: NOTIFICATIONS_REQUESTS.name.into(),
            notification_state: NOTIFICATIONS_STATE.name.into(),
            notifications_dlq: NOTIFICATIONS_DLQ.name.into(),
            dead_letters: SAGA_DLQ.name.into(),
        }
    }

    /// The topic of `participant`'s commands.
    pub fn commands_for(&self, participant: Participant) -> &str {
        match participant {
            Participant::Inventory => &self.inventory_commands,
            Participant::Payment => &self.payment_commands,
        }
    }

    /// Every topic, with whether it is a changelog (compacted) and its partitions: what a deployment creates.
    pub fn all(&self) -> Vec<(&str, bool, i32)> {
        vec![
            (self.order_requests.as_str(), false, 3),
            (&self.order_events, false, 3),
            (&self.sagas, true, 3),
            (&self.inventory_commands, false, 3),
            (&self.inventory_responses, false, 3),
            (&self.inventory_state, true, 3),
            (&self.payment_commands, false, 3),
            (&self.payment_responses, false, 3),
            (&self.payment_state, true, 3),
            (&self.notifications, false, 3),
            (&self.notification_state, true, 3),
            (&self.notifications_dlq, false, 1),
            (&self.dead_letters, false, 1),
        ]
    }
}

/// One step of a saga's trail: what came, from which state to which, and what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailStep {
    /// `PLACE_ORDER`, a reply's name (`STOCK_RESERVED`, …) or `TIMEOUT`.
    pub input: String,
    pub from: Option<Status>,
    pub to: Status,
    /// What was sent: commands, events and notifications by name (`RESERVE_STOCK`, `ORDER_PLACED`, `NOTIFY`).
    pub sent: Vec<String>,
}

/// A saga as the order service keeps it: the state machine's saga, when its current step times out, and its trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaRecord {
    pub saga: Saga,
    /// When the step the saga waits for times out (ms since the epoch); `None` once it has ended.
    pub deadline_ms: Option<u64>,
    pub trail: Vec<TrailStep>,
}

/// The name of what an outgoing message is (`RESERVE_STOCK`, `ORDER_CONFIRMED`, `NOTIFY`).
pub fn outgoing_name(outgoing: &Outgoing) -> String {
    match outgoing {
        Outgoing::Command(command) => command.kind().to_string(),
        Outgoing::Event(event) => {
            let value = serde_json::to_value(event).unwrap_or_default();
            value["type"].as_str().unwrap_or("EVENT").to_string()
        }
        Outgoing::Notify(_) => "NOTIFY".to_string(),
    }
}

/// The order service: the saga's orchestrator.
#[derive(Debug, Clone)]
pub struct OrderService {
    pub topics: SagaTopics,
    /// How long a step may take before the saga acts on its silence.
    pub step_timeout: Duration,
    pub sagas: BTreeMap<String, SagaRecord>,
}

impl OrderService {
    pub fn new(topics: SagaTopics, step_timeout: Duration) -> OrderService {
        OrderService { topics, step_timeout, sagas: BTreeMap::new() }
    }

    /// Records `decision`, reached from `input` at `now_ms`, and returns what to write: its messages and the saga's
    /// new record in the changelog — all in the engine's transaction.
    fn apply(&mut self, input: &str, from: Option<Status>, decision: Decision, now_ms: u64) -> Vec<Output> {
        let order_id = decision.saga.order_id().to_string();
        let before = self.sagas.get(&order_id);
        if before.is_some_and(|r| r.saga == decision.saga) && decision.outgoing.is_empty() {
            return Vec::new();
        }
        let mut record =
            before.cloned().unwrap_or(SagaRecord { saga: decision.saga.clone(), deadline_ms: None, trail: Vec::new() });
        record.trail.push(TrailStep {
            input: input.to_string(),
            from,
            to: decision.saga.status,
            sent: decision.outgoing.iter().map(outgoing_name).collect(),
        });
        record.saga = decision.saga;
        record.deadline_ms = (!record.saga.status.is_terminal()).then(|| now_ms + self.step_timeout.as_millis() as u64);
        let mut outputs: Vec<Output> = decision.outgoing.iter().map(|o| self.output(&order_id, o)).collect();
        outputs.push(Output::json(&self.topics.sagas, &order_id, &record));
        self.sagas.insert(order_id, record);
        outputs
    }

    fn output(&self, order_id: &str, outgoing: &Outgoing) -> Output {
        match outgoing {
            Outgoing::Command(command) => {
                Output::json(self.topics.commands_for(command.participant()), order_id, command)
            }
            Outgoing::Event(event) => Output::json(&self.topics.order_events, order_id, event),
            Outgoing::Notify(notification) => Output::json(&self.topics.notifications, order_id, notification),
        }
    }
}

impl Stage for OrderService {
    fn name(&self) -> &str {
        "order"
    }

    fn inputs(&self) -> Vec<String> {
        vec![
            self.topics.order_requests.clone(),
            self.topics.inventory_responses.clone(),
            self.topics.payment_responses.clone(),
        ]
    }

    fn changelog(&self) -> &str {
        &self.topics.sagas
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        match payload {
            Some(payload) => {
                let record: SagaRecord = serde_json::from_slice(payload).context("a saga record")?;
                self.sagas.insert(key.to_string(), record);
            }
            None => {
                self.sagas.remove(key);
            }
        }
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, now_ms: u64) -> anyhow::Result<Vec<Output>> {
        if input.topic == self.topics.order_requests {
            let order: PlaceOrder = serde_json::from_slice(input.payload).context("not a PlaceOrder")?;
            anyhow::ensure!(!order.items.is_empty(), "order {} has no items", order.order_id);
            if self.sagas.contains_key(&order.order_id) {
                // The client sent it again: the saga is under way already.
                return Ok(Vec::new());
            }
            return Ok(self.apply("PLACE_ORDER", None, saga::start(order), now_ms));
        }
        let reply: Reply = serde_json::from_slice(input.payload).context("not a participant's reply")?;
        let Some(record) = self.sagas.get(reply.order_id()) else {
            tracing::warn!(order_id = reply.order_id(), kind = reply.kind(), "a reply for no known saga, ignored");
            return Ok(Vec::new());
        };
        let from = record.saga.status;
        let decision = saga::transition(&record.saga, &saga::Input::Reply { reply: reply.clone() });
        Ok(self.apply(reply.kind(), Some(from), decision, now_ms))
    }

    fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let due: Vec<String> = self
            .sagas
            .iter()
            .filter(|(_, r)| r.deadline_ms.is_some_and(|d| d <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        let mut outputs = Vec::new();
        for order_id in due {
            let record = &self.sagas[&order_id];
            let from = record.saga.status;
            let decision = saga::transition(&record.saga, &saga::Input::Timeout);
            let mut written = self.apply("TIMEOUT", Some(from), decision, now_ms);
            if written.is_empty() {
                // Nothing to do on this time-out (a learner's transition may say so): wait another step's time.
                if let Some(record) = self.sagas.get_mut(&order_id) {
                    record.deadline_ms = Some(now_ms + self.step_timeout.as_millis() as u64);
                    written.push(Output::json(&self.topics.sagas, &order_id, &*record));
                }
            }
            outputs.append(&mut written);
        }
        outputs
    }
}

/// Decodes a command of a participant's topic.
fn command(input: &Input<'_>) -> anyhow::Result<Command> {
    serde_json::from_slice(input.payload).context("not a saga command")
}

/// The inventory service.
#[derive(Debug, Clone)]
pub struct InventoryService {
    pub topics: SagaTopics,
    pub inventory: Inventory,
}

impl InventoryService {
    /// An inventory service whose stock starts as `initial` where its changelog says nothing else.
    pub fn new(topics: SagaTopics, initial: Inventory) -> InventoryService {
        InventoryService { topics, inventory: initial }
    }
}

impl Stage for InventoryService {
    fn name(&self) -> &str {
        "inventory"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.inventory_commands.clone()]
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
        let command = command(&input)?;
        let before = self.inventory.clone();
        let reply = self
            .inventory
            .handle_stock_command(&command)
            .ok_or_else(|| anyhow::anyhow!("{} is not an inventory command", command.kind()))?;
        let mut outputs = vec![Output::json(&self.topics.inventory_responses, command.order_id(), &reply)];
        let topic = &self.topics.inventory_state;
        outputs.extend(changes(topic, "stock/", &before.stock, &self.inventory.stock));
        outputs.extend(changes(topic, "order/", &before.orders, &self.inventory.orders));
        Ok(outputs)
    }
}

/// The payment service, with the card network it charges through.
#[derive(Debug, Clone)]
pub struct PaymentService {
    pub topics: SagaTopics,
    pub payments: Payments,
    pub gateway: TestGateway,
}

/// The payment service's money, as its changelog keeps it (key `totals`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub charged_cents: u64,
    pub refunded_cents: u64,
}

impl PaymentService {
    pub fn new(topics: SagaTopics, gateway: TestGateway) -> PaymentService {
        PaymentService { topics, payments: Payments::default(), gateway }
    }
}

impl Stage for PaymentService {
    fn name(&self) -> &str {
        "payment"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.payment_commands.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.payment_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        if key == "totals" {
            let totals: Totals = payload.map(serde_json::from_slice).transpose()?.unwrap_or_default();
            self.payments.charged_cents = totals.charged_cents;
            self.payments.refunded_cents = totals.refunded_cents;
        } else if let Some(order_id) = key.strip_prefix("order/") {
            match payload {
                Some(p) => self.payments.orders.insert(order_id.into(), serde_json::from_slice::<Payment>(p)?),
                None => self.payments.orders.remove(order_id),
            };
        }
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let command = command(&input)?;
        let before = self.payments.clone();
        let reply = self
            .payments
            .handle_payment_command(&command, &mut self.gateway as &mut dyn Gateway)
            .ok_or_else(|| anyhow::anyhow!("{} is not a payment command", command.kind()))?;
        let mut outputs = vec![Output::json(&self.topics.payment_responses, command.order_id(), &reply)];
        let topic = &self.topics.payment_state;
        outputs.extend(changes(topic, "order/", &before.orders, &self.payments.orders));
        let totals = |p: &Payments| Totals { charged_cents: p.charged_cents, refunded_cents: p.refunded_cents };
        if totals(&before) != totals(&self.payments) {
            outputs.push(Output::json(topic, "totals", &totals(&self.payments)));
        }
        Ok(outputs)
    }
}

/// Where notifications go: e-mail, in production; the story's and tests' [`TestMailer`] here.
pub trait Mailer: Send {
    /// Sends `notification`, or says why it could not.
    fn send(&mut self, notification: &Notification) -> Result<(), String>;
}

/// A mailer whose server is down for some customers (every attempt fails), and that keeps what it sent.
#[derive(Debug, Clone, Default)]
pub struct TestMailer {
    pub down_for: BTreeSet<String>,
    /// Every notification sent, in order — shared, so the story and the tests can count them.
    pub sent: Arc<Mutex<Vec<Notification>>>,
    /// Every attempt, failed ones included.
    pub attempts: Arc<Mutex<usize>>,
}

impl Mailer for TestMailer {
    fn send(&mut self, notification: &Notification) -> Result<(), String> {
        *self.attempts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if self.down_for.contains(&notification.customer_id) {
            return Err("the mail server did not answer (timed out after 2 s)".into());
        }
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(notification.clone());
        Ok(())
    }
}

/// How the notification service retries: attempts in all, and the wait before the second (doubled after each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for Retry {
    /// 3 attempts, 100 ms then 200 ms apart.
    fn default() -> Self {
        Retry { attempts: 3, first_backoff: Duration::from_millis(100) }
    }
}

/// What the notification service did with a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Delivery {
    Sent,
    DeadLettered,
}

/// The notification service: sends each notification once, with retries, and dead-letters what it cannot send.
pub struct NotificationService<M> {
    pub topics: SagaTopics,
    pub mailer: M,
    pub retry: Retry,
    /// What was done per notification (`order_id/message`): a redelivered one is not sent again.
    pub done: BTreeMap<String, Delivery>,
}

impl<M: Clone> Clone for NotificationService<M> {
    fn clone(&self) -> Self {
        NotificationService {
            topics: self.topics.clone(),
            mailer: self.mailer.clone(),
            retry: self.retry,
            done: self.done.clone(),
        }
    }
}

impl<M: Mailer> NotificationService<M> {
    pub fn new(topics: SagaTopics, mailer: M, retry: Retry) -> NotificationService<M> {
        NotificationService { topics, mailer, retry, done: BTreeMap::new() }
    }
}

impl<M: Mailer> Stage for NotificationService<M> {
    fn name(&self) -> &str {
        "notification"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.notifications.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.notification_state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.notifications_dlq
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        match payload {
            Some(p) => self.done.insert(key.into(), serde_json::from_slice(p)?),
            None => self.done.remove(key),
        };
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        let notification: Notification = serde_json::from_slice(input.payload).context("not a notification")?;
        let key = format!("{}/{}", notification.order_id, notification.message);
        if self.done.contains_key(&key) {
            return Ok(Vec::new());
        }
        let mut backoff = self.retry.first_backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.retry.attempts {
            match self.mailer.send(&notification) {
                Ok(()) => {
                    self.done.insert(key.clone(), Delivery::Sent);
                    return Ok(vec![Output::json(&self.topics.notification_state, &key, &Delivery::Sent)]);
                }
                Err(error) => {
                    tracing::warn!(order_id = %notification.order_id, attempt, "notification failed: {error}");
                    last_error = error;
                    if attempt < self.retry.attempts {
                        std::thread::sleep(backoff);
                        backoff *= 2;
                    }
                }
            }
        }
        self.done.insert(key.clone(), Delivery::DeadLettered);
        let mut dead = Output {
            topic: self.topics.notifications_dlq.clone(),
            key: notification.order_id.clone(),
            payload: input.payload.to_vec(),
            headers: vec![("dlq.reason".into(), last_error), ("dlq.attempts".into(), self.retry.attempts.to_string())],
        };
        dead.headers.push(("dlq.source".into(), format!("{}/{}/{}", input.topic, input.partition, input.offset)));
        Ok(vec![dead, Output::json(&self.topics.notification_state, &key, &Delivery::DeadLettered)])
    }
}
