//! `cargo xtask kafka`: real Apache Kafka on this machine's JVM, no Docker. The work is `kit::jvm_kafka`'s
//! (tests start the same clusters); this module is the command around it: progress, the printed addresses,
//! Ctrl-C, `--detach` and `--stop`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kit::jvm_kafka::{self, JvmCluster, Spec};
use kit::topics::WORKBOOK_TOPICS;

use crate::progress::spinner;

/// The options of `cargo xtask kafka`.
pub struct Options {
    pub brokers: u16,
    pub port: u16,
    pub version: String,
    pub detach: bool,
    pub stop: bool,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    if options.stop {
        return stop(options.port);
    }
    if let Some(running) = jvm_kafka::find_detached(options.port) {
        bail!(
            "Apache Kafka {} is already running at {} (started with `--detach`); use it, or stop it with \
             `cargo xtask kafka --stop{}`",
            running.version,
            running.bootstrap_servers,
            port_flag(options.port)
        );
    }
    let spec = Spec { version: options.version.clone(), brokers: options.brokers, port: Some(options.port) };
    let started = Instant::now();
    let steps = Steps::new("checking for java and mvn");
    let cluster = JvmCluster::start(&spec, &|step| steps.begin(step));
    steps.finish();
    let cluster = cluster?;
    create_workbook_topics(&cluster.bootstrap_servers())?;
    print_ready(&cluster, &options, started.elapsed());
    if options.detach {
        let detached = cluster.detach()?;
        println!(
            "\nRunning in the background (pids {}). Stop it and delete its data with `cargo xtask kafka --stop{}`.",
            detached.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            port_flag(options.port)
        );
        return Ok(());
    }
    println!("\nCtrl-C stops it and deletes its data.");
    wait_for_ctrl_c_or_exit(cluster)
}

/// The steps of a start, each printed with the time it took once the next begins, and a spinner on the current
/// one. Without a terminal (CI) the spinner is hidden and the printed lines are the progress.
struct Steps {
    spinner: indicatif::ProgressBar,
    current: std::cell::RefCell<(String, Instant)>,
}

impl Steps {
    fn new(first: &str) -> Steps {
        Steps { spinner: spinner(first), current: std::cell::RefCell::new((first.to_string(), Instant::now())) }
    }

    fn begin(&self, step: &str) {
        self.print_done();
        *self.current.borrow_mut() = (step.to_string(), Instant::now());
        self.spinner.set_message(step.to_string());
    }

    fn finish(&self) {
        self.print_done();
        self.spinner.finish_and_clear();
    }

    fn print_done(&self) {
        let (step, since) = &*self.current.borrow();
        let line = format!("  {step} ({:.1} s)", since.elapsed().as_secs_f64());
        if self.spinner.is_hidden() { println!("{line}") } else { self.spinner.println(line) }
    }
}

/// Blocks until Ctrl-C (then stops the cluster) or until a node dies on its own (then says which, and why).
fn wait_for_ctrl_c_or_exit(mut cluster: JvmCluster) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let died = runtime.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if let Err(e) = cluster.check_alive() {
                        return Some(e);
                    }
                }
            }
        }
    });
    let spinner = spinner("stopping Kafka (brokers, then the controller) and deleting its data");
    cluster.stop()?;
    spinner.finish_and_clear();
    match died {
        None => {
            println!("\nKafka stopped; its data is deleted");
            Ok(())
        }
        Some(e) => Err(e.context("Kafka stopped on its own")),
    }
}

fn stop(port: u16) -> anyhow::Result<()> {
    let spinner = spinner(&format!("stopping the Kafka started by `cargo xtask kafka --detach` on port {port}"));
    let stopped = jvm_kafka::stop_detached(port);
    spinner.finish_and_clear();
    if stopped? {
        println!("Kafka on port {port} stopped; its data is deleted");
    } else {
        println!("no Kafka started by `cargo xtask kafka` runs on port {port}: nothing to stop");
    }
    Ok(())
}

/// The workbook's named topics, so `cargo xtask lesson NN` runs against this broker at once.
fn create_workbook_topics(bootstrap: &str) -> anyhow::Result<()> {
    let broker = kit::Broker::connect(kit::BrokerKind::Jvm, bootstrap.to_string(), "cargo xtask kafka".into())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for spec in WORKBOOK_TOPICS {
        runtime.block_on(broker.create_topic_spec(spec)).with_context(|| format!("creating topic {}", spec.name))?;
    }
    Ok(())
}

fn print_ready(cluster: &JvmCluster, options: &Options, took: Duration) {
    let bootstrap = cluster.bootstrap_servers();
    let shape = if options.brokers == 1 {
        "one node, broker and controller in one process".to_string()
    } else {
        format!("{} brokers and a controller; replication factor 3, min.insync.replicas 2", options.brokers)
    };
    println!("Apache Kafka {} (KRaft, {shape}) is ready in {:.1} s", options.version, took.as_secs_f64());
    println!("\n  bootstrap: {bootstrap}");
    println!("  topics:    {}", WORKBOOK_TOPICS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "));
    println!("  data:      {}", cluster.dir().display());
    let pids = cluster.pids();
    for (label, log) in cluster.logs() {
        match pids.iter().find(|(node, _)| *node == label) {
            Some((_, pid)) => println!("  log:       {} — {label}, pid {pid}", log.display()),
            None => println!("  log:       {} — {label}", log.display()),
        }
    }
    println!("\nIn another terminal:");
    println!("  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}");
    println!("  cargo xtask lesson 01 --solution     # a story against real Kafka");
    println!("  cargo xtask check 05                 # grade an exercise against real Kafka");
}

fn port_flag(port: u16) -> String {
    if port == 9092 { String::new() } else { format!(" --port {port}") }
}
