//! `cargo xtask compare` (or `cargo run -p compare`): the same workload through real Apache Kafka and RabbitMQ on
//! this machine — throughput, end-to-end latency at a fixed rate, a consumer crash, reading again — printed as
//! tables and written as markdown for the book's comparison chapter (`docs/generated/compare.md`).
//!
//! Each scenario runs on fresh topics and queues with names of their own, deleted once it is done; every wait has a
//! deadline. Progress goes to stderr as it happens, the tables to stdout at the end. A scenario that fails is
//! reported (in both outputs) and the others still run; the command then fails.

mod kafka;
mod machine;
mod rabbit;
mod report;
mod workload;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::kafka::KafkaSide;
use crate::rabbit::RabbitSide;
use crate::report::{Durability, Report, millis, seconds, thousands};
use crate::workload::Workload;

/// The smallest message: its header (number and send time).
const MIN_SIZE: u64 = workload::HEADER_BYTES as u64;

#[derive(Parser)]
#[command(
    name = "compare",
    about = "Measure the same workload on real Kafka and RabbitMQ, and write the book's table."
)]
struct Args {
    /// A small workload (CI): every scenario, well under a minute.
    #[arg(long)]
    quick: bool,
    /// Messages per throughput run (default 100000, or 5000 with --quick).
    #[arg(long)]
    messages: Option<u64>,
    /// Bytes per message (at least 16: each carries its number and send time).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(MIN_SIZE..=1_000_000))]
    size: u64,
    /// Where to write the markdown (default docs/generated/compare.md; with --quick
    /// target/workbook/compare-quick.md, so a quick run never rewrites the book's figures).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The Kafka to measure (default KAFKA_BOOTSTRAP_SERVERS, else what `cargo xtask kafka --detach` runs).
    #[arg(long)]
    bootstrap: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    init_logs();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// kit's logging (stderr, `RUST_LOG`), with lapin silenced unless `RUST_LOG` asks for it: the crash scenario cuts
/// a connection on purpose, and lapin reports that as errors. Whatever goes wrong reaches this program as an error.
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let asked = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    let filter = kit::telemetry::filter();
    let filter = if asked { filter } else { filter.with_target("lapin", tracing::level_filters::LevelFilter::OFF) };
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(format).with(filter).try_init();
}

/// Progress lines on stderr, each with the time since the start.
struct Progress {
    started: Instant,
}

