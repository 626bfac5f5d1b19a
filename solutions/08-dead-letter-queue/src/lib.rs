//! Lesson 08 — the dead-letter queue: a consumer that never stops on a bad record.
//!
//! Two kinds of failure are told apart. An *invalid* event (not JSON, wrong types, a purchase without an
//! amount) will fail the same way every time: retrying is pointless, so it goes straight to the dead-letter
//! topic. A *processing* error (Redis busy, a timeout) may pass: it is retried with exponential backoff and
//! jitter, and dead-lettered only after the last attempt. Either way the record is committed only once it is
//! handled or safely in the DLQ, with its original key and payload and headers that say why.
//!
//! The functions here are what the tests grade; `main.rs` tells the story and `bin/replay.rs` moves dead
//! letters back after a fix. [`rabbit`] is the same lesson on RabbitMQ, where the broker routes retries and dead
//! letters (`--rabbitmq`).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kit::{EventType, UserEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

pub mod rabbit;

/// Header names on a dead letter.
pub mod header {
    /// `invalid` (validation) or `processing` (retries exhausted).
    pub const KIND: &str = "dlq.kind";
    /// Why, for humans.
    pub const REASON: &str = "dlq.reason";
    /// How many processing attempts were made (0 for an invalid event).
    pub const ATTEMPTS: &str = "dlq.attempts";
    pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
    pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
    pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
}

/// What processing a valid event may do: succeed, or fail in a way worth retrying.
pub trait Processor {
    /// Applies `event`; an `Err` is a processing failure that a later attempt may not have.
    fn process(&mut self, event: &UserEvent) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Exponential backoff, with full jitter unless it is turned off: the backoff after failed attempt `n` is
/// `min(max_delay, base_delay · 2^(n-1))`, and with [`Jitter::Full`] the wait is a random time in `[0, backoff]`.
/// The exponent backs off from a struggling dependency; the jitter keeps many consumers that failed together from
/// retrying together.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub jitter: Jitter,
}

/// How much of the wait is left to chance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// A random time between nothing and the backoff ("full jitter"): what production wants.
    Full,
    /// Exactly the backoff: the same waits on every run, for demonstrations and for tests that check them.
    None,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self.base_delay.saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let backoff = exponential.min(self.max_delay);
        match self.jitter {
            Jitter::None => backoff,
            Jitter::Full => {
                // A random fraction from a v4 uuid's random bits: enough for jitter, no extra dependency.
                let fraction = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
                backoff.mul_f64(fraction)
            }
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "disposition", rename_all = "snake_case")]
pub enum Disposition {
    Processed { attempts: u32 },
    DeadLetter { kind: FailureKind, reason: String, attempts: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Invalid,
    Processing,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Invalid => "invalid",
            FailureKind::Processing => "processing",
        }
    }
}

// EXERCISE: Validate a record's payload into a `UserEvent`, or say why it is not one (the reason goes into the DLQ
// header). Refuse: a missing payload; anything that does not parse as a `UserEvent` (not JSON, wrong types,
// missing fields); a blank `user_id` (empty or only whitespace); a purchase without `amount_cents` or with 0; a
// click that carries an amount, whatever it is (0 included: a click has no amount at all). The tests hide four
// such records among valid events, and try each rule on its own.
// ANCHOR: validate
/// The event in `payload`, or the reason it is invalid.
pub fn validate(payload: Option<&[u8]>) -> Result<UserEvent, String> {
    let payload = payload.ok_or("no payload")?;
    let event: UserEvent = serde_json::from_slice(payload).map_err(|e| format!("not a user event: {e}"))?;
    if event.user_id.trim().is_empty() {
        return Err("empty user_id".into());
    }
    match (event.event_type, event.amount_cents) {
        (EventType::Purchase, None) => Err("purchase without amount_cents".into()),
        (EventType::Purchase, Some(0)) => Err("purchase of 0 cents".into()),
        (EventType::Click, Some(_)) => Err("click with an amount".into()),
        _ => Ok(event),
    }
}
// ANCHOR_END: validate

