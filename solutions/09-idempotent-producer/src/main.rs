//! Lesson 09, the runnable story: send numbered records per user while the broker misbehaves — failing
//! requests, going down, answering too late — and check what was written: every record once, in order.
//!
//! Faults can only be injected into an embedded broker this process hosts. When the resolved broker is anything
//! else (real Kafka, or the one `cargo xtask lesson` hosts in its own process), the story starts an embedded
//! cluster of its own for the faults and says so.
//!
//! Run it with `cargo xtask lesson 09` (your exercise) or `cargo xtask lesson 09 --solution`.

use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use kit::testing::read_topic;
use kit::{Broker, EmbeddedCluster};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use solution_09::{
    OrderCheck, ProducerState, Watch, check_once_in_order, numbered_sequence, producer_config, send_numbered,
};

/// Send numbered records through injected faults and check that each arrives once, in order.
#[derive(Parser)]
struct Args {
    /// How many users (keys) send records.
    #[arg(long, default_value_t = 3)]
    users: u32,
    /// How many numbered records each user sends per round.
    #[arg(long, default_value_t = 30)]
    per_user: u32,
}

/// One round of the story: a fault, a producer, a numbered sequence, and what was read back.
struct Round<'a> {
    cluster: &'a EmbeddedCluster,
    broker: &'a Broker,
    keys: Vec<&'a str>,
    per_key: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kit::telemetry::init();
    let args = Args::parse();
    let resolved = Broker::resolve()?;
    println!("broker: {}", resolved.describe());
    let broker = match resolved.embedded_cluster() {
        Some(_) => resolved,
        None => {
            let own = Broker::embedded()?;
            println!(
                "faults can only be injected into an embedded broker hosted by this process: this story starts \
                 its own, at {}",
                own.bootstrap_servers()
            );
            own
        }
    };
    let cluster = broker.embedded_cluster().expect("the story's broker is hosted in this process").clone();

    let names: Vec<String> = (1..=args.users).map(|u| format!("user-{u}")).collect();
    let round = Round {
        cluster: &cluster,
        broker: &broker,
        keys: names.iter().map(String::as_str).collect(),
        per_key: args.per_user,
    };
    let config = producer_config(broker.bootstrap_servers());
    println!("\nthe producer's safety net:");
    for key in ["enable.idempotence", "acks", "max.in.flight.requests.per.connection", "retries", "message.timeout.ms"]
    {
        println!("  {key:<40} {}", config.get(key).unwrap_or("(librdkafka's default)"));
    }

    println!("\n1. every other Produce request fails (NOT_LEADER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS)");
    round.inject_request_errors(9);
    let (check, state) = round.run("request errors", &config).await?;
    report(&check, &state);
    if check.keys.values().any(|k| !k.missing.is_empty()) {
        println!(
            "   Every delivery report said \"delivered\", yet records are missing: the embedded broker checks \
             sequence numbers only for\n   transactional producers. Real Kafka rejects the batch after a failed one \
             (OUT_OF_ORDER_SEQUENCE) and the producer\n   resends both, in order; this broker writes it, and the \
             producer takes the failed batch as written. Order still holds."
        );
    }

    println!("\n2. the same faults, idempotence off, 5 requests in flight");
    let mut unsafe_config = config.clone();
    unsafe_config.set("enable.idempotence", "false");
    round.inject_request_errors(9);
    let (check, state) = round.run("no idempotence", &unsafe_config).await?;
    report(&check, &state);

    println!("\n3. the broker goes down while records are in flight, and comes back");
    println!("   (librdkafka's connection errors below are the outage as the producer sees it)");
    let (check, state) = round.run_with_outage(&config).await?;
    report(&check, &state);

    println!("\n4. the broker writes the records but its acks come too late (a lost ack)");
    let (check, state) = round.run_with_slow_acks(&config).await?;
    report(&check, &state);
    if check.keys.values().any(|k| !k.duplicated.is_empty()) {
        println!(
            "   The embedded broker checks sequence numbers only for transactional producers, so the retry was \
             written twice.\n   Real Kafka drops a batch it already has from the same producer id and sequence: \
             run against it to see that."
        );
    }
    println!(
        "\nIdempotence makes one producer's retries safe. Making a read-process-write step atomic across topics is \
         the job of transactions."
    );
    Ok(())
}