impl Progress {
    fn step(&self, text: impl AsRef<str>) {
        eprintln!("[{:>6.1} s] {}", self.started.elapsed().as_secs_f64(), text.as_ref());
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let progress = Progress { started: Instant::now() };
    let size = args.size as usize;
    let workload = if args.quick { Workload::quick(args.messages, size) } else { Workload::full(args.messages, size) };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = args.out.unwrap_or_else(|| {
        if args.quick { root.join("target/workbook/compare-quick.md") } else { root.join("docs/generated/compare.md") }
    });

    let target = kafka::resolve(args.bootstrap)?;
    let load_at_start = machine::load_average();
    progress.step(format!("Kafka: {}", target.description));
    let kafka = KafkaSide::connect(target)?;
    let rabbit = RabbitSide::connect(kit::rabbitmq::RabbitMq::resolve()?).await?;
    let rabbit_description = rabbit.describe().await;
    progress.step(format!("RabbitMQ: {rabbit_description}"));
    progress.step(format!("workload ({}): {}", if args.quick { "quick" } else { "full" }, workload.describe()));

    let mut report = Report::default();
    // Generous: a scenario's own deadlines end it sooner, with a message saying what did not happen.
    let limit = Duration::from_secs(120) + Duration::from_millis(2 * workload.messages.max(workload.warmup));
    let mut runner = Runner { problems: Vec::new(), limit };

    progress.step(format!("warming up both brokers with {} messages each", thousands(workload.warmup)));
    runner.attempt("warm-up, Kafka", kafka.warm_up(&workload)).await;
    runner.attempt("warm-up, RabbitMQ", rabbit.warm_up(&workload)).await;
    clean_up(&mut runner, &kafka, &rabbit).await;

    // The brokers take turns in every scenario, so a change in the machine's load touches both alike. Latency
    // first: the throughput runs leave work behind in both brokers (deleted topics' files, a queue's message
    // store, the JVM's garbage), which would land in the latency runs' tails. Kafka's persistent latency is
    // measured twice: with the idempotent producer (as in the throughput runs) and without it.
    let latency_runs = [
        (Durability::Persistent, report::Broker::Kafka, true),
        (Durability::Persistent, report::Broker::RabbitMq, true),
        (Durability::Persistent, report::Broker::Kafka, false),
        (Durability::Transient, report::Broker::Kafka, true),
        (Durability::Transient, report::Broker::RabbitMq, true),
    ];
    for (durability, broker, idempotent) in latency_runs {
        let variant = if idempotent { String::new() } else { format!(" ({})", kafka::NOT_IDEMPOTENT) };
        let what = format!("latency, {}{variant}, {}", durability.name(), broker.name());
        progress.step(format!(
            "{what}: {} msg/s for {} s",
            workload.latency_rate,
            workload.latency_duration.as_secs_f64()
        ));
        let run = match broker {
            report::Broker::Kafka => runner.attempt(&what, kafka.latency(&workload, durability, idempotent)).await,
            report::Broker::RabbitMq => runner.attempt(&what, rabbit.latency(&workload, durability)).await,
        };
        if let Some(run) = run {
            let s = run.summary;
            progress.step(format!(
                "{what}: p50 {}, p99 {}, p99.9 {}, max {}",
                millis(s.p50_us),
                millis(s.p99_us),
                millis(s.p999_us),
                millis(s.max_us)
            ));
            if s.count < run.sent {
                runner
                    .problems
                    .push(format!("{what}: the consumer received {} of {} messages in time", s.count, run.sent));
            }
            report.latency.push(run);
        }
        clean_up(&mut runner, &kafka, &rabbit).await;
    }

    for durability in [Durability::Persistent, Durability::Transient] {
        for broker in [report::Broker::Kafka, report::Broker::RabbitMq] {
            let what = format!("throughput, {}, {}", durability.name(), broker.name());
            progress.step(format!("{what}: {} messages", thousands(workload.messages)));
            let run = match broker {
                report::Broker::Kafka => runner.attempt(&what, kafka.throughput(&workload, durability)).await,
                report::Broker::RabbitMq => runner.attempt(&what, rabbit.throughput(&workload, durability)).await,
            };
            if let Some(run) = run {
                progress.step(format!(
                    "{what}: produced in {} ({} msg/s), drained in {} ({} msg/s)",
                    seconds(run.produce),
                    thousands(run.produce_rate().messages_per_sec as u64),
                    seconds(run.drain),
                    thousands(run.drain_rate().messages_per_sec as u64),
                ));
                report.throughput.push(run);
            }
            clean_up(&mut runner, &kafka, &rabbit).await;
        }
    }

    let plan = workload.crash;
    progress.step(format!(
        "a consumer crash: {} messages; the first consumer handles {}, settling all but the last {}",
        plan.total, plan.handled, plan.unsettled
    ));
    if let Some(run) = runner.attempt("crash, Kafka", kafka.crash(plan, size)).await {
        progress.step(format!(
            "crash, Kafka: the new member resumed at offset {}, {} handled twice",
            run.resumed_at, run.handled_twice
        ));
        report.crash.push(run);
    }
    if let Some(run) = runner.attempt("crash, RabbitMQ", rabbit.crash(plan, size)).await {
        progress.step(format!(
            "crash, RabbitMQ: the new consumer began at message {}, {} handled twice, {} flagged redelivered",
            run.resumed_at,
            run.handled_twice,
            run.flagged_redelivered.unwrap_or(0)
        ));
        report.crash.push(run);
    }
    clean_up(&mut runner, &kafka, &rabbit).await;

    progress.step(format!("reading again: {} messages read and settled, then a fresh reader", workload.replay));
    let replays = [
        runner.attempt("replay, Kafka", kafka.replay(workload.replay, size)).await,
        runner.attempt("replay, RabbitMQ queue", rabbit.replay_queue(workload.replay, size)).await,
        runner.attempt("replay, RabbitMQ stream", rabbit.replay_stream(workload.replay, size)).await,
    ];
    for run in replays.into_iter().flatten() {
        progress.step(format!("{}: a fresh reader got {}", run.what, run.fresh_reader_got));
        report.replay.push(run);
    }
    clean_up(&mut runner, &kafka, &rabbit).await;
    rabbit.close().await;

    let took = progress.started.elapsed();
    let load = (load_at_start, machine::load_average());
    describe(&mut report, &workload, args.quick, kafka.target(), &rabbit_description, load, took);
    report.problems = runner.problems;
    println!("{}", report::text(&report));

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, report::markdown(&report)).with_context(|| format!("writing {}", out.display()))?;
    progress.step(format!("wrote {}", out.display()));
    anyhow::ensure!(
        report.problems.is_empty(),
        "{} scenario(s) did not complete: see the problems above",
        report.problems.len()
    );
    Ok(())
}

