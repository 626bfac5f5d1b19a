//! Lesson 14, the runnable story: four simulated shoppers' streams (seed 004's concurrent producers) send views,
//! carts and purchases to `shop.activity`, a share of them late; the aggregator folds them into one-minute windows
//! by event time, and each window's result is printed as it closes — the console view. Then what was late.
//!
//! `-- --serve` starts the live dashboard instead (`http://127.0.0.1:PORT`: the page at `/`, the event stream at
//! `/events`) with the shoppers going on until Ctrl-C; `-- --bench` measures the aggregator's throughput.
//!
//! Event times are simulated — a shopper's step is a few seconds of event time but is sent at once — so a story
//! of several minutes of shopping runs in seconds. On real Kafka the topics keep earlier runs' results; this run
//! shows only the windows of its own events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use kit::stage::{Deployment, Running};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use solution_14::aggregator::{Aggregator, AnalyticsTopics};
use solution_14::dashboard::{self, Board};
use solution_14::{Activity, Catalog, Sessions, WindowResult, WindowSpec};
use tokio::sync::oneshot;

/// Shoppers, windows by event time, and a live dashboard.
#[derive(Parser)]
struct Args {
    /// Serve the live dashboard, with the shoppers going on until Ctrl-C.
    #[arg(long, conflicts_with = "bench")]
    serve: bool,
    /// The dashboard's port (0: any free one).
    #[arg(long, default_value_t = 0, requires = "serve")]
    port: u16,
    /// Measure the aggregator's throughput on this many events (on topics of their own).
    #[arg(long, num_args = 0..=1, default_missing_value = "300000")]
    bench: Option<u64>,
    /// Simulated minutes of shopping per shopper (the story).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=120))]
    minutes: u64,
}

/// One-minute windows (seed 002's are five), taking events up to 10 s after their end.
const SPEC: WindowSpec = WindowSpec { size_ms: 60_000, grace_ms: 10_000 };
/// Concurrent shoppers' streams (seed 004 ran three threads).
const SHOPPERS: u64 = 4;
/// The share of events sent late, and by how much at most (some of them beyond the grace).
const LATE_SHARE: f64 = 0.08;
const MAX_DELAY_MS: i64 = 90_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(kit::topics::ANALYTICS_TOPICS).await?;
    let catalog = Catalog::shipped();
    if let Some(events) = args.bench {
        return bench(&broker, &catalog, events).await;
    }
    let topics = AnalyticsTopics::manifest();
    let deployment = Deployment::on(&broker, "workbook-analytics");
    // This run's events start now — or, where the aggregator's state says its stream time is already ahead (an
    // earlier run's simulated minutes run faster than the clock), just after every window it has seen closes.
    let base_ms = (kit::stage::now_ms() as i64).max(resume_after(&broker, &topics).await?);
    let aggregator = Running::start(Aggregator::new(topics.clone(), catalog.clone(), SPEC, 5), deployment);
    let board = Board::default();
    let (stop_follow, stopped) = oneshot::channel::<()>();
    let follower = tokio::spawn(dashboard::follow(
        broker.consumer_config(&kit::topics::unique("dashboard")),
        topics.windows.clone(),
        board.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    if args.serve {
        serve(&broker, &topics, &catalog, board.clone(), base_ms, args.port).await?;
    } else {
        story(&broker, &topics, &catalog, &board, base_ms, args.minutes).await?;
    }
    let _ = stop_follow.send(());
    follower.await??;
    let (result, _) = tokio::task::spawn_blocking(move || aggregator.stop()).await?;
    result?;
    Ok(())
}

/// Where an earlier run left the aggregator's stream time (read from its changelog), plus a window and its
/// grace: events from there on are nobody's late events. 0 when there is no earlier run.
async fn resume_after(broker: &kit::Broker, topics: &AnalyticsTopics) -> anyhow::Result<i64> {
    let mut config = broker.consumer_config(&kit::topics::unique("clock-reader"));
    config.set("isolation.level", "read_committed");
    let topic = topics.state.clone();
    let records =
        tokio::task::spawn_blocking(move || kit::read::read_to_end(config, &topic, 1, Duration::from_secs(30)))
            .await??;
    let stream_time = records
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some("clock"))
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .and_then(|clock| clock["stream_time_ms"].as_i64());
    Ok(stream_time.map_or(0, |t| t + SPEC.size_ms + SPEC.grace_ms))
}

