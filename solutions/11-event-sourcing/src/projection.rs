//! The read side (the Q of CQRS): projections that fold the events of `order-events` into Redis, shaped for the
//! questions clients ask — "what is in order 7?" (an [`OrderSummary`]) and "what has customer 3 bought?" (their
//! [`CustomerTotals`]). The write side never reads them: they are a disposable view of the log, and
//! [`rebuild`] makes them again from offset 0 whenever their shape changes or they are lost.
//!
//! Kafka delivers at least once, and a projector that restarts reads again what it had applied but not yet
//! committed. Every event carries its order's version, and the order's summary remembers the version it was
//! projected to, so the projection needs no list of processed events (lesson 07 kept one): an event at or below
//! that version is a duplicate, the next version is applied, and a version further on means one is missing.
//!
//! Keys, under a namespace so that runs, tests and rebuilds do not mix:
//! - `{namespace}:order:{order_id}` — a hash: `version` (the last version projected) and `summary` (JSON);
//! - `{namespace}:customer:{customer_id}` — a hash of counters, the fields of [`CustomerTotals`].
//!
//! An order's summary and its customer's totals change in ONE Lua script, so no crash can leave one updated
//! without the other. (On a Redis Cluster both keys would need one hash tag to be touched by one script; this
//! lesson's Redis is a single node.)

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::codec::{self, StoredEvent};
use crate::order::{Event, Line, Status};
use crate::store;

// ANCHOR: summary
/// One order as the read side shows it. `version` is the last event projected into it: the summary is the
/// order exactly as it was after that event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub order_id: String,
    pub version: u64,
    /// Empty until the order is placed.
    pub customer_id: String,
    pub status: Status,
    /// Set by the first item.
    pub currency: Option<String>,
    /// One line per SKU and price, in the order they were first added.
    pub lines: Vec<Line>,
    /// Units over all lines.
    pub units: u64,
    pub total_cents: u64,
}
// ANCHOR_END: summary

impl OrderSummary {
    /// The summary of an order nothing was projected into yet: version 0.
    pub fn new(order_id: impl Into<String>) -> OrderSummary {
        OrderSummary { order_id: order_id.into(), ..OrderSummary::default() }
    }

    /// The summary of an order whose state (from a replay of the write side) is `state`: what the projection
    /// must reach, for tests and checks.
    pub fn of(order_id: &str, state: &crate::OrderState) -> OrderSummary {
        OrderSummary {
            order_id: order_id.to_string(),
            version: state.version,
            customer_id: state.customer_id.clone().unwrap_or_default(),
            status: state.status,
            currency: state.currency.clone(),
            lines: state.lines.clone(),
            units: state.lines.iter().map(|line| u64::from(line.quantity)).sum(),
            total_cents: state.total_cents,
        }
    }

    /// This summary with what `event` says folded in: customer and status, currency, lines, units and total.
    /// It leaves `version` alone: which event may be folded, and at which version, is [`project`]'s decision.
    pub fn with_event(&self, event: &Event) -> OrderSummary {
        let mut next = self.clone();
        match event {
            Event::OrderPlaced { customer_id } => {
                next.customer_id = customer_id.clone();
                next.status = Status::Open;
            }
            Event::ItemAdded { sku, quantity, unit_price_cents, currency } => {
                next.currency.get_or_insert_with(|| currency.clone());
                match next.lines.iter_mut().find(|line| &line.sku == sku && line.unit_price_cents == *unit_price_cents)
                {
                    Some(line) => line.quantity += quantity,
                    None => next.lines.push(Line {
                        sku: sku.clone(),
                        quantity: *quantity,
                        unit_price_cents: *unit_price_cents,
                    }),
                }
                next.units += u64::from(*quantity);
                next.total_cents += u64::from(*quantity) * unit_price_cents;
            }
            Event::OrderConfirmed { .. } => next.status = Status::Confirmed,
            Event::OrderCancelled { .. } => next.status = Status::Cancelled,
        }
        next
    }
}

