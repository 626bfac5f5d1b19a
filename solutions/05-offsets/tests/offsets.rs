//! Grades lesson 05: where a new group starts (earliest vs latest), what a crash between processing and commit
//! does with manual commits (redelivery) and with auto-commit (a skip), that no wait for a record outlasts
//! `RECEIVE_TIMEOUT` (on tokio's paused clock) and that giving up is an error, that a record whose processing fails
//! is an error and is never committed, replaying from an offset, and lag — also on a partition whose oldest records
//! are gone, so its log starts above offset 0.
//!
//! Consumers here assign their partitions by hand and resume from the group's committed offsets: the offsets
//! behave exactly as for subscribed members, without a group join (seconds on the embedded broker) per restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kit::events::sample_events;
use kit::publish::publish_events;
use kit_testing::{broker, unique, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use solution_05::{
    AUTO_COMMIT_INTERVAL_MS, Commits, Crash, Handled, RECEIVE_TIMEOUT, StartFrom, consumer_config, crash, lag,
    process_then_commit, publish_until_received, receive, replay_from, resume,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn consumer(group: &str, start: StartFrom, commits: Commits) -> StreamConsumer {
    consumer_config(broker(), group, start, commits).create().expect("consumer")
}

/// Runs one of the lesson's reading functions with a deadline, so a wrong answer fails instead of waiting forever.
async fn bounded<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> T {
    tokio::time::timeout(WAIT, work).await.unwrap_or_else(|_| panic!("did not finish within {WAIT:?}")).unwrap()
}

fn offsets(handled: &[Handled]) -> Vec<i64> {
    handled.iter().map(|h| h.offset).collect()
}

/// A fresh topic with `count` sample events; returns the topic and the events' ids in the order published.
async fn topic_with_events(partitions: i32, seed: u64, count: usize) -> (String, Vec<Uuid>) {
    let topic = unique("lesson05-user-events");
    broker().create_topic(&topic, partitions).await.unwrap();
    let events = sample_events(seed, count, 6);
    publish_events(broker(), &topic, &events).await.unwrap();
    (topic, events.iter().map(|e| e.event_id).collect())
}

/// Closes `consumer` off the async workers (closing blocks while librdkafka shuts the client down).
async fn close(consumer: StreamConsumer) {
    tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
}

/// Receives from `consumer` until every id of `wanted` has been seen; returns every id seen.
async fn receive_until_seen(consumer: &StreamConsumer, wanted: &BTreeSet<Uuid>) -> BTreeSet<Uuid> {
    let mut seen = BTreeSet::new();
    while !wanted.is_subset(&seen) {
        let handled = receive(consumer, 1).await.expect("a record within the receive timeout");
        seen.extend(handled.iter().map(|h| h.event_id));
    }
    seen
}

#[tokio::test]
async fn a_new_group_starts_at_the_earliest_record_or_at_the_end() {
    let (topic, history) = topic_with_events(3, 51, 30).await;
    let history: BTreeSet<Uuid> = history.into_iter().collect();
    let from_earliest = consumer(&unique("lesson05-earliest"), StartFrom::Earliest, Commits::AfterProcessing);
    let from_latest = consumer(&unique("lesson05-latest"), StartFrom::Latest, Commits::AfterProcessing);
    resume(&from_earliest, &topic, &[0, 1, 2]).unwrap();
    resume(&from_latest, &topic, &[0, 1, 2]).unwrap();

    // New events, one at a time, until the `latest` consumer reads one: from then on it sees every new record.
    let warm_up = sample_events(57, 200, 6);
    let warmed = publish_until_received(broker(), &topic, &from_latest, &warm_up).await.unwrap();
    let new_events = sample_events(52, 10, 6);
    publish_events(broker(), &topic, &new_events).await.unwrap();
    let new: BTreeSet<Uuid> = new_events.iter().map(|e| e.event_id).collect();

    let everything: BTreeSet<Uuid> = history
        .iter()
        .copied()
        .chain(warm_up[..warmed].iter().map(|e| e.event_id))
        .chain(new.iter().copied())
        .collect();
    let early = receive_until_seen(&from_earliest, &everything).await;
    let late = receive_until_seen(&from_latest, &new).await;
    close(from_earliest).await;
    close(from_latest).await;

    #[derive(Serialize)]
    struct Seen {
        history_read_by_earliest: usize,
        history_read_by_latest: usize,
        new_read_by_earliest: usize,
        new_read_by_latest: usize,
    }
    let seen = Seen {
        history_read_by_earliest: early.intersection(&history).count(),
        history_read_by_latest: late.intersection(&history).count(),
        new_read_by_earliest: early.intersection(&new).count(),
        new_read_by_latest: late.intersection(&new).count(),
    };
    assert_eq!(seen.history_read_by_earliest, 30, "`earliest` reads the whole history");
    assert_eq!(seen.history_read_by_latest, 0, "`latest` never sees what was written before it started");
    assert_eq!((seen.new_read_by_earliest, seen.new_read_by_latest), (10, 10), "both read what comes next");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("what_each_reset_policy_reads", seen));
}

/// What one crash-and-restart showed.
#[derive(Serialize)]
struct CrashStory {
    before_crash: Vec<i64>,
    committed_at_crash: Option<i64>,
    after_restart: Vec<i64>,
    processed_twice: Vec<i64>,
    never_processed: Vec<i64>,
}

fn crash_story(before: &[Handled], committed: Option<i64>, after: &[Handled], total: i64) -> CrashStory {
    let (first, second) = (offsets(before), offsets(after));
    let all: Vec<i64> = first.iter().chain(&second).copied().collect();
    CrashStory {
        processed_twice: first.iter().filter(|o| second.contains(o)).copied().collect(),
        never_processed: (0..total).filter(|o| !all.contains(o)).collect(),
        before_crash: first,
        committed_at_crash: committed,
        after_restart: second,
    }
}

#[tokio::test]
async fn committing_after_processing_redelivers_what_a_crash_interrupted() {
    let (topic, ids) = topic_with_events(1, 53, 10).await;
    let group = unique("lesson05-at-least-once");

    let first = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    resume(&first, &topic, &[0]).unwrap();
    let before = bounded(process_then_commit(&first, 10, Some(Crash { after_processing: 4 }))).await;
    crash(first); // nothing more is committed

    let probe = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    let committed = lag(&probe, &topic, 1).unwrap()[&0].committed;
    let restarted = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    resume(&restarted, &topic, &[0]).unwrap();
    let after = bounded(process_then_commit(&restarted, 7, None)).await;
    let committed_at_end = lag(&probe, &topic, 1).unwrap()[&0];
    close(restarted).await;
    close(probe).await;

    let story = crash_story(&before, committed, &after, 10);
    assert_eq!(story.before_crash, vec![0, 1, 2, 3], "four records processed before the crash");
    assert_eq!(committed, Some(3), "the crash came before offset 3 was committed: the group resumes at 3");
    assert_eq!(story.processed_twice, vec![3], "the interrupted record is delivered again");
    assert!(story.never_processed.is_empty(), "at-least-once: nothing is skipped");
    let all: BTreeSet<Uuid> = before.iter().chain(&after).map(|h| h.event_id).collect();
    assert_eq!(all, ids.iter().copied().collect(), "every event was processed");
    assert_eq!((committed_at_end.committed, committed_at_end.lag), (Some(10), 0), "all committed in the end");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("manual_commit_crash", story));
}