/// Runs the scenarios, keeping what went wrong.
struct Runner {
    problems: Vec<String>,
    /// A backstop over every scenario, on top of the deadlines inside each (which say what did not happen).
    limit: Duration,
}

impl Runner {
    /// Runs one scenario; a failure is recorded (and logged) instead of ending the run.
    async fn attempt<T>(&mut self, what: &str, scenario: impl Future<Output = anyhow::Result<T>>) -> Option<T> {
        let outcome = match tokio::time::timeout(self.limit, scenario).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("did not finish within {:?}", self.limit)),
        };
        match outcome {
            Ok(value) => Some(value),
            Err(error) => {
                let problem = format!("{what}: {error:#}");
                tracing::error!("{problem}");
                self.problems.push(problem);
                None
            }
        }
    }
}

/// Deletes what the last scenario created on both brokers.
async fn clean_up(runner: &mut Runner, kafka: &KafkaSide, rabbit: &RabbitSide) {
    runner.attempt("deleting Kafka topics", kafka.cleanup()).await;
    runner.attempt("deleting RabbitMQ queues", rabbit.cleanup()).await;
}

/// The facts, the settings used and how to read the figures.
fn describe(
    report: &mut Report,
    workload: &Workload,
    quick: bool,
    kafka: &kafka::Target,
    rabbit: &str,
    (load_at_start, load_at_end): (Option<f64>, Option<f64>),
    took: Duration,
) {
    let now = chrono::Utc::now();
    report.headline = format!(
        "Measured on {} at {} UTC by `cargo xtask compare{}` in {:.0} s.",
        now.format("%Y-%m-%d"),
        now.format("%H:%M"),
        if quick { " --quick" } else { "" },
        took.as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = machine::describe_load(cores, load_at_start, load_at_end);
    let build = if cfg!(debug_assertions) {
        "a dev build, with the client crates and this program at opt-level 3 (the workspace's profile overrides)"
    } else {
        "a release build"
    };
    report.facts = vec![
        ("Machine".into(), format!("{}{load}", machine::describe_machine())),
        ("Kafka".into(), kafka.description.clone()),
        ("RabbitMQ".into(), rabbit.to_string()),
        ("Clients".into(), format!("{}; {build}", machine::describe_clients())),
        ("Workload".into(), workload.describe()),
    ];

    let k = kafka::settings_text;
    report.throughput_settings = vec![
        format!(
            "Kafka producer: persistent {}; not persistent {}; otherwise librdkafka's defaults (`linger.ms=5`, \
             `batch.size=1000000`, no compression). Consumer: assigned the partition, outside any group, committing \
             nothing (a Kafka reader's position is its own).",
            k(kafka::PERSISTENT_PRODUCER),
            k(kafka::TRANSIENT_PRODUCER)
        ),
        format!(
            "RabbitMQ persistent: a durable classic queue, `delivery_mode=2`, publisher confirms pipelined (up to {} \
             unconfirmed); the consumer has prefetch {} and acknowledges every {}th message with `multiple`. Not \
             persistent: a classic queue that is not durable, `delivery_mode=1`, no confirms (the timing ends with a \
             synchronous `queue.declare` on the publishing channel, answered once RabbitMQ has read and routed every \
             message published before it), and an automatic-ack consumer.",
            thousands(rabbit::CONFIRM_WINDOW as u64),
            rabbit::DRAIN_PREFETCH,
            rabbit::DRAIN_ACK_EVERY
        ),
        "Produce: from the first send until the broker acknowledged the last message. Consume: from the \
         consumer's start until it held the last message, reading a topic or queue that already held them all. \
         Connecting is not timed on either side: RabbitMQ's connections and channels are open before the clock \
         starts, and Kafka's producer has had a probe message acknowledged (connected, the partition's leader \
         known, its producer id granted) and its reader the topic's metadata. MB = 10^6 bytes."
            .into(),
    ];
    report.latency_settings = vec![
        format!(
            "Kafka: the producer's settings as above plus {}; the consumer {}. The row \"persistent, {}\" is {}: \
             the idempotent producer keeps at most five requests in flight, so when acknowledgements come back \
             slowly (a busy machine, a pause in the broker) the messages queued behind them wait; without \
             idempotence they are sent anyway, at the price of the protection against duplicates and reordering \
             on retries that lesson 09 is about.",
            k(kafka::LATENCY_PRODUCER),
            k(kafka::LATENCY_CONSUMER),
            kafka::NOT_IDEMPOTENT,
            k(kafka::NOT_IDEMPOTENT_PRODUCER)
        ),
        format!(
            "RabbitMQ: persistent as above, confirms awaited off the sending path; the consumer has prefetch {} and \
             acknowledges each message (not persistent: automatic ack).",
            rabbit::LATENCY_PREFETCH
        ),
        "Open loop: messages leave on a fixed schedule whatever the broker does; each carries its send time, read \
         against the same clock when the consumer holds it (producer and consumer are one process). A first probe \
         message, not counted, waits until the consumer is reading."
            .into(),
    ];
    report.crash_settings = vec![
        format!(
            "Kafka: a group member commits each message's offset (synchronously) after handling it, except the last \
             {}; it is then closed without committing them and a new member of the same group starts.",
            workload.crash.unsettled
        ),
        format!(
            "RabbitMQ: a consumer with prefetch {} acknowledges each message after handling it, except the last {}; \
             its TCP connection is then cut (no AMQP close) and a new consumer starts on the queue. RabbitMQ requeues \
             everything the dead consumer held unacknowledged — handled or only prefetched — and flags it \
             `redelivered`.",
            workload.crash.prefetch, workload.crash.unsettled
        ),
    ];

    let warm = match kafka.jvm_age {
        Some(age) => format!(
            "Warm, not cold: Kafka's JVM had been running for {} when the run started, and both brokers took a \
             warm-up of {} messages before anything was measured. A freshly started JVM is slower for its first \
             seconds, while the JIT compiles the hot paths.",
            machine::human_age(age),
            thousands(workload.warmup)
        ),
        None => format!(
            "Both brokers took a warm-up of {} messages before anything was measured (the JVM compiles Kafka's hot \
             paths in its first seconds).",
            thousands(workload.warmup)
        ),
    };
    report.caveats = vec![
        format!(
            "One machine, over loopback: no network between client and broker, and no replication between \
             machines. The {cores} cores are shared by both brokers, the clients (producer and consumer in one \
             process) and anything else running; the load averages above say how busy the machine was. Run it \
             again to see how much the figures move."
        ),
        warm,
        format!(
            "\"Persistent\" is not the same promise on both sides. Kafka answers `acks=all` once every in-sync \
             replica has the batch in its log, in the page cache: it leaves fsync to the operating system and counts \
             on replicas on other machines{}. RabbitMQ confirms a persistent message on a durable queue once it is \
             written to disk.",
            match kafka.brokers {
                Some(1) =>
                    " (here one broker: the leader is the only replica, so `acks=all` waits for no other machine)",
                _ => "",
            }
        ),
        format!(
            "One producer, one consumer, one partition or one queue, messages of {} bytes: both brokers go faster \
             with more of each (and with bigger batches), and neither was tuned beyond the settings listed. These \
             figures compare the two on the same footing; they are not either broker's ceiling.",
            workload.size
        ),
        "The clients are Rust: librdkafka (C, built with -O2 whatever cargo's profile says) and lapin. The Java and \
         Erlang clients most teams use would give other figures."
            .into(),
        format!(
            "p99.9 of {} messages rests on the {} slowest, and max on one: read them as \"the slowest seen\", not as a \
             guarantee. A pause of the machine (another process, a garbage collection) shows in the tails of \
             whichever run it falls in.",
            thousands(workload.latency_messages()),
            (workload.latency_messages() / 1000).max(1)
        ),
    ];
}
