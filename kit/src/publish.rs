//! Putting known events into a topic: what the consuming lessons' stories and tests do before they read.
//!
//! Lesson 01 teaches producing; later lessons only need events to be there, written the workbook's way (keyed
//! by `user_id`, JSON payload) and acknowledged before they start reading.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::broker::Broker;
use crate::events::UserEvent;

/// Where a published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// Sends `events` to `topic`, keyed by user, and waits until every one is acknowledged. Returns each event's
/// position, in the order of `events`. The sends are all in flight together; each partition keeps their order.
pub async fn publish_events(broker: &Broker, topic: &str, events: &[UserEvent]) -> anyhow::Result<Vec<Position>> {
    let producer: FutureProducer = broker.producer_config().set("enable.idempotence", "true").create()?;
    let sends = events.iter().map(|event| {
        let producer = &producer;
        async move {
            let payload = event.to_json();
            let record = FutureRecord::to(topic).key(&event.user_id).payload(&payload);
            let delivery = producer.send(record, Duration::from_secs(5)).await.map_err(|(error, _)| {
                anyhow::anyhow!("could not publish event {} to {topic}: {error}", event.event_id)
            })?;
            Ok::<_, anyhow::Error>(Position { partition: delivery.partition, offset: delivery.offset })
        }
    });
    try_join_all(sends).await
}
