//! Grades lesson 05's RabbitMQ counterpart against a real RabbitMQ (`kit::rabbitmq`): `settle` removes, requeues or
//! drops exactly the delivery it is given, whatever order deliveries are handled in, and only once; `read_stream`
//! reads a stream from its first message, from an offset or from what comes next, and reading removes nothing.
//!
//! What is still in a classic queue is observed two ways, with no waiting for something not to happen: a marker
//! message published on the consuming channel after the settlements (RabbitMQ handles one channel's commands in
//! order, and a requeued message keeps its place ahead of the marker, so whatever comes back comes before it);
//! and, once the consuming channel is closed — which returns its unsettled deliveries to the queue — the queue's
//! depth from a passive declare on another channel.

use std::path::PathBuf;
use std::time::Duration;

use kit::rabbitmq::{SCRATCH_QUEUE_TTL, delete_queues, test_connection};
use kit_testing::unique;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use serde::Serialize;
use solution_05::rabbit::{
    Outcome, StreamStart, confirming_channel, declare_stream, next_delivery, payload, publish, read_stream, settle,
    stream_offset,
};

/// The bound on anything the tests wait for besides a delivery (`next_delivery` has its own).
const WAIT: Duration = Duration::from_secs(10);
/// The payload the tests publish after their settlements: what comes back comes before it.
const MARKER: &str = "marker";

fn texts(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// Deletes a queue or stream a test declared when the test ends, passed or failed: a test that fails at a
/// `todo!()` never reaches its last line, and a stream keeps its messages until it is deleted.
struct Scratch {
    name: String,
    /// The note that stands for the stream's `x-expires` (see `sweep_expired_streams`), removed with the stream.
    note: Option<PathBuf>,
}

impl std::ops::Deref for Scratch {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        if let Err(e) = delete_now(vec![name]) {
            eprintln!("could not delete a test's queue: {e:#}");
        } else if let Some(note) = &self.note {
            let _ = std::fs::remove_file(note);
        }
    }
}

/// Deletes the queues `names` from a thread with a runtime of its own: `drop` cannot await, and may run while a
/// panic unwinds.
fn delete_now(names: Vec<String>) -> anyhow::Result<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let connection = kit::rabbitmq::connect().await?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            delete_queues(&connection.create_channel().await?, &names).await
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread deleting queues panicked"))?
}

/// Where each test stream is noted until it is deleted.
fn stream_notes() -> PathBuf {
    std::env::temp_dir().join("workbook-lesson05-rabbitmq-streams")
}

/// A stream takes no `x-expires`, and a test process killed half-way (a time limit; the proofs stop the other tests
/// of a wrong answer once one has failed) never drops its guard. So each test stream is noted in a file until it is
/// deleted, and every stream test first deletes the streams noted longer ago than `SCRATCH_QUEUE_TTL`: no test
/// runs that long, so their tests are gone — what `x-expires` does for the classic queues.
fn sweep_expired_streams() {
    let Ok(notes) = std::fs::read_dir(stream_notes()) else { return };
    let expired: Vec<PathBuf> = notes
        .flatten()
        .filter(|note| {
            note.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > SCRATCH_QUEUE_TTL)
        })
        .map(|note| note.path())
        .collect();
    let names = expired.iter().filter_map(|note| note.file_name()?.to_str().map(str::to_string)).collect();
    if delete_now(names).is_ok() {
        for note in expired {
            let _ = std::fs::remove_file(note);
        }
    }
}

/// A fresh classic queue, deleted when the returned guard is dropped (and by RabbitMQ after `SCRATCH_QUEUE_TTL`
/// unused, should even that fail).
async fn work_queue(connection: &Connection) -> Scratch {
    let channel = connection.create_channel().await.expect("a channel");
    let name = unique("lesson05-work");
    let mut arguments = FieldTable::default();
    let ttl = i64::try_from(SCRATCH_QUEUE_TTL.as_millis()).unwrap();
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(ttl));
    channel.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), arguments).await.expect("a queue");
    let _ = channel.close(200, "done".into()).await;
    Scratch { name, note: None }
}

/// A confirming channel with room for ten unacknowledged deliveries, consuming `queue`.
async fn consume(connection: &Connection, queue: &str) -> (Channel, Consumer) {
    let channel = confirming_channel(connection).await.expect("a channel");
    channel.basic_qos(10, BasicQosOptions::default()).await.expect("a prefetch");
    let consumer = channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("a consumer");
    (channel, consumer)
}

