//! Lesson 16, the runnable story: one order followed end to end — the order service sends it to `traced.orders`
//! with a `traceparent` header, the shipping service continues the trace and sends the shipment to
//! `traced.shipments`, the tracker continues it once more — then the trace as a tree, and an excerpt of `/metrics`,
//! scraped over HTTP, made from the clients' librdkafka statistics.
//!
//! `-- --serve` keeps `/metrics` up (an order every half second) until Ctrl-C. `-- --bench` runs the tuning
//! exercise's benchmark; `-- --sweep` the performance lab, which prints a table and writes
//! `docs/generated/perf-embedded.md|svg` (or `perf-kafka.md|svg` on real Kafka).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use solution_16::exposition::{self, Sample};
use solution_16::perf::{self, BenchPlan, Pass, SweepPlan};
use solution_16::shipping::{self, Order, ShippingTopics};
use solution_16::spans::{self, SpanCollector};
use solution_16::statistics::names;
use solution_16::{Metrics, StatsContext, lab_report};
use tracing::instrument::WithSubscriber;

/// One order traced across Kafka, and the clients' metrics.
#[derive(Parser)]
struct Args {
    /// Keep /metrics up, with an order every half second, until Ctrl-C.
    #[arg(long, conflicts_with_all = ["bench", "sweep"])]
    serve: bool,
    /// The port of /metrics (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The tuning exercise's benchmark: the raw loop against the tuned settings, and the tuned end-to-end latency.
    #[arg(long, conflicts_with = "sweep")]
    bench: bool,
    /// The performance lab: every setting of the sweep, then the benchmark; a table, and docs/generated/perf-*.
    #[arg(long)]
    sweep: bool,
    /// Where the sweep writes its markdown and SVG (default: the book's docs/generated/).
    #[arg(long, requires = "sweep")]
    out: Option<PathBuf>,
}

/// How often librdkafka hands the clients their statistics, in the story.
const STATS_INTERVAL_MS: &str = "500";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(kit::topics::OBSERVABILITY_TOPICS).await?;
    if args.bench {
        return bench(&broker).await;
    }
    if args.sweep {
        return sweep(&broker, args.out).await;
    }
    let metrics = Metrics::new();
    let (address, server) = exposition::serve(metrics.clone(), args.port).await?;
    let base = format!("http://{address}");
    let collector = SpanCollector::new();
    let dispatch = collector.dispatch_with_logs();
    let result = if args.serve {
        serve(&broker, &metrics, &base).with_subscriber(dispatch).await
    } else {
        story(&broker, &metrics, &collector, &base).with_subscriber(dispatch).await
    };
    server.abort();
    result
}

/// A client config with statistics every `STATS_INTERVAL_MS`, under `client_id`.
fn with_stats(mut config: ClientConfig, client_id: &str) -> ClientConfig {
    config.set("client.id", client_id).set("statistics.interval.ms", STATS_INTERVAL_MS);
    config
}

/// The shipping service, running until `stop` fires: its consumer in the group `workbook-shipping`.
fn start_shipping(
    broker: &kit::Broker,
    metrics: &Metrics,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let context = StatsContext { metrics: metrics.clone() };
    let consumer: StreamConsumer<StatsContext> = with_stats(broker.consumer_config("workbook-shipping"), "shipping")
        .set("enable.auto.commit", "false")
        .create_with_context(context.clone())?;
    let producer: FutureProducer<StatsContext> =
        with_stats(broker.producer_config(), "shipping-producer").create_with_context(context)?;
    let topics = ShippingTopics {
        orders: kit::topics::TRACED_ORDERS.name.into(),
        shipments: kit::topics::TRACED_SHIPMENTS.name.into(),
    };
    let service = shipping::run_shipping(consumer, producer, topics, async {
        let _ = stop.await;
    });
    Ok(tokio::spawn(service.with_current_subscriber()))
}

/// The tracker's consumer: assigned to the ends of `traced.shipments` as they are now (no group to join).
async fn tracker(broker: &kit::Broker, metrics: &Metrics) -> anyhow::Result<StreamConsumer<StatsContext>> {
    let topic = kit::topics::TRACED_SHIPMENTS.name;
    let probe: BaseConsumer = broker.client_config().create()?;
    let ends = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        (0..kit::topics::TRACED_SHIPMENTS.partitions)
            .map(|p| Ok((p, probe.fetch_watermarks(topic, p, Duration::from_secs(10))?.1)))
            .collect()
    })
    .await??;
    let consumer: StreamConsumer<StatsContext> = with_stats(broker.consumer_config("workbook-tracker"), "tracker")
        .set("enable.auto.commit", "false")
        .create_with_context(StatsContext { metrics: metrics.clone() })?;
    let mut assignment = TopicPartitionList::new();
    for (partition, end) in ends {
        assignment.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    consumer.assign(&assignment)?;
    drop(assignment);
    Ok(consumer)
}

