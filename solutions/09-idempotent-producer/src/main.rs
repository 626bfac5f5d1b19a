//! Lesson 09, the runnable story: send numbered records per user while the network and the broker misbehave —
//! refused requests, lost acks, late acks, the broker going down — and check what was written: every record
//! once, in order.
//!
//! Refused requests and lost or late acks come from `kit::FaultProxy` between the producer and the resolved
//! broker, whichever it is: run the story against real Kafka to see what the embedded broker cannot show. A
//! broker outage takes a whole broker down, so that round starts a private one (`kit::outage`): Apache Kafka on
//! this machine's JVM next to real Kafka (killed, then restarted on its data), an in-process mock otherwise. Each round writes a topic of its own, which the embedded broker `cargo xtask lesson`
//! hosts in its own process cannot create: then the whole story runs on an embedded broker in this process.
//!
//! Run it with `cargo xtask lesson 09` (your exercise) or `cargo xtask lesson 09 --solution`.

use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use kit::outage::OutageCluster;
use kit::read::read_topic;
use kit::{Broker, FaultProxy};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use solution_09::{
    OrderCheck, ProducerState, WARM_UP_KEY, Watch, check_once_in_order, numbered_sequence, producer_config,
    send_numbered, warm_up,
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

/// One round of the story: a broker, a numbered sequence per key, and what was read back.
struct Round<'a> {
    broker: &'a Broker,
    keys: Vec<&'a str>,
    per_key: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let resolved = kit::story::start(&[]).await?;
    // Each round writes a topic of its own. Real Kafka and an embedded broker in this process create topics on
    // request; one hosted by another process (`cargo xtask lesson`) cannot, so the story hosts its own.
    let broker = if resolved.kind().is_real_kafka() || resolved.embedded_cluster().is_some() {
        resolved
    } else {
        let own = Broker::embedded()?;
        println!("that broker cannot create this story's topics: starting an embedded one in this process");
        own
    };

    let names: Vec<String> = (1..=args.users).map(|u| format!("user-{u}")).collect();
    let round = Round { broker: &broker, keys: names.iter().map(String::as_str).collect(), per_key: args.per_user };
    let config = producer_config(broker.bootstrap_servers());
    println!("\nthe producer's safety net:");
    for key in ["enable.idempotence", "acks", "max.in.flight.requests.per.connection", "retries", "message.timeout.ms"]
    {
        println!("  {key:<40} {}", config.get(key).unwrap_or("(librdkafka's default)"));
    }
    println!("\nrounds 1, 2, 4 and 5 put a fault proxy between the producer and the broker: it answers some requests");
    println!("itself with an error, or throws the broker's acks away, or holds them back.");

    println!("\n1. every other Produce request is refused (NOT_LEADER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS)");
    let (check, state) = round.run_with_refusals("request errors", &config).await?;
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
    let (check, state) = round.run_with_refusals("no idempotence", &unsafe_config).await?;
    report(&check, &state);

    println!("\n3. the broker goes down while records are in flight, and comes back");
    let cluster = OutageCluster::next_to(&broker).await?;
    if cluster.is_real_kafka() {
        println!(
            "   (a private Apache Kafka on this machine's JVM for this round: it is killed, then restarted on its data)"
        );
    } else {
        println!("   (a private embedded broker for this round, so the outage hits nothing else)");
    }
    let outage_round = Round { broker: cluster.broker(), ..round.clone_keys() };
    println!("   (librdkafka's connection errors below are the outage as the producer sees it)");
    let (check, state) = outage_round.run_with_outage(&cluster, &config).await?;
    drop(cluster);
    report(&check, &state);

    println!("\n4. the broker writes the records but its acks come too late (the producer times out)");
    let (check, state) = round.run_with_late_acks(&config).await?;
    report(&check, &state);
    explain_copies(&check);

    println!("\n5. the broker writes the records but the connection drops before the acks arrive (lost acks)");
    let (check, state) = round.run_with_lost_acks(&config).await?;
    report(&check, &state);
    explain_copies(&check);
    println!(
        "\nIdempotence makes one producer's retries safe. Making a read-process-write step atomic across topics is \
         the job of transactions."
    );
    Ok(())
}

fn explain_copies(check: &OrderCheck) {
    if check.keys.values().any(|k| !k.duplicated.is_empty()) {
        println!(
            "   The embedded broker checks sequence numbers only for transactional producers, so the retry was \
             written twice.\n   Real Kafka drops a batch it already has from the same producer id and sequence: \
             run against it to see that."
        );
    }
}