// EXERCISE: Decide what becomes of one record. An invalid event (see `validate`) is dead-lettered at once: kind
// `Invalid`, 0 attempts, never retried. A valid one goes to `processor`, `policy.max_attempts` times at most in
// all: a success is `Processed` with the attempts it took; between two attempts (and only then) wait as `policy`
// says for the attempt that failed; when the last attempt fails, a `DeadLetter` of kind `Processing` whose reason
// names the attempts and the last error. The tests use a processor that fails twice and then recovers (processed
// on attempt 3) and one that never recovers (dead-lettered after exactly `max_attempts`), and on a paused clock
// they measure each wait against a policy without jitter.
// ANCHOR: handle
/// Validates, processes with retries, and says whether the record was processed or must be dead-lettered.
pub async fn handle<P: Processor>(payload: Option<&[u8]>, processor: &mut P, policy: &RetryPolicy) -> Disposition {
    let event = match validate(payload) {
        Ok(event) => event,
        Err(reason) => return Disposition::DeadLetter { kind: FailureKind::Invalid, reason, attempts: 0 },
    };
    let mut attempt = 1;
    loop {
        match processor.process(&event).await {
            Ok(()) => return Disposition::Processed { attempts: attempt },
            Err(error) if attempt >= policy.max_attempts => {
                return Disposition::DeadLetter {
                    kind: FailureKind::Processing,
                    reason: format!("failed {attempt} attempts; last error: {error:#}"),
                    attempts: attempt,
                };
            }
            Err(error) => {
                tracing::warn!(event_id = %event.event_id, attempt, "processing failed, will retry: {error:#}");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}
// ANCHOR_END: handle

// EXERCISE: Write `message` to `dlq_topic` unchanged — same key (none if it had none), same payload, byte for
// byte — with headers (names in `header`) for the failure kind, the reason, the attempts, and the original topic,
// partition and offset. Return only once the broker has stored the dead letter (an error if it could not): the
// caller commits the original right after. The tests read the DLQ back and compare keys, payloads and every
// header with the poison records they wrote, and give you a producer whose broker never answers.
// ANCHOR: dead_letter
/// Copies `message` to the dead-letter topic with the reason in its headers.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    message: &impl Message,
    kind: FailureKind,
    reason: &str,
    attempts: u32,
) -> anyhow::Result<()> {
    let (partition, offset, attempts) =
        (message.partition().to_string(), message.offset().to_string(), attempts.to_string());
    let headers = OwnedHeaders::new()
        .insert(Header { key: header::KIND, value: Some(kind.as_str()) })
        .insert(Header { key: header::REASON, value: Some(reason) })
        .insert(Header { key: header::ATTEMPTS, value: Some(&attempts) })
        .insert(Header { key: header::ORIGINAL_TOPIC, value: Some(message.topic()) })
        .insert(Header { key: header::ORIGINAL_PARTITION, value: Some(&partition) })
        .insert(Header { key: header::ORIGINAL_OFFSET, value: Some(&offset) });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("could not dead-letter offset {offset}: {error}"))?;
    Ok(())
}
// ANCHOR_END: dead_letter

/// A member of `group_id` that commits by hand, after each record is handled (lesson 07).
pub fn consumer_config(broker: &kit::Broker, group_id: &str) -> ClientConfig {
    let mut config = broker.consumer_config(group_id);
    config.set("enable.auto.commit", "false");
    config
}

/// When [`run`] returns: after `records` records, or when none has arrived for `idle`.
#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub records: usize,
    pub idle: Duration,
}

/// What [`run`] did: every record read is either processed or dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub records: usize,
    pub processed: usize,
    pub dead_lettered: usize,
}

/// The consumer: handles each record, dead-letters what cannot be processed, and commits every record once it
/// is handled or in the DLQ. A bad record never stops it; only infrastructure failing (Kafka refusing the dead
/// letter, a commit failing) does, and then the record stays uncommitted.
pub async fn run<P: Processor>(
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    dlq_topic: &str,
    processor: &mut P,
    policy: &RetryPolicy,
    until: Until,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let mut stream = consumer.stream();
    while report.records < until.records {
        let message = match tokio::time::timeout(until.idle, stream.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) | Err(_) => break,
        };
        match handle(message.payload(), processor, policy).await {
            Disposition::Processed { .. } => report.processed += 1,
            Disposition::DeadLetter { kind, reason, attempts } => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), "dead-lettered: {reason}");
                dead_letter(producer, dlq_topic, &message, kind, &reason, attempts).await?;
                report.dead_lettered += 1;
            }
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
        report.records += 1;
    }
    Ok(report)
}

/// Moves dead letters back to their original topic (from the `dlq.original.topic` header) after a fix: same
/// key, same payload, no DLQ headers. Reads `consumer` (a group on the DLQ, so a replay resumes where the last
/// one stopped) and commits each record once it is re-published. Returns how many records were moved.
pub async fn replay(consumer: &StreamConsumer, producer: &FutureProducer, until: Until) -> anyhow::Result<usize> {
    let mut moved = 0;
    let mut stream = consumer.stream();
    while moved < until.records {
        let message = match tokio::time::timeout(until.idle, stream.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) | Err(_) => break,
        };
        let original = message
            .headers()
            .and_then(|hs| hs.iter().find(|h| h.key == header::ORIGINAL_TOPIC).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| {
                anyhow::anyhow!("dead letter at offset {} has no {} header", message.offset(), header::ORIGINAL_TOPIC)
            })?;
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&original);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(error, _)| anyhow::anyhow!("could not replay to {original}: {error}"))?;
        consumer.commit_message(&message, CommitMode::Sync)?;
        moved += 1;
    }
    Ok(moved)
}
