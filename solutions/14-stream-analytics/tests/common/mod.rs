//! What lesson 14's broker tests share: fresh topics, a deployment of their own, and a read of a topic.
#![allow(dead_code)]

use std::time::Duration;

use kit::read::{LogRecord, read_to_end};
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
    for (topic, compacted, count) in topics.all() {
        let configs = if compacted { vec![("cleanup.policy", "compact".to_string())] } else { Vec::new() };
        let count = if topic == topics.activity { partitions } else { count };
        broker().create_topic_with(topic, count, &configs).await.expect("a topic");
    }
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
    let mut config = broker().consumer_config(&unique("lesson14-reader"));
    config.set("isolation.level", "read_committed");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_to_end(config, &topic, partitions, Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the topic reads to its end")
}
