//! Lesson 05, the runnable story, in four acts on `user-events`:
//! 1. two new groups start side by side, one at `earliest`, one at `latest`;
//! 2. a consumer that commits after processing crashes between the two, and a restart redelivers the record;
//!    the same crash under auto-commit skips records instead;
//! 3. a consumer rewinds to an offset and replays;
//! 4. the lag of the group, per partition.
//!
//! Run it with `cargo xtask lesson 05` (your exercise) or `cargo xtask lesson 05 --solution`.
//!
//! With `--rabbitmq` (`cargo xtask lesson 05 --rabbitmq`) it tells the RabbitMQ counterpart instead, and starts no
//! Kafka broker: a classic queue whose messages are settled one by one (done, retry later, poison), a replay that
//! finds nothing left, and a stream read from first, from an offset and from next.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kit::Broker;
use kit::publish::publish_events;
use kit::topics::USER_EVENTS;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use rdkafka::consumer::StreamConsumer;
use solution_05::rabbit::{self, Outcome, StreamStart};
use solution_05::{
    Commits, Crash, Handled, StartFrom, consumer_config, crash, lag, process_then_commit, publish_until_received,
    receive, replay_from, resume,
};
use uuid::Uuid;

/// Offsets: where a group starts, when it commits, how to replay, and how far behind it is.
#[derive(Parser)]
struct Args {
    /// Events published before the groups start (the "history").
    #[arg(long, default_value_t = 24)]
    history: usize,
    /// Events published once they run.
    #[arg(long, default_value_t = 3)]
    new: usize,
    /// Tell the RabbitMQ counterpart instead: per-message settlement, and streams (no Kafka broker is started).
    #[arg(long)]
    rabbitmq: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rabbitmq {
        return rabbitmq_story().await;
    }
    let topic = USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;
    let all_partitions: Vec<i32> = (0..topic.partitions).collect();
    // Fresh group names on every run: a group's committed offsets outlive its consumers.
    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let group = |name: &str| format!("lesson05-{name}-{run}");

    let history = kit::events::live_events(args.history, 6);
    let positions = publish_events(&broker, topic.name, &history).await?;
    println!("topic:  {} — published {} events of history\n", topic.name, history.len());

    println!("1. auto.offset.reset: where a group with no committed offset starts");
    let early = consumer(&broker, &group("earliest"), StartFrom::Earliest, Commits::AfterProcessing)?;
    let late = consumer(&broker, &group("latest"), StartFrom::Latest, Commits::AfterProcessing)?;
    resume(&early, topic.name, &all_partitions)?;
    resume(&late, topic.name, &all_partitions)?;
    // New events one by one until the `latest` group reads one: it sees nothing written before it found the end.
    let new = kit::events::live_events(args.new.max(1) + 50, 6);
    let warmed = publish_until_received(&broker, topic.name, &late, &new).await?;
    let rest = &new[warmed..warmed + args.new];
    publish_events(&broker, topic.name, rest).await?;
    let new = &new[..warmed + args.new];
    let ours: BTreeSet<Uuid> = history.iter().chain(new).map(|e| e.event_id).collect();
    let early_saw = read_until_seen(&early, &ours).await?;
    let rest_ids: BTreeSet<Uuid> = rest.iter().map(|e| e.event_id).collect();
    let late_saw = read_until_seen(&late, &rest_ids).await? + 1;
    println!(
        "   earliest: read the log from the start: all {} history events, then the {} new",
        history.len(),
        new.len()
    );
    if early_saw > ours.len() {
        println!("             ({early_saw} records in all: the log also holds earlier runs' events)");
    }
    println!(
        "   latest:   read {late_saw} records, only new ones: the history is invisible to it{}",
        if warmed > 1 {
            format!(" (and it missed {} written before it found the end)", warmed - 1)
        } else {
            String::new()
        }
    );
    println!();
    close(early).await;
    close(late).await;

    // The crash acts use the partition that got most of this run's events, starting at this run's first one.
    let partition = busiest(&positions);
    let first_offset = positions.iter().filter(|p| p.partition == partition).map(|p| p.offset).min().unwrap_or(0);

