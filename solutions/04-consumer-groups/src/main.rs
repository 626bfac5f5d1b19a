//! Lesson 04, the runnable story: two workers share a group and split `user-events`; an audit group gets its
//! own copy of everything; then a worker leaves and the other takes over its partitions without losing events.
//!
//! Run it with `cargo xtask lesson 04` (your exercise) or `cargo xtask lesson 04 --solution`.
//!
//! With `--rabbitmq` (`cargo xtask lesson 04 --rabbitmq`) it tells the same story on RabbitMQ instead, and starts
//! no Kafka: a fanout exchange, two subscribers with a queue each and two competing workers per queue, then a
//! worker that dies holding unacknowledged messages (see `solution_04::rabbit`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use clap::Parser;
use futures::FutureExt;
use indicatif::ProgressBar;
use kit::publish::publish_events;
use kit::topics::USER_EVENTS;
use solution_04::rabbit::{Got, Publisher, Worker};
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
    /// Tell the RabbitMQ counterpart instead: competing consumers on a queue per subscriber (no Kafka started).
    #[arg(long)]
    rabbitmq: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rabbitmq {
        return rabbitmq_story(&args).await;
    }
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
async fn wait_for(what: &str, done: impl FnMut() -> bool) -> anyhow::Result<()> {
    wait_within(what, Duration::from_secs(30), done).await
}

