//! Lesson 07, the runnable story: events arrive twice (a producer retry) and a worker crashes after applying
//! some events but before committing them; the Redis aggregates still count every event exactly once.
//!
//! Run it with `cargo xtask lesson 07` (your exercise) or `cargo xtask lesson 07 --solution`. It needs Redis
//! (`REDIS_URL`, default 127.0.0.1:6379).

use std::time::Duration;

use clap::Parser;
use kit::Broker;
use kit::redis::Redis;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use solution_07::{AggregateStore, Aggregates, Outcome, Until, apply_event, consume, consumer_config, decode};

/// Keep per-user aggregates in Redis from user events, effectively once despite duplicates and a crash.
#[derive(Parser)]
struct Args {
    /// How many distinct events to produce.
    #[arg(long, default_value_t = 12)]
    events: usize,
    /// How many of them are sent a second time, as a producer retry after a lost acknowledgement would.
    #[arg(long, default_value_t = 3)]
    duplicates: usize,
    /// How many records the first worker applies before it crashes without committing.
    #[arg(long, default_value_t = 6)]
    crash_after: usize,
    /// How many distinct users the events come from.
    #[arg(long, default_value_t = 3)]
    users: u32,
    /// Keep this run's Redis keys instead of deleting them at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = kit::topics::USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;
    let redis = Redis::resolve()?;
    println!("redis:  {}", redis.describe());
    let connection = redis.connect().await?;

    // The topic may hold earlier runs' events: this story reads only what it writes, from the current ends.
    let start = end_offsets(&broker, topic.name, topic.partitions)?;

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let namespace = format!("workbook:lesson07:{run}");
    let group = format!("lesson07-aggregator-{run}");
    let mut store = AggregateStore::new(connection, &namespace, solution_07::DEFAULT_PROCESSED_TTL);
    println!("state:  Redis keys under {namespace}:*, group {group}\n");

    // 1. The producer: distinct events, then some of them again.
    let events = kit::events::live_events(args.events, args.users);
    let resent: Vec<_> = events.iter().take(args.duplicates).cloned().collect();
    let records: Vec<_> = events.iter().chain(&resent).cloned().collect();
    kit::publish::publish_events(&broker, topic.name, &records).await?;
    let total = events.len() + resent.len();
    println!("produced {} events, {} of them twice: {total} records", events.len(), resent.len());

    // 2. Worker A applies some records and dies before committing any of them. The story assigns partitions
    //    itself instead of joining the group: a join takes about 3 s on the embedded broker.
    let mut delivered_to_a = Vec::new();
    {
        let worker_a: StreamConsumer = consumer_config(&broker, &group).create()?;
        worker_a.assign(&positions(topic.name, &start))?;
        let mut stream = worker_a.stream();
        for _ in 0..args.crash_after.min(total) {
            let message = next_record(&mut stream).await?;
            let event = decode(&message)?;
            let outcome = apply_event(&mut store, &event).await?;
            println!("worker A: {:<9} {} by {} (not committed)", label(outcome), kind(&event), event.user_id);
            delivered_to_a.push(event);
        }
        println!("worker A: crashed before committing\n");
    }
    let handled_by_a = delivered_to_a.len();

    // 3. Worker B takes over from the group's committed offsets — none — so it gets every record again.
    let worker_b: StreamConsumer = consumer_config(&broker, &group).create()?;
    let resume = resume_positions(&worker_b, topic.name, &start)?;
    worker_b.assign(&resume)?;
    drop(resume);
    let report = consume(&worker_b, &mut store, Until { records: total, idle: Duration::from_secs(5) }).await?;
    println!(
        "worker B: read {} records, applied {}, skipped {} duplicates, committed each one",
        report.records, report.applied, report.duplicates
    );
    // Two kinds of duplicates reach worker B: the records worker A had handled (redelivered because A never
    // committed them) and the producer's second copies of events that were already applied.
    let redelivered = handled_by_a.min(report.duplicates);
    println!(
        "          the {} skipped: {redelivered} redelivered after A's crash, {} second copies from the producer",
        report.duplicates,
        report.duplicates - redelivered
    );

