//! Lesson 08, the runnable story: valid events, poison events and a flaky dependency; the consumer retries
//! what may pass, dead-letters what cannot, and never stops.
//!
//! Run it with `cargo xtask lesson 08` (your exercise) or `cargo xtask lesson 08 --solution`.
//!
//! With `--rabbitmq` (`cargo xtask lesson 08 --rabbitmq`) it tells the same story on RabbitMQ instead, and starts
//! no Kafka: a work queue whose dead-letter exchange takes what is rejected, a wait queue where copies sit out
//! their delay as a per-message TTL, and a dead-letter queue (see `solution_08::rabbit`).

use std::time::{Duration, Instant};

use clap::Parser;
use kit::UserEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use solution_08::rabbit::{Handled, Outcome, Step, Topology};
use solution_08::{Jitter, Processor, RetryPolicy, Until, consumer_config, rabbit, run};

/// Consume user events with retries and a dead-letter queue.
#[derive(Parser)]
struct Args {
    /// How many valid events to produce.
    #[arg(long, default_value_t = 10)]
    events: usize,
    /// Attempts per event before a processing failure is dead-lettered.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Tell the RabbitMQ counterpart instead: the broker routes retries and dead letters (no Kafka started).
    #[arg(long)]
    rabbitmq: bool,
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
        if self.calls.is_multiple_of(4) {
            anyhow::bail!("the store timed out");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rabbitmq {
        return rabbitmq_story(&args).await;
    }
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

/// The RabbitMQ counterpart: the same kinds of events and the same flaky store, with the broker doing the routing.
async fn rabbitmq_story(args: &Args) -> anyhow::Result<()> {
    kit::telemetry::init();
    let rabbit = kit::rabbitmq::RabbitMq::resolve()?;
    println!("rabbitmq: {}", rabbit.describe());
    let connection = rabbit.connect().await?;
    let channel = rabbit::open_channel(&connection, 10).await?;
    // Fresh queues on every run; `x-expires` removes them within a minute should the story be killed half-way.
    let run = kit::topics::unique("lesson08");
    let (topology, caveat) = (Topology::named(&run), Topology::named(&format!("{run}.caveat")));
    topology.declare(&channel, Some(Duration::from_secs(60))).await?;
    caveat.declare(&channel, Some(Duration::from_secs(60))).await?;
    let told = tell_rabbitmq_story(&channel, &topology, &caveat, args).await;
    topology.delete(&channel).await?;
    caveat.delete(&channel).await?;
    connection.close(200, "story told".into()).await?;
    println!("\n(the story's queues are deleted)");
    told
}

async fn tell_rabbitmq_story(
    channel: &lapin::Channel,
    topology: &Topology,
    caveat: &Topology,
    args: &Args,
) -> anyhow::Result<()> {
    println!("\nthree durable queues, reached through the default exchange:");
    println!("  {:<34} the work queue; its dead-letter exchange sends what is rejected to the DLQ", topology.work);
    println!("  {:<34} no consumer; a copy goes back to the work queue when its expiration runs out", topology.wait);
    println!("  {:<34} the dead-letter queue", topology.dead);

    let events = [
        UserEvent::click("user-1"),
        UserEvent::purchase("user-2", 1_250),
        UserEvent::purchase("user-3", 4_200),
        UserEvent::purchase("user-1", 300),
        UserEvent::click("user-2"),
    ];
    for event in &events {
        rabbit::publish_event(channel, &topology.work, event).await?;
    }
    let broken = b"{\"event_type\": \"purchase\", broken";
    rabbit::publish_raw(channel, &topology.work, broken, lapin::BasicProperties::default()).await?;
    println!(
        "\npublished {} events and 1 broken payload; the store times out on every 4th call and rejects user-3",
        events.len()
    );

    let policy = RetryPolicy {
        max_attempts: args.max_attempts,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        jitter: Jitter::None, // exact delays, to read them in the output
    };
    let until = rabbit::Until { finished: events.len() + 1, deliveries: 100, idle: Duration::from_secs(3) };
    let handled = rabbit::work(channel, topology, &mut FlakyStore { calls: 0 }, &policy, until).await?;
    for step in &handled {
        println!("  {}", describe(step));
    }

    let dead = channel
        .queue_declare(
            topology.dead.as_str().into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await?
        .message_count();
    println!("\nin {} ({dead} messages):", topology.dead);
    while let Some(letter) =
        channel.basic_get(topology.dead.as_str().into(), lapin::options::BasicGetOptions { no_ack: true }).await?
    {
        println!("  {}", describe_letter(&letter.delivery));
    }

    head_of_queue_caveat(channel, caveat).await?;

    println!("\nKafka, in this lesson's other story: the consumer slept between attempts, holding up its partition,");
    println!("  and wrote each dead letter to a topic itself. RabbitMQ routed them: a copy sat out its delay in the");
    println!("  wait queue while the consumer went on, and the dead-letter exchange took what was rejected.");
    println!("The price: a retried message comes back behind later ones (no order), and reading the DLQ removes");
    println!("  its messages, where a Kafka DLQ topic keeps them to replay. Either way, store the copy first");
    println!("  (a delivery report, a publisher confirm), then commit or acknowledge the original.");
    Ok(())
}

/// `user-3 purchase`.
fn label(event: &UserEvent) -> String {
    let kind = match event.event_type {
        kit::EventType::Click => "click",
        kit::EventType::Purchase => "purchase",
    };
    format!("{} {kind}", event.user_id)
}

/// One line per delivery: when, which event, which attempt, and what became of it.
fn describe(handled: &Handled) -> String {
    let what = match &handled.event {
        Some(event) => label(event),
        None => "(not an event)".to_string(),
    };
    let step = match &handled.step {
        Step::Processed => "processed, acknowledged".to_string(),
        Step::Rejected { .. } => "rejected without requeue: the broker dead-letters it".to_string(),
        Step::Failed { error, outcome: Outcome::Retrying { delay, .. } } => {
            format!("failed ({error}): a copy waits {} ms", delay.as_millis())
        }
        Step::Failed { error, outcome: Outcome::DeadLettered { .. } } => {
            format!("failed ({error}): a copy goes to the DLQ")
        }
    };
    format!("+{:>4} ms  {what:<16} attempt {}  {step}", handled.at.as_millis(), handled.attempt)
}

/// A dead letter: what it is, and what its headers say (ours, and the broker's x-death).
fn describe_letter(letter: &lapin::message::Delivery) -> String {
    use lapin::types::AMQPValue;
    let what = match serde_json::from_slice::<UserEvent>(&letter.data) {
        Ok(event) => label(&event),
        Err(_) => format!("{:?}", String::from_utf8_lossy(&letter.data)),
    };
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    let mut said = Vec::new();
    for (name, value) in letter.properties.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default() {
        match value {
            AMQPValue::FieldArray(deaths) if name.as_str() == "x-death" => {
                for death in deaths.as_slice() {
                    if let AMQPValue::FieldTable(death) = death {
                        let field = |key: &str| death.inner().get(key).map(text).unwrap_or_default();
                        said.push(format!(
                            "x-death: {} from {} (count {})",
                            field("reason"),
                            field("queue"),
                            field("count")
                        ));
                    }
                }
            }
            value => said.push(format!("{name}={}", text(&value))),
        }
    }
    format!("{what}\n      {}", said.join("\n      "))
}

/// Two copies in one wait queue: a long TTL at the head holds back a short one behind it.
async fn head_of_queue_caveat(channel: &lapin::Channel, caveat: &Topology) -> anyhow::Result<()> {
    use futures::StreamExt;
    let started = Instant::now();
    for (name, ttl) in [("A", "300"), ("B", "30")] {
        let copy = lapin::BasicProperties::default().with_message_id(name.into()).with_expiration(ttl.into());
        rabbit::publish_raw(channel, &caveat.wait, name.as_bytes(), copy).await?;
    }
    println!("\none wait queue, two copies: A with expiration 300 ms, then B behind it with 30 ms");
    let mut back = channel
        .basic_consume(
            caveat.work.as_str().into(),
            "".into(),
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let mut arrivals = Vec::new();
    while arrivals.len() < 2 {
        let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(3), back.next()).await else {
            anyhow::bail!("the two copies did not come back within 3 s");
        };
        arrivals.push(format!("{} at +{} ms", String::from_utf8_lossy(&delivery?.data), started.elapsed().as_millis()));
    }
    println!("  back: {}: B waited behind A, because RabbitMQ expires only the message at a", arrivals.join(", "));
    println!("  queue's head; hence, in production, one wait queue per delay (10 s, 1 min, 10 min…)");
    Ok(())
}
