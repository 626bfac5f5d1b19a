//! Lesson 07 — the idempotent consumer: keep per-user aggregates (clicks, purchases, money spent) in Redis
//! from the stream of user events, so that a redelivered event changes nothing.
//!
//! Kafka delivers at least once: a consumer that crashes after its effect but before its commit gets the same
//! records again, and a producer that retries may have written an event twice. Making the *effect* idempotent
//! — remember each `event_id` and apply an event only the first time, in one atomic step — turns at-least-once
//! delivery into an effectively-once result.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kit::{EventType, UserEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

/// How long a processed `event_id` is remembered by default: as long as `user-events` keeps its records
/// (7 days). A copy of an event cannot be redelivered after the original has left the log — unless it was
/// *produced* again later, which is the trade-off the chapter discusses.
pub const DEFAULT_PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// One user's derived state. Money is in integer cents, incremented with `HINCRBY`: exact, unlike floats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Aggregates {
    pub clicks: u64,
    pub purchases: u64,
    pub purchase_total_cents: u64,
}

impl Aggregates {
    /// The aggregates that the distinct events of `events` should produce, computed in memory: the reference
    /// the Redis state is checked against. Copies of an event (same `event_id`) count once.
    pub fn expected<'a>(events: impl IntoIterator<Item = &'a UserEvent>) -> BTreeMap<String, Aggregates> {
        let mut seen = std::collections::HashSet::new();
        let mut by_user: BTreeMap<String, Aggregates> = BTreeMap::new();
        for event in events.into_iter().filter(|e| seen.insert(e.event_id)) {
            let aggregates = by_user.entry(event.user_id.clone()).or_default();
            match event.event_type {
                EventType::Click => aggregates.clicks += 1,
                EventType::Purchase => {
                    aggregates.purchases += 1;
                    aggregates.purchase_total_cents += event.amount_cents.unwrap_or(0);
                }
            }
        }
        by_user
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// First time this `event_id` was seen: the aggregates changed.
    Applied,
    /// The `event_id` was already processed: nothing changed.
    Duplicate,
}

/// The Redis side of the consumer: where the aggregates and the processed ids live.
///
/// Keys, under a namespace so that runs and tests do not mix:
/// - `{namespace}:{user_id}:aggregates` — a hash with the fields `clicks`, `purchases`, `purchase_total_cents`;
/// - `{namespace}:{user_id}:processed:{event_id}` — present while the event counts as processed (with a TTL).
///
/// The user id is written in braces, a Redis Cluster *hash tag*: only the part in braces picks the slot, so a
/// user's aggregates and processed ids share a slot and one script may touch them together on a cluster too.
pub struct AggregateStore {
    connection: MultiplexedConnection,
    namespace: String,
    processed_ttl: Duration,
}

impl AggregateStore {
    pub fn new(connection: MultiplexedConnection, namespace: impl Into<String>, processed_ttl: Duration) -> Self {
        Self { connection, namespace: namespace.into(), processed_ttl }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How long a processed `event_id` is remembered.
    pub fn processed_ttl(&self) -> Duration {
        self.processed_ttl
    }

    /// The connection, for commands of your own (it is cheap to clone, too).
    pub fn connection(&mut self) -> &mut MultiplexedConnection {
        &mut self.connection
    }

    /// The hash holding `user_id`'s aggregates.
    pub fn aggregates_key(&self, user_id: &str) -> String {
        format!("{}:{{{user_id}}}:aggregates", self.namespace)
    }

    /// The key whose presence marks `event` as processed.
    pub fn processed_key(&self, event: &UserEvent) -> String {
        format!("{}:{{{}}}:processed:{}", self.namespace, event.user_id, event.event_id)
    }

    /// Deletes every key of this store's namespace; returns how many there were.
    pub async fn clear(&mut self) -> anyhow::Result<usize> {
        kit::redis::delete_namespace(&mut self.connection, &self.namespace).await
    }

    /// `user_id`'s aggregates as Redis has them (zeros for a user never seen).
    pub async fn aggregates(&mut self, user_id: &str) -> anyhow::Result<Aggregates> {
        let key = self.aggregates_key(user_id);
        let (clicks, purchases, purchase_total_cents): (Option<u64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("clicks")
            .arg("purchases")
            .arg("purchase_total_cents")
            .query_async(&mut self.connection)
            .await?;
        Ok(Aggregates {
            clicks: clicks.unwrap_or(0),
            purchases: purchases.unwrap_or(0),
            purchase_total_cents: purchase_total_cents.unwrap_or(0),
        })
    }

    /// Every user's aggregates under this namespace, by user id.
    pub async fn all_aggregates(&mut self) -> anyhow::Result<BTreeMap<String, Aggregates>> {
        let prefix = format!("{}:{{", self.namespace);
        let mut all = BTreeMap::new();
        for key in kit::redis::scan_namespace(&mut self.connection, &self.namespace).await? {
            let user = key.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix("}:aggregates"));
            if let Some(user) = user.map(str::to_owned) {
                let aggregates = self.aggregates(&user).await?;
                all.insert(user, aggregates);
            }
        }
        Ok(all)
    }
}

// EXERCISE: Apply `event` to Redis exactly once per `event_id`, in ONE atomic step: no other client may act between
// "was this id seen?" and the update, and no crash may fall between them. A first delivery marks the id processed under
// `store.processed_key(event)` for `store.processed_ttl()`, and adds the event to the user's hash at
// `store.aggregates_key(&event.user_id)`: `clicks` or `purchases` + 1, and for a purchase `purchase_total_cents` + its
// `amount_cents`. A duplicate changes nothing at all — not even when the processed id expires, which stays
// `processed_ttl()` after the first delivery. Return which of the two it was. The tests apply injected duplicates, let
// processed ids expire while the aggregates stay, age a processed id by hand and deliver it again (its expiry must not
// move), deliver one purchase eight times at the same moment (exactly one may apply it), and crash a worker before each
// of your Redis commands in turn: the redelivered event must then count exactly once.
// ANCHOR: apply_event
/// Marks `event` processed and updates its user's aggregates, atomically; a duplicate changes nothing.
pub async fn apply_event(store: &mut AggregateStore, event: &UserEvent) -> anyhow::Result<Outcome> {
    // A Lua script runs atomically in Redis: nothing else executes between its commands. `Script` sends it by
    // SHA (EVALSHA) and falls back to sending the source once when Redis has not seen it yet.
    static APPLY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
                return 0
            end
            redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
            if tonumber(ARGV[3]) > 0 then
                redis.call('HINCRBY', KEYS[2], 'purchase_total_cents', ARGV[3])
            end
            return 1
            ",
        )
    });
    let (counter, cents) = match event.event_type {
        EventType::Click => ("clicks", 0),
        EventType::Purchase => ("purchases", event.amount_cents.unwrap_or(0)),
    };
    let ttl_seconds = store.processed_ttl().as_secs().max(1);
    let applied: i64 = APPLY
        .key(store.processed_key(event))
        .key(store.aggregates_key(&event.user_id))
        .arg(ttl_seconds)
        .arg(counter)
        .arg(cents)
        .invoke_async(store.connection())
        .await?;
    Ok(if applied == 1 { Outcome::Applied } else { Outcome::Duplicate })
}
// ANCHOR_END: apply_event