#[tokio::test]
async fn auto_commit_can_skip_records_a_crash_interrupted() {
    let (topic, _ids) = topic_with_events(1, 54, 10).await;
    let group = unique("lesson05-auto-commit");

    let first = consumer(&group, StartFrom::Earliest, Commits::Auto);
    resume(&first, &topic, &[0]).unwrap();
    // Six records are handed to the code; it finishes processing three of them...
    let handed_over = receive(&first, 6).await.unwrap();
    let before: Vec<Handled> = handed_over[..3].to_vec();
    // ...while the client commits, in the background, the offsets of everything it handed over.
    let probe = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    let committed = wait_until("auto-commit to commit the six records handed over", WAIT, || async {
        let committed = lag(&probe, &topic, 1).ok()?[&0].committed;
        (committed == Some(6)).then_some(committed)
    })
    .await;
    crash(first); // with three records handed over but not processed

    let restarted = consumer(&group, StartFrom::Earliest, Commits::Auto);
    resume(&restarted, &topic, &[0]).unwrap();
    let after = receive(&restarted, 4).await.unwrap();
    close(restarted).await;
    close(probe).await;

    let story = crash_story(&before, committed, &after, 10);
    assert_eq!(story.after_restart, vec![6, 7, 8, 9], "the restart resumes at the auto-committed offset");
    assert_eq!(story.never_processed, vec![3, 4, 5], "records handed over but not processed are skipped");
    assert!(story.processed_twice.is_empty());
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("auto_commit_crash", story));
}

