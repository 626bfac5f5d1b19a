//! `cargo xtask` — every chore of the workbook, for learners, teachers and maintainers.
//!
//! Each command lives in its own module; this file only parses the command line (clap) and dispatches.

mod book;
mod broker;
mod cargo;
mod catalog;
mod compare;
mod compose;
mod exercise;
mod grade;
#[cfg(feature = "brokers")]
mod kafka;
mod learner;
mod lesson;
mod mutants;
mod progress;
mod proofs;
mod runner;
mod scratch;
mod sync;
mod test;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Chores of the Kafka workbook: run lessons, host a broker, grade, sync.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a lesson's story (your exercise, or the solution) against a broker.
    Lesson {
        /// The lesson number, e.g. 05.
        lesson: String,
        /// Run the solution instead of your exercise.
        #[arg(long)]
        solution: bool,
        /// Run the lesson's RabbitMQ counterpart instead (lessons 04, 05, 08 and 10), on the RabbitMQ at
        /// RABBITMQ_URL or 127.0.0.1:5672.
        #[arg(long)]
        rabbitmq: bool,
        /// Arguments for the lesson's program (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Host the embedded Kafka broker on a fixed address until Ctrl-C.
    Broker {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 9092)]
        port: u16,
    },
    /// Maintainers: regenerate the exercises in lessons/ from solutions/ (or check they are up to date).
    /// Refuses to overwrite a lesson whose src/ was changed since it was generated (a learner's work).
    Sync {
        /// Only this lesson (e.g. 05).
        lesson: Option<String>,
        /// Write nothing; fail if any lesson is out of date.
        #[arg(long, conflicts_with = "force")]
        check: bool,
        /// Overwrite changed lessons too, after backing their files up (as `reset` does).
        #[arg(long)]
        force: bool,
    },
    /// Build the book (docs/ with mdbook/book.toml) with the pinned mdBook, failing on any warning.
    Book {
        /// Serve it on http://127.0.0.1:PORT and rebuild on save instead.
        #[arg(long)]
        serve: bool,
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Run real Apache Kafka on this machine's JVM (no Docker; needs Java 17+ and Maven) until Ctrl-C.
    Kafka {
        /// Brokers: 1 (broker and controller in one process), or 3 for replication and failover (each broker
        /// on its own port from --port up, plus a controller).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
        brokers: u16,
        /// The first broker's port (the others follow; the controller listens 1000 above).
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// The Apache Kafka version (4.0.0 or later), resolved from Maven Central once and cached.
        #[arg(long, default_value = kit::jvm_kafka::KAFKA_VERSION)]
        version: String,
        /// Start it in the background and return once it answers.
        #[arg(long, conflicts_with = "stop")]
        detach: bool,
        /// Stop what `--detach` started (on --port) and delete its data.
        #[arg(long)]
        stop: bool,
    },
    /// Start real Kafka, Kafka UI, Redis and RabbitMQ (docker compose) and wait until Kafka answers.
    Up,
    /// Stop the docker compose stack and delete its data.
    Down,
    /// Create the workbook's topics (kit::topics::WORKBOOK_TOPICS) on a real broker.
    Topics {
        /// The broker (default: KAFKA_BOOTSTRAP_SERVERS, else the compose stack's 127.0.0.1:9092).
        #[arg(long)]
        bootstrap: Option<String>,
    },
    /// Measure the same workload on real Kafka and RabbitMQ on this machine (throughput, latency, a consumer
    /// crash, replay) and write the comparison chapter's table, docs/generated/compare.md.
    Compare {
        /// A small workload for CI (under a minute once built), written to target/workbook/compare-quick.md.
        #[arg(long)]
        quick: bool,
        /// Messages per throughput run (default 100000; 5000 with --quick).
        #[arg(long)]
        messages: Option<u64>,
        /// Bytes per message.
        #[arg(long, default_value_t = 1024)]
        size: u64,
        /// Where to write the markdown (relative to the workspace root).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The Kafka to measure (default KAFKA_BOOTSTRAP_SERVERS, else `cargo xtask kafka --detach`'s).
        #[arg(long)]
        bootstrap: Option<String>,
    },
    /// Every lesson with its status (solved / unsolved) and your progress.
    List,
    /// Grade one lesson's exercise and show what fails.
    Check {
        /// The lesson number, e.g. 05.
        lesson: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print a lesson's hint: level 1 first; `--level N` for the next ones, each more concrete.
    Hint {
        /// The lesson number, e.g. 05.
        lesson: String,
        /// Which level to show (1 is a nudge, the last is close to the code).
        #[arg(long, default_value_t = 1)]
        level: usize,
    },
    /// Re-check the current lesson (the first unsolved one) whenever you save a file.
    Watch,
    /// Rewrite a lesson's exercise from its solution (your files are backed up first).
    Reset {
        /// The lesson number, e.g. 05.
        lesson: String,
    },
    /// Teachers: grade every lesson, print a score table, write JSON / JUnit reports.
    Grade {
        /// Write the full result as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Write JUnit XML here (one testsuite per lesson).
        #[arg(long)]
        junit: Option<std::path::PathBuf>,
        /// Grade the lesson crates in this directory (e.g. `solutions`) instead of `lessons`.
        #[arg(long, default_value = "lessons")]
        lessons_dir: std::path::PathBuf,
        /// Grade the exercises as `sync` generates them, whatever lessons/ holds.
        #[arg(long, conflicts_with = "lessons_dir")]
        shipped: bool,
        /// Points per lesson.
        #[arg(long, default_value_t = 10.0)]
        points: f64,
        /// Fail unless every lesson comes out this way (for the workbook's own checks).
        #[arg(long, value_enum)]
        expect: Option<grade::Expectation>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The maintainers' suite: formatting, clippy, every test, and proof that each exercise grades.
    Test {
        /// Only this lesson's proofs (the shared steps still run).
        #[arg(long)]
        lesson: Option<String>,
        /// Skip the lazy-answer proofs (the slowest part).
        #[arg(long)]
        skip_lazy: bool,
        /// Only the lessons' proofs: skip the sync check, fmt, build, clippy, kit and xtask tests, grade, book.
        #[arg(long)]
        proofs_only: bool,
        /// Also run each solution's tests against the Kafka at this address (e.g. 127.0.0.1:9092), as a step of
        /// its own per lesson.
        #[arg(long, value_name = "BOOTSTRAP")]
        kafka: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Maintainers: cargo-mutants over each solution's exercise functions; fails while a mutant passes every
    /// test and is not listed as `[[equivalent]]` in lesson.toml. Needs `cargo install cargo-mutants`.
    Mutants {
        /// Only these lessons (e.g. 07 09); every lesson by default.
        lessons: Vec<String>,
        /// Seconds a mutant's tests may run before it counts as caught by a hang.
        #[arg(long, default_value_t = 240)]
        timeout: u64,
    },
}

/// How tests run (grading and the proofs): see runner.rs.
#[derive(Args)]
struct RunArgs {
    /// How many tests run at once.
    #[arg(long, default_value_t = runner::DEFAULT_PARALLEL)]
    parallel: usize,
    /// Seconds a test may run before it is killed and fails as "timed out".
    #[arg(long, default_value_t = runner::DEFAULT_TIMEOUT.as_secs())]
    test_timeout: u64,
}

impl RunArgs {
    fn settings(&self) -> test::RunSettings {
        test::RunSettings { parallel: self.parallel.max(1), timeout: Duration::from_secs(self.test_timeout) }
    }
}

/// A failed command prints its error and the chain of causes, and exits 1. Not `main() -> Result`: that prints
/// the error's Debug form, a backtrace included whenever RUST_BACKTRACE is set, and every error here (an unknown
/// lesson, a level that does not exist, a broker that does not answer) is a message for a person, not a crash.
fn main() -> std::process::ExitCode {
    kit::telemetry::init();
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Lesson { lesson, solution, rabbitmq, args } => lesson::run(&lesson, solution, rabbitmq, &args),
        #[cfg(feature = "brokers")]
        Command::Broker { host, port } => broker::run(&host, port),
        Command::Sync { lesson, check: true, .. } => sync::check(lesson),
        Command::Sync { lesson, force, .. } => sync::run(lesson, force),
        Command::Book { serve, port } => book::run(serve, port),
        #[cfg(feature = "brokers")]
        Command::Kafka { brokers, port, version, detach, stop } => {
            kafka::run(kafka::Options { brokers, port, version, detach, stop })
        }
        #[cfg(feature = "brokers")]
        Command::Up => compose::up(),
        #[cfg(feature = "brokers")]
        Command::Topics { bootstrap } => compose::topics(bootstrap),
        #[cfg(not(feature = "brokers"))]
        Command::Broker { .. } | Command::Kafka { .. } | Command::Up | Command::Topics { .. } => {
            relaunch_with_clients()
        }
        Command::Down => compose::down(),
        Command::Compare { quick, messages, size, out, bootstrap } => {
            compare::run(compare::Options { quick, messages, size, out, bootstrap })
        }
        Command::List => learner::list(),
        Command::Check { lesson, run } => learner::check(&lesson, &run.settings()),
        Command::Hint { lesson, level } => learner::hint(&lesson, level),
        Command::Watch => learner::watch(),
        Command::Reset { lesson } => learner::reset(&lesson),
        Command::Grade { json, junit, lessons_dir, shipped, points, expect, run } => {
            let lessons_dir = if lessons_dir.is_absolute() { lessons_dir } else { catalog::root().join(lessons_dir) };
            let source = if shipped { grade::Source::Shipped } else { grade::Source::Dir(lessons_dir) };
            grade::run(grade::Options { json, junit, source, points_per_lesson: points, expect, run: run.settings() })
        }
        Command::Mutants { lessons, timeout } => mutants::run(&lessons, timeout),
        Command::Test { lesson, skip_lazy, proofs_only, kafka, run } => {
            test::run(test::Options { lesson, skip_lazy, proofs_only, kafka, run: run.settings() })
        }
    }
}

/// xtask is built without librdkafka (kit without its `clients`), so `hint`, `list`, `check`, `grade` and `lesson`
/// start within seconds of a fresh clone's first build. The commands that are Kafka clients themselves — hosting
/// the embedded broker, starting real Kafka and creating its topics — run again from a build with the `brokers`
/// feature. Cargo keeps both builds apart, so only the first such command compiles anything.
#[cfg(not(feature = "brokers"))]
fn relaunch_with_clients() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut child =
        cargo::cargo().args(["run", "--package", "xtask", "--features", "brokers", "--"]).args(&args).spawn()?;
    // Ctrl-C reaches the whole foreground process group: the relaunched command handles it (it stops a broker and
    // deletes its data), so this one waits for it to finish instead of returning the terminal early.
    // SAFETY: setting a signal's disposition to "ignore" touches no memory; the child was spawned before.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait()?;
    std::process::exit(status.code().unwrap_or(1));
}