    // 4. Redis against the truth computed from the distinct events, and against a consumer that applies every
    //    delivery it gets: what at-least-once delivery costs without the processed-id check.
    let expected = Aggregates::expected(&events);
    let naive = counted_every_time(delivered_to_a.iter().chain(&records));
    let deliveries = delivered_to_a.len() + records.len();
    println!(
        "\n{:<8} {:>6} {:>9} {:>12}   {:>28}",
        "user", "clicks", "purchases", "spent", "without the check (naive)"
    );
    let mut all_match = true;
    for (user, want) in &expected {
        let got = store.aggregates(user).await?;
        all_match &= got == *want;
        let naive = naive.get(user).copied().unwrap_or_default();
        let mark = if got == *want { "" } else { "   <- differs from the distinct events!" };
        println!(
            "{user:<8} {:>6} {:>9} {:>12}   {:>6} {:>9} {:>11}{mark}",
            got.clicks,
            got.purchases,
            money(got.purchase_total_cents),
            naive.clicks,
            naive.purchases,
            money(naive.purchase_total_cents)
        );
    }
    if all_match {
        println!(
            "\n{deliveries} deliveries ({} to A, {} to B) of {total} records, {} distinct events: each counted \
             exactly once. A consumer without the check would have counted all {deliveries}.",
            delivered_to_a.len(),
            records.len(),
            events.len()
        );
    } else {
        println!("\nThe aggregates differ from the distinct events: the effect is not idempotent yet.");
    }
    if !args.keep {
        store.clear().await?;
    }
    drop(worker_b);
    println!("Next: lesson 08 keeps the consumer running when a record cannot be processed at all.");
    Ok(())
}

/// The next record of `stream`, or an error if none comes soon.
async fn next_record<'a>(
    stream: &mut rdkafka::consumer::MessageStream<'a, rdkafka::consumer::DefaultConsumerContext>,
) -> anyhow::Result<rdkafka::message::BorrowedMessage<'a>> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(message)) => Ok(message?),
        _ => anyhow::bail!("no record arrived within 5 s"),
    }
}

/// The high watermark of each partition: the end of what a consumer can read now, so the story reads only what
/// it writes after this point.
fn end_offsets(broker: &Broker, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let probe: StreamConsumer = broker.consumer_base().set("group.id", "lesson07-probe").create()?;
    (0..partitions).map(|p| Ok(probe.fetch_watermarks(topic, p, Duration::from_secs(5))?.1)).collect()
}

fn positions(topic: &str, offsets: &[i64]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets.iter().enumerate() {
        list.add_partition_offset(topic, partition as i32, Offset::Offset(*offset)).expect("a valid offset");
    }
    list
}

/// Where a worker resumes: the group's committed offset of each partition, or this run's start if none.
fn resume_positions(consumer: &StreamConsumer, topic: &str, start: &[i64]) -> anyhow::Result<TopicPartitionList> {
    let committed = consumer.committed_offsets(positions(topic, start), Duration::from_secs(5))?;
    let offsets: Vec<i64> = start
        .iter()
        .enumerate()
        .map(|(p, first)| match committed.find_partition(topic, p as i32).map(|e| e.offset()) {
            Some(Offset::Offset(offset)) => offset,
            _ => *first,
        })
        .collect();
    drop(committed);
    Ok(positions(topic, &offsets))
}

/// The aggregates a consumer without the processed-id check would keep: every delivery counts.
fn counted_every_time<'a>(
    deliveries: impl IntoIterator<Item = &'a kit::UserEvent>,
) -> std::collections::BTreeMap<String, Aggregates> {
    let mut by_user = std::collections::BTreeMap::<String, Aggregates>::new();
    for event in deliveries {
        let aggregates = by_user.entry(event.user_id.clone()).or_default();
        match event.amount_cents {
            Some(cents) => {
                aggregates.purchases += 1;
                aggregates.purchase_total_cents += cents;
            }
            None => aggregates.clicks += 1,
        }
    }
    by_user
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Applied => "applied",
        Outcome::Duplicate => "duplicate",
    }
}

fn kind(event: &kit::UserEvent) -> String {
    match event.amount_cents {
        Some(cents) => format!("purchase {}", money(cents)),
        None => "click".into(),
    }
}