async fn take(consumer: &mut Consumer, count: usize, what: &str) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        let what = format!("{what} ({} of {count})", i + 1);
        deliveries.push(next_delivery(consumer, &what).await.unwrap_or_else(|e| panic!("{e:#}")));
    }
    deliveries
}

/// What a consumer saw of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Seen {
    payload: String,
    redelivered: bool,
}

fn seen(delivery: &Delivery) -> Seen {
    Seen { payload: payload(delivery), redelivered: delivery.redelivered }
}

fn again(payload: &str) -> Seen {
    Seen { payload: payload.to_string(), redelivered: true }
}

/// Publishes the marker on `channel` and takes every delivery up to it; the deliveries before it are returned
/// (still to settle), the marker is acknowledged.
async fn until_marker(channel: &Channel, consumer: &mut Consumer, queue: &str) -> Vec<Delivery> {
    publish(channel, queue, &[MARKER.to_string()]).await.expect("the marker published");
    let mut before = Vec::new();
    loop {
        let delivery = next_delivery(consumer, "the marker published after the settlements").await;
        let delivery = delivery.unwrap_or_else(|e| panic!("{e:#}"));
        if payload(&delivery) == MARKER {
            delivery.ack(BasicAckOptions::default()).await.expect("the marker acknowledged");
            return before;
        }
        before.push(delivery);
    }
}

/// How many messages `queue` holds ready for a consumer (unacknowledged ones are not counted).
async fn depth(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.expect("a channel");
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.expect("the queue");
    let _ = channel.close(200, "done".into()).await;
    declared.message_count()
}

/// Closes `channel` (as a crashed consumer's channel is): RabbitMQ returns its unsettled deliveries to the queue.
async fn close(channel: Channel) {
    tokio::time::timeout(WAIT, channel.close(200, "done".into()))
        .await
        .expect("the channel closed within 10 s")
        .expect("the channel closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_settles_its_message() {
    let connection = test_connection().await;
    let queue = work_queue(&connection).await;
    let (channel, mut consumer) = consume(&connection, &queue).await;
    publish(&channel, &queue, &texts("m", 3)).await.expect("three messages published");
    let first = take(&mut consumer, 3, "the three messages").await;
    let outcomes = [Outcome::Done, Outcome::RetryLater, Outcome::Poison];
    for (delivery, outcome) in first.iter().zip(outcomes) {
        settle(delivery, outcome).await.unwrap_or_else(|e| panic!("settle({outcome:?}): {e:#}"));
    }

    let came_back = until_marker(&channel, &mut consumer, &queue).await;
    let delivered_again: Vec<Seen> = came_back.iter().map(seen).collect();
    for delivery in &came_back {
        settle(delivery, Outcome::Done).await.expect("a redelivered message settled as done");
    }
    close(channel).await;
    let left_in_queue = depth(&connection, &queue).await;

    #[derive(Serialize)]
    struct Settled {
        first_deliveries: Vec<(Seen, Outcome)>,
        delivered_again: Vec<Seen>,
        left_in_queue: u32,
    }
    let settled =
        Settled { first_deliveries: first.iter().map(seen).zip(outcomes).collect(), delivered_again, left_in_queue };
    assert!(settled.first_deliveries.iter().all(|(s, _)| !s.redelivered), "first deliveries are not redeliveries");
    assert_eq!(
        settled.delivered_again,
        [again("m1")],
        "only the RetryLater message comes back, marked redelivered; Done and Poison are gone"
    );
    assert_eq!(left_in_queue, 0, "once everything is settled, nothing is left: an acknowledged message is gone");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("rabbitmq__each_outcome", settled));
}

/// What happened to two deliveries still being handled when a later one was settled first.
#[derive(Serialize)]
struct OutOfOrder {
    settled_first: Outcome,
    came_back_while_the_others_were_handled: Vec<Seen>,
    back_in_the_queue_when_their_channel_closed: Vec<Seen>,
}