/// What the shoppers sent.
#[derive(Debug, Default)]
struct Sent {
    events: u64,
    delayed: u64,
    last_event_ms: i64,
}

/// Runs `SHOPPERS` shoppers' streams at once, each for `minutes` simulated minutes from `base_ms`, holding back a
/// share of events and sending each once its shopper's clock has passed its delay. `pace` slows them down to
/// a simulated minute per `pace` of real time, or not at all (`None`: as fast as they can, each on its own clock).
async fn shop(
    producer: &FutureProducer,
    topic: &str,
    catalog: &Catalog,
    base_ms: i64,
    minutes: u64,
    pace: Option<Duration>,
) -> anyhow::Result<Sent> {
    let mut shoppers = Vec::new();
    for shopper in 0..SHOPPERS {
        let (producer, topic) = (producer.clone(), topic.to_string());
        let mut sessions = Sessions::new(catalog.clone(), base_ms as u64 ^ shopper, base_ms, LATE_SHARE, MAX_DELAY_MS);
        let until_ms = base_ms + minutes as i64 * 60_000;
        shoppers.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            let mut held: Vec<(i64, Activity)> = Vec::new();
            let started = Instant::now();
            while sessions.clock_ms() < until_ms {
                for emitted in sessions.session() {
                    if emitted.delay_ms > 0 {
                        sent.delayed += 1;
                        held.push((emitted.activity.event_time_ms + emitted.delay_ms, emitted.activity));
                    } else {
                        send(&producer, &topic, &emitted.activity).await?;
                        sent.events += 1;
                    }
                }
                // Held events whose delay has passed in this shopper's time go now, after later ones.
                let now = sessions.clock_ms();
                let (due, later): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut held).into_iter().partition(|(at, _)| *at <= now);
                held = later;
                for (_, activity) in due {
                    send(&producer, &topic, &activity).await?;
                    sent.events += 1;
                }
                if let Some(pace) = pace {
                    let simulated = Duration::from_millis((now - base_ms).max(0) as u64);
                    let due = pace.mul_f64(simulated.as_secs_f64() / 60.0);
                    tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
                }
            }
            for (_, activity) in held {
                send(&producer, &topic, &activity).await?;
                sent.events += 1;
            }
            sent.last_event_ms = sessions.clock_ms();
            anyhow::Ok(sent)
        }));
    }
    let mut total = Sent::default();
    for shopper in shoppers {
        let sent = shopper.await??;
        total.events += sent.events;
        total.delayed += sent.delayed;
        total.last_event_ms = total.last_event_ms.max(sent.last_event_ms);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(total)
}

async fn send(producer: &FutureProducer, topic: &str, activity: &Activity) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(activity)?;
    producer
        .send(FutureRecord::to(topic).key(&activity.user_id).payload(&payload), Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)?;
    Ok(())
}

