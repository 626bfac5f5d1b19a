//! Grades lesson 04: two members of one group split the partitions and the events without overlap; a second
//! group receives every event; when a member leaves, the survivor owns every partition and nothing is lost.
//!
//! Group joins are slow on the embedded broker (about 3 s), so the members of a test join together and the
//! two tests run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kit::events::sample_events;
use kit::publish::publish_events;
use kit_testing::{broker, unique, wait_until};
use serde::Serialize;
use lesson_04::{AssignmentChange, AssignmentLog, Member, RebalanceStage, Received, join_group, on_rebalance};
use uuid::Uuid;

const ALL_PARTITIONS: [i32; 3] = [0, 1, 2];
const WAIT: Duration = Duration::from_secs(30);

fn ids(received: &[Received]) -> BTreeSet<Uuid> {
    received.iter().map(|r| r.event.event_id).collect()
}

/// Waits until `members` have received, together, every event of `expected`.
async fn wait_for_all(what: &str, members: &[&Member], expected: &BTreeSet<Uuid>) {
    wait_until(what, WAIT, || async {
        let seen: BTreeSet<Uuid> = members.iter().flat_map(|m| ids(&m.received())).collect();
        expected.is_subset(&seen).then_some(())
    })
    .await;
}

/// What the snapshot shows of a split: how many partitions each member got and how the events divided.
#[derive(Serialize)]
struct Split {
    partitions_per_member: Vec<usize>,
    events: usize,
    received_by_both: usize,
}

#[tokio::test]
async fn members_of_one_group_split_the_partitions_and_a_survivor_takes_over() {
    let broker = broker();
    let topic = unique("lesson04-user-events");
    let group = unique("lesson04-workers");
    broker.create_topic(&topic, 3).await.unwrap();

    // Both members join at once: one group formation instead of two.
    let worker_a = Member::start(broker, &group, &topic, "worker-a").unwrap();
    let worker_b = Member::start(broker, &group, &topic, "worker-b").unwrap();
    wait_until(
        "both workers to own a share of the partitions, together all of them, no partition twice",
        WAIT,
        || async {
            let (a, b) = (worker_a.owned(), worker_b.owned());
            let union: BTreeSet<i32> = a.union(&b).copied().collect();
            (!a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && union == BTreeSet::from(ALL_PARTITIONS))
                .then_some(())
        },
    )
    .await;
    let (owned_a, owned_b) = (worker_a.owned(), worker_b.owned());

    let first = sample_events(4, 90, 9);
    publish_events(broker, &topic, &first).await.unwrap();
    wait_for_all(
        "the two workers to receive the first 90 events between them",
        &[&worker_a, &worker_b],
        &ids_of(&first),
    )
    .await;

    // While both run, each event goes to exactly one of them: the owner of its partition.
    let (got_a, got_b) = (worker_a.received(), worker_b.received());
    let overlap: BTreeSet<Uuid> = ids(&got_a).intersection(&ids(&got_b)).copied().collect();
    assert!(overlap.is_empty(), "{} events were received by both workers of one group", overlap.len());
    assert_eq!(got_a.len() + got_b.len(), first.len(), "each event is received once in the group");
    for (received, owned) in [(&got_a, &owned_a), (&got_b, &owned_b)] {
        for r in received.iter() {
            assert!(owned.contains(&r.partition), "{} read partition {} it does not own", r.member, r.partition);
        }
    }
    let mut partitions_per_member = vec![owned_a.len(), owned_b.len()];
    partitions_per_member.sort_unstable();
    let split = Split { partitions_per_member, events: got_a.len() + got_b.len(), received_by_both: overlap.len() };
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("split_between_two_members", split));

    // worker-b leaves: its partitions are revoked, and worker-a takes them over.
    let (_, log_b) = worker_b.leave().await.unwrap();
    assert!(log_b.owned().is_empty(), "a member that left owns nothing, yet it still has {:?}", log_b.owned());
    assert!(
        matches!(log_b.changes().last(), Some(AssignmentChange::Revoked(p)) if !p.is_empty()),
        "leaving revokes the member's partitions: {:?}",
        log_b.changes()
    );
    wait_until("worker-a to own every partition after worker-b left", WAIT, || async {
        (worker_a.owned() == BTreeSet::from(ALL_PARTITIONS)).then_some(())
    })
    .await;

    // Nothing is lost: events written after the rebalance all reach the survivor, from every partition.
    let second = sample_events(5, 30, 9);
    publish_events(broker, &topic, &second).await.unwrap();
    wait_for_all("worker-a to receive all 30 events written after the rebalance", &[&worker_a], &ids_of(&second)).await;
    let (got_a, _) = worker_a.leave().await.unwrap();
    let partitions_after: BTreeSet<i32> =
        got_a.iter().filter(|r| ids_of(&second).contains(&r.event.event_id)).map(|r| r.partition).collect();
    assert_eq!(partitions_after, BTreeSet::from(ALL_PARTITIONS), "the survivor reads every partition");
    let everything: BTreeSet<Uuid> = ids(&got_a).union(&ids(&got_b)).copied().collect();
    assert!(ids_of(&first).is_subset(&everything) && ids_of(&second).is_subset(&everything), "no event is lost");
}

fn ids_of(events: &[kit::UserEvent]) -> BTreeSet<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