/// Three deliveries outstanding; the last is settled with `outcome` while the first two are still being handled,
/// then their channel closes (a crash, as far as RabbitMQ can tell) before they are settled.
async fn settle_the_last_of_three(connection: &Connection, outcome: Outcome) -> OutOfOrder {
    let queue = work_queue(connection).await;
    let (channel, mut consumer) = consume(connection, &queue).await;
    publish(&channel, &queue, &texts("m", 3)).await.expect("three messages published");
    let outstanding = take(&mut consumer, 3, "the three messages").await;
    settle(&outstanding[2], outcome).await.unwrap_or_else(|e| panic!("settle({outcome:?}) of m2: {e:#}"));

    let came_back = until_marker(&channel, &mut consumer, &queue).await;
    let came_back_while_the_others_were_handled: Vec<Seen> = came_back.iter().map(seen).collect();
    for delivery in came_back.iter().filter(|d| payload(d) == "m2") {
        delivery.ack(BasicAckOptions::default()).await.expect("m2's redelivery acknowledged");
    }
    close(channel).await;

    // Whatever the closed channel left unsettled is back in the queue: read it all from a fresh consumer.
    let left = depth(connection, &queue).await;
    let (reader, mut consumer) = consume(connection, &queue).await;
    let returned = take(&mut consumer, left as usize, "what the closed channel left in the queue").await;
    let back_in_the_queue_when_their_channel_closed = returned.iter().map(seen).collect();
    close(reader).await;
    OutOfOrder {
        settled_first: outcome,
        came_back_while_the_others_were_handled,
        back_in_the_queue_when_their_channel_closed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_one_delivery_leaves_the_others_outstanding() {
    let connection = test_connection().await;
    let mut runs = Vec::new();
    for outcome in [Outcome::Done, Outcome::RetryLater, Outcome::Poison] {
        let run = settle_the_last_of_three(&connection, outcome).await;
        let expected_back: &[Seen] = if outcome == Outcome::RetryLater { &[again("m2")] } else { &[] };
        assert_eq!(
            run.came_back_while_the_others_were_handled, expected_back,
            "settling m2 as {outcome:?} must not touch m0 and m1, still being handled"
        );
        assert_eq!(
            run.back_in_the_queue_when_their_channel_closed,
            [again("m0"), again("m1")],
            "after settling m2 as {outcome:?}, m0 and m1 were still outstanding: closing their channel returns them \
             (settling m2 must not have settled them too)"
        );
        runs.push(run);
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("rabbitmq__out_of_order", runs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_settled_only_once() {
    let connection = test_connection().await;
    let queue = work_queue(&connection).await;
    let (channel, mut consumer) = consume(&connection, &queue).await;
    let outcomes = [Outcome::Done, Outcome::RetryLater, Outcome::Poison];
    publish(&channel, &queue, &texts("m", outcomes.len())).await.expect("a message per second outcome");
    let deliveries = take(&mut consumer, outcomes.len(), "the messages").await;
    for (delivery, second_outcome) in deliveries.iter().zip(outcomes) {
        settle(delivery, Outcome::Done).await.expect("the first settlement");
        let second = settle(delivery, second_outcome).await;
        assert!(
            second.is_err(),
            "settling a delivery already settled as Done again as {second_outcome:?} must be an error, not a second \
             settlement (lapin answers a second use of a delivery's acker with Ok(false), and sends nothing)"
        );
    }
    let came_back = until_marker(&channel, &mut consumer, &queue).await;
    close(channel).await;
    let left = depth(&connection, &queue).await;
    assert!(came_back.is_empty() && left == 0, "the messages were done: the second settlements changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_retried_again_comes_back_again() {
    let connection = test_connection().await;
    let queue = work_queue(&connection).await;
    let (channel, mut consumer) = consume(&connection, &queue).await;
    publish(&channel, &queue, &texts("m", 1)).await.expect("a message published");
    let first = take(&mut consumer, 1, "the message").await.remove(0);
    settle(&first, Outcome::RetryLater).await.expect("the first retry");
    let mut back = until_marker(&channel, &mut consumer, &queue).await;
    assert_eq!(back.iter().map(seen).collect::<Vec<_>>(), [again("m0")], "the retried message comes back");
    let redelivered = back.remove(0);
    settle(&redelivered, Outcome::RetryLater).await.expect("a retry of a redelivered message");
    let back_again = until_marker(&channel, &mut consumer, &queue).await;
    assert_eq!(
        back_again.iter().map(seen).collect::<Vec<_>>(),
        [again("m0")],
        "RetryLater always puts the message back, however often it was delivered before: dropping a redelivered \
         one loses it"
    );
    for delivery in &back_again {
        settle(delivery, Outcome::Done).await.expect("done at last");
    }
    close(channel).await;
}

/// A fresh stream holding `payloads`, published on a confirming channel; deleted when the guard is dropped.
async fn stream_with(connection: &Connection, payloads: &[String]) -> (Scratch, Channel) {
    sweep_expired_streams();
    let name = unique("lesson05-stream");
    let note = stream_notes().join(&name);
    std::fs::create_dir_all(stream_notes()).and_then(|_| std::fs::write(&note, "")).expect("the stream noted");
    let stream = Scratch { name, note: Some(note) };
    let channel = confirming_channel(connection).await.expect("a channel");
    declare_stream(&channel, &stream).await.expect("a stream");
    publish(&channel, &stream, payloads).await.expect("messages published to the stream");
    (stream, channel)
}

/// `read_stream` on a channel of its own, bounded, with the reason RabbitMQ gave if it refused the reader.
async fn reader(connection: &Connection, stream: &str, from: StreamStart) -> Consumer {
    let channel = connection.create_channel().await.expect("a channel");
    reader_on(&channel, stream, from).await
}

/// `read_stream` on `channel`, bounded, with the reason RabbitMQ gave if it refused the reader.
async fn reader_on(channel: &Channel, stream: &str, from: StreamStart) -> Consumer {
    tokio::time::timeout(WAIT, read_stream(channel, stream, from))
        .await
        .unwrap_or_else(|_| panic!("read_stream({from:?}) did not return within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("RabbitMQ refused the stream reader from {from:?}: {e:#}"))
}

/// One message read from a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Read {
    stream_offset: u64,
    payload: String,
}

/// Reads `count` messages, acknowledging each (on a stream that deletes nothing: it makes room for more).
async fn read(consumer: &mut Consumer, count: usize, what: &str) -> Vec<Read> {
    let mut read = Vec::with_capacity(count);
    for delivery in take(consumer, count, what).await {
        let stream_offset = stream_offset(&delivery).unwrap_or_else(|e| panic!("{e:#}"));
        read.push(Read { stream_offset, payload: payload(&delivery) });
        delivery.ack(BasicAckOptions::default()).await.expect("a stream delivery acknowledged");
    }
    read
}

fn expected(range: std::ops::Range<u64>, prefix: &str) -> Vec<Read> {
    range.map(|i| Read { stream_offset: i, payload: format!("{prefix}{i}") }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_from_first_gets_every_message_from_the_start() {
    let connection = test_connection().await;
    let (stream, _publisher) = stream_with(&connection, &texts("s", 6)).await;
    let mut consumer = reader(&connection, &stream, StreamStart::First).await;
    let read = read(&mut consumer, 6, "the stream's six messages from the first").await;
    assert_eq!(read, expected(0..6, "s"), "from First: every message, in order, offsets from 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_from_an_offset_starts_exactly_there() {
    let connection = test_connection().await;
    let (stream, _publisher) = stream_with(&connection, &texts("s", 10)).await;
    let mut consumer = reader(&connection, &stream, StreamStart::Offset(4)).await;
    let read = read(&mut consumer, 6, "the stream's messages from offset 4").await;
    assert_eq!(read, expected(4..10, "s"), "from Offset(4): offsets 4 to 9, the first one exactly 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_with_next_gets_only_what_is_published_after_it_starts() {
    let connection = test_connection().await;
    let (stream, publisher) = stream_with(&connection, &texts("old", 5)).await;
    let mut consumer = reader(&connection, &stream, StreamStart::Next).await;
    let new: Vec<String> = (5..8).map(|i| format!("new{i}")).collect();
    publish(&publisher, &stream, &new).await.expect("new messages published");
    let read = read(&mut consumer, 3, "the messages published after the reader started").await;
    assert_eq!(read, expected(5..8, "new"), "with Next: none of the five old messages, the three new ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_stream_removes_nothing() {
    let connection = test_connection().await;
    let (stream, _publisher) = stream_with(&connection, &texts("s", 6)).await;
    // Two readers on one channel: each gets a consumer of its own (a reader's tag must not collide with another's).
    let shared = connection.create_channel().await.expect("a channel");
    let mut first = reader_on(&shared, &stream, StreamStart::First).await;
    let mut second = reader_on(&shared, &stream, StreamStart::First).await;
    let first_reader = read(&mut first, 6, "the first reader's messages").await;
    let second_reader = read(&mut second, 6, "the second reader's messages").await;
    let mut third = reader(&connection, &stream, StreamStart::First).await;
    let read_again_later = read(&mut third, 6, "the messages both readers acknowledged, read again").await;

    for (who, read) in [("first", &first_reader), ("second", &second_reader), ("third", &read_again_later)] {
        assert_eq!(read, &expected(0..6, "s"), "the {who} reader gets every message: reading removes nothing");
    }
    #[derive(Serialize)]
    struct Readers {
        first_reader: Vec<String>,
        second_reader: Vec<String>,
        read_again_later: Vec<String>,
    }
    let line = |read: &[Read]| read.iter().map(|r| format!("offset {}: {}", r.stream_offset, r.payload)).collect();
    let readers = Readers {
        first_reader: line(&first_reader),
        second_reader: line(&second_reader),
        read_again_later: line(&read_again_later),
    };
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("rabbitmq__stream_readers", readers));
}