// ANCHOR: customer_totals
/// One customer's orders, as the read side counts them. `orders_confirmed` and `confirmed_total_cents` are the
/// orders that *stand* confirmed: cancelling a confirmed order takes it (and its total) back out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTotals {
    pub orders_placed: i64,
    pub orders_confirmed: i64,
    pub orders_cancelled: i64,
    pub confirmed_total_cents: i64,
}
// ANCHOR_END: customer_totals

/// How one event changes its customer's totals: added to each counter (negative to take something back out).
pub type CustomerDelta = CustomerTotals;

impl CustomerTotals {
    /// The totals after `delta`.
    pub fn plus(self, delta: CustomerDelta) -> CustomerTotals {
        CustomerTotals {
            orders_placed: self.orders_placed + delta.orders_placed,
            orders_confirmed: self.orders_confirmed + delta.orders_confirmed,
            orders_cancelled: self.orders_cancelled + delta.orders_cancelled,
            confirmed_total_cents: self.confirmed_total_cents + delta.confirmed_total_cents,
        }
    }

    /// The totals of every customer of `summaries`: what the projection's counters must add up to.
    pub fn of<'a>(summaries: impl IntoIterator<Item = &'a OrderSummary>) -> BTreeMap<String, CustomerTotals> {
        let mut by_customer: BTreeMap<String, CustomerTotals> = BTreeMap::new();
        for summary in summaries.into_iter().filter(|s| s.version > 0) {
            let totals = by_customer.entry(summary.customer_id.clone()).or_default();
            totals.orders_placed += 1;
            match summary.status {
                Status::Confirmed => {
                    totals.orders_confirmed += 1;
                    totals.confirmed_total_cents += cents(summary.total_cents);
                }
                Status::Cancelled => totals.orders_cancelled += 1,
                Status::New | Status::Open => {}
            }
        }
        by_customer
    }
}

/// An amount of cents as a counter's increment (Redis counters are signed 64-bit integers).
pub fn cents(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// What [`project`] decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projected {
    /// The event is at or below the projected version: it is in the summary already; nothing changes.
    Duplicate,
    /// The event is further on than the next version: `expected` has not been projected yet. Nothing changes,
    /// and the event is not done with: it must come again once the missing ones are in.
    Gap { expected: u64, found: u64 },
    /// The event is the next one: the order's new summary, and what changes in its customer's totals.
    Apply { summary: OrderSummary, customer: CustomerDelta },
}

// EXERCISE: Decide what one event does to the read model, given the order's summary as projected so far
// (`current`, version 0 for an order never seen). Events arrive at least once and, across redeliveries, out of
// order; the summary's version is all there is to tell them apart:
// - an event at or below the projected version is already in: `Projected::Duplicate`;
// - an event beyond the next version would skip one: `Projected::Gap { expected, found }` (the version missing,
//   the version that came) — applying it would show an order that never existed;
// - the next version is `Projected::Apply`: the summary with the event folded in (`with_event`) at the event's
//   version, and the change to the customer's totals. Placing counts an order placed; confirming counts it
//   confirmed with its total; cancelling counts it cancelled — and a confirmed order that is cancelled no
//   longer stands confirmed, so its total comes back out. Adding an item changes no total of the customer.
// `project` is pure: the caller writes what it decides to Redis in one atomic step. The tests deliver every
// event twice, deliver histories out of order and with gaps, and compare every summary and every customer's
// totals with what a replay of the write side says.
// ANCHOR: project
/// What `event` does to an order projected so far as `current`.
pub fn project(current: &OrderSummary, event: &StoredEvent) -> Projected {
    let expected = current.version + 1;
    if event.version < expected {
        return Projected::Duplicate;
    }
    if event.version > expected {
        return Projected::Gap { expected, found: event.version };
    }
    let mut summary = current.with_event(&event.event);
    summary.version = event.version;
    let customer = match &event.event {
        Event::OrderPlaced { .. } => CustomerDelta { orders_placed: 1, ..CustomerDelta::default() },
        Event::ItemAdded { .. } => CustomerDelta::default(),
        Event::OrderConfirmed { total_cents } => CustomerDelta {
            orders_confirmed: 1,
            confirmed_total_cents: cents(*total_cents),
            ..CustomerDelta::default()
        },
        Event::OrderCancelled { .. } if current.status == Status::Confirmed => CustomerDelta {
            orders_cancelled: 1,
            orders_confirmed: -1,
            confirmed_total_cents: -cents(current.total_cents),
            ..CustomerDelta::default()
        },
        Event::OrderCancelled { .. } => CustomerDelta { orders_cancelled: 1, ..CustomerDelta::default() },
    };
    Projected::Apply { summary, customer }
}
// ANCHOR_END: project