    println!("2a. commit after processing, crash between processing and commit (partition {partition})");
    let manual = group("at-least-once");
    let worker = consumer(&broker, &manual, StartFrom::Earliest, Commits::AfterProcessing)?;
    replay_from(&worker, topic.name, partition, first_offset)?;
    let before = process_then_commit(&worker, 5, Some(Crash { after_processing: 3 })).await?;
    crash(worker);
    println!("   processed offsets {:?}, then crashed before committing the last", offsets(&before));
    let committed = committed_offset(&broker, &manual, topic.name, partition).await?;
    println!("   committed offset: {}", show(committed));
    let worker = consumer(&broker, &manual, StartFrom::Earliest, Commits::AfterProcessing)?;
    resume(&worker, topic.name, &[partition])?;
    let after = process_then_commit(&worker, 2, None).await?;
    close(worker).await;
    println!(
        "   restarted: processed {:?} — offset {} again: redelivered, nothing lost (at-least-once)\n",
        offsets(&after),
        before.last().map(|h| h.offset).unwrap_or_default()
    );

    println!("2b. auto-commit, crash after the records were handed over but before they were processed");
    let auto = group("auto-commit");
    let worker = consumer(&broker, &auto, StartFrom::Earliest, Commits::Auto)?;
    replay_from(&worker, topic.name, partition, first_offset)?;
    let handed_over = receive(&worker, 5).await?;
    let processed = &handed_over[..2];
    let handed_end = handed_over.last().map(|h| h.offset + 1);
    wait_for_commit(&broker, &auto, topic.name, partition, handed_end).await?;
    crash(worker);
    println!(
        "   handed over {:?}, processed only {:?}; auto-commit already committed {}",
        offsets(&handed_over),
        offsets(processed),
        show(handed_end)
    );
    let worker = consumer(&broker, &auto, StartFrom::Earliest, Commits::Auto)?;
    resume(&worker, topic.name, &[partition])?;
    let after = receive(&worker, 1).await?;
    close(worker).await;
    let skipped: Vec<i64> = offsets(&handed_over[2..]);
    println!("   restarted at offset {:?}: {skipped:?} were never processed (lost)\n", offsets(&after));

    println!("3. rewind and replay (partition {partition})");
    let replayer = consumer(&broker, &group("replay"), StartFrom::Earliest, Commits::AfterProcessing)?;
    replay_from(&replayer, topic.name, partition, first_offset + 1)?;
    let replayed = receive(&replayer, 3).await?;
    close(replayer).await;
    println!(
        "   assigned at offset {} and read {:?} again: the log keeps what was read\n",
        first_offset + 1,
        offsets(&replayed)
    );

    println!("4. lag of group {manual} = high watermark − committed offset");
    let probe = consumer(&broker, &manual, StartFrom::Earliest, Commits::AfterProcessing)?;
    for (p, l) in lag(&probe, topic.name, topic.partitions)? {
        println!(
            "   partition {p}: high watermark {:>5}, committed {:>5}, lag {:>5}",
            l.high_watermark,
            show(l.committed),
            l.lag
        );
    }
    close(probe).await;
    println!("\nNext: lesson 06 puts an HTTP gateway in front of the producer.");
    Ok(())
}

fn consumer(broker: &Broker, group: &str, start: StartFrom, commits: Commits) -> anyhow::Result<StreamConsumer> {
    Ok(consumer_config(broker, group, start, commits).create()?)
}

fn offsets(handled: &[Handled]) -> Vec<i64> {
    handled.iter().map(|h| h.offset).collect()
}

fn show(offset: Option<i64>) -> String {
    offset.map_or_else(|| "none".to_string(), |o| o.to_string())
}

/// The partition that received most of `positions`.
fn busiest(positions: &[kit::publish::Position]) -> i32 {
    let mut counts = std::collections::BTreeMap::new();
    for p in positions {
        *counts.entry(p.partition).or_insert(0) += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p).unwrap_or(0)
}

