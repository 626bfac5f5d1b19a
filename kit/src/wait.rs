//! Waiting on a condition with a deadline: the one polling loop that tests, stories and tools share, so nothing
//! in the workbook synchronises with a bare sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is looked at again: often enough that a wait ends within a few milliseconds of the
/// condition holding, rarely enough to cost nothing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A wait that ran out of time, naming what it waited for.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {within:?} waiting for {what}")]
pub struct TimedOut {
    pub what: String,
    pub within: Duration,
}

/// Polls `probe` until it returns `Some`, an error (returned at once), or `within` runs out ([`TimedOut`]).
pub async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut { what: what.to_string(), within }.into());
        }
        tokio::time::sleep(POLL_INTERVAL).await; // the polling interval, bounded by the deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let ready = (calls == 3).then_some(calls);
            async move { Ok(ready) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn names_what_it_waited_for_when_time_runs_out() {
        let error = until("nothing", Duration::from_millis(50), || async { Ok(None::<()>) }).await.unwrap_err();
        assert_eq!(error.to_string(), "gave up after 50ms waiting for nothing");
    }

    #[tokio::test]
    async fn a_failing_probe_ends_the_wait_with_its_error() {
        let error =
            until("a broken probe", Duration::from_secs(5), || async { Err::<Option<()>, _>(anyhow::anyhow!("boom")) })
                .await
                .unwrap_err();
        assert_eq!(error.to_string(), "boom");
    }
}
