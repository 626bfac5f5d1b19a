//! The "not graded on this broker" report: a test (or a story) that needs a behaviour the resolved broker cannot
//! show says so where a person sees it, and logs it for `cargo xtask grade` / `test` to count.

use std::io::Write;

use crate::broker::{Broker, Capability};

pub use crate::env::UNGRADED_LOG_ENV;

/// Whether `broker` can show `capability`. When it cannot, the report "not graded on this broker" is printed
/// (past the test harness's capture, so it is always visible) and logged for `cargo xtask grade`/`test` to count;
/// the caller then skips only the assertions that need the capability.
pub fn can_grade(broker: &Broker, capability: Capability, test: &str) -> bool {
    if broker.supports(capability) {
        return true;
    }
    let line = format!(
        "NOT GRADED ON THIS BROKER: `{test}` needs {} — {}\n",
        capability.describe(),
        capability.where_graded()
    );
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, not this.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(path) = std::env::var(UNGRADED_LOG_ENV)
        && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let entry = serde_json::json!({
            "crate": std::env::var("CARGO_PKG_NAME").unwrap_or_default(),
            "test": test,
            "capability": capability.describe(),
        });
        let _ = writeln!(file, "{entry}");
    }
    false
}