/// The offset `group` has committed on `partition`, read by a consumer of that group that reads nothing.
async fn committed_offset(broker: &Broker, group: &str, topic: &str, partition: i32) -> anyhow::Result<Option<i64>> {
    let probe = consumer(broker, group, StartFrom::Earliest, Commits::AfterProcessing)?;
    let committed = lag(&probe, topic, partition + 1)?.get(&partition).and_then(|l| l.committed);
    close(probe).await;
    Ok(committed)
}

/// Waits until auto-commit has committed `offset` for `group`, or gives up after 15 s.
async fn wait_for_commit(
    broker: &Broker,
    group: &str,
    topic: &str,
    partition: i32,
    offset: Option<i64>,
) -> anyhow::Result<()> {
    let probe = consumer(broker, group, StartFrom::Earliest, Commits::AfterProcessing)?;
    let what = format!("auto-commit to commit offset {}", show(offset));
    kit::wait::until(&what, Duration::from_secs(15), || {
        let committed = lag(&probe, topic, partition + 1).map(|lags| lags.get(&partition).and_then(|l| l.committed));
        async move { Ok(committed.map(|c| c == offset)?.then_some(())) }
    })
    .await?;
    close(probe).await;
    Ok(())
}

/// Reads until every event of `ids` has been seen; returns how many records that took.
async fn read_until_seen(consumer: &StreamConsumer, ids: &BTreeSet<Uuid>) -> anyhow::Result<usize> {
    let mut missing = ids.clone();
    let mut read = 0;
    while !missing.is_empty() {
        for handled in receive(consumer, 1).await? {
            missing.remove(&handled.event_id);
            read += 1;
        }
    }
    Ok(read)
}

/// Closes `consumer` off the async workers (closing blocks while librdkafka shuts the client down).
async fn close(consumer: StreamConsumer) {
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

/// The RabbitMQ counterpart: a classic queue settled message by message, then a stream.
async fn rabbitmq_story() -> anyhow::Result<()> {
    let rabbitmq = kit::rabbitmq::RabbitMq::resolve()?;
    println!("{}\n", rabbitmq.describe());
    let connection = Arc::new(rabbitmq.connect().await?);
    let channel = rabbit::confirming_channel(&connection).await?;
    let queue = kit::topics::unique("lesson05-work");
    let stream = kit::topics::unique("lesson05-log");
    // The acts run in a task of their own, so that what they declare is deleted even when one of them panics (an
    // exercise still at its `todo!()`): the panic is raised again once the queue and the stream are gone.
    let acts = tokio::spawn({
        let (connection, channel, queue, stream) = (connection.clone(), channel.clone(), queue.clone(), stream.clone());
        async move {
            settle_then_replay(&channel, &queue).await?;
            read_the_stream(&connection, &channel, &stream).await
        }
    });
    let told = acts.await;
    kit::rabbitmq::delete_queues(&channel, &[&queue, &stream]).await?;
    match told {
        Ok(told) => told?,
        Err(failed) => match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(failed) => return Err(failed.into()),
        },
    }
    println!("What differs from the Kafka story:");
    println!("   - Kafka kept one number per group and partition: committing N said \"everything before N is done\",");
    println!("     and the records stayed, so a replay was an assign at an older offset.");
    println!("   - A classic queue keeps no position: each message is acked, requeued or rejected on its own, and a");
    println!("     settled message is gone. `multiple` makes an ack cumulative like a commit: a trap out of order.");
    println!("   - A stream is RabbitMQ's log: readers start at first, next, an offset or a timestamp, and reading");
    println!("     removes nothing; over AMQP the broker keeps no committed offset: the reader remembers its own.");
    println!("\nNext: lesson 06 puts an HTTP gateway in front of the producer.");
    Ok(())
}

