//! What lesson 13's broker tests share: fresh topics for the shop, and a deployment of its own.
#![allow(dead_code)]

use kit::stage::Deployment;
use kit_testing::{broker, unique};
use solution_13::services::ShopTopics;

/// Fresh topics for one test, created on the broker (changelogs compacted where the broker compacts).
pub async fn shop_topics() -> ShopTopics {
    let name = |what: &str| unique(&format!("lesson13-{what}"));
    let topics = ShopTopics {
        requests: name("requests"),
        orders: name("orders"),
        inventory: name("inventory"),
        payments: name("payments"),
        orders_state: name("orders-state"),
        inventory_state: name("inventory-state"),
        payments_state: name("payments-state"),
        notifications_state: name("notifications-state"),
        notifications_dlq: name("notifications-dlq"),
        dead_letters: name("dlq"),
    };
    for (topic, compacted, partitions) in topics.all() {
        let configs = if compacted { vec![("cleanup.policy", "compact".to_string())] } else { Vec::new() };
        broker().create_topic_with(topic, partitions, &configs).await.expect("a topic");
    }
    topics
}

/// A deployment of the shop's services that no other test shares.
pub fn deployment() -> Deployment {
    Deployment::on(broker(), unique("lesson13"))
}

use std::collections::BTreeMap;
use std::time::Duration;

use kit::read::{LogRecord, read_to_end};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Every committed record of `topic` (`partitions` of them), read to its end.
pub async fn committed_records(topic: &str, partitions: i32) -> Vec<LogRecord> {
    let mut config = broker().consumer_config(&unique("lesson13-reader"));
    config.set("isolation.level", "read_committed");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_to_end(config, &topic, partitions, Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the topic reads to its end")
}

/// The latest value of each key of a changelog, as compaction would leave it.
pub async fn latest(topic: &str) -> BTreeMap<String, Vec<u8>> {
    let mut values = BTreeMap::new();
    for record in committed_records(topic, 3).await {
        let key = record.key.unwrap_or_default();
        if record.payload.is_empty() {
            values.remove(&key);
        } else {
            values.insert(key, record.payload);
        }
    }
    values
}

/// Writes `value` as JSON to `topic`, keyed by `key`, as a plain record.
pub async fn write_json(topic: &str, key: &str, value: &impl serde::Serialize) {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    let payload = serde_json::to_string(value).unwrap();
    producer.send(FutureRecord::to(topic).key(key).payload(&payload), Duration::from_secs(10)).await.expect("written");
}
