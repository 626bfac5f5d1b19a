//! Grades lesson 08's RabbitMQ exercise (`rabbit::on_failure`) on a real RabbitMQ: a poison message is tried
//! exactly `max_attempts` times and then rests in the dead-letter queue with its last error; a message that fails
//! once is processed on its second attempt; each waiting copy carries a TTL (`expiration`) twice the one before,
//! the original's payload and properties, and the count of attempts, and is persistent; every message published
//! ends processed or dead-lettered, none lost, none twice; and the original is settled only once its copy is
//! stored — a copy that RabbitMQ refuses, or that reaches no queue, leaves the original in the work queue.
//!
//! Each test declares a topology of its own (`Topology::named(unique(..))`, with `x-expires`) and deletes it at
//! the end, passed or failed. The waits between attempts are tens of milliseconds, and the test of the delays
//! never waits them out: it plays the broker's part itself, taking each copy from the wait queue and putting it
//! back in the work queue, so it reads every `expiration` without timing anything.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use kit::UserEvent;
use kit_testing::unique;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{Value, json};
use lesson_08::rabbit::{
    Handled, Outcome, Step, Topology, Until, header, on_failure, open_channel, publish_event, publish_raw, work,
};
use lesson_08::{Jitter, Processor, RetryPolicy};
use uuid::Uuid;

/// How long one step may take: RabbitMQ on the same machine answers in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Runs `step`, failing the test if it takes longer than [`WAIT`] (naming `what`).
async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, step).await.unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

/// Short waits between attempts, exactly the policy's (no jitter): 20 ms, then 40 ms.
const QUICK: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(20),
    max_delay: Duration::from_secs(1),
    jitter: Jitter::None,
};

/// A processor that fails the first `failing[id]` attempts of chosen events, and remembers every attempt.
#[derive(Default)]
struct Script {
    failing: HashMap<Uuid, u32>,
    attempts: HashMap<Uuid, u32>,
    processed: Vec<Uuid>,
}

impl Script {
    fn failing(failing: impl IntoIterator<Item = (Uuid, u32)>) -> Script {
        Script { failing: failing.into_iter().collect(), ..Script::default() }
    }
}

impl Processor for Script {
    async fn process(&mut self, event: &UserEvent) -> anyhow::Result<()> {
        let attempt = self.attempts.entry(event.event_id).or_default();
        *attempt += 1;
        if *attempt <= self.failing.get(&event.event_id).copied().unwrap_or(0) {
            anyhow::bail!("store unavailable (attempt {attempt})");
        }
        self.processed.push(event.event_id);
        Ok(())
    }
}

/// A test's connection, a channel in confirm mode, and its topology (deleted when the rig is dropped).
struct Rig {
    connection: Connection,
    channel: Channel,
    topology: Topology,
    _cleanup: Cleanup,
}

impl Rig {
    async fn new(prefix: &str) -> Rig {
        let topology = Topology::named(&unique(prefix));
        let cleanup = Cleanup { queues: topology.queues().iter().map(|q| q.to_string()).collect() };
        let connection = kit::rabbitmq::test_connection().await;
        let channel = within("opening a channel", open_channel(&connection, 20)).await.expect("a channel");
        within("declaring the topology", topology.declare(&channel, Some(kit::rabbitmq::SCRATCH_QUEUE_TTL)))
            .await
            .expect("the topology declared");
        Rig { connection, channel, topology, _cleanup: cleanup }
    }

    /// Closes the test's channel, so RabbitMQ puts back in their queues the deliveries it left unsettled, and
    /// opens a fresh one.
    async fn reopen_channel(&mut self) {
        within("closing the channel", self.channel.close(200, "test step done".into())).await.expect("closed");
        self.channel = within("opening a channel", open_channel(&self.connection, 20)).await.expect("a channel");
    }

    /// The messages ready in `queue` (delivered and unsettled ones are not counted).
    async fn ready(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        within("counting a queue", self.channel.queue_declare(queue.into(), passive, FieldTable::default()))
            .await
            .unwrap_or_else(|e| panic!("queue {queue} should exist: {e}"))
            .message_count()
    }

