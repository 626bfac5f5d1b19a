//! Lesson 15's story: the notification consumer through a provider outage. Orders come in at a steady pace; the
//! provider is healthy, then answers 503 to everything for a few seconds, then recovers. The story prints what
//! the breaker saved the provider from, how long the consumer stayed paused, how far it fell behind and how fast
//! it caught up, and checks that every order got exactly one e-mail. `--no-breaker` runs the same story with a
//! breaker that never opens, for contrast.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_15::breaker::Phase;
use solution_15::mailer::MailerStats;
use solution_15::{FakeProvider, MailClient, MailRequest, MailTopics, Mailer, Mode, Resilience};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "A consumer that survives a failing dependency: an e-mail provider's outage and recovery")]
struct Args {
    /// Run the consumer with a breaker that never opens (retries and budget only), for contrast.
    #[arg(long)]
    no_breaker: bool,
    /// Orders sent while the provider is healthy, and again while it is down.
    #[arg(long, default_value_t = 20)]
    orders: usize,
    /// How long the provider stays down, in milliseconds.
    #[arg(long, default_value_t = 2500)]
    outage_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(kit::topics::MAIL_TOPICS).await?;
    let topics = MailTopics::manifest();
    let provider = FakeProvider::start().await?;
    let resilience = if args.no_breaker { Resilience::lesson().without_breaker() } else { Resilience::lesson() };
    let client = MailClient::new(&provider.url(), &resilience)?;
    let breaker = client.breaker.clone();

    // A group of its own, reading from the end of mail.requests: on real Kafka the topic keeps earlier runs'
    // orders, and they are not this run's to send.
    let mut consumer_config = broker.consumer_config(&kit::topics::unique("mailer"));
    consumer_config.set("auto.offset.reset", "latest");
    let mailer = Mailer::new(consumer_config, broker.producer_config(), topics.clone(), client)?;
    let (stats, fetched) = (mailer.stats.clone(), mailer.fetched.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(mailer.run(async {
        let _ = stopped.await;
    }));
    let partitions = kit::topics::MAIL_REQUESTS.partitions as usize;
    kit::wait::until(
        "the mailer to join its group and find the end of each partition",
        Duration::from_secs(30),
        || {
            let active = fetched.get().fetch_states.values().filter(|state| *state == "active").count();
            let ended = running.is_finished();
            async move {
                anyhow::ensure!(!ended, "the mailer stopped before it started");
                Ok((active == partitions).then_some(()))
            }
        },
    )
    .await?;

    let settings = resilience.breaker;
    println!(
        "provider: {} · breaker: {} · retries: up to {}, backoff {:?} doubling to {:?}, budget 20% of requests · \
         timeout {:?} · bulkhead {} in flight",
        provider.url(),
        if args.no_breaker {
            "none (--no-breaker)".to_string()
        } else {
            format!("opens after {} failures in a row, cools down {:?}", settings.failure_threshold, settings.cool_down)
        },
        resilience.max_retries,
        resilience.backoff.base,
        resilience.backoff.cap,
        resilience.timeout,
        resilience.max_in_flight,
    );

    let producer: FutureProducer = broker.producer_config().create()?;
    let run = &kit::topics::unique("run")[4..];
    let order_id = |n: usize| format!("order-{run}-{n:03}");
    let mut lag = LagMeter::new(stats.clone());

    println!("\n1. healthy: {} orders, one every 25 ms", args.orders);
    for n in 0..args.orders {
        send_order(&producer, &topics.requests, &order_id(n)).await?;
        lag.produced += 1;
        tokio::time::sleep(Duration::from_millis(25)).await; // the orders' pace, not a wait on anything
    }
    kit::wait::until("every healthy-phase e-mail", Duration::from_secs(10), || {
        let done = provider.accepted().len() >= args.orders;
        async move { Ok(done.then_some(())) }
    })
    .await?;
    println!("   {} e-mails sent, lag {}", provider.accepted().len(), lag.now());

    println!("\n2. outage: the provider answers 503 to everything for {} ms; orders keep coming", args.outage_ms);
    let outage = Instant::now();
    provider.set_mode(Mode::Failing(503)).await?;
    let shadow = (!args.no_breaker).then(|| tokio::spawn(without_a_breaker(Duration::from_millis(args.outage_ms))));
    let pace = Duration::from_millis(args.outage_ms) / args.orders as u32;
    let mut opened_after = None;
    let mut next_order = Instant::now();
    let mut sent_in_outage = 0;
    while outage.elapsed() < Duration::from_millis(args.outage_ms) {
        if sent_in_outage < args.orders && Instant::now() >= next_order {
            send_order(&producer, &topics.requests, &order_id(args.orders + sent_in_outage)).await?;
            lag.produced += 1;
            sent_in_outage += 1;
            next_order += pace;
        }
        if opened_after.is_none() && breaker.state().phase() == Phase::Open {
            opened_after = Some(outage.elapsed());
        }
        lag.sample();
        tokio::time::sleep(Duration::from_millis(5)).await; // the sampling period of the figures
    }
    for n in sent_in_outage..args.orders {
        send_order(&producer, &topics.requests, &order_id(args.orders + n)).await?;
        lag.produced += 1;
    }
    let calls = provider.calls().iter().filter(|call| call.at >= outage).count();
    let counts = breaker.counts();
    match opened_after {
        Some(after) => println!(
            "   the breaker opened {} ms into the outage, after {} failed calls",
            after.as_millis(),
            settings.failure_threshold
        ),
        None => println!("   the breaker never opened"),
    }
    println!(
        "   calls to the provider during the outage: {calls} ({} probes; {} calls rejected without being made)",
        counts.probes, counts.rejected
    );
    if let Some(shadow) = shadow {
        println!(
            "   a client without a breaker, sending one e-mail again 20 ms after each failure for the same outage: {} \
             calls",
            shadow.await??
        );
    }
    let watch = fetched.get();
    println!(
        "   the consumer paused {} times; {} records waiting in {} at the end of the outage",
        MailerStats::get(&stats.held),
        lag.now(),
        topics.requests,
    );
    println!(
        "   records fetched while the breaker was open: {} (the consumer pauses when a send fails, and the send \
         that opened the breaker was still waiting for its retry)",
        watch.while_open
    );

    println!("\n3. recovery: the provider is healthy again");
    provider.set_mode(Mode::Healthy).await?;
    let recovery = Instant::now();
    let total = 2 * args.orders;
    let deadline = Instant::now() + Duration::from_secs(15);
    while lag.now() > 0 || provider.accepted().len() < total {
        anyhow::ensure!(Instant::now() < deadline, "the consumer did not catch up within 15 s");
        anyhow::ensure!(!running.is_finished(), "the mailer stopped during the recovery");
        lag.sample();
        tokio::time::sleep(Duration::from_millis(5)).await; // the sampling period of the figures
    }
    println!(
        "   lag peaked at {} records; drained {} ms after the recovery (the next probe comes at the end of the \
         cool-down)",
        lag.peak,
        recovery.elapsed().as_millis()
    );

    let per_order = provider.emails_per_order();
    let ours: BTreeMap<String, usize> =
        (0..total).map(|n| (order_id(n), per_order.get(&order_id(n)).copied().unwrap_or(0))).collect();
    let once = ours.values().filter(|count| **count == 1).count();
    let twice = ours.values().filter(|count| **count > 1).count();
    let none = ours.values().filter(|count| **count == 0).count();
    let emails: usize = ours.values().sum();
    println!("\n4. {total} orders, {emails} e-mails: {once} orders got one, {twice} more than one, {none} none");
    let _ = stop.send(());
    running.await??;
    anyhow::ensure!(once == total, "every order should get exactly one e-mail");
    Ok(())
}

/// The records waiting in `mail.requests`: produced by the story, not yet handled by the mailer.
struct LagMeter {
    stats: Arc<MailerStats>,
    produced: u64,
    peak: u64,
}

impl LagMeter {
    fn new(stats: Arc<MailerStats>) -> LagMeter {
        LagMeter { stats, produced: 0, peak: 0 }
    }

