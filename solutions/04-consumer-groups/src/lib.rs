//! Lesson 04 — consumer groups: consumers that share a `group.id` split a topic's partitions between them;
//! another group gets its own copy of every event; and when a member leaves, the group rebalances so the
//! survivors take over its partitions and nothing is lost.
//!
//! Each member records its assignment through rebalance callbacks (a [`ConsumerContext`]), so the story and
//! the tests can show who owns which partition at every moment.
//!
//! The functions here are what the tests grade; `main.rs` tells the story with them.

/// The same lesson on RabbitMQ: a fanout exchange, a queue per subscriber, competing workers (`--rabbitmq`).
pub mod rabbit;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kit::{Broker, UserEvent};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A change of a member's assignment, as its rebalance callbacks saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentChange {
    /// The group gave these partitions to the member: it reads them from now on.
    Assigned(Vec<i32>),
    /// The group took these partitions away: the member must stop reading them (and commit what it processed).
    Revoked(Vec<i32>),
}

/// What one member knows of its place in the group: the partitions it owns now and every change, in order.
/// The rebalance callbacks write it (on the consumer's thread); the story and tests read it.
#[derive(Debug, Default)]
pub struct AssignmentLog {
    state: Mutex<AssignmentState>,
}

#[derive(Debug, Default)]
struct AssignmentState {
    owned: BTreeSet<i32>,
    changes: Vec<AssignmentChange>,
}

impl AssignmentLog {
    /// Records that `partitions` were assigned to the member.
    pub fn assigned(&self, partitions: &[i32]) {
        let mut state = self.state.lock().expect("assignment log poisoned");
        state.owned.extend(partitions.iter().copied());
        state.changes.push(AssignmentChange::Assigned(partitions.to_vec()));
    }

    /// Records that `partitions` were taken from the member.
    pub fn revoked(&self, partitions: &[i32]) {
        let mut state = self.state.lock().expect("assignment log poisoned");
        for partition in partitions {
            state.owned.remove(partition);
        }
        state.changes.push(AssignmentChange::Revoked(partitions.to_vec()));
    }

    /// The partitions the member owns now.
    pub fn owned(&self) -> BTreeSet<i32> {
        self.state.lock().expect("assignment log poisoned").owned.clone()
    }

    /// Every assignment change so far, oldest first.
    pub fn changes(&self) -> Vec<AssignmentChange> {
        self.state.lock().expect("assignment log poisoned").changes.clone()
    }
}

/// When a rebalance callback runs: before librdkafka applies the change, or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceStage {
    Before,
    After,
}

/// The partition numbers in a list handed to a rebalance callback.
pub fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    let mut partitions: Vec<i32> = list.elements().iter().map(|element| element.partition()).collect();
    partitions.sort_unstable();
    partitions
}

// EXERCISE: Keep `log` true to the member's assignment. librdkafka calls this twice per rebalance: at
// `RebalanceStage::Before` (the change is not applied yet) and at `RebalanceStage::After` (it is). Record a
// revocation while the member still owns the partitions — the moment a real service commits its work — and an
// assignment once the partitions really are the member's; log each change naming `member`. An empty list (an
// incremental rebalance can send one) changes nothing, and an error is only logged. The tests watch the logs: two
// members' assignments are disjoint and cover every partition, a member that left owns nothing and its last change
// is a revocation, and the survivor comes to own every partition.
// ANCHOR: on_rebalance
/// Records one rebalance callback of `member` in its assignment log.
pub fn on_rebalance(member: &str, log: &AssignmentLog, stage: RebalanceStage, rebalance: &Rebalance<'_>) {
    match (stage, rebalance) {
        // An incremental rebalance may hand a member an empty change: nothing to record.
        (_, Rebalance::Assign(list) | Rebalance::Revoke(list)) if list.count() == 0 => {}
        (RebalanceStage::Before, Rebalance::Revoke(list)) => {
            let partitions = partitions_of(list);
            tracing::info!("{member}: partitions {partitions:?} revoked");
            log.revoked(&partitions);
        }
        (RebalanceStage::After, Rebalance::Assign(list)) => {
            let partitions = partitions_of(list);
            tracing::info!("{member}: partitions {partitions:?} assigned");
            log.assigned(&partitions);
        }
        (RebalanceStage::Before, Rebalance::Error(error)) => tracing::warn!("{member}: rebalance failed: {error}"),
        _ => {}
    }
}
// ANCHOR_END: on_rebalance

