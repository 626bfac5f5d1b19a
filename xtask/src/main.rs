//! `cargo xtask` — every chore of the workbook, for learners, teachers and maintainers.
//!
//! Each command lives in its own module; this file only parses the command line (clap) and dispatches.

mod broker;
mod cargo;
mod catalog;
mod exercise;
mod lesson;
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
        Command::Test { lesson, skip_lazy } => test::run(test::Options { lesson, skip_lazy }),
    }
}