/// What applying one event to Redis did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Applied,
    Duplicate,
    /// Nothing changed: version `expected` must be projected first.
    Gap {
        expected: u64,
        found: u64,
    },
}

/// How many times [`ReadModel::apply`] decides again when another projector moved the order between its read
/// and its write. Two projectors of one order fight only during a rebalance; more than this is a bug.
pub const APPLY_ATTEMPTS: usize = 16;

/// The counters of a customer's hash, in the order the apply script takes their increments.
const CUSTOMER_FIELDS: [&str; 4] = ["orders_placed", "orders_confirmed", "orders_cancelled", "confirmed_total_cents"];

/// The read model in Redis, under one namespace. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct ReadModel {
    connection: MultiplexedConnection,
    namespace: String,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel").field("namespace", &self.namespace).finish()
    }
}

impl ReadModel {
    pub fn new(connection: MultiplexedConnection, namespace: impl Into<String>) -> ReadModel {
        ReadModel { connection, namespace: namespace.into() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The connection, for commands of your own.
    pub fn connection(&mut self) -> &mut MultiplexedConnection {
        &mut self.connection
    }

    /// The hash holding `order_id`'s projected version and summary.
    pub fn order_key(&self, order_id: &str) -> String {
        format!("{}:order:{order_id}", self.namespace)
    }

    /// The hash holding `customer_id`'s totals.
    pub fn customer_key(&self, customer_id: &str) -> String {
        format!("{}:customer:{customer_id}", self.namespace)
    }

    /// Deletes every key of this namespace; returns how many there were.
    pub async fn clear(&mut self) -> anyhow::Result<usize> {
        kit::redis::delete_namespace(&mut self.connection, &self.namespace).await
    }

    /// `order_id`'s summary, or `None` for an order nothing was projected into.
    pub async fn summary(&mut self, order_id: &str) -> anyhow::Result<Option<OrderSummary>> {
        let key = self.order_key(order_id);
        let json: Option<String> =
            redis::cmd("HGET").arg(&key).arg("summary").query_async(&mut self.connection).await?;
        json.map(|json| serde_json::from_str(&json).map_err(|e| anyhow::anyhow!("{key} holds no order summary: {e}")))
            .transpose()
    }

    /// `customer_id`'s totals (zeros for a customer never seen).
    pub async fn customer(&mut self, customer_id: &str) -> anyhow::Result<CustomerTotals> {
        let values: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(self.customer_key(customer_id))
            .arg(&CUSTOMER_FIELDS[..])
            .query_async(&mut self.connection)
            .await?;
        let value = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        Ok(CustomerTotals {
            orders_placed: value(0),
            orders_confirmed: value(1),
            orders_cancelled: value(2),
            confirmed_total_cents: value(3),
        })
    }

    /// The ids after `{namespace}:{kind}:` of every key of that kind, sorted.
    async fn ids(&mut self, kind: &str) -> anyhow::Result<Vec<String>> {
        let prefix = format!("{}:{kind}:", self.namespace);
        let keys = kit::redis::scan_namespace(&mut self.connection, &self.namespace).await?;
        Ok(keys.iter().filter_map(|key| key.strip_prefix(&prefix)).map(str::to_owned).collect())
    }

    /// Every order's summary, by order id.
    pub async fn summaries(&mut self) -> anyhow::Result<BTreeMap<String, OrderSummary>> {
        let mut all = BTreeMap::new();
        for order_id in self.ids("order").await? {
            if let Some(summary) = self.summary(&order_id).await? {
                all.insert(order_id, summary);
            }
        }
        Ok(all)
    }

    /// Every customer's totals, by customer id.
    pub async fn customers(&mut self) -> anyhow::Result<BTreeMap<String, CustomerTotals>> {
        let mut all = BTreeMap::new();
        for customer_id in self.ids("customer").await? {
            let totals = self.customer(&customer_id).await?;
            all.insert(customer_id, totals);
        }
        Ok(all)
    }

    /// Writes what [`project`] decided, if the order is still at `from_version`: the summary and the customer's
    /// totals in one atomic step. `false` when another projector moved the order in the meantime (nothing was
    /// written then).
    async fn write_if_at(
        &mut self,
        from_version: u64,
        summary: &OrderSummary,
        customer: CustomerDelta,
    ) -> anyhow::Result<bool> {
        // A Lua script runs atomically in Redis: no other client acts between its check and its writes, and a
        // crash cannot fall between the order's summary and its customer's totals.
        static WRITE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"
                local projected = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
                if projected ~= tonumber(ARGV[1]) then
                    return 0
                end
                redis.call('HSET', KEYS[1], 'version', ARGV[2], 'summary', ARGV[3])
                for i = 1, 4 do
                    local by = tonumber(ARGV[3 + 2 * i])
                    if by ~= 0 then
                        redis.call('HINCRBY', KEYS[2], ARGV[2 + 2 * i], by)
                    end
                end
                return 1
                ",
            )
        });
        let deltas = [
            customer.orders_placed,
            customer.orders_confirmed,
            customer.orders_cancelled,
            customer.confirmed_total_cents,
        ];
        let mut invocation = WRITE.key(self.order_key(&summary.order_id));
        invocation.key(self.customer_key(&summary.customer_id));
        invocation.arg(from_version).arg(summary.version).arg(serde_json::to_string(summary)?);
        // Then the four counters as (field, increment) pairs: ARGV[4] and ARGV[5], ARGV[6] and ARGV[7], …
        for (field, by) in CUSTOMER_FIELDS.iter().zip(deltas) {
            invocation.arg(*field).arg(by);
        }
        let written: i64 = invocation.invoke_async(&mut self.connection).await?;
        Ok(written == 1)
    }

    /// Applies `event` to the read model: reads the order's summary, lets [`project`] decide, and writes the
    /// decision atomically — unless the order moved meanwhile, then it decides again.
    pub async fn apply(&mut self, event: &StoredEvent) -> anyhow::Result<Outcome> {
        for _ in 0..APPLY_ATTEMPTS {
            let current = self.summary(&event.order_id).await?.unwrap_or_else(|| OrderSummary::new(&event.order_id));
            match project(&current, event) {
                Projected::Duplicate => return Ok(Outcome::Duplicate),
                Projected::Gap { expected, found } => return Ok(Outcome::Gap { expected, found }),
                Projected::Apply { summary, customer } => {
                    anyhow::ensure!(
                        summary.order_id == event.order_id && summary.version == event.version,
                        "order {} version {}: the projection made a summary of order {} at version {}",
                        event.order_id,
                        event.version,
                        summary.order_id,
                        summary.version
                    );
                    if self.write_if_at(current.version, &summary, customer).await? {
                        return Ok(Outcome::Applied);
                    }
                }
            }
        }
        anyhow::bail!(
            "order {} version {}: the order moved under every one of {APPLY_ATTEMPTS} attempts",
            event.order_id,
            event.version
        )
    }
}