/// Waits (with a spinner) until `done` holds, or gives up after `within` saying what did not happen.
async fn wait_within(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner().with_message(format!("waiting for {what}"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    kit::wait::until(what, within, || {
        let holds = done().then_some(());
        async move { Ok(holds) }
    })
    .await?;
    spinner.finish_and_clear();
    Ok(())
}

/// The subscribers of the RabbitMQ story: a queue each, two workers per queue.
const SUBSCRIBERS: [&str; 2] = ["analytics", "audit"];
/// How many unacknowledged messages RabbitMQ hands each worker of the RabbitMQ story at most.
const PREFETCH: u16 = 2;
/// RabbitMQ on this machine answers in milliseconds: a step of the RabbitMQ story that takes longer has failed.
const RABBITMQ_STEP: Duration = Duration::from_secs(5);

/// The RabbitMQ counterpart (`--rabbitmq`): declares a fanout exchange of its own, tells the story, and deletes
/// the exchange and its queues whether the story went well or not.
async fn rabbitmq_story(args: &Args) -> anyhow::Result<()> {
    kit::telemetry::init();
    let rabbit = kit::rabbitmq::RabbitMq::resolve()?;
    println!("rabbitmq: {}", rabbit.describe());
    // A fresh exchange on every run, so no queue left by an earlier run receives these events.
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let publisher = Publisher::start(&rabbit, &format!("lesson04-user-events-{run}")).await?;
    // Caught so that the exchange and queues are deleted even when the exercise is still a todo!().
    let told = AssertUnwindSafe(tell_rabbitmq_story(&rabbit, &publisher, args)).catch_unwind().await;
    publisher.delete_all(&SUBSCRIBERS).await?;
    println!("\n(the story's exchange and queues are deleted)");
    told.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn tell_rabbitmq_story(
    rabbit: &kit::rabbitmq::RabbitMq,
    publisher: &Publisher,
    args: &Args,
) -> anyhow::Result<()> {
    let exchange = publisher.exchange();
    println!("fanout exchange {exchange}");
    let mut workers = Vec::new();
    for subscriber in SUBSCRIBERS {
        println!(
            "  subscriber {subscriber:<9} queue {exchange}.{subscriber}, workers {subscriber}-1 and {subscriber}-2"
        );
        for n in 1..=2 {
            workers.push(Worker::start(rabbit, exchange, subscriber, &format!("{subscriber}-{n}"), PREFETCH).await?);
        }
    }
    let [analytics_1, analytics_2, audit_1, audit_2] = <[Worker; 4]>::try_from(workers).ok().expect("four workers");
    println!("  every worker holds at most {PREFETCH} unacknowledged messages (its prefetch)\n");

    // Four users only, so some user has several events and we can see where they went.
    let events = kit::events::live_events(args.count, 4);
    let mut labels = Labels::default();
    labels.add(&events);
    let ids = labels.ids(&events);
    publisher.publish(&events).await?;
    println!("published {} events ({})", events.len(), labels.range(&events));
    wait_within("each subscriber to receive every event", RABBITMQ_STEP, || {
        together(&[&analytics_1, &analytics_2], &ids) == ids && together(&[&audit_1, &audit_2], &ids) == ids
    })
    .await?;
    for worker in [&analytics_1, &analytics_2, &audit_1, &audit_2] {
        let got = among(&worker.received(), &ids);
        println!("  {:<11} got {:>2}: {}", worker.name, got.len(), labels.list(&got));
    }
    println!("Each subscriber got all {}: the exchange copied every event into both queues.", events.len());
    println!("Inside a subscriber, its two workers took turns, message by message.");
    let analytics_got: Vec<Got> =
        [&analytics_1, &analytics_2].iter().flat_map(|w| among(&w.received(), &ids)).collect();
    if let Some(spread) = labels.user_spread_over_workers(&analytics_got) {
        println!("  {spread}:");
        println!("  no key ties a user to a worker, so nothing keeps one user's events in order.");
    }

    println!(
        "\nanalytics-2 stops acknowledging (stuck in a slow call, say); {} more events are published.",
        args.after_leave
    );
    analytics_2.stop_acknowledging();
    let later = kit::events::live_events(args.after_leave, 4);
    labels.add(&later);
    let later_ids = labels.ids(&later);
    publisher.publish(&later).await?;
    println!("published {}", labels.range(&later));
    wait_within("each subscriber to receive the new events", RABBITMQ_STEP, || {
        together(&[&analytics_1, &analytics_2], &later_ids) == later_ids
            && together(&[&audit_1, &audit_2], &later_ids) == later_ids
    })
    .await?;
    let held = among(&analytics_2.held(), &later_ids);
    let taken = among(&analytics_1.received(), &later_ids);
    println!(
        "  analytics-2 holds {} unacknowledged: {} (its prefetch is {PREFETCH}: RabbitMQ sends it no more)",
        held.len(),
        labels.list(&held)
    );
    println!("  analytics-1 took the other {}: {}", taken.len(), labels.list(&taken));

    println!("\nanalytics-2 dies: its connection closes with {} messages unacknowledged.", held.len());
    let held_ids: BTreeSet<Uuid> = held.iter().map(|got| got.event.event_id).collect();
    analytics_2.leave().await?;
    wait_within("analytics-1 to receive what analytics-2 held", RABBITMQ_STEP, || {
        let again: BTreeSet<Uuid> =
            analytics_1.received().iter().filter(|got| got.redelivered).map(|got| got.event.event_id).collect();
        held_ids.is_subset(&again)
    })
    .await?;
    let again: Vec<Got> = analytics_1.received().into_iter().filter(|got| got.redelivered).collect();
    println!(
        "  analytics-1 receives {} again, marked redelivered: nothing is lost, but a second worker handles them.",
        labels.list(&again)
    );
    println!("  audit-1 and audit-2 got {} as usual: one subscriber's trouble is not another's.", labels.range(&later));

    println!("\nKafka and RabbitMQ, side by side (run `cargo xtask lesson 04` for the Kafka story):");
    println!(
        "  - Kafka gave each member of a group whole partitions, so one user's events went to one member, in order;"
    );
    println!(
        "    RabbitMQ deals single messages to whichever worker has room: an even load, a user's events spread out."
    );
    println!(
        "  - A second Kafka group reads the same log at its own offsets; a second RabbitMQ subscriber needs a queue"
    );
    println!("    of its own, bound to the exchange, and gets copies only from then on.");
    println!(
        "  - When a Kafka member left, the group rebalanced and the survivor took its partitions from the committed"
    );
    println!("    offsets; when a RabbitMQ worker dies, only the messages it held unacknowledged are redelivered.");
    println!("  - A group's committed offsets outlive its members; a subscriber's durable queue outlives its workers,");
    println!("    and keeps each message until one worker acknowledges it — then the message is gone.");

    for worker in [analytics_1, audit_1, audit_2] {
        worker.leave().await?;
    }
    Ok(())
}

/// The ids of `ids` that `workers` received, together.
fn together(workers: &[&Worker], ids: &BTreeSet<Uuid>) -> BTreeSet<Uuid> {
    workers.iter().flat_map(|w| w.received()).map(|got| got.event.event_id).filter(|id| ids.contains(id)).collect()
}

/// The messages among `got` that carry one of `ids`.
fn among(got: &[Got], ids: &BTreeSet<Uuid>) -> Vec<Got> {
    got.iter().filter(|got| ids.contains(&got.event.event_id)).cloned().collect()
}

/// Short names for the story's events, `#1`, `#2`, … in the order they were published.
#[derive(Default)]
struct Labels {
    numbers: BTreeMap<Uuid, usize>,
}

impl Labels {
    fn add(&mut self, events: &[kit::UserEvent]) {
        for event in events {
            let next = self.numbers.len() + 1;
            self.numbers.entry(event.event_id).or_insert(next);
        }
    }

    fn ids(&self, events: &[kit::UserEvent]) -> BTreeSet<Uuid> {
        events.iter().map(|e| e.event_id).collect()
    }

    fn label(&self, id: &Uuid) -> String {
        self.numbers.get(id).map_or_else(|| "#?".to_string(), |n| format!("#{n}"))
    }

    /// `#1–#12` for a run of events.
    fn range(&self, events: &[kit::UserEvent]) -> String {
        match (events.first(), events.last()) {
            (Some(first), Some(last)) => format!("{}–{}", self.label(&first.event_id), self.label(&last.event_id)),
            _ => "none".to_string(),
        }
    }

    /// The labels of `got` in publishing order, e.g. `#1 #3 #5`.
    fn list(&self, got: &[Got]) -> String {
        let mut numbers: Vec<usize> = got.iter().filter_map(|g| self.numbers.get(&g.event.event_id).copied()).collect();
        numbers.sort_unstable();
        numbers.iter().map(|n| format!("#{n}")).collect::<Vec<_>>().join(" ")
    }

    /// A user whose events `got` shows at more than one worker, e.g. `user-3: #2 at analytics-2, #5 at analytics-1`.
    fn user_spread_over_workers(&self, got: &[Got]) -> Option<String> {
        let mut per_user: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for g in got {
            let number = self.numbers.get(&g.event.event_id).copied().unwrap_or_default();
            per_user.entry(g.event.user_id.as_str()).or_default().push((number, g.worker.as_str()));
        }
        per_user.into_iter().find_map(|(user, mut seen)| {
            let workers: BTreeSet<&str> = seen.iter().map(|(_, worker)| *worker).collect();
            (workers.len() > 1).then(|| {
                seen.sort_unstable();
                let places: Vec<String> = seen.iter().map(|(n, worker)| format!("#{n} at {worker}")).collect();
                format!("{user}'s events went to both workers ({})", places.join(", "))
            })
        })
    }
}
