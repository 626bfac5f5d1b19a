//! Lesson 13, the runnable story: the shop of lesson 12 with no orchestrator, under a soak. A thousand orders go
//! through the four services — the order service, the inventory, the payment service and the notification
//! service, each reacting to the others' events — with shortfalls, declined cards, a flaky mail server,
//! duplicated deliveries and an inventory that crashes between its work and its commit. A live line shows the
//! orders by state while it runs; then the invariants, and three orders' trails stitched back together from the
//! three topics their events are scattered over (in a choreography no one holds an order's whole story).
//!
//! The topics are the manifest's (`kit::topics::SHOP_TOPICS`) and the deployment is `workbook-shop`: on real Kafka
//! each run's services read back the state earlier runs left, and this run's orders and SKUs carry an id of their
//! own. Run it with `cargo xtask lesson 13` (your exercise) or `cargo xtask lesson 13 --solution`; `-- --orders N
//! --seed S` to change the soak.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use kit::stage::Deployment;
use rdkafka::message::Message;
use solution_13::Event;
use solution_13::services::ShopTopics;
use solution_13::soak::{self, Progress, SoakConfig, SoakReport};

/// The choreographed shop under a soak.
#[derive(Parser)]
struct Args {
    /// How many orders.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    orders: u64,
    /// The seed of every random choice (orders, faults): the same seed, the same soak.
    #[arg(long, default_value_t = 13)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(kit::topics::SHOP_TOPICS).await?;
    let deployment = Deployment::on(&broker, "workbook-shop");
    let topics = ShopTopics::manifest();
    let run = kit::topics::unique("run");
    let config = SoakConfig { orders: args.orders as usize, seed: args.seed, ..SoakConfig::default() };
    println!(
        "1. {} orders (seed {}): {:.0}% paid with a declined card, {:.0}% of mail attempts fail, {:.0}% of orders sent \
         twice and of inventory and payment events written twice, stock for {:.0}% of what they ask; the inventory \
         crashes once the first orders have ended. A thousand orders take about 20 s; the line below moves meanwhile",
        config.orders,
        config.seed,
        config.decline_rate * 100.0,
        config.mail_failure_rate * 100.0,
        config.duplicate_rate * 100.0,
        config.stock_share * 100.0
    );
    let live = std::io::stdout().is_terminal();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let (soak_topics, soak_deployment, soak_run) = (topics.clone(), deployment.clone(), run.clone());
    let report = tokio::task::spawn_blocking(move || {
        soak::run(&soak_topics, &soak_deployment, config, &soak_run, |progress| {
            // On a terminal the line is redrawn in place; in a log, one line every two seconds.
            if live {
                print!("\r   {}   ", describe(progress));
                let _ = std::io::stdout().flush();
            } else if last_line.elapsed() >= Duration::from_secs(2) {
                println!("   {}", describe(progress));
                last_line = Instant::now();
            }
        })
    })
    .await??;
    if live {
        println!();
    }
    print_report(&report, &run);

    println!("\n3. three orders' trails, stitched together from shop.orders, shop.inventory and shop.payments");
    let trails = trails(&broker, &topics, &run).await?;
    for wanted in ["ORDER_CONFIRMED", "OUT_OF_STOCK", "PAYMENT_DECLINED"] {
        if let Some((order_id, trail)) = trails.iter().find(|(_, t)| t.iter().any(|(_, kind, _)| kind == wanted)) {
            println!("   {}:", short(&run, order_id));
            for (topic, kind, at_ms) in trail {
                println!("      +{at_ms:>4} ms  {topic:<15} {kind}");
            }
        }
    }
    anyhow::ensure!(report.holds(), "an invariant did not hold (see above)");
    Ok(())
}

fn describe(progress: &Progress) -> String {
    let count = |status| progress.by_status.get(status).copied().unwrap_or(0);
    format!(
        "placed {:>5} | under way {:>5} | confirmed {:>5} | cancelled {:>5} | inventory restarts {} | {:>5.1} s",
        progress.placed,
        count("PLACED"),
        count("CONFIRMED"),
        count("CANCELLED"),
        progress.inventory_restarts,
        progress.elapsed_ms as f64 / 1000.0
    )
}