/// Act 1 and 2 on RabbitMQ: six messages settled one by one, one of them retried and one poison; then a replay.
async fn settle_then_replay(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    println!("1. A classic queue ({queue}): every message is settled on its own");
    channel.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    let messages: Vec<String> = (1..=6).map(|i| format!("order-{i}")).collect();
    rabbit::publish(channel, queue, &messages).await?;
    println!("   published {}", messages.join(", "));
    channel.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumer =
        channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut settled = 0;
    while settled < messages.len() {
        let delivery = rabbit::next_delivery(&mut consumer, "the queue's messages").await?;
        let text = rabbit::payload(&delivery);
        // The handler: order-2's dependency is down the first time, order-4 does not parse.
        let outcome = match text.as_str() {
            "order-2" if !delivery.redelivered => Outcome::RetryLater,
            "order-4" => Outcome::Poison,
            _ => Outcome::Done,
        };
        let effect = match outcome {
            Outcome::Done => "acked: gone for good",
            Outcome::RetryLater => "nacked with requeue: back in the queue",
            Outcome::Poison => "rejected without requeue: dropped, never delivered again",
        };
        let redelivered = if delivery.redelivered { " (redelivered)" } else { "" };
        rabbit::settle(&delivery, outcome).await?;
        println!("   tag {} {text}{redelivered}: {outcome:?} → {effect}", delivery.delivery_tag);
        if outcome != Outcome::RetryLater {
            settled += 1;
        }
    }
    // Asked after the settlements, on the same channel: RabbitMQ has handled them all by then.
    println!("\n2. Replay the queue from the start, as act 3 of the Kafka story did?");
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let left = channel.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count();
    let got = channel.basic_get(queue.into(), BasicGetOptions::default()).await?;
    println!(
        "   the queue holds {left} messages and basic.get returns {}: each acked message was deleted, and a queue",
        if got.is_some() { "one" } else { "nothing" }
    );
    println!("   has no offset to go back to\n");
    Ok(())
}

/// Act 3 on RabbitMQ: a stream read from first, from an offset, and from next.
async fn read_the_stream(connection: &Connection, publisher: &Channel, stream: &str) -> anyhow::Result<()> {
    println!("3. A stream ({stream}): a log inside RabbitMQ");
    rabbit::declare_stream(publisher, stream).await?;
    let messages: Vec<String> = (1..=6).map(|i| format!("order-{i}")).collect();
    rabbit::publish(publisher, stream, &messages).await?;
    println!("   published {}", messages.join(", "));
    let from_first = read_some(connection, stream, StreamStart::First, 6, None).await?;
    println!("   from first:    {}", from_first.join(", "));
    let from_three = read_some(connection, stream, StreamStart::Offset(3), 3, None).await?;
    println!("   from offset 3: {} — read again: reading removed nothing", from_three.join(", "));
    let more: Vec<String> = (7..=8).map(|i| format!("order-{i}")).collect();
    let from_next = read_some(connection, stream, StreamStart::Next, 2, Some((publisher, &more))).await?;
    println!("   with next:     {} — only what was published after the reader started\n", from_next.join(", "));
    Ok(())
}

/// Starts a reader of `stream` at `from` on a channel of its own, publishes `then` (if any) once it reads, and
/// returns the `count` messages it got as "offset: payload".
async fn read_some(
    connection: &Connection,
    stream: &str,
    from: StreamStart,
    count: usize,
    then: Option<(&Channel, &[String])>,
) -> anyhow::Result<Vec<String>> {
    let channel = connection.create_channel().await?;
    let mut consumer = rabbit::read_stream(&channel, stream, from).await?;
    if let Some((publisher, messages)) = then {
        rabbit::publish(publisher, stream, messages).await?;
    }
    let mut read = Vec::with_capacity(count);
    while read.len() < count {
        let delivery = rabbit::next_delivery(&mut consumer, &format!("the stream from {from:?}")).await?;
        read.push(format!("{}: {}", rabbit::stream_offset(&delivery)?, rabbit::payload(&delivery)));
        rabbit::settle(&delivery, Outcome::Done).await?; // on a stream: "ready for more", nothing is deleted
    }
    channel.close(200, "done".into()).await?;
    Ok(read)
}