/// Once the setup is done the test pauses tokio's clock: tokio then jumps it to the next timer whenever the test has
/// nothing else to do, so a wait bounded by a tokio timer ends at its bound in virtual time, in no real time. The only
/// timers are the lesson's bound (`RECEIVE_TIMEOUT`, 20 s) and the test's, a second later; no record can come from an
/// empty topic, so which fires first is decided by the two deadlines alone: the lesson's if it bounds its wait, the
/// test's if it waits without a bound (or with a longer one).
#[tokio::test]
async fn no_wait_for_a_record_outlasts_the_receive_timeout() {
    let topic = unique("lesson05-nothing-to-read");
    broker().create_topic(&topic, 1).await.unwrap();
    let reader = consumer(&unique("lesson05-nothing-to-read"), StartFrom::Earliest, Commits::AfterProcessing);
    resume(&reader, &topic, &[0]).unwrap();

    tokio::time::pause();
    let test_bound = RECEIVE_TIMEOUT + Duration::from_secs(1);
    let waited = tokio::time::timeout(test_bound, process_then_commit(&reader, 1, None)).await;
    tokio::time::resume();
    close(reader).await;

    let returned = waited.unwrap_or_else(|_| {
        panic!(
            "process_then_commit was still waiting for a record {test_bound:?} into its wait on an empty topic: \
             no wait may outlast RECEIVE_TIMEOUT ({RECEIVE_TIMEOUT:?})"
        )
    });
    returned.expect_err(
        "giving up on an empty topic is an error, not a shorter batch: the caller must be able to tell that no record \
         came from a batch that is done",
    );
}

#[tokio::test]
async fn a_record_that_fails_processing_ends_the_call_and_is_never_committed() {
    let topic = unique("lesson05-not-an-event");
    broker().create_topic(&topic, 1).await.unwrap();
    let events = sample_events(59, 5, 6);
    // Offsets 0–2 hold events, offset 3 a record that is not one, offsets 4–5 events again.
    publish_events(broker(), &topic, &events[..3]).await.unwrap();
    let producer: FutureProducer = broker().producer_config().create().expect("producer");
    let bad = producer
        .send(FutureRecord::<(), _>::to(&topic).partition(0).payload("not an event"), Duration::from_secs(5))
        .await
        .map_err(|(error, _)| error)
        .expect("the record that is not an event is written");
    assert_eq!((bad.partition, bad.offset), (0, 3), "the test's setup: the bad record sits at offset 3");
    publish_events(broker(), &topic, &events[3..]).await.unwrap();

    let reader = consumer(&unique("lesson05-not-an-event"), StartFrom::Earliest, Commits::AfterProcessing);
    resume(&reader, &topic, &[0]).unwrap();
    let returned = tokio::time::timeout(WAIT * 2, process_then_commit(&reader, 6, None))
        .await
        .unwrap_or_else(|_| panic!("process_then_commit did not return within {:?}", WAIT * 2));
    let committed = lag(&reader, &topic, 1).unwrap()[&0].committed;
    close(reader).await;

    let error = returned.expect_err("offset 3 is not an event: its processing fails, and so does the call");
    assert_eq!(
        committed,
        Some(3),
        "offsets 0–2 were processed and committed, offset 3 failed ({error:#}): the group must resume at 3, never \
         past a record that was not processed"
    );
}