    /// Takes the next message of `queue`, left unsettled, or `None` when it is empty.
    async fn get(&self, queue: &str) -> Option<Delivery> {
        within("basic.get", self.channel.basic_get(queue.into(), BasicGetOptions::default()))
            .await
            .expect("basic.get")
            .map(|message| message.delivery)
    }

    /// Consumes and acknowledges `count` messages of `queue`, each within [`WAIT`].
    async fn drain(&self, queue: &str, count: usize) -> Vec<Delivery> {
        use futures::StreamExt;
        let mut consumer = self
            .channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("basic.consume");
        let mut got = Vec::new();
        while got.len() < count {
            let delivery =
                within(&format!("message {} of {count} arriving in {queue}", got.len() + 1), consumer.next())
                    .await
                    .expect("the consumer is open")
                    .expect("a delivery");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            got.push(delivery);
        }
        self.channel.basic_cancel(consumer.tag(), Default::default()).await.expect("basic.cancel");
        got
    }
}

/// Deletes the test's queues when the test ends, passed or failed.
struct Cleanup {
    queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        // Drop cannot await and may run while the test unwinds: a thread with a runtime of its own deletes them.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let connection = kit::rabbitmq::connect().await?;
                let channel = connection.create_channel().await?;
                let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
                kit::rabbitmq::delete_queues(&channel, &queues).await?;
                connection.close(200, "test done".into()).await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the test's queues: {deleted:?}");
        }
    }
}

/// A header's value as JSON: integers as numbers, strings as strings, x-death's tables and arrays as they are.
fn json_of(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(array) => Value::Array(array.as_slice().iter().map(json_of).collect()),
        AMQPValue::FieldTable(table) => table_json(table),
        other => json!(format!("{other:?}")),
    }
}

fn table_json(table: &FieldTable) -> Value {
    Value::Object(table.inner().iter().map(|(k, v)| (k.to_string(), json_of(v))).collect())
}

/// The headers of `delivery` as JSON (an empty object without headers).
fn headers(delivery: &Delivery) -> Value {
    delivery.properties.headers().as_ref().map(table_json).unwrap_or_else(|| json!({}))
}

/// The original of most tests: a purchase published with a message id and a trace header of its own, which every
/// copy must keep.
async fn publish_traced(rig: &Rig, event: &UserEvent, persistent: bool) -> BasicProperties {
    let mut trace = FieldTable::default();
    trace.insert("trace-id".into(), AMQPValue::LongString("trace-42".into()));
    let properties = BasicProperties::default()
        .with_message_id(format!("order-{}", event.user_id).into())
        .with_headers(trace)
        .with_delivery_mode(if persistent { 2 } else { 1 });
    let payload = event.to_json();
    within("publishing", publish_raw(&rig.channel, &rig.topology.work, payload.as_bytes(), properties.clone()))
        .await
        .expect("published");
    properties
}

async fn run_worker(rig: &Rig, script: &mut Script, policy: &RetryPolicy, until: Until) -> Vec<Handled> {
    tokio::time::timeout(Duration::from_secs(30), work(&rig.channel, &rig.topology, script, policy, until))
        .await
        .expect("the worker did not finish within 30 s")
        .expect("the worker failed")
}

/// What each delivery led to, in words: `attempt 1: retrying after 20 ms`.
fn steps(handled: &[Handled]) -> Vec<String> {
    handled
        .iter()
        .map(|h| match &h.step {
            Step::Processed => format!("attempt {}: processed", h.attempt),
            Step::Rejected { .. } => format!("attempt {}: rejected as invalid", h.attempt),
            Step::Failed { outcome: Outcome::Retrying { attempt, delay }, .. } => {
                format!("attempt {}: failed; attempt {attempt} retried after {} ms", h.attempt, delay.as_millis())
            }
            Step::Failed { outcome: Outcome::DeadLettered { attempts }, .. } => {
                format!("attempt {}: failed; dead-lettered after {attempts} attempts", h.attempt)
            }
        })
        .collect()
}