/// Why the projector stopped with an error. Either way the record is not committed: the group's next member
/// starts from it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(
        "{topic} partition {partition} offset {offset}: order {order_id} version {found} came before version \
         {expected}; not committed, it will be delivered again"
    )]
    Gap { topic: String, partition: i32, offset: i64, order_id: String, expected: u64, found: u64 },
    #[error("{topic} partition {partition} offset {offset} is not an order event: {cause}")]
    BadRecord { topic: String, partition: i32, offset: i64, cause: String },
}

/// What a run of the projector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProjectorReport {
    /// Records handled (applied or duplicates), each committed.
    pub records: usize,
    pub applied: usize,
    pub duplicates: usize,
}

/// The projector's consumer: on top of `base` (a group member, from `broker.consumer_config(group)`), it reads
/// only committed transactions — the writer's aborted appends never reach the read model — and commits by hand
/// after each event is in Redis, never automatically.
pub fn projector_config(mut base: ClientConfig) -> ClientConfig {
    base.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    base
}

/// The event in a record, or why it is none.
fn decode(message: &impl Message) -> Result<StoredEvent, ProjectorError> {
    let bad = |cause: String| ProjectorError::BadRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        cause,
    };
    let payload = message.payload().ok_or_else(|| bad("no payload".into()))?;
    codec::decode_event(payload).map_err(|e| bad(e.to_string()))
}