async fn story(
    broker: &kit::Broker,
    topics: &AnalyticsTopics,
    catalog: &Catalog,
    board: &Board,
    base_ms: i64,
    minutes: u64,
) -> anyhow::Result<()> {
    println!(
        "1. {SHOPPERS} shoppers' streams at once, {minutes} simulated minutes each; {:.0}% of events sent late, by up \
         to {} s; windows of {} s by event time, taking events up to {} s after their end",
        LATE_SHARE * 100.0,
        MAX_DELAY_MS / 1000,
        SPEC.size_ms / 1000,
        SPEC.grace_ms / 1000
    );
    let mut updates = board_updates(board);
    let producer: FutureProducer = broker.producer_config().create()?;
    // Paced, so that the shoppers' clocks go together (a simulated minute in 0.8 s): a shopper far ahead of the
    // others would make their events late by itself.
    let sent = shop(&producer, &topics.activity, catalog, base_ms, minutes, Some(Duration::from_millis(800))).await?;
    println!("   sent {} events ({} of them held back and sent late)", sent.events, sent.delayed);

    // Every window whose close time the last event's time has passed closes; the last ones stay open: stream
    // time moves only with events, and none comes after the last.
    let closing = (SPEC.start_of(base_ms)..=sent.last_event_ms)
        .step_by(SPEC.size_ms as usize)
        .filter(|start| SPEC.closes_at(*start) <= sent.last_event_ms)
        .count();
    println!("\n2. the windows, as they close (the console view; {closing} will close, the last ones stay open)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = BTreeMap::new();
    while shown.len() < closing {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(result)) = tokio::time::timeout(remaining, updates.recv()).await else {
            anyhow::bail!("only {} of {closing} windows closed within 60 s", shown.len());
        };
        if result.start_ms < SPEC.start_of(base_ms) || shown.contains_key(&result.start_ms) {
            continue; // an earlier run's window (real Kafka keeps them), or one shown already
        }
        for line in dashboard::console(&result) {
            println!("   {line}");
        }
        shown.insert(result.start_ms, result);
    }

    let late = late_events(broker, topics, base_ms).await?;
    let counted: u64 = shown.values().map(|r| r.events).sum();
    let out_of_order: u64 = shown.values().map(|r| r.out_of_order).sum();
    println!("\n3. lateness");
    println!("   {out_of_order} events came after their window's end but within the grace: counted in their window");
    println!("   {late} came after their window had closed: in {}, not counted, not lost", topics.late);
    println!("   {counted} events in the {} closed windows; the rest wait in the windows still open", shown.len());
    Ok(())
}

/// A receiver of the board's new results.
fn board_updates(board: &Board) -> tokio::sync::mpsc::Receiver<WindowResult> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let board = board.clone();
    tokio::spawn(async move {
        let mut updates = board.subscribe();
        while let Ok(result) = updates.recv().await {
            if sender.send(result).await.is_err() {
                break;
            }
        }
    });
    receiver
}

/// How many of this run's events `analytics.late` holds.
async fn late_events(broker: &kit::Broker, topics: &AnalyticsTopics, base_ms: i64) -> anyhow::Result<usize> {
    let mut config = broker.consumer_config(&kit::topics::unique("late-reader"));
    config.set("isolation.level", "read_committed");
    let topic = topics.late.clone();
    let records =
        tokio::task::spawn_blocking(move || kit::read::read_to_end(config, &topic, 1, Duration::from_secs(30)))
            .await??;
    Ok(records
        .iter()
        .filter_map(|r| serde_json::from_slice::<solution_14::aggregator::LateEvent>(&r.payload).ok())
        .filter(|late| late.event.event_time_ms >= base_ms)
        .count())
}

async fn serve(
    broker: &kit::Broker,
    topics: &AnalyticsTopics,
    catalog: &Catalog,
    board: Board,
    base_ms: i64,
    port: u16,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("dashboard: http://{}   (Ctrl-C stops it)", listener.local_addr()?);
    println!("a simulated minute every 5 s: a window closes about every 5 s once the first has");
    let server = tokio::spawn(async move { axum::serve(listener, dashboard::router(board)).await });
    let producer: FutureProducer = broker.producer_config().create()?;
    let shoppers = shop(&producer, &topics.activity, catalog, base_ms, 24 * 60, Some(Duration::from_secs(5)));
    tokio::select! {
        sent = shoppers => { sent?; }
        _ = tokio::signal::ctrl_c() => {}
    }
    server.abort();
    Ok(())
}