/// insta's settings for these snapshots: the workbook's redactions, and the file named after this test binary
/// (`rabbitmq__NAME.snap`), apart from the Kafka tests' snapshots.
fn snapshot_settings() -> insta::Settings {
    let mut settings = kit_testing::redact::settings();
    settings.set_prepend_module_to_snapshot(true);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_tried_max_attempts_times_then_rests_in_the_dlq_with_its_last_error() {
    let mut rig = Rig::new("l08-poison").await;
    let event = UserEvent::purchase("user-3", 4_200);
    let original = publish_traced(&rig, &event, true).await;

    let mut script = Script::failing([(event.event_id, u32::MAX)]);
    // Two deliveries more than a correct answer needs: a retry loop that never ends is stopped, and seen.
    let until = Until { finished: 1, deliveries: QUICK.max_attempts as usize + 2, idle: Duration::from_secs(5) };
    let handled = run_worker(&rig, &mut script, &QUICK, until).await;

    assert_eq!(
        script.attempts.get(&event.event_id).copied().unwrap_or(0),
        QUICK.max_attempts,
        "a message that always fails is tried exactly max_attempts times: {:#?}",
        steps(&handled)
    );
    rig.reopen_channel().await;
    assert_eq!(rig.ready(&rig.topology.work).await, 0, "nothing left in the work queue (every delivery settled)");
    assert_eq!(rig.ready(&rig.topology.wait).await, 0, "nothing left waiting");
    let letters = rig.drain(&rig.topology.dead, 1).await;
    let letter = &letters[0];
    let letter_headers = headers(letter);
    assert_eq!(letter.data, event.to_json().as_bytes(), "the dead letter is the original payload, byte for byte");
    assert_eq!(
        letter.properties.message_id(),
        original.message_id(),
        "the dead letter keeps the original's message id"
    );
    assert_eq!(letter_headers["trace-id"], json!("trace-42"), "the dead letter keeps the original's headers");
    assert_eq!(letter_headers[header::ATTEMPTS], json!(3), "the dead letter says how many attempts were made");
    assert_eq!(
        letter_headers[header::LAST_ERROR],
        json!("store unavailable (attempt 3)"),
        "the dead letter says why the last attempt failed: {letter_headers:#}"
    );
    assert_eq!(rig.ready(&rig.topology.dead).await, 0, "exactly one dead letter");

    // x-death is left out: it is the broker's, and how it reads on a copy depends on RabbitMQ's version.
    let named: BTreeMap<&str, Value> = [header::ATTEMPTS, header::LAST_ERROR, "trace-id"]
        .into_iter()
        .map(|name| (name, letter_headers[name].clone()))
        .collect();
    let snapshot = json!({
        "deliveries": steps(&handled),
        "dead_letter": {
            "payload": serde_json::from_slice::<Value>(&letter.data).expect("JSON"),
            "message_id": letter.properties.message_id().as_ref().map(|id| id.to_string()),
            "delivery_mode": letter.properties.delivery_mode(),
            "headers": named,
        },
    });
    snapshot_settings().bind(|| insta::assert_json_snapshot!("poison_message_in_the_dlq", snapshot));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_fails_once_is_processed_on_its_second_attempt_and_never_dead_lettered() {
    let mut rig = Rig::new("l08-transient").await;
    let event = UserEvent::purchase("user-1", 1_250);
    publish_traced(&rig, &event, true).await;

    let mut script = Script::failing([(event.event_id, 1)]);
    let until = Until { finished: 1, deliveries: 4, idle: Duration::from_secs(5) };
    let handled = run_worker(&rig, &mut script, &QUICK, until).await;

    assert_eq!(
        steps(&handled),
        ["attempt 1: failed; attempt 1 retried after 20 ms", "attempt 2: processed"],
        "the failure is retried after the base delay, and the second attempt passes"
    );
    assert_eq!(script.processed, [event.event_id], "processed once");
    rig.reopen_channel().await;
    for queue in rig.topology.queues() {
        assert_eq!(rig.ready(queue).await, 0, "{queue} is empty: nothing dead-lettered, nothing left over");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_waiting_copy_waits_twice_as_long_as_the_one_before_and_keeps_the_original() {
    let mut rig = Rig::new("l08-backoff").await;
    // Long delays, never waited out: the test takes each copy out of the wait queue itself.
    let policy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(60),
        jitter: Jitter::None,
    };
    // Not UTF-8, not JSON: on_failure must carry the bytes, not read them. The original is not persistent.
    let payload: &[u8] = b"\xff\xfe raw bytes \x00 of an event";
    let mut trace = FieldTable::default();
    trace.insert("trace-id".into(), AMQPValue::LongString("trace-7".into()));
    let original = BasicProperties::default()
        .with_message_id("order-7".into())
        .with_content_type("application/octet-stream".into())
        .with_headers(trace);
    within("publishing", publish_raw(&rig.channel, &rig.topology.work, payload, original)).await.expect("published");

    let mut waiting = Vec::new();
    for attempt in 1..=policy.max_attempts {
        let delivery = rig.get(&rig.topology.work).await.unwrap_or_else(|| {
            panic!("attempt {attempt}: no message in the work queue (was the copy of attempt {} stored?)", attempt - 1)
        });
        let error = anyhow::anyhow!("store unavailable (attempt {attempt})");
        let outcome = within("on_failure", on_failure(&rig.channel, &rig.topology, &delivery, &error, &policy))
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: on_failure failed: {e:#}"));
        if attempt == policy.max_attempts {
            assert_eq!(outcome, Outcome::DeadLettered { attempts: attempt }, "the last attempt is dead-lettered");
            break;
        }
        assert_eq!(outcome, Outcome::Retrying { attempt, delay: policy.delay(attempt) }, "attempt {attempt}");
        let copy = rig
            .get(&rig.topology.wait)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt}: on_failure returned, yet no copy waits in the wait queue"));
        let copy_headers = headers(&copy);
        assert_eq!(copy.data, payload, "attempt {attempt}: the copy has the original payload, byte for byte");
        assert_eq!(copy.properties.message_id().as_ref().map(|s| s.as_str()), Some("order-7"), "message id kept");
        assert_eq!(copy_headers["trace-id"], json!("trace-7"), "attempt {attempt}: the original's headers kept");
        assert_eq!(copy.properties.delivery_mode(), &Some(2), "attempt {attempt}: the copy is persistent");
        waiting.push((
            copy.properties.expiration().as_ref().map(|e| e.to_string()),
            copy_headers[header::ATTEMPTS].clone(),
        ));

        // The broker's part, played at once: the TTL has run out, the copy goes back to the work queue without
        // its expiration (RabbitMQ removes it when it dead-letters), with everything else as it was.
        let back = BasicProperties::default()
            .with_message_id(copy.properties.message_id().clone().unwrap_or_default())
            .with_delivery_mode(copy.properties.delivery_mode().unwrap_or(1))
            .with_headers(copy.properties.headers().clone().unwrap_or_default());
        within("putting the copy back", publish_raw(&rig.channel, &rig.topology.work, &copy.data, back))
            .await
            .expect("put back");
        copy.ack(BasicAckOptions::default()).await.expect("ack");
    }

    let some = |ms: &str| Some(ms.to_string());
    assert_eq!(
        waiting,
        [(some("10000"), json!(1)), (some("20000"), json!(2)), (some("40000"), json!(3)), (some("60000"), json!(4))],
        "each copy waits policy.delay(n) after failed attempt n — 10 s, 20 s, 40 s, then max_delay — as its \
         `expiration` in milliseconds, and carries the attempts made so far"
    );
    rig.reopen_channel().await;
    assert_eq!(rig.ready(&rig.topology.work).await, 0, "every original was acknowledged once its copy was stored");
    let letters = rig.drain(&rig.topology.dead, 1).await;
    assert_eq!(letters[0].data, payload, "the dead letter has the original payload, byte for byte");
    assert_eq!(headers(&letters[0])[header::ATTEMPTS], json!(5), "the dead letter counts 5 attempts");
    assert_eq!(letters[0].properties.delivery_mode(), &Some(2), "the dead letter is persistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_ends_processed_or_dead_lettered_none_lost_none_twice() {
    let mut rig = Rig::new("l08-tally").await;
    let policy = RetryPolicy { base_delay: Duration::from_millis(10), ..QUICK };
    // user_id names what each event meets: the poison ones first, so the first delivery already fails.
    let (always, never) = (u32::MAX, 0);
    let plan = [
        ("poison-1", always),
        ("fine-1", never),
        ("transient-1", 1),
        ("fine-2", never),
        ("poison-2", always),
        ("transient-2", 2),
        ("fine-3", never),
        ("fine-4", never),
        ("fine-5", never),
    ];
    let events: Vec<UserEvent> = plan.iter().map(|(label, _)| UserEvent::purchase(*label, 100)).collect();
    let mut script = Script::failing(events.iter().zip(plan).map(|(event, (_, fails))| (event.event_id, fails)));
    for event in &events {
        within("publishing", publish_event(&rig.channel, &rig.topology.work, event)).await.expect("published");
    }
    let invalid = b"{\"event_type\": \"purchase\", broken";
    within("publishing", publish_raw(&rig.channel, &rig.topology.work, invalid, BasicProperties::default()))
        .await
        .expect("published");
    let published = events.len() + 1;

    // 17 deliveries: 5 fine + 2 + 3 (transient) + 3 + 3 (poison) + 1 invalid; a few more to spare.
    let until = Until { finished: published, deliveries: 22, idle: Duration::from_secs(5) };
    let handled = run_worker(&rig, &mut script, &policy, until).await;

    let label = |id: &Uuid| events.iter().find(|e| e.event_id == *id).map(|e| e.user_id.clone()).unwrap();
    let mut processed: Vec<String> = script.processed.iter().map(label).collect();
    processed.sort();
    assert_eq!(
        processed,
        ["fine-1", "fine-2", "fine-3", "fine-4", "fine-5", "transient-1", "transient-2"],
        "every event that can pass is processed, once"
    );
    rig.reopen_channel().await;
    assert_eq!(rig.ready(&rig.topology.work).await, 0, "nothing left in the work queue: every delivery settled");
    assert_eq!(rig.ready(&rig.topology.wait).await, 0, "nothing left waiting");
    let dead = rig.ready(&rig.topology.dead).await as usize;
    assert_eq!(processed.len() + dead, published, "in = processed + dead-lettered: {:#?}", steps(&handled));
    let letters = rig.drain(&rig.topology.dead, dead).await;

    // What became of each message, by its label: the attempts each took, and where it ended.
    let mut fates = BTreeMap::new();
    for h in &handled {
        let Some(event) = &h.event else { continue };
        let fate = match &h.step {
            Step::Processed => format!("processed on attempt {}", h.attempt),
            Step::Failed { outcome: Outcome::DeadLettered { attempts }, .. } => {
                format!("dead-lettered after {attempts} attempts")
            }
            _ => continue,
        };
        fates.insert(event.user_id.clone(), fate);
    }
    let mut dead_letters: Vec<Value> = letters
        .iter()
        .map(|letter| {
            let headers = headers(letter);
            match serde_json::from_slice::<UserEvent>(&letter.data) {
                Ok(event) => json!({
                    "label": event.user_id,
                    "attempts": headers[header::ATTEMPTS],
                    "last-error": headers[header::LAST_ERROR],
                }),
                // The invalid payload: rejected by `work` without requeue, dead-lettered by RabbitMQ itself.
                Err(_) => json!({
                    "label": "invalid payload",
                    "x-death": headers["x-death"].as_array().map(|deaths| deaths.iter().map(|d| json!({
                        "queue": if d["queue"] == json!(rig.topology.work) { "the work queue" } else { "another queue" },
                        "reason": d["reason"],
                        "count": d["count"],
                    })).collect::<Vec<_>>()),
                }),
            }
        })
        .collect();
    dead_letters.sort_by_key(|letter| letter["label"].to_string());
    let snapshot = json!({ "fates": fates, "dead_letters": dead_letters });
    snapshot_settings().bind(|| insta::assert_json_snapshot!("every_message_accounted_for", snapshot));
}

/// Hands `on_failure` the original with `topology` (whose wait or dead-letter queue cannot store the copy), and
/// checks that it returns an error and leaves the original unsettled: back in the work queue once the channel
/// closes, not acknowledged, not rejected into the dead-letter queue.
async fn the_original_survives_a_copy_not_stored(rig: &mut Rig, topology: Topology, policy: RetryPolicy, why: &str) {
    let event = UserEvent::purchase("user-5", 700);
    publish_traced(rig, &event, true).await;
    let delivery = rig.get(&rig.topology.work).await.expect("the original in the work queue");
    let error = anyhow::anyhow!("store unavailable (attempt 1)");
    let result = within("on_failure", on_failure(&rig.channel, &topology, &delivery, &error, &policy)).await;
    assert!(
        result.is_err(),
        "{why}: on_failure must return an error, not {result:?} (a copy the broker did not store is no copy)"
    );
    assert_eq!(
        rig.ready(&rig.topology.work).await,
        0,
        "{why}: the original must stay with its consumer, unsettled, while the channel lives; it is back in the work \
         queue already (requeued), so the work loop gets it again at once while the copy still cannot be stored"
    );
    rig.reopen_channel().await;
    assert_eq!(
        rig.ready(&rig.topology.work).await,
        1,
        "{why}: the original must stay unsettled, so RabbitMQ delivers it again; it is gone (acknowledged, or \
         rejected) and with it the message"
    );
    assert_eq!(rig.ready(&rig.topology.dead).await, 0, "{why}: nothing in the dead-letter queue");
    let again = rig.get(&rig.topology.work).await.expect("the original again");
    assert_eq!(again.data, event.to_json().as_bytes(), "{why}: the original, unchanged");
    again.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_rabbitmq_refuses_leaves_the_original_in_the_work_queue() {
    let mut rig = Rig::new("l08-refused").await;
    // A queue that refuses every message: at most 0 messages, and a publish beyond that is nacked.
    let full = unique("l08-full");
    let _cleanup = Cleanup { queues: vec![full.clone()] };
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(kit::rabbitmq::SCRATCH_QUEUE_TTL.as_millis() as i64));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    within("declaring a full queue", rig.channel.queue_declare(full.as_str().into(), durable, arguments))
        .await
        .expect("declared");

    let refusing_wait = Topology { wait: full.clone(), ..rig.topology.clone() };
    the_original_survives_a_copy_not_stored(&mut rig, refusing_wait, QUICK, "the wait queue refuses the copy").await;
    let refusing_dead = Topology { dead: full.clone(), ..rig.topology.clone() };
    let one_attempt = RetryPolicy { max_attempts: 1, ..QUICK };
    the_original_survives_a_copy_not_stored(&mut rig, refusing_dead, one_attempt, "the DLQ refuses the dead letter")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_reaches_no_queue_leaves_the_original_in_the_work_queue() {
    let mut rig = Rig::new("l08-unroutable").await;
    // Never declared: the default exchange routes a copy sent there to no queue, and still confirms it.
    let missing = unique("l08-missing");
    let _cleanup = Cleanup { queues: vec![missing.clone()] };

    let no_wait = Topology { wait: missing.clone(), ..rig.topology.clone() };
    the_original_survives_a_copy_not_stored(&mut rig, no_wait, QUICK, "the wait queue does not exist").await;
    let no_dead = Topology { dead: missing.clone(), ..rig.topology.clone() };
    let one_attempt = RetryPolicy { max_attempts: 1, ..QUICK };
    the_original_survives_a_copy_not_stored(&mut rig, no_dead, one_attempt, "the DLQ does not exist").await;
}
