//! Logging for the runnable stories and the chore runner: `tracing` with an `RUST_LOG`-style filter.
//!
//! The default filter shows the workbook's own `info` lines and silences librdkafka's chatter, which matters
//! most on the embedded broker (it logs every simulated fault).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a compact stderr subscriber once; later calls are harmless (tests and mains may both call it).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a person at a terminal; captured output (tests, CI logs) stays plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
