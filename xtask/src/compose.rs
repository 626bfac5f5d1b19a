//! Real Kafka in Docker: `cargo xtask up`, `down` and `topics`, around `docker-compose.yml`.
//!
//! `up` starts the stack and returns only once Kafka answers a metadata request from this machine (the compose
//! healthcheck runs inside the container, so it cannot prove the host listener works). `topics` creates the
//! topics of `kit::topics::WORKBOOK_TOPICS` — the manifest `cargo xtask broker` also uses — on a real broker.
//! The tests at the bottom read `docker-compose.yml` and hold its Kafka settings to what the book promises.

use std::process::{Command, Stdio};

use anyhow::bail;

use crate::catalog;

/// Where `up` leaves Kafka for programs on this machine (the compose file's HOST listener).
#[cfg(any(feature = "brokers", test))]
pub const HOST_BOOTSTRAP: &str = "127.0.0.1:9092";

pub fn down() -> anyhow::Result<()> {
    // `--volumes`: the workbook's data is disposable, and a clean log makes the next `up` predictable.
    compose(&["down", "--volumes"])?;
    println!("stopped; Kafka's data is deleted");
    Ok(())
}

/// `up` and `topics` are Kafka clients: they exist in the build with the `brokers` feature (see main.rs).
#[cfg(feature = "brokers")]
mod clients {
    use std::time::{Duration, Instant};

    use anyhow::bail;
    use kit::broker::{Broker, BrokerKind};
    use kit::topics::WORKBOOK_TOPICS;

    use super::{HOST_BOOTSTRAP, compose};
    use crate::progress::spinner;

    /// How long `up` waits for Kafka to answer (the first `up` also pulls the images).
    const UP_TIMEOUT: Duration = Duration::from_secs(180);

