//! `cargo xtask broker [--port 9092]`: hosts the embedded broker on a fixed address until Ctrl-C, so other
//! terminals can run lessons or any Kafka client (kcat, Python, Java) against it.
//!
//! It writes `target/workbook/broker.json` while it runs, which is how `cargo xtask lesson` finds it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "brokers")]
use anyhow::Context;
#[cfg(feature = "brokers")]
use kit::topics::WORKBOOK_TOPICS;
#[cfg(feature = "brokers")]
use kit::{EmbeddedCluster, FaultProxy};

use crate::catalog;

/// Starts an embedded cluster and creates the workbook's topics on it (the mock cannot create them later on
/// request from another process).
#[cfg(feature = "brokers")]
pub fn start_with_topics(brokers: i32) -> anyhow::Result<EmbeddedCluster> {
    let cluster = EmbeddedCluster::start(brokers)?;
    for topic in WORKBOOK_TOPICS {
        cluster.create_topic(topic.name, topic.partitions)?;
    }
    Ok(cluster)
}

#[cfg(feature = "brokers")]
pub fn run(host: &str, port: u16) -> anyhow::Result<()> {
    let cluster = start_with_topics(1)?;
    // The mock listens on a random port; the proxy, without faults, gives it the fixed one (and rewrites
    // Metadata so clients stay on it). Both live until Ctrl-C.
    let proxy = FaultProxy::start_on(cluster.bootstrap_servers(), host, port).with_context(|| {
        format!("no broker on {host}:{port}: is another one running there? Stop it, or pick another port with --port")
    })?;
    let bootstrap = proxy.bootstrap_servers().to_string();
    let marker = marker_path();
    std::fs::create_dir_all(marker.parent().unwrap())?;
    std::fs::write(&marker, serde_json::json!({ "bootstrap": bootstrap, "pid": std::process::id() }).to_string())?;

    println!("Embedded Kafka broker (librdkafka mock cluster) listening on {bootstrap}\n");
    println!("Topics:");
    for topic in WORKBOOK_TOPICS {
        println!("  {:<18} {} partition(s)  {}", topic.name, topic.partitions, topic.purpose);
    }
    println!("\nIn another terminal:");
    println!("  cargo xtask lesson 02 --solution -- --no-produce      (finds this broker by itself)");
    println!("  kcat -b {bootstrap} -t user-events -P -k user-1        (any Kafka client works)");
    println!("  export KAFKA_BOOTSTRAP_SERVERS={bootstrap} WORKBOOK_BROKER_KIND=embedded");
    println!("\nIt keeps everything in memory; Ctrl-C stops it and forgets all.");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    let _ = std::fs::remove_file(&marker);
    println!("\nbroker stopped");
    Ok(())
}

fn marker_path() -> PathBuf {
    catalog::root().join("target").join("workbook").join("broker.json")
}

/// The address of a `cargo xtask broker` that is running and answering, if any.
pub fn running_hosted_broker() -> Option<String> {
    let text = std::fs::read_to_string(marker_path()).ok()?;
    let marker: serde_json::Value = serde_json::from_str(&text).ok()?;
    let bootstrap = marker["bootstrap"].as_str()?.to_string();
    let first = bootstrap.split(',').next()?.parse().ok()?;
    TcpStream::connect_timeout(&first, Duration::from_millis(300)).ok()?;
    Some(bootstrap)
}