#[tokio::test]
async fn replaying_from_an_offset_reads_the_log_again() {
    let (topic, ids) = topic_with_events(1, 55, 10).await;
    let reader = consumer(&unique("lesson05-replay"), StartFrom::Earliest, Commits::AfterProcessing);
    resume(&reader, &topic, &[0]).unwrap();
    let first_pass = bounded(process_then_commit(&reader, 10, None)).await;
    assert_eq!(offsets(&first_pass), (0..10).collect::<Vec<_>>());

    replay_from(&reader, &topic, 0, 4).unwrap();
    let replay = receive(&reader, 6).await.unwrap();
    assert_eq!(offsets(&replay), (4..10).collect::<Vec<_>>(), "the replay starts exactly at offset 4");
    let replayed: Vec<Uuid> = replay.iter().map(|h| h.event_id).collect();
    assert_eq!(replayed, ids[4..].to_vec(), "the replay reads the same events again, in the same order");
    let after = lag(&reader, &topic, 1).unwrap()[&0];
    assert_eq!(after.committed, Some(10), "replaying does not move the committed offset back by itself");
    close(reader).await;
}

#[tokio::test]
async fn lag_is_the_high_watermark_minus_the_committed_offset() {
    let (topic, _ids) = topic_with_events(3, 56, 30).await;
    let group = unique("lesson05-lag");
    let member = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    // What each partition holds, independently of the lesson's code.
    let records = kit_testing::read_topic(broker(), &topic, 30, WAIT).await;
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &records {
        *per_partition.entry(record.partition).or_default() += 1;
    }

    // The group has processed 2 records of partition 0, none of partition 1, all of partition 2.
    {
        let mut progress = TopicPartitionList::new();
        progress.add_partition_offset(&topic, 0, Offset::Offset(2)).unwrap();
        progress.add_partition_offset(&topic, 2, Offset::Offset(per_partition[&2])).unwrap();
        member.commit(&progress, CommitMode::Sync).unwrap();
    }
    let lags = lag(&member, &topic, 3).unwrap();
    close(member).await;

    let count = |p: i32| per_partition.get(&p).copied().unwrap_or(0);
    for p in 0..3 {
        assert_eq!(
            lags[&p].high_watermark,
            count(p),
            "partition {p}: once every record is replicated, the high watermark is the number written"
        );
    }
    assert_eq!((lags[&0].committed, lags[&0].lag), (Some(2), count(0) - 2), "partition 0: lag = high − committed");
    assert_eq!((lags[&1].committed, lags[&1].lag), (None, count(1)), "partition 1: nothing committed, all is lag");
    assert_eq!((lags[&2].committed, lags[&2].lag), (Some(count(2)), 0), "partition 2: caught up");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("lag_per_partition", lags));
}

#[test]
fn auto_commit_runs_every_auto_commit_interval_and_only_when_asked() {
    // How often the background commit runs is a setting, read back here through librdkafka (so its aliases
    // count): every AUTO_COMMIT_INTERVAL_MS with `Commits::Auto`, never with `Commits::AfterProcessing`.
    let read_back = |commits: Commits, name: &str| {
        let config = consumer_config(broker(), "lesson05-settings", StartFrom::Earliest, commits);
        let native = config.create_native_config().unwrap_or_else(|e| panic!("librdkafka refuses the config: {e}"));
        native.get(name).unwrap_or_else(|e| panic!("librdkafka cannot read {name} back: {e}"))
    };
    assert_eq!(read_back(Commits::Auto, "enable.auto.commit"), "true", "Commits::Auto commits in the background");
    assert_eq!(
        read_back(Commits::Auto, "auto.commit.interval.ms"),
        AUTO_COMMIT_INTERVAL_MS,
        "Commits::Auto commits every AUTO_COMMIT_INTERVAL_MS, not at librdkafka's default of 5 s"
    );
    assert_eq!(
        read_back(Commits::AfterProcessing, "enable.auto.commit"),
        "false",
        "Commits::AfterProcessing never commits on its own"
    );
}