async fn story(broker: &kit::Broker, metrics: &Metrics, collector: &SpanCollector, base: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("/metrics: {base}/metrics (librdkafka's statistics every {STATS_INTERVAL_MS} ms)");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let service = start_shipping(broker, metrics, stopped)?;
    let tracker = tracker(broker, metrics).await?;
    let producer: FutureProducer<StatsContext> = with_stats(broker.producer_config(), "order-service")
        .create_with_context(StatsContext { metrics: metrics.clone() })?;

    let mut rng = fastrand::Rng::new();
    let order = Order {
        order_id: format!("ord-{:06}", rng.u32(..1_000_000)),
        customer: "cust-00042".into(),
        items: 4,
        total_cents: 12_990,
    };
    println!("\n1. one order, traced: order-service → traced.orders → shipping → traced.shipments → tracker");
    let placed = shipping::place_order(&producer, kit::topics::TRACED_ORDERS.name, &order, &mut rng).await?;
    println!("   {} sent with traceparent {}", order.order_id, placed.traceparent());

    // The tracker reads shipments until this order's arrives (earlier runs' are behind the ends it started at).
    let mut shipments = tracker.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let shipment = loop {
        let next = tokio::time::timeout_at(deadline, shipments.next()).await;
        let Ok(Some(message)) = next else {
            anyhow::bail!("the shipment of {} did not reach the tracker within 30 s", order.order_id);
        };
        let message = message?;
        if message.key() == Some(order.order_id.as_bytes()) {
            break message.detach();
        }
    };
    let header = shipping::traceparent_of(&shipment);
    let shown = header.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    println!("   its shipment reached the tracker with traceparent {shown}");
    shipping::track_shipment(&order.order_id, header.as_deref(), &mut rng);
    println!("\n2. the trace, each span under its parent");
    let spans = kit::wait::until("the order's four spans", Duration::from_secs(5), || {
        let spans = collector.spans_of(&order.order_id);
        async move { Ok((spans.len() >= 4).then_some(spans)) }
    })
    .await?;
    for line in spans::tree(&spans) {
        println!("   {line}");
    }

    println!("\n3. /metrics, scraped over HTTP (an excerpt)");
    let client = reqwest::Client::new();
    let samples = kit::wait::until("the statistics of the order's clients", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let samples = exposition::scrape_over_http(&client, base).await?;
            let sent = exposition::value(&samples, names::MESSAGES_SENT, &[("client_id", "order-service")]);
            let lags = samples.iter().filter(|s| s.is(names::CONSUMER_LAG, &[("client_id", "shipping")])).count();
            let shipped = exposition::value(&samples, names::MESSAGES_SENT, &[("client_id", "shipping-producer")]);
            let ready = sent >= Some(1.0) && shipped >= Some(1.0) && lags >= 1;
            Ok(ready.then_some(samples))
        }
    })
    .await?;
    for line in excerpt(&samples) {
        println!("   {line}");
    }
    let _ = stop.send(());
    let shipped = service.await??;
    drop(shipments);
    println!(
        "\nthe shipping service handled {shipped} order(s) in this run; the story took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The lines of a scrape worth showing: throughput, round trips and lag.
fn excerpt(samples: &[Sample]) -> Vec<String> {
    let shown =
        [names::MESSAGES_SENT, names::MESSAGES_RECEIVED, names::BATCH_SIZE, names::RTT_P99, names::CONSUMER_LAG];
    let mut lines: Vec<(usize, String)> = samples
        .iter()
        .filter_map(|s| {
            let rank = shown.iter().position(|n| *n == s.name)?;
            if (s.name == names::MESSAGES_SENT || s.name == names::MESSAGES_RECEIVED) && s.value == 0.0 {
                return None; // a consumer sends no messages, a producer receives none
            }
            if s.name == names::CONSUMER_LAG
                && s.labels.get("topic").map(String::as_str) != Some(kit::topics::TRACED_ORDERS.name)
            {
                return None;
            }
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            Some((rank, format!("{}{{{}}} {}", s.name, labels.join(","), s.value)))
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, line)| line).collect()
}

/// `--serve`: /metrics stays up, with an order every half second, until Ctrl-C.
async fn serve(broker: &kit::Broker, metrics: &Metrics, base: &str) -> anyhow::Result<()> {
    println!("/metrics: {base}/metrics   (Ctrl-C stops it; an order every 500 ms meanwhile)");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let service = start_shipping(broker, metrics, stopped)?;
    let producer: FutureProducer<StatsContext> = with_stats(broker.producer_config(), "order-service")
        .create_with_context(StatsContext { metrics: metrics.clone() })?;
    let mut rng = fastrand::Rng::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    let mut placed = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticks.tick() => {
                let order = Order {
                    order_id: format!("ord-{:06}", rng.u32(..1_000_000)),
                    customer: format!("cust-{:05}", rng.u32(..100_000)),
                    items: rng.u32(1..10),
                    total_cents: rng.u64(500..50_000),
                };
                shipping::place_order(&producer, kit::topics::TRACED_ORDERS.name, &order, &mut rng).await?;
                placed += 1;
                if placed.is_multiple_of(20) {
                    println!("   {placed} orders placed");
                }
            }
        }
    }
    let _ = stop.send(());
    service.await??;
    Ok(())
}