/// `--bench`: `events` events on topics of their own, produced first, then aggregated; the aggregator's rate.
async fn bench(broker: &kit::Broker, catalog: &Catalog, events: u64) -> anyhow::Result<()> {
    // The embedded broker keeps at most 5 MiB per partition (librdkafka's mock cluster): about 30,000 events.
    let events = if broker.kind() == kit::BrokerKind::Embedded && events > 30_000 {
        println!("the embedded broker keeps 5 MiB per partition: measuring 30000 events (real Kafka takes more)");
        30_000
    } else {
        events
    };
    let topics = AnalyticsTopics {
        activity: kit::topics::unique("bench-activity"),
        windows: kit::topics::unique("bench-windows"),
        late: kit::topics::unique("bench-late"),
        state: kit::topics::unique("bench-state"),
        dead_letters: kit::topics::unique("bench-dlq"),
    };
    for (topic, compacted, partitions) in topics.all() {
        let configs = if compacted { vec![("cleanup.policy", "compact".to_string())] } else { Vec::new() };
        broker.create_topic_with(topic, partitions, &configs).await?;
    }
    println!("producing {events} events to {} …", topics.activity);
    let started = Instant::now();
    let mut config = broker.producer_config();
    config.set("linger.ms", "20").set("batch.num.messages", "10000").set("queue.buffering.max.messages", "1000000");
    let producer: rdkafka::producer::BaseProducer = config.create()?;
    let mut sessions = Sessions::new(catalog.clone(), 14, kit::stage::now_ms() as i64, 0.0, 1);
    let mut made = 0;
    while made < events {
        for emitted in sessions.session() {
            let payload = serde_json::to_vec(&emitted.activity)?;
            loop {
                let record = rdkafka::producer::BaseRecord::to(&topics.activity)
                    .key(&emitted.activity.user_id)
                    .payload(&payload);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        _,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
            made += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let produced = started.elapsed();
    println!("   produced in {:.1} s ({:.0} events/s)", produced.as_secs_f64(), made as f64 / produced.as_secs_f64());

    // The same events decoded and windowed in memory, with no Kafka: what the aggregator's own work costs.
    let mut sessions = Sessions::new(catalog.clone(), 14, kit::stage::now_ms() as i64, 0.0, 1);
    let mut payloads = Vec::new();
    while (payloads.len() as u64) < made {
        payloads.extend(sessions.session().into_iter().map(|e| serde_json::to_vec(&e.activity).unwrap_or_default()));
    }
    let started = Instant::now();
    let mut windows = solution_14::Windows::new(WindowSpec { size_ms: 60_000, grace_ms: 10_000 });
    for payload in &payloads {
        let event: Activity = serde_json::from_slice(payload)?;
        windows.accept(&event, catalog);
        let _ = windows.close_due(catalog, 5);
    }
    let in_memory = started.elapsed();
    println!(
        "   in memory, no Kafka: {} events decoded and windowed in {:.2} s ({:.0} events/s)",
        payloads.len(),
        in_memory.as_secs_f64(),
        payloads.len() as f64 / in_memory.as_secs_f64()
    );

    let aggregator =
        Aggregator::new(topics.clone(), catalog.clone(), WindowSpec { size_ms: 60_000, grace_ms: 10_000 }, 5);
    let handled = Arc::clone(&aggregator.handled);
    let running = Running::start(aggregator, Deployment::on(broker, kit::topics::unique("bench")));
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    while handled.load(Ordering::Relaxed) < made && Instant::now() < deadline && !running.has_ended() {
        if first.is_none() && handled.load(Ordering::Relaxed) > 0 {
            first = Some(Instant::now());
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            println!("   … {} events aggregated", handled.load(Ordering::Relaxed));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = handled.load(Ordering::Relaxed);
    let (result, _) = tokio::task::spawn_blocking(move || running.stop()).await?;
    let report = result?;
    println!("   in {} transactions", report.transactions);
    let from_first = first.unwrap_or(started).elapsed();
    println!(
        "aggregated {done} events in {:.1} s from the first one ({:.0} events/s; {:.1} s with the start-up: group join, \
         changelog read)",
        from_first.as_secs_f64(),
        done as f64 / from_first.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