fn print_report(report: &SoakReport, run: &str) {
    let check = |holds: bool| if holds { "holds" } else { "BROKEN" };
    println!("\n2. after {:.1} s, the invariants", report.seconds);
    println!(
        "   every order ended: {} ({} confirmed, {} out of stock, {} declined){}",
        check(report.orders_not_ended.is_empty()),
        report.confirmed,
        report.cancelled_out_of_stock,
        report.cancelled_declined,
        if report.orders_not_ended.is_empty() {
            String::new()
        } else {
            format!("; not ended: {:?}", report.orders_not_ended)
        }
    );
    println!("   stock conserved: {}", check(report.stock_conserved));
    for (sku, (started, available, reserved, sold)) in &report.stock {
        println!(
            "      {:<8} {started:>4} = {available:>4} available + {sold:>4} sold ({reserved} reserved)",
            short(run, sku)
        );
    }
    println!(
        "   money conserved: {} (charged {} = the confirmed orders' {})",
        check(report.money_conserved),
        euros(report.charged_cents),
        euros(report.confirmed_total_cents)
    );
    println!(
        "   no side effect twice: {} ({} cards charged twice, {} customers told twice)",
        check(report.cards_charged_twice == 0 && report.customers_told_twice == 0),
        report.cards_charged_twice,
        report.customers_told_twice
    );
    println!(
        "   every customer told or dead-lettered: {} ({} sent in {} attempts, {} in shop.notifications.dlq)",
        check(report.notifications_sent + report.notifications_dead_lettered == report.orders),
        report.notifications_sent,
        report.mail_attempts,
        report.notifications_dead_lettered
    );
    println!(
        "   faults thrown: {} orders sent twice, {} events written twice, the inventory {}",
        report.duplicate_requests,
        report.duplicated_events,
        if report.inventory_crashed { "crashed once mid-batch" } else { "did not crash (no input came in time)" }
    );
}

/// Every order of this run: its events from the three topics, in the order they were written (by timestamp; a
/// merge the choreography leaves to whoever wants the whole story), with the time since its first.
async fn trails(
    broker: &kit::Broker,
    topics: &ShopTopics,
    run: &str,
) -> anyhow::Result<BTreeMap<String, Vec<(String, String, i64)>>> {
    let mut events: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    for topic in [&topics.orders, &topics.inventory, &topics.payments] {
        let mut config = broker.consumer_config(&kit::topics::unique("trail-reader"));
        config.set("isolation.level", "read_committed").set("enable.partition.eof", "true");
        let topic = topic.clone();
        let records = tokio::task::spawn_blocking(move || read_with_timestamps(config, &topic)).await??;
        for (topic, at, payload) in records {
            let Ok(event) = serde_json::from_slice::<Event>(&payload) else { continue };
            if event.order_id().starts_with(run) {
                events.entry(event.order_id().to_string()).or_default().push((at, topic, event.kind().to_string()));
            }
        }
    }
    Ok(events
        .into_iter()
        .map(|(order_id, mut trail)| {
            trail.sort();
            trail.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
            let first = trail.first().map_or(0, |t| t.0);
            (order_id, trail.into_iter().map(|(at, topic, kind)| (topic, kind, at - first)).collect())
        })
        .collect())
}

/// Every committed record of `topic` (3 partitions) with its timestamp.
fn read_with_timestamps(config: rdkafka::ClientConfig, topic: &str) -> anyhow::Result<Vec<(String, i64, Vec<u8>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    // kit's reader context: the end of a partition is how this read ends, not an error to log.
    let consumer: BaseConsumer<kit::read::ReadToEnd> = config.create_with_context(kit::read::ReadToEnd)?;
    {
        let mut assignment = rdkafka::TopicPartitionList::new();
        for partition in 0..3 {
            assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
    }
    let (mut records, mut ended) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended < 3 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => records.push((
                topic.to_string(),
                message.timestamp().to_millis().unwrap_or(0),
                message.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            _ => {}
        }
    }
    Ok(records)
}

/// `id` without this run's prefix.
fn short(run: &str, id: &str) -> String {
    id.strip_prefix(run).map_or(id, |rest| rest.trim_start_matches('-')).to_string()
}

fn euros(cents: u64) -> String {
    format!("{}.{:02} EUR", cents / 100, cents % 100)
}