/// The consumer's configuration: a member of `group_id` that commits by itself, never automatically.
///
/// With `enable.auto.commit` on (librdkafka's default) offsets are committed every 5 s and on close, whether
/// or not the events were applied yet: a crash could then skip an event for good. Committing by hand, after
/// the effect, makes delivery at-least-once.
pub fn consumer_config(broker: &kit::Broker, group_id: &str) -> ClientConfig {
    let mut config = broker.consumer_config(group_id);
    config.set("enable.auto.commit", "false");
    config
}

/// Reads a record's payload as a user event, or says which record is not one.
///
/// A purchase without an amount is refused too: counting it would make the totals wrong for good. Such a
/// record stops this lesson's consumer (uncommitted, so nothing is lost); lesson 08 moves it to a dead-letter
/// queue instead.
pub fn decode(message: &impl Message) -> anyhow::Result<UserEvent> {
    let at = || format!("record at {} partition {} offset {}", message.topic(), message.partition(), message.offset());
    let payload = message.payload().ok_or_else(|| anyhow::anyhow!("{} has no payload", at()))?;
    let event: UserEvent =
        serde_json::from_slice(payload).map_err(|e| anyhow::anyhow!("{} is not a user event: {e}", at()))?;
    if event.event_type == EventType::Purchase && event.amount_cents.is_none() {
        anyhow::bail!("{} is a purchase without an amount", at());
    }
    Ok(event)
}

/// When [`consume`] returns: after `records` records, or when none has arrived for `idle`.
#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub records: usize,
    pub idle: Duration,
}

/// What one run of [`consume`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConsumeReport {
    /// Records read and handled (applied or skipped), each committed.
    pub records: usize,
    pub applied: usize,
    pub duplicates: usize,
}

// EXERCISE: The consumer loop, at-least-once. Read records from `consumer` until `until.records` are handled, or until
// none arrives within `until.idle`: both are normal ends, which return the report. Each record is decoded (`decode`),
// applied (`apply_event`), counted in the report, and committed only once its effect is in Redis — so a crash before
// the commit means redelivery, never a lost event. Any error (a bad record, Redis down) ends the loop at once with that
// error, the record uncommitted. The tests let a first worker crash before committing, and cut your loop's Redis in the
// middle of a run; another worker then runs your loop in the same group: the aggregates must be exact and the group's
// committed offsets must reach the end of every partition; and one more run, with nothing left to read, must go idle
// and return an empty report.
// ANCHOR: consume
/// Applies records from `consumer` to `store`, committing each one after its effect.
pub async fn consume(
    consumer: &StreamConsumer,
    store: &mut AggregateStore,
    until: Until,
) -> anyhow::Result<ConsumeReport> {
    let mut report = ConsumeReport::default();
    let mut stream = consumer.stream();
    while report.records < until.records {
        let message = match tokio::time::timeout(until.idle, stream.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) | Err(_) => break, // the stream ended, or stayed idle for `until.idle`
        };
        let event = decode(&message)?;
        match apply_event(store, &event).await? {
            Outcome::Applied => report.applied += 1,
            Outcome::Duplicate => report.duplicates += 1,
        }
        // The effect is in Redis; only now may the group move past this record. A synchronous commit per
        // record is the simplest correct choice; a busier consumer stores offsets and commits them in batches.
        consumer.commit_message(&message, CommitMode::Sync)?;
        report.records += 1;
    }
    Ok(report)
}
// ANCHOR_END: consume
