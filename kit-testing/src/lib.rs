//! `kit-testing` — what the graded tests share and the runnable stories never need: one broker per test binary,
//! a wait that fails the test when time runs out, and the snapshot redactions.
//!
//! Lessons take it as a dev-dependency, so `cargo xtask lesson NN` builds none of it (insta above all). The
//! helpers that stories use too — reading a topic back, unique names, the "not graded on this broker" report —
//! live in `kit` and are re-exported here so a test imports from one place.

pub mod redact;
pub mod redis_link;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use kit::Broker;

pub use kit::grading::can_grade;
pub use kit::read::{ReadRecord, read_topic};
pub use kit::topics::unique;

/// The broker every test in this binary shares, resolved once (an embedded cluster by default). The embedded
/// cluster lives on its own thread, so tests on different tokio runtimes can all use it.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        kit::telemetry::init();
        Broker::resolve().unwrap_or_else(|e| panic!("no broker for the tests: {e:#}"))
    })
}

/// Polls `probe` until it returns `Some`, or fails the test after `within` naming `what` it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    kit::wait::until(what, within, || {
        let probed = probe();
        async move { Ok(probed.await) }
    })
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}
