//! The notification consumer: reads `mail.requests` in a consumer group and sends each e-mail through the
//! [`MailClient`]. What it does with each outcome is the lesson's third exercise:
//!
//! - **sent**: commit past the record;
//! - **refused for good** (a 4xx, see [`MailError::is_permanent`]): copy the record to `mail.dlq` with the reason
//!   in headers, then commit past it — the next e-mails must not wait behind one that will never go;
//! - **not sent, for a reason that may pass** (the breaker is open, the retries ran out, the bulkhead was full):
//!   commit nothing, **pause** every assigned partition and **seek** the record's partition back to it. The record
//!   stays in Kafka, where it was, and nothing more is fetched. Once the breaker would let a call through again,
//!   resume: the record is read again and its send is the breaker's probe.
//!
//! Pausing is not stopping. The loop below goes on polling the consumer while its partitions are paused — that
//! keeps it in its group (a consumer that stops polling for `max.poll.interval.ms` is thrown out), and serves
//! librdkafka's statistics, which is how the tests see whether anything was fetched while the breaker was open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::breaker::BreakerHandle;
use crate::client::{MailClient, MailRequest};

/// Header names on a dead letter in `mail.dlq`.
pub mod header {
    /// Why the e-mail was not sent, for humans: the provider's status and answer.
    pub const REASON: &str = "mail.dlq.reason";
    /// The provider's status (absent when the record was not a mail request at all).
    pub const STATUS: &str = "mail.dlq.status";
    pub const ORIGINAL_TOPIC: &str = "mail.dlq.original.topic";
    pub const ORIGINAL_PARTITION: &str = "mail.dlq.original.partition";
    pub const ORIGINAL_OFFSET: &str = "mail.dlq.original.offset";
}

/// The mailer's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTopics {
    /// E-mails to send, keyed by order id.
    pub requests: String,
    /// E-mails the provider refused for good, with the reason in headers.
    pub dead_letters: String,
}

impl MailTopics {
    /// The manifest's topics (`kit::topics::MAIL_TOPICS`).
    pub fn manifest() -> MailTopics {
        MailTopics { requests: kit::topics::MAIL_REQUESTS.name.into(), dead_letters: kit::topics::MAIL_DLQ.name.into() }
    }
}

// ANCHOR: handled
/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The provider took the e-mail; the record is committed.
    Sent,
    /// The provider refused it for good; it is in `mail.dlq` and committed.
    DeadLettered,
    /// Not sent, for a reason that may pass: not committed, to be read again after a pause.
    Held,
}
// ANCHOR_END: handled

/// What the mailer did, counted as it went.
#[derive(Debug, Default)]
pub struct MailerStats {
    /// Records the consumer delivered to the loop (a record read again after a pause counts again).
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub held: AtomicU64,
    /// Times the partitions were resumed after a pause.
    pub resumed: AtomicU64,
}

impl MailerStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What librdkafka's statistics (every 100 ms) say the consumer fetched from the broker: an account kept outside
/// the mailer's own code, so that it counts what was really fetched, whatever the mailer believes it did.
#[derive(Debug, Default)]
pub struct FetchWatch {
    seen: Mutex<Fetched>,
}

/// The figures of a [`FetchWatch`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Records fetched from `mail.requests` since the start (`rxmsgs`, over its partitions).
    pub records: u64,
    /// Of those, the records fetched between two statistics that both found the breaker open and cooling down,
    /// with no change of the breaker's state in between: what a consumer that paused fetched while it should
    /// have fetched nothing.
    pub while_open: u64,
    /// Statistics intervals that passed wholly with the breaker open and cooling down.
    pub open_intervals: u64,
    /// Per partition, librdkafka's fetch state (`active` once it knows where to read).
    pub fetch_states: BTreeMap<i32, String>,
    /// The latest reading: breaker cooling down, its phase changes, records fetched.
    last: Option<(bool, u64, u64)>,
}

