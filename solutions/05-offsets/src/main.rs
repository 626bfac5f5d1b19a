//! Lesson 05, the runnable story, in four acts on `user-events`:
//! 1. two new groups start side by side, one at `earliest`, one at `latest`;
//! 2. a consumer that commits after processing crashes between the two, and a restart redelivers the record;
//!    the same crash under auto-commit skips records instead;
//! 3. a consumer rewinds to an offset and replays;
//! 4. the lag of the group, per partition.
//!
//! Run it with `cargo xtask lesson 05` (your exercise) or `cargo xtask lesson 05 --solution`.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use kit::Broker;
use kit::publish::publish_events;
use kit::topics::USER_EVENTS;
use rdkafka::consumer::StreamConsumer;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