#[tokio::test]
async fn every_group_receives_every_event() {
    let broker = broker();
    let topic = unique("lesson04-user-events");
    broker.create_topic(&topic, 3).await.unwrap();
    let events = sample_events(6, 60, 9);
    publish_events(broker, &topic, &events).await.unwrap();

    // Two groups, one member each, joining together: each group gets its own copy of the stream.
    let billing = Member::start(broker, &unique("lesson04-billing"), &topic, "billing-1").unwrap();
    let audit = Member::start(broker, &unique("lesson04-audit"), &topic, "audit-1").unwrap();
    wait_for_all("the billing group to receive every event", &[&billing], &ids_of(&events)).await;
    wait_for_all("the audit group to receive every event", &[&audit], &ids_of(&events)).await;
    assert_eq!(billing.owned(), BTreeSet::from(ALL_PARTITIONS), "a lone member owns every partition");
    assert_eq!(audit.owned(), BTreeSet::from(ALL_PARTITIONS), "a lone member owns every partition");

    let mut per_group = BTreeMap::new();
    for member in [billing, audit] {
        let name = member.name.clone();
        let (received, _) = member.leave().await.unwrap();
        assert_eq!(ids(&received), ids_of(&events), "{name} receives every event of the topic");
        per_group.insert(name, received.len());
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("events_per_group", per_group));
}

/// What `during` logs, as plain text lines (any level).
fn logged_during(during: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, during);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn each_callback_records_at_its_stage_and_only_then() {
    // librdkafka's two calls per change, made by hand one at a time, with the log checked after each: the
    // revocation counts before it is applied (the member still owns the partitions), the assignment after; the
    // other call of each pair, an empty list and an error change nothing.
    use rdkafka::consumer::Rebalance::{Assign, Revoke};
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition("orders", 2);
    list.add_partition("orders", 0);
    let empty = rdkafka::TopicPartitionList::new();
    let error = rdkafka::consumer::Rebalance::Error(rdkafka::error::KafkaError::Rebalance(
        rdkafka::types::RDKafkaErrorCode::Fail,
    ));
    let assigned = AssignmentChange::Assigned(vec![0, 2]);
    let revoked = AssignmentChange::Revoked(vec![0, 2]);
    let log = AssignmentLog::default();
    let logged = logged_during(|| {
        let steps: [(RebalanceStage, &rdkafka::consumer::Rebalance<'_>, &str, Vec<AssignmentChange>); 8] = [
            (RebalanceStage::Before, &Assign(&list), "before an assignment is applied", vec![]),
            (RebalanceStage::After, &Assign(&list), "once the assignment is applied", vec![assigned.clone()]),
            (RebalanceStage::After, &Assign(&empty), "an empty assignment", vec![assigned.clone()]),
            (RebalanceStage::Before, &Revoke(&empty), "an empty revocation", vec![assigned.clone()]),
            (RebalanceStage::Before, &error, "an error, before", vec![assigned.clone()]),
            (RebalanceStage::After, &error, "an error, after", vec![assigned.clone()]),
            (
                RebalanceStage::Before,
                &Revoke(&list),
                "before a revocation is applied (the member still owns the partitions)",
                vec![assigned.clone(), revoked.clone()],
            ),
            (
                RebalanceStage::After,
                &Revoke(&list),
                "once the revocation is applied",
                vec![assigned.clone(), revoked.clone()],
            ),
        ];
        for (stage, rebalance, when, expected) in steps {
            on_rebalance("member-a", &log, stage, rebalance);
            assert_eq!(log.changes(), expected, "the log after the callback at {stage:?}, {when}");
        }
    });
    assert!(log.owned().is_empty(), "after the revocation the member owns nothing");
    drop(list);
    drop(empty);
    let error_lines: Vec<&str> =
        logged.lines().filter(|line| ["error", "fail"].iter().any(|word| line.to_lowercase().contains(word))).collect();
    assert!(
        error_lines.iter().any(|line| line.contains("member-a")),
        "a rebalance error is logged, naming the member; the log was:\n{logged}"
    );
}

#[tokio::test]
async fn a_member_is_known_to_the_broker_by_its_name() {
    // The broker learns a client's name from the `client.id` in the header of each of its requests: the proxy in
    // front of the broker reads it there.
    let topic = unique("lesson04-named");
    broker().create_topic(&topic, 1).await.unwrap();
    let proxy = kit::FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let bootstrap = proxy.bootstrap_servers().to_string();
    let kind = broker().kind();
    let via_proxy = tokio::task::spawn_blocking(move || {
        kit::Broker::connect(kind, bootstrap, "the test's fault proxy".into()).expect("the broker through the proxy")
    })
    .await
    .unwrap();
    let name = format!("member-{}", unique("named"));
    let member =
        join_group(&via_proxy, &unique("lesson04-named"), &topic, &name, Default::default()).expect("join_group");
    let seen = wait_until("a request from the member", WAIT, || async {
        let ids = proxy.client_ids();
        ids.contains(&name).then_some(ids)
    })
    .await;
    assert!(seen.contains(&name), "{seen:?}");
    // Closing a member leaves its group through the proxy, which can outlast the test on a loaded machine; this
    // test is about its first requests only, so the member is left to the end of the test's process.
    std::mem::forget(member);
}
