//! `cargo xtask compare [--quick] [--messages N] [--size BYTES] [--out FILE] [--bootstrap HOST:PORT]`: the same
//! workload through real Apache Kafka and RabbitMQ on this machine, printed as tables and written as markdown for
//! the comparison chapter (`docs/generated/compare.md`, which `docs/kafka-vs-rabbitmq.md` includes).
//!
//! The measuring is the `compare` crate's (`cargo run -p compare`), as a lesson's story is its own crate's: xtask
//! is no Kafka or RabbitMQ client. What this command decides is where the markdown goes: the book's file for a full
//! run, `<target>/workbook/compare-quick.md` for `--quick` (CI), so a quick run never rewrites the book's figures.
//! A relative `--out` is taken from the workspace root, as the program runs there.

use std::path::PathBuf;

use crate::{cargo, catalog, scratch};

pub struct Options {
    pub quick: bool,
    pub messages: Option<u64>,
    pub size: u64,
    pub out: Option<PathBuf>,
    pub bootstrap: Option<String>,
}

/// Where the markdown goes.
pub fn out_path(quick: bool, out: Option<PathBuf>) -> PathBuf {
    match out {
        Some(path) if path.is_absolute() => path,
        Some(path) => catalog::root().join(path),
        None if quick => scratch::workbook_dir().join("compare-quick.md"),
        None => catalog::root().join("docs/generated/compare.md"),
    }
}

/// The arguments the `compare` program gets.
fn program_args(options: Options) -> Vec<String> {
    let mut args = vec!["--out".to_string(), out_path(options.quick, options.out).display().to_string()];
    args.extend(["--size".to_string(), options.size.to_string()]);
    if options.quick {
        args.push("--quick".into());
    }
    if let Some(messages) = options.messages {
        args.extend(["--messages".to_string(), messages.to_string()]);
    }
    if let Some(bootstrap) = options.bootstrap {
        args.extend(["--bootstrap".to_string(), bootstrap]);
    }
    args
}

pub fn run(options: Options) -> anyhow::Result<()> {
    // Not `--quiet`: the first run compiles the program (and librdkafka), and cargo's progress says so.
    let status = cargo::cargo().args(["run", "--package", "compare", "--"]).args(program_args(options)).status()?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(quick: bool, out: Option<&str>) -> Options {
        Options { quick, messages: None, size: 1024, out: out.map(PathBuf::from), bootstrap: None }
    }

    #[test]
    fn a_quick_run_never_writes_the_books_file() {
        assert_eq!(out_path(false, None), catalog::root().join("docs/generated/compare.md"));
        let quick = out_path(true, None);
        assert!(quick.starts_with(scratch::target_dir()), "{}", quick.display());
        assert_eq!(out_path(true, Some("x/y.md".into())), catalog::root().join("x/y.md"));
    }

    #[test]
    fn the_program_gets_every_option_given() {
        let mut given = options(true, Some("/tmp/c.md"));
        given.messages = Some(7);
        given.bootstrap = Some("127.0.0.1:9092".into());
        assert_eq!(
            program_args(given),
            ["--out", "/tmp/c.md", "--size", "1024", "--quick", "--messages", "7", "--bootstrap", "127.0.0.1:9092"]
        );
        assert_eq!(program_args(options(false, Some("/tmp/c.md"))), ["--out", "/tmp/c.md", "--size", "1024"]);
    }
}
