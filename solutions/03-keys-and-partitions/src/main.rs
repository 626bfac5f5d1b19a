//! Lesson 03, the runnable story: send the same user events twice — keyed by user, then without a key — and
//! show how each run spreads over the partitions and what happens to every user's order.
//!
//! Run it with `cargo xtask lesson 03` (your exercise) or `cargo xtask lesson 03 --solution`.

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use kit::topics::{TopicSpec, USER_EVENTS, USER_EVENTS_UNKEYED};
use rdkafka::producer::FutureProducer;
use solution_03::{Keying, Placement, partition_counts, produce, producer_config};

/// Produce user events with and without a key and compare where they land.
#[derive(Parser)]
struct Args {
    /// How many events to send in each run.
    #[arg(long, default_value_t = 300)]
    count: usize,
    /// How many distinct users the events come from.
    #[arg(long, default_value_t = 6)]
    users: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(&[USER_EVENTS, USER_EVENTS_UNKEYED]).await?;

    let producer: FutureProducer = producer_config(&broker).create()?;
    let events = kit::events::live_events(args.count, args.users);

    let keyed = produce(&producer, USER_EVENTS.name, &events, Keying::ByUser).await?;
    report(&USER_EVENTS, "keyed by user_id", &keyed);
    println!("Every user lives in one partition, and their offsets grow in the order they acted:");
    println!("a consumer of that partition replays each user's history exactly as it happened.");
    println!("The hash, not a balancer, picks the partitions: with few keys some partitions get more users.");

    let unkeyed = produce(&producer, USER_EVENTS_UNKEYED.name, &events, Keying::None).await?;
    report(&USER_EVENTS_UNKEYED, "without a key", &unkeyed);
    println!("The counts are even now, but each user's history is cut into pieces on several partitions.");
    println!("Consumers read partitions independently, so nobody can tell a user's order any more.");
    println!("\nNext: lesson 04 shares these partitions between the members of a consumer group.");
    Ok(())
}

/// Prints the per-partition counts and, for every user, where their events went.
fn report(topic: &TopicSpec, how: &str, placements: &[Placement]) {
    println!("\n{} events {how} -> topic {} ({} partitions)", placements.len(), topic.name, topic.partitions);
    let counts = partition_counts(placements);
    let most = counts.values().copied().max().unwrap_or(1).max(1);
    for (partition, count) in &counts {
        let bar = "#".repeat(count * 40 / most);
        println!("  partition {partition}: {count:>4}  {bar}");
    }
    let mut per_user: BTreeMap<&str, Vec<&Placement>> = BTreeMap::new();
    for placement in placements {
        per_user.entry(&placement.user_id).or_default().push(placement);
    }
    for (user, history) in per_user {
        let partitions: BTreeSet<i32> = history.iter().map(|p| p.partition).collect();
        // In send order, does each event sit behind the previous one in the same partition?
        let ordered = partitions.len() == 1 && history.windows(2).all(|w| w[0].offset < w[1].offset);
        let verdict = if ordered { "one ordered history" } else { "split: no single order" };
        println!("  {user:<7} {:>3} events in partition(s) {partitions:?} -> {verdict}", history.len());
    }
}