impl FetchWatch {
    pub fn get(&self) -> Fetched {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// The consumer's context: it reads librdkafka's statistics into a [`FetchWatch`], next to the breaker's state.
pub struct MailerContext {
    topic: String,
    breaker: BreakerHandle,
    watch: Arc<FetchWatch>,
}

impl ClientContext for MailerContext {
    fn stats(&self, statistics: Statistics) {
        let (cooling, transitions) = self.breaker.cooling_down();
        let mut records = 0;
        let mut fetch_states = BTreeMap::new();
        if let Some(topic) = statistics.topics.get(&self.topic) {
            // Partition -1 is librdkafka's "unassigned" placeholder.
            for (id, partition) in topic.partitions.iter().filter(|(id, _)| **id >= 0) {
                records += partition.rxmsgs;
                fetch_states.insert(*id, partition.fetch_state.clone());
            }
        }
        let mut seen = self.watch.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((was_cooling, was_transitions, was_records)) = seen.last
            && was_cooling
            && cooling
            && was_transitions == transitions
        {
            seen.open_intervals += 1;
            seen.while_open += records.saturating_sub(was_records);
        }
        seen.last = Some((cooling, transitions, records));
        seen.records = records;
        seen.fetch_states = fetch_states;
    }
}

impl ConsumerContext for MailerContext {}

/// The notification consumer.
pub struct Mailer {
    /// Subscribed to `topics.requests`; commits only what [`Mailer::handle`] commits.
    pub consumer: StreamConsumer<MailerContext>,
    /// Writes dead letters.
    pub producer: FutureProducer,
    pub client: MailClient,
    pub topics: MailTopics,
    /// Whether the partitions are paused (set by `handle` when it holds a record, cleared by `resume_if_ready`).
    pub paused: bool,
    pub stats: Arc<MailerStats>,
    pub fetched: Arc<FetchWatch>,
}

impl Mailer {
    /// A mailer in the group of `consumer_config` (which says where to start when the group has no offset),
    /// writing dead letters with a producer made from `producer_config`.
    pub fn new(
        mut consumer_config: ClientConfig,
        producer_config: ClientConfig,
        topics: MailTopics,
        client: MailClient,
    ) -> anyhow::Result<Mailer> {
        // Offsets are committed by `handle` alone, one record at a time, and only once it is handled: no
        // automatic commit, and no offset stored automatically for the records the consumer hands over.
        consumer_config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "100");
        let fetched = Arc::new(FetchWatch::default());
        let context =
            MailerContext { topic: topics.requests.clone(), breaker: client.breaker.clone(), watch: fetched.clone() };
        let consumer: StreamConsumer<MailerContext> = consumer_config.create_with_context(context)?;
        consumer.subscribe(&[&topics.requests])?;
        Ok(Mailer {
            consumer,
            producer: producer_config.create()?,
            client,
            topics,
            paused: false,
            stats: Arc::default(),
            fetched,
        })
    }

    /// Reads and sends until `stop` completes. Returns on a Kafka error it cannot go past (a dead letter that
    /// cannot be written, a commit refused).
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut stop = std::pin::pin!(stop);
        // While paused, how often to ask whether the breaker would let a call through again.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                _ = tick.tick(), if self.paused => {
                    if self.resume_if_ready()? {
                        self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                received = self.consumer.recv() => {
                    let message = match received {
                        Ok(message) => message.detach(),
                        Err(error) => {
                            tracing::warn!(%error, "the consumer reported an error; going on");
                            continue;
                        }
                    };
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let handled = match MailRequest::from_payload(message.payload()) {
                        Ok(request) => self.handle(&message, request).await?,
                        Err(reason) => {
                            self.dead_letter(&message, None, &reason).await?;
                            self.commit_past(&message)?;
                            Handled::DeadLettered
                        }
                    };
                    let counter = match handled {
                        Handled::Sent => &self.stats.sent,
                        Handled::DeadLettered => &self.stats.dead_lettered,
                        Handled::Held => &self.stats.held,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    // EXERCISE: Send the e-mail of `message` (already decoded into `request`) through `self.client`, and settle the
    // record. Sent: commit past it (`commit_past`). Refused for good (`MailError::is_permanent`): write it to
    // `mail.dlq` with the provider's status and its error as the reason (`dead_letter`), then commit past it.
    // Any other failure may pass: commit nothing; pause every partition assigned to the consumer — so that
    // nothing more is fetched, and nothing piles up in memory, while the provider is down — and seek the
    // record's partition back to the record itself, so that it is read again on resume and no record is skipped
    // (pausing drops what was fetched and not yet read, and resumes after the last record read: after this one).
    // Set `self.paused`. Never commit a record before it is sent or dead-lettered. The
    // tests run the consumer on the broker through an outage, a recovery and a refused e-mail, and check the
    // provider's log (one e-mail per order), the committed offsets, `mail.dlq`, and librdkafka's own count of
    // records fetched while the breaker was open.
    // ANCHOR: handle
    /// Sends `request` and settles `message`: committed, dead-lettered and committed, or held.
    pub async fn handle(&mut self, message: &OwnedMessage, request: MailRequest) -> anyhow::Result<Handled> {
        match self.client.send(request).await {
            Ok(_) => {
                self.commit_past(message)?;
                Ok(Handled::Sent)
            }
            Err(error) if error.is_permanent() => {
                self.dead_letter(message, error.status(), &error.to_string()).await?;
                self.commit_past(message)?;
                Ok(Handled::DeadLettered)
            }
            Err(error) => {
                tracing::debug!(%error, offset = message.offset(), "held: pausing, and back to the record");
                let assignment = self.consumer.assignment()?;
                self.consumer.pause(&assignment)?;
                let back_to = Offset::Offset(message.offset());
                self.consumer.seek(message.topic(), message.partition(), back_to, Duration::from_secs(10))?;
                self.paused = true;
                Ok(Handled::Held)
            }
        }
    }
    // ANCHOR_END: handle

    // EXERCISE: Called every 20 ms while `self.paused`: once the breaker would let a call through
    // (`self.client.breaker.ready()`: closed, or open with its cool-down over), resume every partition assigned to
    // the consumer, clear `self.paused` and answer `true`; otherwise change nothing and answer `false`. Resuming
    // before that fetches records that can only be rejected; waiting for the breaker to close waits for ever (only
    // a probe closes it, and the probe is the next record's send). The tests check that no record is fetched while
    // the breaker cools down, and that every e-mail goes out once the provider is back.
    // ANCHOR: resume_if_ready
    /// Resumes the paused partitions if the breaker would let a call through; whether it did.
    pub fn resume_if_ready(&mut self) -> anyhow::Result<bool> {
        if !self.client.breaker.ready() {
            return Ok(false);
        }
        let assignment = self.consumer.assignment()?;
        self.consumer.resume(&assignment)?;
        self.paused = false;
        Ok(true)
    }
    // ANCHOR_END: resume_if_ready

    // ANCHOR: helpers
    /// Commits the offset after `message` (asynchronously): its partition's next read starts after it.
    pub fn commit_past(&self, message: &OwnedMessage) -> KafkaResult<()> {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(message.topic(), message.partition(), Offset::Offset(message.offset() + 1))?;
        self.consumer.commit(&offsets, CommitMode::Async)
    }

    /// Copies `message` (key and payload untouched) to the dead-letter topic, with `reason`, the provider's
    /// `status` if it answered, and where the record came from in headers ([`header`]). Waits for the broker's
    /// acknowledgement.
    pub async fn dead_letter(&self, message: &OwnedMessage, status: Option<u16>, reason: &str) -> anyhow::Result<()> {
        let (partition, offset) = (message.partition().to_string(), message.offset().to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: header::REASON, value: Some(reason) })
            .insert(Header { key: header::ORIGINAL_TOPIC, value: Some(message.topic()) })
            .insert(Header { key: header::ORIGINAL_PARTITION, value: Some(&partition) })
            .insert(Header { key: header::ORIGINAL_OFFSET, value: Some(&offset) });
        if let Some(status) = status {
            headers = headers.insert(Header { key: header::STATUS, value: Some(&status.to_string()) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topics.dead_letters).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(error, _)| error)?;
        Ok(())
    }
    // ANCHOR_END: helpers
}
