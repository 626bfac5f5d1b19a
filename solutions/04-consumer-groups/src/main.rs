//! Lesson 04, the runnable story: two workers share a group and split `user-events`; an audit group gets its
//! own copy of everything; then a worker leaves and the other takes over its partitions without losing events.
//!
//! Run it with `cargo xtask lesson 04` (your exercise) or `cargo xtask lesson 04 --solution`.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use indicatif::ProgressBar;
use kit::publish::publish_events;
use kit::topics::USER_EVENTS;
use solution_04::{Member, Received};
use uuid::Uuid;

/// Show how a consumer group shares partitions, how groups broadcast, and how a group rebalances.
#[derive(Parser)]
struct Args {
    /// Events to publish while both workers run.
    #[arg(long, default_value_t = 12)]
    count: usize,
    /// Events to publish after one worker has left.
    #[arg(long, default_value_t = 6)]
    after_leave: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;

    // Fresh group names on every run, so no offsets committed by an earlier run decide where they start.
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let (workers, audit) = (format!("lesson04-workers-{run}"), format!("lesson04-audit-{run}"));
    println!("worker-a and worker-b join group {workers}; audit-1 joins group {audit}.");
    let worker_a = Member::start(&broker, &workers, topic.name, "worker-a")?;
    let worker_b = Member::start(&broker, &workers, topic.name, "worker-b")?;
    let auditor = Member::start(&broker, &audit, topic.name, "audit-1")?;
    wait_for("the groups to form", || {
        let (a, b) = (worker_a.owned(), worker_b.owned());
        !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 3 && auditor.owned().len() == 3
    })
    .await?;
    for member in [&worker_a, &worker_b, &auditor] {
        println!("  {:<8} in {:<26} owns partitions {:?}", member.name, member.group, member.owned());
    }

    let events = kit::events::live_events(args.count, 9);
    let ours: BTreeSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    publish_events(&broker, topic.name, &events).await?;
    println!("\npublished {} events", events.len());
    wait_for("every event to reach both groups", || {
        let workers_saw = seen(&worker_a.received(), &ours).len() + seen(&worker_b.received(), &ours).len();
        workers_saw >= ours.len() && seen(&auditor.received(), &ours).len() == ours.len()
    })
    .await?;
    for member in [&worker_a, &worker_b, &auditor] {
        let got = seen(&member.received(), &ours);
        let partitions: BTreeSet<i32> = got.iter().map(|r| r.partition).collect();
        println!("  {:<8} received {:>2} of them, from partitions {partitions:?}", member.name, got.len());
    }
    println!("The workers split the events (each one went to exactly one of them); the audit group got them all.\n");

    println!("worker-b leaves the group...");
    worker_b.leave().await?;
    wait_for("worker-a to take over", || worker_a.owned().len() == 3).await?;
    println!("  worker-a now owns partitions {:?}", worker_a.owned());

    let later = kit::events::live_events(args.after_leave, 9);
    let later_ids: BTreeSet<Uuid> = later.iter().map(|e| e.event_id).collect();
    publish_events(&broker, topic.name, &later).await?;
    wait_for("worker-a to receive the new events", || seen(&worker_a.received(), &later_ids).len() == later_ids.len())
        .await?;
    let got = seen(&worker_a.received(), &later_ids);
    let partitions: BTreeSet<i32> = got.iter().map(|r| r.partition).collect();
    println!("  published {} more: worker-a received all {}, from partitions {partitions:?}", later.len(), got.len());
    println!("The group rebalanced and nothing was lost.");

    worker_a.leave().await?;
    auditor.leave().await?;
    println!("\nNext: lesson 05 looks at the offsets a group commits, and what happens when it crashes.");
    Ok(())
}

/// The records among `received` that carry one of `ids`.
fn seen(received: &[Received], ids: &BTreeSet<Uuid>) -> Vec<Received> {
    received.iter().filter(|r| ids.contains(&r.event.event_id)).cloned().collect()
}

/// Waits (with a spinner) until `done` holds, or gives up after 30 s saying what did not happen.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner().with_message(format!("waiting for {what}"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    kit::wait::until(what, Duration::from_secs(30), || {
        let holds = done().then_some(());
        async move { Ok(holds) }
    })
    .await?;
    spinner.finish_and_clear();
    Ok(())
}
