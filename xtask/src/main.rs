//! `cargo xtask` — every chore of the workbook, for learners, teachers and maintainers.
//!
//! Each command lives in its own module; this file only parses the command line (clap) and dispatches.

mod book;
mod broker;
mod cargo;
mod catalog;
mod compose;
mod exercise;
mod grade;
mod kafka;
mod learner;
mod lesson;
mod progress;
mod sync;
mod test;

use clap::{Parser, Subcommand};

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
    /// Regenerate the exercises in lessons/ from solutions/ (or check they are up to date).
    Sync {
        /// Only this lesson (e.g. 05).
        lesson: Option<String>,
        /// Write nothing; fail if any lesson is out of date.
        #[arg(long)]
        check: bool,
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
    /// Every lesson with its status (solved / unsolved) and your progress.
    List,
    /// Grade one lesson's exercise and show what fails.
    Check {
        /// The lesson number, e.g. 05.
        lesson: String,
    },
    /// Print a lesson's hint.
    Hint {
        /// The lesson number, e.g. 05.
        lesson: String,
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
        /// Points per lesson.
        #[arg(long, default_value_t = 10.0)]
        points: f64,
        /// Fail unless every lesson comes out this way (for the workbook's own checks).
        #[arg(long, value_enum)]
        expect: Option<grade::Expectation>,
    },
    /// The maintainers' suite: formatting, clippy, every test, and proof that each exercise grades.
    Test {
        /// Only this lesson's proofs (the shared steps still run).
        #[arg(long)]
        lesson: Option<String>,
        /// Skip the lazy-answer proofs (the slowest part).
        #[arg(long)]
        skip_lazy: bool,
    },
}

fn main() -> anyhow::Result<()> {
    kit::telemetry::init();
    match Cli::parse().command {
        Command::Lesson { lesson, solution, args } => lesson::run(&lesson, solution, &args),
        Command::Broker { host, port } => broker::run(&host, port),
        Command::Sync { lesson, check } => sync::run(lesson, check),
        Command::Book { serve, port } => book::run(serve, port),
        Command::Kafka { brokers, port, version, detach, stop } => {
            kafka::run(kafka::Options { brokers, port, version, detach, stop })
        }
        Command::Up => compose::up(),
        Command::Down => compose::down(),
        Command::Topics { bootstrap } => compose::topics(bootstrap),
        Command::List => learner::list(),
        Command::Check { lesson } => learner::check(&lesson),
        Command::Hint { lesson } => learner::hint(&lesson),
        Command::Watch => learner::watch(),
        Command::Reset { lesson } => learner::reset(&lesson),
        Command::Grade { json, junit, lessons_dir, points, expect } => {
            let lessons_dir = if lessons_dir.is_absolute() { lessons_dir } else { catalog::root().join(lessons_dir) };
            grade::run(grade::Options { json, junit, lessons_dir, points_per_lesson: points, expect })
        }
        Command::Test { lesson, skip_lazy } => test::run(test::Options { lesson, skip_lazy }),
    }
}