// ANCHOR: member_context
/// A member's consumer context: librdkafka calls `pre_rebalance`/`post_rebalance` around every change of the
/// assignment, and both hand it to [`on_rebalance`]. The default `rebalance` between them applies the change,
/// incrementally when the group protocol is cooperative (KIP-848's `consumer` protocol always is).
pub struct MemberContext {
    pub name: String,
    pub log: Arc<AssignmentLog>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        on_rebalance(&self.name, &self.log, RebalanceStage::Before, rebalance);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        on_rebalance(&self.name, &self.log, RebalanceStage::After, rebalance);
    }
}
// ANCHOR_END: member_context

/// A group member's consumer.
pub type MemberConsumer = StreamConsumer<MemberContext>;

// EXERCISE: Create member `name` of consumer group `group`, known to the broker by the member's name, with a
// `MemberContext` sharing `log`, and make it take part in the group's division of `topic`: the group, not you,
// decides which partitions it reads. The tests start two members of one group and one of another: the first two
// must split the partitions and the events between them, the third must receive every event.
// ANCHOR: join_group
/// A consumer that joins `group` as `name` and subscribes to `topic`; `log` follows its assignment.
pub fn join_group(
    broker: &Broker,
    group: &str,
    topic: &str,
    name: &str,
    log: Arc<AssignmentLog>,
) -> anyhow::Result<MemberConsumer> {
    let context = MemberContext { name: name.to_string(), log };
    let consumer: MemberConsumer = broker.consumer_config(group).set("client.id", name).create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}
// ANCHOR_END: join_group

/// One event as a member received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    pub member: String,
    pub partition: i32,
    pub offset: i64,
    pub event: UserEvent,
}

/// A running group member: a task reads its consumer (which also runs its rebalance callbacks) and keeps what
/// it received until the member [`leaves`](Member::leave).
pub struct Member {
    pub name: String,
    pub group: String,
    log: Arc<AssignmentLog>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<MemberConsumer>,
}

impl Member {
    /// Joins `group` as `name` (see [`join_group`]) and starts reading.
    pub fn start(broker: &Broker, group: &str, topic: &str, name: &str) -> anyhow::Result<Member> {
        let log = Arc::new(AssignmentLog::default());
        let consumer = join_group(broker, group, topic, name, log.clone())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn({
            let (name, received) = (name.to_string(), received.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        message = consumer.recv() => match message {
                            Ok(message) => {
                                let payload = message.payload().unwrap_or_default();
                                match serde_json::from_slice::<UserEvent>(payload) {
                                    Ok(event) => received.lock().expect("received poisoned").push(Received {
                                        member: name.clone(),
                                        partition: message.partition(),
                                        offset: message.offset(),
                                        event,
                                    }),
                                    // Not an event: say where it is and read on (lesson 08 routes these to a DLQ).
                                    Err(e) => tracing::warn!(
                                        "{name}: partition {} offset {} is not a user event: {e}",
                                        message.partition(),
                                        message.offset()
                                    ),
                                }
                            }
                            Err(e) => tracing::warn!("{name}: {e}"),
                        },
                    }
                }
                consumer
            }
        });
        Ok(Member { name: name.to_string(), group: group.to_string(), log, received, stop, task })
    }

    /// The partitions this member owns now, according to its rebalance callbacks.
    pub fn owned(&self) -> BTreeSet<i32> {
        self.log.owned()
    }

    /// Every assignment change of this member, oldest first.
    pub fn changes(&self) -> Vec<AssignmentChange> {
        self.log.changes()
    }

    /// What this member has received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received poisoned").clone()
    }

    /// Leaves the group cleanly: stops reading, then closes the consumer, which commits its offsets (auto-commit)
    /// and tells the coordinator, so the group rebalances at once instead of waiting for a missed heartbeat.
    /// Returns everything the member received and its final assignment log.
    pub async fn leave(self) -> anyhow::Result<(Vec<Received>, Arc<AssignmentLog>)> {
        let _ = self.stop.send(());
        let consumer = self.task.await?;
        // Closing blocks while librdkafka revokes, commits and leaves: keep it off the async workers.
        tokio::task::spawn_blocking(move || drop(consumer)).await?;
        let received = self.received.lock().expect("received poisoned").clone();
        Ok((received, self.log))
    }
}