#[tokio::test]
async fn replaying_needs_no_assignment_and_ignores_what_the_group_committed() {
    let (topic, ids) = topic_with_events(1, 57, 10).await;
    let group = unique("lesson05-replay-fresh");
    // The group has committed offset 8: a consumer resuming from it would read offsets 8 and 9 only.
    {
        let committer = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
        let mut progress = TopicPartitionList::new();
        progress.add_partition_offset(&topic, 0, Offset::Offset(8)).unwrap();
        committer.commit(&progress, CommitMode::Sync).unwrap();
        close(committer).await;
    }

    // A fresh consumer of that group, with no partition assigned yet and no rebalance to wait for.
    let reader = consumer(&group, StartFrom::Earliest, Commits::AfterProcessing);
    replay_from(&reader, &topic, 0, 4).expect("replaying works on a consumer that has no assignment yet");
    let replay = bounded(receive(&reader, 6)).await;
    assert_eq!(offsets(&replay), (4..10).collect::<Vec<_>>(), "the replay starts exactly at offset 4, not at 8");
    let replayed: Vec<Uuid> = replay.iter().map(|h| h.event_id).collect();
    assert_eq!(replayed, ids[4..].to_vec(), "the replay reads the events stored at offsets 4–9");
    close(reader).await;
}

/// Removes the oldest records of partition 0 of `topic`, so its log starts above offset 0 (its low watermark), as
/// retention does with time. Real Kafka is asked directly (DeleteRecords: everything before offset 4 of 10 records
/// goes). The embedded broker (in this process or hosted) has no DeleteRecords, but it keeps at most 5 MiB per
/// partition and drops a partition's oldest batches beyond that (librdkafka 2.12's mock, `rd_kafka_mock_msgset_new`):
/// eight records of 700 kB, each a batch of its own (a batch holds at most 1 MB), push the first batch out. The caller
/// checks the low watermark it gets, so a broker that kept everything fails the test's setup, not the lesson.
async fn drop_the_oldest_records(topic: &str) {
    if !broker().kind().is_real_kafka() {
        let producer: FutureProducer = broker().producer_config().create().expect("producer");
        let filler = vec![b'x'; 700_000];
        for _ in 0..8 {
            producer
                .send(FutureRecord::<(), _>::to(topic).partition(0).payload(&filler), Duration::from_secs(5))
                .await
                .map_err(|(error, _)| error)
                .expect("a 700 kB record is written");
        }
    } else {
        publish_events(broker(), topic, &sample_events(58, 10, 1)).await.unwrap();
        let admin: AdminClient<DefaultClientContext> = broker().client_config().create().expect("admin client");
        let mut before = TopicPartitionList::new();
        before.add_partition_offset(topic, 0, Offset::Offset(4)).unwrap();
        let options = AdminOptions::new().operation_timeout(Some(WAIT));
        let deleted = admin.delete_records(&before, &options).await.expect("DeleteRecords");
        for partition in deleted.elements() {
            partition.error().unwrap_or_else(|e| panic!("DeleteRecords on partition {}: {e}", partition.partition()));
        }
    }
}

#[tokio::test]
async fn where_nothing_is_committed_the_lag_is_what_is_still_in_the_log() {
    let topic = unique("lesson05-trimmed");
    broker().create_topic(&topic, 1).await.unwrap();
    drop_the_oldest_records(&topic).await;
    let member = consumer(&unique("lesson05-trimmed"), StartFrom::Earliest, Commits::AfterProcessing);
    // The partition's bounds, read by the test itself.
    let (low, high) = member.fetch_watermarks(&topic, 0, WAIT).expect("watermarks");
    let lags = lag(&member, &topic, 1).unwrap();
    close(member).await;

    assert!(
        low > 0,
        "the test's setup: the oldest records are gone, so the log starts above 0 (low {low}, high {high})"
    );
    assert_eq!(lags[&0].high_watermark, high, "the high watermark is the partition's");
    assert_eq!(
        (lags[&0].committed, lags[&0].lag),
        (None, high - low),
        "nothing committed: the lag is what is still in the log, high − low watermark ({high} − {low}), not high − 0"
    );
}
