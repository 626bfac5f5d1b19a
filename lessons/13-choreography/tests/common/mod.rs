//! What lesson 13's broker tests share: fresh topics for the shop, and a deployment of its own.
#![allow(dead_code)]

use kit::stage::Deployment;
use kit_testing::{broker, unique};
use lesson_13::services::ShopTopics;

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
    kit_testing::create_topics(&topics.all()).await;
    topics
}

/// A deployment of the shop's services that no other test shares.
pub fn deployment() -> Deployment {
    Deployment::on(broker(), unique("lesson13"))
}

use std::collections::BTreeMap;
use std::time::Duration;

use kit::read::LogRecord;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Every committed record of `topic` (`partitions` of them), read to its end.
pub async fn committed_records(topic: &str, partitions: i32) -> Vec<LogRecord> {
    kit_testing::committed_records(topic, partitions).await
}

/// The latest value of each key of a changelog, as compaction would leave it.
pub async fn latest(topic: &str) -> BTreeMap<String, Vec<u8>> {
    kit_testing::latest_values(topic, 3).await
}

/// Writes `value` as JSON to `topic`, keyed by `key`, as a plain record.
pub async fn write_json(topic: &str, key: &str, value: &impl serde::Serialize) {
    let producer: FutureProducer = broker().producer_config().create().expect("a producer");
    let payload = serde_json::to_string(value).unwrap();
    producer.send(FutureRecord::to(topic).key(key).payload(&payload), Duration::from_secs(10)).await.expect("written");
}
