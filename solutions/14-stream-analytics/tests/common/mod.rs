//! What lesson 14's broker tests share: fresh topics, a deployment of their own, and a read of a topic.
#![allow(dead_code)]

use std::time::Duration;

use kit::read::LogRecord;
use kit::stage::Deployment;
use kit_testing::{broker, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_14::Activity;
use solution_14::aggregator::AnalyticsTopics;

/// Fresh topics for one test; the events' topic with `partitions` partitions.
pub async fn analytics_topics(partitions: i32) -> AnalyticsTopics {
    let name = |what: &str| unique(&format!("lesson14-{what}"));
    let topics = AnalyticsTopics {
        activity: name("activity"),
        windows: name("windows"),
        late: name("late"),
        state: name("state"),
        dead_letters: name("dlq"),
    };
    let all: Vec<(&str, bool, i32)> = topics
        .all()
        .into_iter()
        .map(|(topic, compacted, count)| (topic, compacted, if topic == topics.activity { partitions } else { count }))
        .collect();
    kit_testing::create_topics(&all).await;
    topics
}

pub fn deployment() -> Deployment {
    Deployment::on(broker(), unique("lesson14"))
}

/// Writes `events` to `topic`, in order, keyed by user.
pub async fn publish(topic: &str, events: &[Activity]) {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    for event in events {
        let payload = serde_json::to_string(event).unwrap();
        producer
            .send(FutureRecord::to(topic).key(&event.user_id).payload(&payload), Duration::from_secs(10))
            .await
            .expect("written");
    }
}

/// Every committed record of `topic` (`partitions` of them).
pub async fn committed_records(topic: &str, partitions: i32) -> Vec<LogRecord> {
    kit_testing::committed_records(topic, partitions).await
}
