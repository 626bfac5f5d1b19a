//! Grades lesson 14's windows on a broker: the aggregator, fed a stream of shoppers' events with some sent late,
//! emits each closed window's result once — equal to what the windows give the same events in memory — and every
//! late event to the late-events topic with the window it missed; and it does so across a crash between a batch's
//! work and its commit, counting no event twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kit::stage::Running;
use lesson_14::aggregator::{Aggregator, LateEvent};
use lesson_14::{Activity, Catalog, Placement, Sessions, WindowResult, WindowSpec, Windows};

const SPEC: WindowSpec = WindowSpec { size_ms: 60_000, grace_ms: 10_000 };
const START_MS: i64 = 1_700_000_000_000;

/// A day of shoppers' events in the order they are sent: one shopper's sessions from `START_MS`, a share held
/// back and sent once the shopper's clock passes their delay — some within the grace, some beyond.
fn events(minutes: i64) -> Vec<Activity> {
    let mut sessions = Sessions::new(Catalog::shipped(), 7, START_MS, 0.1, 90_000);
    let (mut sent, mut held): (Vec<Activity>, Vec<(i64, Activity)>) = (Vec::new(), Vec::new());
    while sessions.clock_ms() < START_MS + minutes * 60_000 {
        for emitted in sessions.session() {
            if emitted.delay_ms > 0 {
                held.push((emitted.activity.event_time_ms + emitted.delay_ms, emitted.activity));
            } else {
                sent.push(emitted.activity);
            }
        }
        let now = sessions.clock_ms();
        let (due, later): (Vec<_>, Vec<_>) = held.into_iter().partition(|(at, _)| *at <= now);
        held = later;
        sent.extend(due.into_iter().map(|(_, a)| a));
    }
    sent.extend(held.into_iter().map(|(_, a)| a));
    sent
}

/// What the windows give `events` in memory, in that order: the closed windows' results and the late events.
fn expected(events: &[Activity]) -> (Vec<WindowResult>, Vec<String>) {
    let catalog = Catalog::shipped();
    let mut windows = Windows::new(SPEC);
    let (mut results, mut late) = (Vec::new(), Vec::new());
    for event in events {
        if let Placement::Late { .. } = windows.accept(event, &catalog) {
            late.push(event.event_id.clone());
        }
        results.extend(windows.close_due(&catalog, 5));
    }
    (results, late)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_window_is_emitted_once_and_each_late_event_kept_even_across_a_crash() {
    // One partition: the aggregator reads the events in the order they were sent, as `expected` does.
    let topics = analytics_topics(1).await;
    let events = events(12);
    let (results, late) = expected(&events);
    assert!(results.len() >= 8 && !late.is_empty(), "the sequence closes windows and has late events");
    let (first_half, second_half) = events.split_at(events.len() / 2);
    publish(&topics.activity, first_half).await;

    let deployment = deployment();
    let aggregator = Aggregator::new(topics.clone(), Catalog::shipped(), SPEC, 5);
    let running = Running::start(aggregator, deployment.clone());
    // Once the first windows are out, the aggregator dies between the work and the commit of the batch that
    // brings the second half; a new one takes over from the changelog.
    wait_for_results(&topics.windows, 2, &running).await;
    let crash = tokio::task::spawn_blocking(move || running.crash(Duration::from_secs(30)));
    publish(&topics.activity, second_half).await;
    let crashed = crash.await.unwrap();
    assert!(crashed, "the aggregator crashed with the second half's batch uncommitted");
    let running = Running::start(Aggregator::new(topics.clone(), Catalog::shipped(), SPEC, 5), deployment);
    let emitted = wait_for_results(&topics.windows, results.len(), &running).await;
    let (result, _) = running.stop();
    result.expect("the aggregator stops cleanly");

    let mut by_window: BTreeMap<i64, Vec<WindowResult>> = BTreeMap::new();
    for result in &emitted {
        by_window.entry(result.start_ms).or_default().push(result.clone());
    }
    let twice: Vec<i64> = by_window.iter().filter(|(_, r)| r.len() > 1).map(|(start, _)| *start).collect();
    assert!(twice.is_empty(), "windows emitted more than once: {twice:?}");
    assert_eq!(emitted, results, "each window's result is what the windows give the same events, in order");
    let late_kept: Vec<String> = committed_records(&topics.late, 1)
        .await
        .iter()
        .map(|r| serde_json::from_slice::<LateEvent>(&r.payload).expect("a late event").event.event_id)
        .collect();
    assert_eq!(late_kept, late, "every late event in the late topic, once");
    let seen = serde_json::json!({
        "windows": results.len(),
        "late": late.len(),
        "first_result": results.first(),
    });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("aggregated", seen));
}

/// Waits until `topic` holds at least `count` results; all of them, in order.
async fn wait_for_results(topic: &str, count: usize, running: &Running<Aggregator>) -> Vec<WindowResult> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results: Vec<WindowResult> = committed_records(topic, 1)
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).expect("a window result"))
            .collect();
        if results.len() >= count {
            return results;
        }
        assert!(!running.has_ended(), "the aggregator stopped by itself (see its error above)");
        assert!(Instant::now() < deadline, "{count} results: only {} within 60 s", results.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