// ANCHOR: run_projector
/// The live projector: applies each record of `consumer` (subscribed to the events topic, configured with
/// [`projector_config`]) to `read_model` and commits it once applied, until `stop` completes — also while it
/// waits for a record. A gap, a record that is not an event, or a Redis error ends it with that error and the
/// record uncommitted.
pub async fn run_projector(
    consumer: &StreamConsumer,
    read_model: &mut ReadModel,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<ProjectorReport> {
    let mut report = ProjectorReport::default();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            // `biased`: once a stop is asked for, no other record is taken.
            biased;
            _ = &mut stop => return Ok(report),
            received = consumer.recv() => match received {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "receive failed; the client retries");
                    continue;
                }
            },
        };
        let event = decode(&message)?;
        match read_model.apply(&event).await? {
            Outcome::Applied => report.applied += 1,
            Outcome::Duplicate => report.duplicates += 1,
            Outcome::Gap { expected, found } => {
                return Err(ProjectorError::Gap {
                    topic: message.topic().to_string(),
                    partition: message.partition(),
                    offset: message.offset(),
                    order_id: event.order_id,
                    expected,
                    found,
                }
                .into());
            }
        }
        // The event is in Redis: only now may the group move past it.
        consumer.commit_message(&message, CommitMode::Sync)?;
        report.records += 1;
    }
}
// ANCHOR_END: run_projector

/// What a rebuild read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Event records read from the log.
    pub events: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub orders: usize,
    pub customers: usize,
}

// ANCHOR: rebuild
/// Projects the whole events topic (all `partitions`, read from offset 0 with a consumer made from `config`, up
/// to its end as it is now) into `read_model`, whose namespace must be fresh — empty: a rebuild goes next to the
/// live read model, and readers switch over once it is done. Fails on a record that is not an event and on a
/// gap (the log itself would then be corrupt).
pub async fn rebuild(
    config: ClientConfig,
    events_topic: &str,
    partitions: i32,
    read_model: &mut ReadModel,
    within: Duration,
) -> anyhow::Result<RebuildReport> {
    let namespace = read_model.namespace().to_string();
    let existing = kit::redis::scan_namespace(read_model.connection(), &namespace).await?;
    anyhow::ensure!(
        existing.is_empty(),
        "namespace {namespace} is not fresh ({} keys): a rebuild writes into an empty namespace",
        existing.len()
    );
    let topic = events_topic.to_string();
    // read_log blocks its thread until the end of every partition.
    let all = (0..partitions).collect();
    let records = tokio::task::spawn_blocking(move || store::read_log(config, &topic, &all, within)).await??;
    let mut report = RebuildReport { events: records.len(), ..RebuildReport::default() };
    for record in &records {
        let at = || format!("{events_topic} partition {} offset {}", record.partition, record.offset);
        let event =
            codec::decode_event(&record.payload).map_err(|e| anyhow::anyhow!("{} is not an order event: {e}", at()))?;
        match read_model.apply(&event).await? {
            Outcome::Applied => report.applied += 1,
            Outcome::Duplicate => report.duplicates += 1,
            Outcome::Gap { expected, found } => {
                anyhow::bail!("{}: order {} version {found} comes before version {expected}", at(), event.order_id)
            }
        }
    }
    report.orders = read_model.summaries().await?.len();
    report.customers = read_model.customers().await?.len();
    Ok(report)
}
// ANCHOR_END: rebuild
