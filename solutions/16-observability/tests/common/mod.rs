//! What lesson 16's tests share: hand-made librdkafka statistics, a scrape of a recorder, and a service task
//! that must fail the test at once when it ends early.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use rdkafka::statistics::{Broker, Partition, Statistics, Topic, Window};
use solution_16::Metrics;
use solution_16::exposition::{self, Sample};

/// One interval's statistics of the client `client_id`, of type `producer` or `consumer`, with nothing in them.
pub fn stats(client_id: &str, client_type: &str) -> Statistics {
    Statistics {
        name: format!("{client_id}#{client_type}-1"),
        client_id: client_id.into(),
        client_type: client_type.into(),
        ..Statistics::default()
    }
}

/// A latency or size window: its average, its p99 and how many samples it had.
pub fn window(avg: i64, p99: i64, cnt: i64) -> Window {
    Window { min: avg / 2, max: p99 * 2, avg, p50: avg, p99, cnt, sum: avg * cnt, ..Window::default() }
}

/// A broker entry as librdkafka lists it: `name` ("host:port/id", "host:port/bootstrap" or ":0/internal"), its
/// node id (-1 for the bootstrap and internal entries), where it comes from, and its round trips.
pub fn broker_entry(name: &str, nodeid: i32, source: &str, rtt: Option<Window>) -> (String, Broker) {
    let entry = Broker {
        name: name.into(),
        nodeid,
        nodename: name.split('/').next().unwrap_or_default().into(),
        source: source.into(),
        state: "UP".into(),
        rtt,
        ..Broker::default()
    };
    (name.to_string(), entry)
}

/// A partition's entry: its number, its committed lag and its stored lag (what the application has read).
pub fn partition(number: i32, consumer_lag: i64, consumer_lag_stored: i64) -> (i32, Partition) {
    let entry = Partition {
        partition: number,
        broker: 1,
        leader: 1,
        consumer_lag,
        consumer_lag_stored,
        hi_offset: 100,
        committed_offset: 100 - consumer_lag,
        ..Partition::default()
    };
    (number, entry)
}

/// A topic's entry: its partitions and the batch-size window of the interval.
pub fn topic(name: &str, partitions: Vec<(i32, Partition)>, batchsize: Window) -> (String, Topic) {
    let entry = Topic {
        topic: name.into(),
        partitions: partitions.into_iter().collect::<HashMap<_, _>>(),
        batchsize,
        ..Topic::default()
    };
    (name.to_string(), entry)
}

/// What `/metrics` would show of `metrics` now: its samples.
pub fn scrape(metrics: &Metrics) -> Vec<Sample> {
    exposition::parse(&metrics.render())
}

/// The `# TYPE` of each metric `/metrics` shows (`counter`, `gauge`).
pub fn types(metrics: &Metrics) -> BTreeMap<String, String> {
    metrics
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The samples named `name`, each as its labels and value, sorted.
pub fn series(samples: &[Sample], name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut found: Vec<_> = samples.iter().filter(|s| s.name == name).map(|s| (s.labels.clone(), s.value)).collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Fails the test with the task's own panic (a `todo!()`'s message) or error if `task` has ended.
pub async fn fail_if_ended<T: std::fmt::Debug>(task: &mut tokio::task::JoinHandle<anyhow::Result<T>>, what: &str) {
    if !task.is_finished() {
        return;
    }
    match task.await {
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("{what} was cancelled: {error}"),
        Ok(Err(error)) => panic!("{what} failed: {error:#}"),
        Ok(Ok(value)) => panic!("{what} stopped by itself ({value:?})"),
    }
}