impl Round<'_> {
    /// Makes the next `count` Produce requests fail with retriable errors, each followed by one that succeeds.
    fn inject_request_errors(&self, count: usize) {
        let faults = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ];
        let errors =
            faults.iter().cycle().take(count).flat_map(|f| [*f, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR]).collect();
        self.cluster.fail_requests(RDKafkaApiKey::Produce, errors);
    }

    /// A fresh topic and a watched producer for `config`, with small batches so many requests are in flight.
    async fn prepare(
        &self,
        config: &ClientConfig,
        tuning: &[(&str, &str)],
    ) -> anyhow::Result<(String, FutureProducer<Watch>, Watch)> {
        // A topic per round, so each round is read back on its own.
        let topic = kit::testing::unique("lesson09-numbered");
        self.broker.create_topic(&topic, 3).await?;
        let mut config = config.clone();
        config.set("statistics.interval.ms", Watch::INTERVAL_MS).set("batch.num.messages", "4").set("linger.ms", "0");
        for (key, value) in tuning {
            config.set(*key, *value);
        }
        let watch = Watch::default();
        let producer = config.create_with_context(watch.clone())?;
        Ok((topic, producer, watch))
    }

    async fn run(&self, label: &str, config: &ClientConfig) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let (topic, producer, watch) = self.prepare(config, &[]).await?;
        let records = numbered_sequence(&self.keys, self.per_key);
        let progress = spinner(format!("sending {} numbered records ({label})", records.len()));
        send_numbered(&producer, &topic, &records).await?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn run_with_outage(&self, config: &ClientConfig) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let (topic, producer, watch) = self.prepare(config, &[]).await?;
        let records = numbered_sequence(&self.keys, self.per_key);
        let (before, after) = records.split_at(records.len() / 2);
        send_numbered(&producer, &topic, before).await?;
        let progress = spinner(format!("broker 1 is down; {} records wait and retry", after.len()));
        self.cluster.broker_down(1)?;
        let sending = send_numbered(&producer, &topic, after);
        let outage = async {
            wait_for(&watch, |s| s.brokers_up == 0).await;
            progress.set_message("broker 1 is back up");
            self.cluster.broker_up(1)
        };
        let (sent, back) = futures::future::join(sending, outage).await;
        back?;
        sent?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn run_with_slow_acks(&self, config: &ClientConfig) -> anyhow::Result<(OrderCheck, ProducerState)> {
        // The producer waits 1 s for an ack; the broker answers after 1.5 s.
        let (topic, producer, watch) =
            self.prepare(config, &[("request.timeout.ms", "1000"), ("socket.timeout.ms", "1000")]).await?;
        // One record first, while acks are fast: the producer gets its producer id before the acks slow down.
        send_numbered(&producer, &topic, &numbered_sequence(&["warm-up"], 1)).await?;
        let records = numbered_sequence(&self.keys, self.per_key.min(10));
        let progress = spinner("acks take 1.5 s, the producer waits 1 s".to_string());
        self.cluster.round_trip_time(1, Duration::from_millis(1500))?;
        let sending = send_numbered(&producer, &topic, &records);
        let slow = async {
            wait_for(&watch, |s| s.request_timeouts > 0).await;
            progress.set_message("acks are fast again");
            self.cluster.round_trip_time(1, Duration::ZERO)
        };
        let (sent, fast) = futures::future::join(sending, slow).await;
        fast?;
        sent?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn read_back(&self, topic: &str, sent: usize, watch: &Watch) -> anyhow::Result<(OrderCheck, ProducerState)> {
        // The story's broker is in this process: what was written is readable within milliseconds. The bound
        // only matters when records are missing, and then it is how long the story waits for them.
        let mut read = read_topic(self.broker, topic, sent, Duration::from_secs(1)).await;
        read.retain(|r| r.key.as_deref() != Some("warm-up"));
        // Every round sends the same number of records per key.
        let per_key = (sent / self.keys.len()) as u32;
        let check = check_once_in_order(&read, &self.keys, per_key);
        let state = wait_for(watch, |_| true).await;
        Ok((check, state))
    }
}

/// Waits (bounded) for statistics that satisfy `accept`; the latest ones if the bound runs out.
async fn wait_for(watch: &Watch, accept: impl Fn(&ProducerState) -> bool) -> ProducerState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match watch.state() {
            Some(state) if accept(&state) || tokio::time::Instant::now() >= deadline => {
                return state;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await, // statistics arrive every 100 ms
        }
    }
}

fn spinner(message: String) -> ProgressBar {
    let progress = ProgressBar::new_spinner().with_message(message);
    progress.set_style(ProgressStyle::with_template("   {spinner} {msg}").expect("a valid template"));
    progress.enable_steady_tick(Duration::from_millis(80));
    progress
}

fn report(check: &OrderCheck, state: &ProducerState) {
    for (key, k) in &check.keys {
        println!(
            "   {key}: {:>3} read, missing {:?}, duplicated {:?}, out of order {:?}",
            k.read, k.missing, k.duplicated, k.out_of_order
        );
    }
    let verdict = if check.once_and_in_order() { "every record once, in order" } else { "NOT once and in order" };
    println!(
        "   => {verdict}   (idempotence: {}, producer id {}, {} requests timed out)",
        state.idempotence, state.producer_id, state.request_timeouts
    );
}
