//! Moves dead letters back to the topic they came from, after the cause is fixed: `cargo run -p solution-08
//! --bin replay -- --count 10`. Runs as a consumer group on the DLQ, so a second replay resumes where the first
//! stopped instead of re-sending everything.

use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use solution_08::{Until, consumer_config, replay};

/// Re-publish dead letters to their original topic (the `dlq.original.topic` header).
#[derive(Parser)]
struct Args {
    /// The dead-letter topic to read.
    #[arg(long, default_value = kit::topics::USER_EVENTS_DLQ.name)]
    dlq: String,
    /// The replay's consumer group: its committed offsets remember what was moved already.
    #[arg(long, default_value = "user-events-dlq-replay")]
    group: String,
    /// Move at most this many records.
    #[arg(long, default_value_t = usize::MAX)]
    count: usize,
    /// Stop when no record arrives for this many seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(&[]).await?;
    let consumer: StreamConsumer = consumer_config(&broker, &args.group).create()?;
    consumer.subscribe(&[&args.dlq])?;
    let producer: FutureProducer = broker.producer_config().create()?;
    let moved =
        replay(&consumer, &producer, Until { records: args.count, idle: Duration::from_secs(args.idle_secs) }).await?;
    println!("moved {moved} dead letters from {} back to their topics", args.dlq);
    Ok(())
}
