//! The windows on Kafka: the aggregator is a `kit::stage` stage (lesson 12's engine) reading `shop.activity`. Its
//! open windows, stream time and late count are its state, kept in a changelog (`analytics.state`); the results
//! of the windows that close (`analytics.windows`), the late events (`analytics.late`), the changelog records and
//! the input offsets go out in one transaction per batch. A crash anywhere therefore re-reads only what no
//! transaction committed, with the windows as that transaction left them: no event counted twice, no result
//! emitted twice — the exactly-once the issue asks of a restart, from lesson 10's transactions.
//!
//! The changelog also keeps, per input partition, the offset of the next event the state does not hold: an event
//! delivered again after a restart (the embedded broker keeps no offsets committed in a transaction) is
//! recognised and skipped, so exactly-once holds on every broker.
//!
//! The changelog is written once per batch (in `tick`), not once per event: a window touched by a thousand events
//! of a batch is one record. That, and batches of up to 50,000 records (each commit costs a flush and round trips
//! to the transaction coordinator, whatever its size), is most of the aggregator's throughput.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use kit::stage::{Input, Output, Stage};
use serde::{Deserialize, Serialize};

use crate::activity::Activity;
use crate::catalog::Catalog;
use crate::windows::{Placement, WindowSpec, WindowState, Windows};

/// The aggregator's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsTopics {
    /// Shoppers' events, keyed by user id.
    pub activity: String,
    /// Each closed window's result, keyed by its start.
    pub windows: String,
    /// Events that came after their window closed, with the window they missed.
    pub late: String,
    /// The aggregator's changelog (compacted).
    pub state: String,
    /// Records that are not shoppers' events.
    pub dead_letters: String,
}

impl AnalyticsTopics {
    /// The manifest's topics (`kit::topics::ANALYTICS_TOPICS`).
    pub fn manifest() -> AnalyticsTopics {
        use kit::topics::*;
        AnalyticsTopics {
            activity: SHOP_ACTIVITY.name.into(),
            windows: ANALYTICS_WINDOWS.name.into(),
            late: ANALYTICS_LATE.name.into(),
            state: ANALYTICS_STATE.name.into(),
            dead_letters: ANALYTICS_DLQ.name.into(),
        }
    }

    /// Every topic, with whether it is a changelog (compacted) and its partitions.
    pub fn all(&self) -> Vec<(&str, bool, i32)> {
        vec![
            // One partition, as the manifest's: see `kit::topics::SHOP_ACTIVITY`.
            (self.activity.as_str(), false, 1),
            (&self.windows, false, 1),
            (&self.late, false, 1),
            (&self.state, true, 1),
            (&self.dead_letters, false, 1),
        ]
    }
}

/// A late event as `analytics.late` holds it: the event, the window it missed, and the stream time it met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvent {
    pub event: Activity,
    pub window_start_ms: i64,
    pub stream_time_ms: i64,
}

/// The aggregator's clock, count and input positions, as its changelog keeps them (key `clock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Clock {
    stream_time_ms: Option<i64>,
    late: u64,
    /// Per partition of the input, the offset of the next event to take: what the state already holds.
    positions: BTreeMap<i32, i64>,
}

/// The changelog key of the window starting at `start_ms` (zero-padded, so keys sort as windows do).
fn window_key(start_ms: i64) -> String {
    format!("window/{start_ms:020}")
}

/// The aggregator service.
#[derive(Debug, Clone)]
pub struct Aggregator {
    pub topics: AnalyticsTopics,
    pub catalog: Catalog,
    pub windows: Windows,
    pub top_n: usize,
    /// Windows changed by the batch under way: their changelog records are written at its end.
    dirty: BTreeSet<i64>,
    /// Whether the batch under way moved stream time or counted a late event.
    clock_changed: bool,
    /// Per input partition, the offset of the next event the state does not hold yet. Kept in the changelog with
    /// the windows, so that events the state holds are never folded in twice — even where the broker re-delivers
    /// them after a restart (the embedded broker keeps no offsets committed in a transaction, lesson 10).
    positions: BTreeMap<i32, i64>,
    /// Events handled since the start, shared with whoever measures (not state).
    pub handled: Arc<AtomicU64>,
}

