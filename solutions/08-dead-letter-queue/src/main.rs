//! Lesson 08, the runnable story: valid events, poison events and a flaky dependency; the consumer retries
//! what may pass, dead-letters what cannot, and never stops.
//!
//! Run it with `cargo xtask lesson 08` (your exercise) or `cargo xtask lesson 08 --solution`.

use std::time::Duration;

use clap::Parser;
use kit::UserEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use solution_08::{Jitter, Processor, RetryPolicy, Until, consumer_config, run};

/// Consume user events with retries and a dead-letter queue.
#[derive(Parser)]
struct Args {
    /// How many valid events to produce.
    #[arg(long, default_value_t = 10)]
    events: usize,
    /// Attempts per event before a processing failure is dead-lettered.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
}

/// A dependency that fails now and then: every fourth call fails, and one user's events always fail.
struct FlakyStore {
    calls: u32,
}

impl Processor for FlakyStore {
    async fn process(&mut self, event: &UserEvent) -> anyhow::Result<()> {
        self.calls += 1;
        if event.user_id == "user-3" {
            anyhow::bail!("the store rejects user-3 (a bug to fix before replaying)");
        }
        if self.calls % 4 == 0 {
            anyhow::bail!("the store timed out");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (topic, dlq) = (kit::topics::USER_EVENTS, kit::topics::USER_EVENTS_DLQ);
    let broker = kit::story::start(&[topic, dlq]).await?;
    // The topic may hold earlier runs' events: this story reads only what it writes, from the current ends.
    let probe: StreamConsumer = broker.consumer_base().set("group.id", "lesson08-probe").create()?;
    let mut start = TopicPartitionList::new();
    for p in 0..topic.partitions {
        let (_, high) = probe.fetch_watermarks(topic.name, p, Duration::from_secs(5))?;
        start.add_partition_offset(topic.name, p, Offset::Offset(high))?;
    }
    let dlq_start = probe.fetch_watermarks(dlq.name, 0, Duration::from_secs(5))?.1;

    let producer: FutureProducer = broker.producer_config().create()?;
    let mut records: Vec<(String, String)> =
        kit::events::live_events(args.events, 3).iter().map(|e| (e.user_id.clone(), e.to_json())).collect();
    let mut no_amount = serde_json::to_value(UserEvent::purchase("user-1", 999))?;
    no_amount.as_object_mut().map(|o| o.remove("amount_cents"));
    records.insert(2, ("user-2".into(), "{\"event_type\": \"purchase\", broken".into()));
    records.insert(5, ("user-1".into(), no_amount.to_string()));
    for (key, payload) in &records {
        producer
            .send(FutureRecord::to(topic.name).key(key).payload(payload), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)?;
    }
    println!("produced {} records: {} valid events and 2 poison records\n", records.len(), args.events);

    let group = format!("lesson08-consumer-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let consumer: StreamConsumer = consumer_config(&broker, &group).create()?;
    consumer.assign(&start)?; // no group join (about 3 s on the embedded broker): the story picks its offsets
    drop(start);
    let policy = RetryPolicy {
        max_attempts: args.max_attempts,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        jitter: Jitter::Full,
    };
    let until = Until { records: records.len(), idle: Duration::from_secs(5) };
    let report = run(&consumer, &producer, dlq.name, &mut FlakyStore { calls: 0 }, &policy, until).await?;
    println!(
        "read {} records: {} processed, {} dead-lettered — processed + dead-lettered = read; the consumer never stopped",
        report.records, report.processed, report.dead_lettered
    );

    let mut letters = Vec::new();
    let reader: StreamConsumer = broker.consumer_base().set("group.id", "lesson08-reader").create()?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(dlq.name, 0, Offset::Offset(dlq_start))?;
    reader.assign(&at)?;
    drop(at);
    {
        use futures::StreamExt;
        use rdkafka::message::{Headers, Message};
        let mut stream = reader.stream();
        while letters.len() < report.dead_lettered {
            let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await else { break };
            let message = message?;
            let headers: Vec<String> = message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(h.value.unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default();
            letters.push(format!(
                "key {:?}\n    {}",
                String::from_utf8_lossy(message.key().unwrap_or_default()),
                headers.join("\n    ")
            ));
        }
    }
    println!("\nin {}:", dlq.name);
    for letter in &letters {
        println!("  {letter}");
    }
    println!("\nAfter fixing the cause, move them back: cargo run -p solution-08 --bin replay");
    Ok(())
}
