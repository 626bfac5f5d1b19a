//! Logging for the runnable stories and the chore runner: `tracing` with an `RUST_LOG`-style filter.
//!
//! The default filter shows the workbook's own `info` lines and silences librdkafka's chatter, which matters
//! most on the embedded broker (it logs every simulated fault).
//!
//! The filter is tracing-subscriber's `Targets` (`info,rdkafka=warn`: a default level and one level per
//! target), not `EnvFilter`: `EnvFilter` also matches spans and fields by regular expression, which nothing here
//! uses, and its regex engine was the largest dependency every lesson compiled on a fresh clone.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What is shown when `RUST_LOG` is unset (or not a `Targets` filter).
pub const DEFAULT_FILTER: &str = "info,rdkafka=warn,librdkafka=warn";

/// The filter `RUST_LOG` asks for, else [`DEFAULT_FILTER`]. A value that does not parse is reported once on
/// stderr and the default is used: logging set-up never stops a program.
pub fn filter() -> Targets {
    match std::env::var("RUST_LOG") {
        Ok(wanted) if !wanted.trim().is_empty() => wanted.parse().unwrap_or_else(|e| {
            eprintln!(
                "RUST_LOG={wanted:?} is not a filter of the form `info,my_crate=debug` ({e}); using {DEFAULT_FILTER}"
            );
            default_filter()
        }),
        _ => default_filter(),
    }
}

fn default_filter() -> Targets {
    DEFAULT_FILTER.parse().expect("the default filter parses")
}

/// Installs a compact stderr subscriber once; later calls are harmless (tests and mains may both call it).
pub fn init() {
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colours only for a person at a terminal; captured output (tests, CI logs) stays plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(format).with(filter()).try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn the_default_shows_our_info_and_only_librdkafkas_warnings() {
        let filter = default_filter();
        assert!(filter.would_enable("solution_01", &Level::INFO));
        assert!(!filter.would_enable("solution_01", &Level::DEBUG));
        assert!(!filter.would_enable("librdkafka", &Level::INFO));
        assert!(filter.would_enable("rdkafka::producer", &Level::WARN));
        assert_eq!(filter.default_level(), Some(LevelFilter::INFO));
    }
}