impl<'a> Round<'a> {
    /// The same keys and count, for a round on another broker.
    fn clone_keys(&self) -> Round<'a> {
        Round { broker: self.broker, keys: self.keys.clone(), per_key: self.per_key }
    }

    /// A fresh topic and a watched producer for `config`, with small batches so many requests are in flight,
    /// talking through `proxy` when there is one. A warm-up record goes to every partition first (see
    /// `warm_up`), so the producer has its id, its connections and its sequence numbers before any fault starts.
    async fn prepare(
        &self,
        config: &ClientConfig,
        proxy: Option<&FaultProxy>,
        tuning: &[(&str, &str)],
    ) -> anyhow::Result<(String, FutureProducer<Watch>, Watch)> {
        // A topic per round, so each round is read back on its own.
        let topic = kit::topics::unique("lesson09-numbered");
        self.broker.create_topic(&topic, 3).await?;
        let mut config = config.clone();
        config
            .set("bootstrap.servers", self.broker.bootstrap_servers())
            .set("statistics.interval.ms", Watch::INTERVAL_MS)
            .set("batch.num.messages", "4")
            .set("linger.ms", "0");
        if let Some(proxy) = proxy {
            config.set("bootstrap.servers", proxy.bootstrap_servers());
        }
        for (key, value) in tuning {
            config.set(*key, *value);
        }
        let watch = Watch::default();
        let producer: FutureProducer<Watch> = config.create_with_context(watch.clone())?;
        warm_up(&producer, &topic, 3).await?;
        Ok((topic, producer, watch))
    }

    /// Every other Produce request (nine of them) is answered by the proxy with a retriable error.
    async fn run_with_refusals(
        &self,
        label: &str,
        config: &ClientConfig,
    ) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let proxy = FaultProxy::start(self.broker.bootstrap_servers())?;
        let (topic, producer, watch) = self.prepare(config, Some(&proxy), &[]).await?;
        proxy.fail_every_other_produce_request(9);
        let records = numbered_sequence(&self.keys, self.per_key);
        let progress = spinner(format!("sending {} numbered records ({label})", records.len()));
        send_numbered(&producer, &topic, &records).await?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn run_with_outage(
        &self,
        cluster: &OutageCluster,
        config: &ClientConfig,
    ) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let (topic, producer, watch) = self.prepare(config, None, &[]).await?;
        let records = numbered_sequence(&self.keys, self.per_key);
        let (before, after) = records.split_at(records.len() / 2);
        send_numbered(&producer, &topic, before).await?;
        let progress = spinner(format!("broker 1 is down; {} records wait and retry", after.len()));
        cluster.broker_down().await?;
        let sending = send_numbered(&producer, &topic, after);
        let outage = async {
            let noticed = wait_for(&watch, |s| s.brokers_up == 0).await;
            // Back up whatever the wait found: a broker left down would fail the records still in flight.
            progress.set_message("broker 1 is back up");
            cluster.broker_up().await?;
            noticed.map(|_| ())
        };
        let (sent, back) = futures::future::join(sending, outage).await;
        back?;
        sent?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn run_with_late_acks(&self, config: &ClientConfig) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let proxy = FaultProxy::start(self.broker.bootstrap_servers())?;
        // The producer waits 1 s for an ack; the proxy holds each one back for 3 s. librdkafka looks for timed-out
        // requests once a second, so an ack only a little late may still slip in before the check: 3 s never does.
        let (topic, producer, watch) = self
            .prepare(config, Some(&proxy), &[("request.timeout.ms", "1000"), ("socket.timeout.ms", "1000")])
            .await?;
        let records = numbered_sequence(&self.keys, self.per_key.min(10));
        let progress = spinner("acks take 3 s, the producer waits 1 s".to_string());
        proxy.delay_produce_acks(Duration::from_secs(3));
        let sending = send_numbered(&producer, &topic, &records);
        let slow = async {
            let noticed = wait_for(&watch, |s| s.request_timeouts > 0).await;
            progress.set_message("acks are fast again");
            proxy.delay_produce_acks(Duration::ZERO);
            noticed.map(|_| ())
        };
        let (sent, slow) = futures::future::join(sending, slow).await;
        slow?;
        sent?;
        progress.finish_and_clear();
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn run_with_lost_acks(&self, config: &ClientConfig) -> anyhow::Result<(OrderCheck, ProducerState)> {
        let proxy = FaultProxy::start(self.broker.bootstrap_servers())?;
        let (topic, producer, watch) = self.prepare(config, Some(&proxy), &[]).await?;
        let records = numbered_sequence(&self.keys, self.per_key.min(10));
        let progress = spinner("the acks of the next 3 requests are lost with their connection".to_string());
        proxy.lose_produce_acks(3);
        send_numbered(&producer, &topic, &records).await?;
        progress.finish_and_clear();
        println!("   ({} acks lost on the way)", proxy.stats().acks_lost);
        self.read_back(&topic, records.len(), &watch).await
    }

    async fn read_back(&self, topic: &str, sent: usize, watch: &Watch) -> anyhow::Result<(OrderCheck, ProducerState)> {
        // What was written is readable within milliseconds; the bound only matters when records are missing,
        // and then it is how long the story waits for them.
        let within = if self.broker.embedded_cluster().is_some() { 1 } else { 5 };
        let mut read = read_topic(self.broker, topic, sent + 1, Duration::from_secs(within)).await;
        read.retain(|r| r.key.as_deref() != Some(WARM_UP_KEY));
        // Every round sends the same number of records per key.
        let per_key = (sent / self.keys.len()) as u32;
        let check = check_once_in_order(&read, &self.keys, per_key);
        let state = wait_for(watch, |_| true).await?;
        Ok((check, state))
    }
}

/// Waits (bounded: statistics arrive every 100 ms) for statistics that satisfy `accept`; the latest ones if the
/// bound runs out, since the story goes on either way and prints what it saw.
async fn wait_for(watch: &Watch, accept: impl Fn(&ProducerState) -> bool) -> anyhow::Result<ProducerState> {
    let accepted = kit::wait::until("the producer's statistics", Duration::from_secs(5), || {
        let state = watch.state().filter(|s| accept(s));
        async move { Ok(state) }
    })
    .await;
    match accepted {
        Ok(state) => Ok(state),
        Err(timed_out) => watch.state().ok_or(timed_out),
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