/// The benchmark's plan for the story: enough records for a second or so per round.
const BENCH: BenchPlan = BenchPlan { flood_records: 200_000, rounds: 3, paced_rate: 2_000, paced_records: 2_000 };

async fn bench(broker: &kit::Broker) -> anyhow::Result<()> {
    println!(
        "the tuning benchmark on {} ({} records per round, best of {} rounds)",
        kit::topics::PERF_LAB.name,
        BENCH.flood_records,
        BENCH.rounds
    );
    let report = perf::bench(broker, kit::topics::PERF_LAB.name, &BENCH).await?;
    for line in lab_report::bench_lines(&report) {
        println!("{line}");
    }
    Ok(())
}

/// `--sweep`: every point, printed as it comes, then the benchmark; markdown and SVG into `out`.
async fn sweep(broker: &kit::Broker, out: Option<PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = SweepPlan { flood_records: BENCH.flood_records, paced_rate: 2_000, paced_records: 2_000 };
    println!(
        "the sweep: {} records at {}/s per latency point, then {} records per throughput point (best of 2); a \
         minute or two\n",
        plan.paced_records, plan.paced_rate, plan.flood_records
    );
    let points = perf::sweep(broker, kit::topics::PERF_LAB.name, &plan, |pass, point| match pass {
        Pass::Latency => {
            if let Some(l) = &point.latency {
                let (setting, value) = (&point.setting, &point.value);
                println!("latency    {setting:<17} {value:>8}: p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms);
            }
        }
        Pass::Throughput => {
            if let Some(t) = &point.throughput {
                let (setting, value) = (&point.setting, &point.value);
                println!("throughput {setting:<17} {value:>8}: {:.0} records/s", t.records_per_s);
            }
        }
    })
    .await?;
    println!(
        "\n{:<18} {:>8} {:>11} {:>8} {:>8} {:>8} {:>9}",
        "setting", "value", "records/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    for point in &points {
        match (&point.throughput, &point.latency) {
            (Some(t), Some(l)) => println!(
                "{:<18} {:>8} {:>11.0} {:>8.1} {:>8.2} {:>8.2} {:>9.2}",
                point.setting, point.value, t.records_per_s, t.mb_per_s, l.p50_ms, l.p99_ms, l.p999_ms
            ),
            _ => println!("{:<18} {:>8}   {}", point.setting, point.value, point.skipped.as_deref().unwrap_or("")),
        }
    }
    println!();
    let report = perf::bench(broker, kit::topics::PERF_LAB.name, &BENCH).await?;
    for line in lab_report::bench_lines(&report) {
        println!("{line}");
    }
    let (name, title) = if broker.kind() == kit::BrokerKind::Embedded {
        ("perf-embedded", "The producer's settings on the embedded broker")
    } else {
        ("perf-kafka", "The producer's settings on real Kafka")
    };
    let out = out.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/generated"));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let features = solution_16::tuning::builtin_features();
    let broker_line = match broker.kind() {
        kit::BrokerKind::Embedded => "the embedded broker (librdkafka's mock cluster, in the same process)".to_string(),
        _ => format!("Kafka at {}", broker.bootstrap_servers()),
    };
    std::fs::write(
        out.join(format!("{name}.md")),
        lab_report::markdown(&broker_line, &features, &points, Some(&report)),
    )?;
    std::fs::write(out.join(format!("{name}.svg")), lab_report::svg(title, &points))?;
    println!("\nwrote {0}/{name}.md and {0}/{name}.svg in {1:.0} s", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
