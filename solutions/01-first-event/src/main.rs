//! Lesson 01, the runnable story: send a handful of user events and print where each one landed.
//!
//! Run it with `cargo xtask lesson 01` (your exercise) or `cargo xtask lesson 01 --solution`.

use clap::Parser;
use kit::EventType;
use rdkafka::producer::FutureProducer;
use solution_01::{producer_config, send_event};

/// Produce user events to Kafka and show their delivery reports.
#[derive(Parser)]
struct Args {
    /// How many events to send.
    #[arg(long, default_value_t = 6)]
    count: usize,
    /// How many distinct users the events come from.
    #[arg(long, default_value_t = 3)]
    users: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = kit::topics::USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;

    let producer: FutureProducer = producer_config(broker.bootstrap_servers()).create()?;
    for event in kit::events::live_events(args.count, args.users) {
        let delivery = send_event(&producer, topic.name, &event).await?;
        let what = match (event.event_type, event.amount_cents) {
            (EventType::Purchase, Some(cents)) => format!("purchase {:>4}.{:02}", cents / 100, cents % 100),
            _ => "click".to_string(),
        };
        println!(
            "sent {what:<14} by {:<7} -> partition {}, offset {:>3}   (key {:?})",
            event.user_id, delivery.partition, delivery.offset, event.user_id
        );
    }
    println!("\nThe same user always lands on the same partition: the key decides it.");
    println!("Next: lesson 02 reads these events back (`cargo xtask lesson 02`).");
    Ok(())
}