    fn now(&self) -> u64 {
        let handled = self.stats.sent.load(Ordering::Relaxed) + self.stats.dead_lettered.load(Ordering::Relaxed);
        self.produced.saturating_sub(handled)
    }

    fn sample(&mut self) {
        self.peak = self.peak.max(self.now());
    }
}

async fn send_order(producer: &FutureProducer, topic: &str, order_id: &str) -> anyhow::Result<()> {
    let n = order_id.rsplit('-').next().unwrap_or("0");
    let request = MailRequest::confirmation(order_id, &format!("customer{n}@example.com"));
    let payload = serde_json::to_vec(&request)?;
    producer
        .send(FutureRecord::to(topic).key(order_id).payload(&payload), Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)?;
    Ok(())
}

/// What a consumer without a breaker does to a provider that is down, for `outage`: it sends, and when the send
/// fails (after its retries, as far as the budget allows) it resumes at its next 20 ms tick and sends the same
/// e-mail again. Against a provider of its own, failing like the story's. The calls it made.
async fn without_a_breaker(outage: Duration) -> anyhow::Result<usize> {
    let provider = FakeProvider::start().await?;
    provider.set_mode(Mode::Failing(503)).await?;
    let client = MailClient::new(&provider.url(), &Resilience::lesson().without_breaker())?;
    let request = MailRequest::confirmation("order-shadow", "shadow@example.com");
    let started = Instant::now();
    while started.elapsed() < outage {
        if client.send(request.clone()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await; // the consumer's resume tick
        }
    }
    Ok(provider.calls().len())
}