impl Aggregator {
    pub fn new(topics: AnalyticsTopics, catalog: Catalog, spec: WindowSpec, top_n: usize) -> Aggregator {
        Aggregator {
            topics,
            catalog,
            windows: Windows::new(spec),
            top_n,
            dirty: BTreeSet::new(),
            clock_changed: false,
            positions: BTreeMap::new(),
            handled: Arc::default(),
        }
    }
}

impl Stage for Aggregator {
    fn name(&self) -> &str {
        "analytics"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.activity.clone()]
    }

    fn changelog(&self) -> &str {
        &self.topics.state
    }

    fn dead_letter_topic(&self) -> &str {
        &self.topics.dead_letters
    }

    fn max_batch(&self) -> usize {
        50_000
    }

    fn batch_linger(&self) -> std::time::Duration {
        std::time::Duration::from_millis(20)
    }

    fn restore(&mut self, key: &str, payload: Option<&[u8]>) -> anyhow::Result<()> {
        if key == "clock" {
            let clock: Clock = payload.map(serde_json::from_slice).transpose()?.unwrap_or_default();
            self.windows.stream_time_ms = clock.stream_time_ms;
            self.windows.late = clock.late;
            self.positions = clock.positions;
        } else if let Some(start) = key.strip_prefix("window/") {
            let start: i64 = start.parse().context("a window key")?;
            match payload {
                Some(p) => self.windows.open.insert(start, serde_json::from_slice::<WindowState>(p)?),
                None => self.windows.open.remove(&start),
            };
        }
        Ok(())
    }

    fn handle(&mut self, input: Input<'_>, _now_ms: u64) -> anyhow::Result<Vec<Output>> {
        if self.positions.get(&input.partition).is_some_and(|next| input.offset < *next) {
            return Ok(Vec::new()); // in the state already: delivered again after a restart
        }
        self.positions.insert(input.partition, input.offset + 1);
        self.clock_changed = true;
        let event: Activity = serde_json::from_slice(input.payload).context("not a shopper's event")?;
        self.handled.fetch_add(1, Ordering::Relaxed);
        match self.windows.accept(&event, &self.catalog) {
            Placement::Window { start_ms } => {
                self.dirty.insert(start_ms);
                Ok(Vec::new())
            }
            Placement::Late { start_ms } => {
                let late = LateEvent {
                    event,
                    window_start_ms: start_ms,
                    stream_time_ms: self.windows.stream_time_ms.unwrap_or(start_ms),
                };
                Ok(vec![Output::json(&self.topics.late, &late.event.user_id, &late)])
            }
        }
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Output> {
        if !std::mem::take(&mut self.clock_changed) {
            return Vec::new();
        }
        let mut outputs = Vec::new();
        for result in self.windows.close_due(&self.catalog, self.top_n) {
            outputs.push(Output::json(&self.topics.windows, &result.start_ms.to_string(), &result));
            // Closed: gone from the state (a tombstone), whether or not this batch touched it.
            outputs.push(Output {
                topic: self.topics.state.clone(),
                key: window_key(result.start_ms),
                payload: Vec::new(),
                headers: Vec::new(),
            });
            self.dirty.remove(&result.start_ms);
        }
        for start in std::mem::take(&mut self.dirty) {
            if let Some(window) = self.windows.open.get(&start) {
                outputs.push(Output::json(&self.topics.state, &window_key(start), window));
            }
        }
        let clock = Clock {
            stream_time_ms: self.windows.stream_time_ms,
            late: self.windows.late,
            positions: self.positions.clone(),
        };
        outputs.push(Output::json(&self.topics.state, "clock", &clock));
        outputs
    }
}