    pub fn up() -> anyhow::Result<()> {
        compose(&["up", "--detach"])?;
        let spinner = spinner("waiting for Kafka to answer on 127.0.0.1:9092");
        let deadline = Instant::now() + UP_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            // Each attempt waits up to 10 s for metadata: that is the pacing of this loop.
            match Broker::connect(BrokerKind::External, HOST_BOOTSTRAP.into(), "docker compose".into()) {
                Ok(_) => {
                    spinner.finish_and_clear();
                    println!(
                        "Kafka is up at {HOST_BOOTSTRAP}; Kafka UI on http://127.0.0.1:8080, RabbitMQ on http://127.0.0.1:15672"
                    );
                    println!("Next: `cargo xtask topics`, then `export KAFKA_BOOTSTRAP_SERVERS={HOST_BOOTSTRAP}`.");
                    return Ok(());
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        spinner.finish_and_clear();
        bail!(
            "Kafka did not answer on {HOST_BOOTSTRAP} within {UP_TIMEOUT:?}: {last_error}\n\
             See what it says with `docker compose logs kafka`."
        )
    }

    /// Creates every manifest topic on the broker at `bootstrap` (default: `KAFKA_BOOTSTRAP_SERVERS`, else
    /// the compose stack's address).
    pub fn topics(bootstrap: Option<String>) -> anyhow::Result<()> {
        let bootstrap = bootstrap
            .or_else(|| std::env::var(kit::env::BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| HOST_BOOTSTRAP.to_string());
        let broker = Broker::connect(BrokerKind::External, bootstrap, "--bootstrap / KAFKA_BOOTSTRAP_SERVERS".into())?;
        println!("creating the workbook's topics on {}", broker.describe());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        for spec in WORKBOOK_TOPICS {
            runtime.block_on(broker.create_topic_spec(spec))?;
            let retention = match spec.retention_ms {
                Some(ms) if ms < 0 => "for ever".to_string(),
                Some(ms) => format!("{} d", ms / 86_400_000),
                None => "default".into(),
            };
            let retention = if spec.compacted { format!("{retention}, compacted") } else { retention };
            println!(
                "  {:<22} {} partition(s), retention {retention}, {} — {}",
                spec.name, spec.partitions, spec.compression, spec.purpose
            );
        }
        Ok(())
    }
}
#[cfg(feature = "brokers")]
pub use clients::{topics, up};

/// Runs `docker compose ARGS` on the workbook's compose file, with a clear message when Docker is missing.
fn compose(args: &[&str]) -> anyhow::Result<()> {
    // Ask first whether the compose plugin is there: without it, `docker compose --file …` fails with a
    // puzzling "unknown flag" from the bare docker client.
    let plugin = Command::new("docker").args(["compose", "version"]).stdin(Stdio::null()).output();
    if !plugin.is_ok_and(|o| o.status.success()) {
        bail!(
            "`cargo xtask up`/`down` need Docker with the compose plugin (`docker compose version` did not answer). \
             Install Docker, or keep using the embedded broker: the lessons use it when KAFKA_BOOTSTRAP_SERVERS is unset."
        );
    }
    let file = catalog::root().join("docker-compose.yml");
    let status = Command::new("docker")
        .arg("compose")
        .arg("--file")
        .arg(&file)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run `docker` ({e}). `cargo xtask up` needs Docker with the compose plugin. \
                 Nothing to start for the embedded broker: the lessons use it when KAFKA_BOOTSTRAP_SERVERS is unset."
            )
        })?;
    if !status.success() {
        bail!("`docker compose {}` failed ({status}); is the Docker engine running (`docker info`)?", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_yaml_ng::Value;

    use super::*;

    fn compose_file() -> Value {
        let text = std::fs::read_to_string(catalog::root().join("docker-compose.yml")).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn kafka_env(compose: &Value) -> BTreeMap<String, String> {
        let env = compose["services"]["kafka"]["environment"].as_mapping().expect("kafka has an environment map");
        env.iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), value)
            })
            .collect()
    }

    #[test]
    fn kafka_runs_as_a_single_kraft_node() {
        let compose = compose_file();
        let env = kafka_env(&compose);
        let image = compose["services"]["kafka"]["image"].as_str().unwrap();
        assert_eq!(image, format!("apache/kafka:{}", kit::containers::KAFKA_TAG), "the image testcontainers uses too");
        assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
        assert_eq!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"], format!("{}@kafka:9093", env["KAFKA_NODE_ID"]));
        assert!(!env.contains_key("KAFKA_ZOOKEEPER_CONNECT"), "KRaft: no ZooKeeper");
    }

    #[test]
    fn kafka_has_a_listener_for_the_host_and_one_for_containers() {
        let env = kafka_env(&compose_file());
        let advertised = &env["KAFKA_ADVERTISED_LISTENERS"];
        assert!(advertised.contains(&format!("://{HOST_BOOTSTRAP}")), "programs on this machine: {advertised}");
        assert!(advertised.contains("://kafka:"), "other containers reach the broker by service name: {advertised}");
        for listener in env["KAFKA_LISTENERS"].split(',') {
            let name = listener.split("://").next().unwrap();
            assert!(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].contains(&format!("{name}:")), "{name} has a protocol");
        }
    }

    #[test]
    fn internal_topics_fit_on_one_broker_and_groups_start_at_once() {
        let env = kafka_env(&compose_file());
        for (name, value) in [
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
            ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
        ] {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
        // The test container must run with the same settings as the compose stack.
        for (name, value) in kit::containers::KAFKA_EXTRA_ENV {
            assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{name} as in kit::containers");
        }
    }

    #[test]
    fn the_jvm_broker_of_xtask_kafka_runs_with_the_compose_settings() {
        // kit::jvm_kafka's single-broker settings are the source; here each must appear in the compose file as
        // Docker's apache/kafka image spells it (`offsets.topic.replication.factor` → KAFKA_OFFSETS_TOPIC_…).
        let env = kafka_env(&compose_file());
        for (key, value) in kit::jvm_kafka::single_broker_settings() {
            let name = format!("KAFKA_{}", key.replace('.', "_").to_uppercase());
            assert_eq!(env.get(&name), Some(&value), "{name} in docker-compose.yml, as `{key}` for xtask kafka");
        }
        let compose = compose_file();
        let image = compose["services"]["kafka"]["image"].as_str().unwrap();
        assert_eq!(image, format!("apache/kafka:{}", kit::jvm_kafka::KAFKA_VERSION), "the same Kafka version");
    }

    #[test]
    fn every_service_has_a_healthcheck_and_ports_only_on_loopback() {
        let compose = compose_file();
        let services = compose["services"].as_mapping().unwrap();
        let names: Vec<_> = services.keys().filter_map(Value::as_str).collect();
        for wanted in ["kafka", "kafka-ui", "redis", "rabbitmq"] {
            assert!(names.contains(&wanted), "service {wanted} is missing");
        }
        for (name, service) in services {
            let name = name.as_str().unwrap();
            assert!(service["healthcheck"]["test"].is_sequence(), "{name} has no healthcheck");
            for port in service["ports"].as_sequence().into_iter().flatten() {
                let port = port.as_str().unwrap_or_default();
                assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port:?} beyond loopback");
            }
        }
        assert!(compose["services"]["rabbitmq"]["image"].as_str().unwrap().contains("management"));
        assert!(compose["services"]["kafka-ui"]["image"].as_str().unwrap().starts_with("kafbat/kafka-ui:"));
    }
}
