//! The opening every runnable story shares: logs on, the broker resolved and named, the story's topics in place.
//!
//! Each lesson's `main.rs` tells its own story after this; the opening is the same everywhere, so it lives here
//! and prints the same lines in every lesson (a learner compares runs across lessons by these lines).

use crate::Broker;
use crate::topics::TopicSpec;

/// Turns logging on, resolves the broker (printing which one), and creates `topics` on it (printing each).
pub async fn start(topics: &[TopicSpec]) -> anyhow::Result<Broker> {
    crate::telemetry::init();
    let broker = Broker::resolve()?;
    println!("broker: {}", broker.describe());
    for topic in topics {
        broker.create_topic_spec(topic).await?;
        let plural = if topic.partitions == 1 { "" } else { "s" };
        println!("topic:  {} ({} partition{plural})", topic.name, topic.partitions);
    }
    println!();
    Ok(broker)
}
