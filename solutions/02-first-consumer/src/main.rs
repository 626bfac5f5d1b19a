//! Lesson 02, the runnable story: put a few events (and one broken record) on `user-events`, then read them
//! back as a consumer group member, until enough events, a quiet spell, or Ctrl-C.
//!
//! Run it with `cargo xtask lesson 02` (your exercise) or `cargo xtask lesson 02 --solution`. Against a broker
//! that already has events (say `cargo xtask broker` fed by another producer) add `--no-produce`.

use std::time::Duration;

use clap::Parser;
use kit::{Broker, EventType};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_02::{StopReason, consume, consumer_config};

/// Consume user events from Kafka as a member of a consumer group.
#[derive(Parser)]
struct Args {
    /// The consumer group to join. A new group starts from the earliest record.
    #[arg(long, default_value_t = format!("lesson-02-{}", std::process::id()))]
    group: String,
    /// Stop after this many events.
    #[arg(long, default_value_t = 8)]
    max: usize,
    /// Stop when no record arrives for this many seconds.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Do not produce sample events first; only read what is there.
    #[arg(long)]
    no_produce: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = kit::topics::USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;

    if !args.no_produce {
        produce_samples(&broker, topic.name).await?;
    }

    let consumer: StreamConsumer = consumer_config(&broker, &args.group).create()?;
    consumer.subscribe(&[topic.name])?;
    println!("joined group {:?} on {}; reading (Ctrl-C stops)…\n", args.group, topic.name);

    let mut total = 0;
    loop {
        // One event at a time so each is printed as it arrives; a quiet spell or Ctrl-C ends the story.
        let quiet = tokio::time::sleep(Duration::from_secs(args.idle_secs));
        let shutdown = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = quiet => {}
            }
        };
        let batch = consume(&consumer, 1, shutdown).await;
        for skipped in &batch.skipped {
            println!("skipped partition {} offset {:>3}: {}", skipped.partition, skipped.offset, skipped.error);
        }
        for read in &batch.events {
            let e = &read.event;
            let what = match (e.event_type, e.amount_cents) {
                (EventType::Purchase, Some(c)) => format!("purchase {:>4}.{:02}", c / 100, c % 100),
                _ => "click".into(),
            };
            println!("read    partition {} offset {:>3}: {what:<14} by {}", read.partition, read.offset, e.user_id);
        }
        total += batch.events.len();
        if batch.stopped_by == StopReason::Shutdown || total >= args.max {
            break;
        }
    }
    println!("\nread {total} event(s). Run again with the same --group: it resumes after the committed offsets.");
    Ok(())
}

/// A few events and one record that is not an event, so the story shows both paths.
async fn produce_samples(broker: &Broker, topic: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = broker.producer_config().create()?;
    let events = kit::events::live_events(5, 3);
    for (i, event) in events.iter().enumerate() {
        let payload = event.to_json();
        send(&producer, topic, &event.user_id, &payload).await?;
        if i == 2 {
            send(&producer, topic, &event.user_id, "{\"user_id\": \"user-1\", \"event_type\": \"like\"}").await?;
        }
    }
    println!("produced 5 events and 1 malformed record to {topic}");
    Ok(())
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &str) -> anyhow::Result<()> {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(5))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("producing sample data: {e}"))?;
    Ok(())
}
