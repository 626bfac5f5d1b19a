//! Brokers in containers, for `WORKBOOK_BROKER=testcontainers`: real Apache Kafka (and Redis) in Docker,
//! started once per process and shared by every test in it.
//!
//! The Docker client (testcontainers and its HTTP stack, a third of kit's dependencies) is built only with kit's
//! `testcontainers` feature: `cargo test --features kit/testcontainers`. Without it, [`kafka_bootstrap`] and
//! [`redis_url`] say how to turn it on. The pinned image tags and settings below are always there: `docker-compose.yml`, the
//! JVM broker of `cargo xtask kafka` and their tests share them.
//!
//! # How a container lives
//!
//! Each container is owned by a thread of its own that runs a small tokio runtime: [`kafka_bootstrap`] and
//! [`redis_url`] may be called from plain tests and from inside `#[tokio::test]` alike, and blocking on a runtime from inside
//! another one would panic. The first caller starts the container and waits for it; later callers get the same
//! address. Statics are never dropped, so an `atexit` hook asks each owner thread to remove its container when
//! the test process ends; a process that is killed leaves the container behind (`docker ps` shows it with the
//! label [`LABEL`]).
//!
//! # Why not testcontainers-modules' defaults
//!
//! `kafka::apache::Kafka` sets the replication factor of `__consumer_offsets` to 1 but not that of
//! `__transaction_state`, so on a single broker every transactional producer hangs in `init_transactions`.
//! `kafka_image` adds those settings (the same as `docker-compose.yml`); a unit test keeps them there.

/// The apache/kafka tag the workbook tests against (the same as `docker-compose.yml`).
pub const KAFKA_TAG: &str = "4.1.1";
/// The Redis tag (the same as `docker-compose.yml`).
pub const REDIS_TAG: &str = "7.4-alpine";
/// The RabbitMQ tag (the same as `docker-compose.yml`): 4.x, so streams (lesson 05) are there.
pub const RABBITMQ_TAG: &str = "4.1-management";
/// A label on every container the workbook starts, to find leftovers: `docker ps --filter label=…`.
pub const LABEL: &str = "org.kafka-workbook.test";

// ANCHOR: extra_env
/// Settings the testcontainers Kafka module leaves out and the workbook needs on one broker.
pub const KAFKA_EXTRA_ENV: &[(&str, &str)] = &[
    // Transactions (lesson 09) need `__transaction_state`, which defaults to 3 replicas and an ISR of 2.
    ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
    ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
    // A group's first rebalance starts at once instead of after 3 s.
    ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
];
// ANCHOR_END: extra_env

/// Starts (once per process) an apache/kafka container and returns its bootstrap address; `kit::Broker`
/// wraps it (this module knows Docker, not Kafka clients).
pub fn kafka_bootstrap() -> anyhow::Result<String> {
    #[cfg(feature = "testcontainers")]
    return docker::kafka_bootstrap();
    #[cfg(not(feature = "testcontainers"))]
    anyhow::bail!("{WITHOUT_FEATURE}")
}

/// The URL of a Redis container started once per process (for lesson 07 and later under
/// `WORKBOOK_BROKER=testcontainers`).
pub fn redis_url() -> anyhow::Result<String> {
    #[cfg(feature = "testcontainers")]
    return docker::redis_url();
    #[cfg(not(feature = "testcontainers"))]
    anyhow::bail!("{WITHOUT_FEATURE}")
}

/// The AMQP URL of a RabbitMQ container started once per process (the RabbitMQ side of lessons 04, 05, 08 and 10
/// under `WORKBOOK_BROKER=testcontainers`).
pub fn rabbitmq_url() -> anyhow::Result<String> {
    #[cfg(feature = "testcontainers")]
    return docker::rabbitmq_url();
    #[cfg(not(feature = "testcontainers"))]
    anyhow::bail!("{WITHOUT_FEATURE}")
}

/// What `WORKBOOK_BROKER=testcontainers` says when kit was built without Docker support.
#[cfg(not(feature = "testcontainers"))]
const WITHOUT_FEATURE: &str = "WORKBOOK_BROKER=testcontainers needs kit's `testcontainers` feature (it builds the \
     Docker client): add `--features kit/testcontainers` to the cargo command, e.g. `WORKBOOK_BROKER=testcontainers \
     cargo test -p solution-09 --features kit/testcontainers`. Without Docker, WORKBOOK_BROKER=kafka runs real Kafka \
     on the JVM.";

#[cfg(feature = "testcontainers")]
mod docker {
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use testcontainers_modules::kafka::apache::{self, KAFKA_PORT};
    use testcontainers_modules::rabbitmq::RabbitMq;
    use testcontainers_modules::redis::{REDIS_PORT, Redis};
    use testcontainers_modules::testcontainers::core::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ContainerRequest, Image};

    use super::{KAFKA_EXTRA_ENV, KAFKA_TAG, LABEL, RABBITMQ_TAG, REDIS_TAG};

    /// How long a container may take to start (the first run also pulls the image).
    const START_TIMEOUT: Duration = Duration::from_secs(300);
    /// How long the exit hook waits for a container to be removed.
    const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

    pub(super) fn kafka_bootstrap() -> anyhow::Result<String> {
        static KAFKA: OnceLock<Result<String, String>> = OnceLock::new();
        KAFKA
            .get_or_init(|| {
                Owned::start("Kafka", kafka_image(), |host, port| format!("{host}:{port}"), KAFKA_PORT.as_u16())
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The URL of a Redis container started once per process (for lesson 07 and later under
    /// `WORKBOOK_BROKER=testcontainers`).
    pub(super) fn redis_url() -> anyhow::Result<String> {
        static REDIS: OnceLock<Result<String, String>> = OnceLock::new();
        REDIS
            .get_or_init(|| {
                let image = Redis::default().with_tag(REDIS_TAG).with_label(LABEL, "redis");
                Owned::start("Redis", image, |host, port| format!("redis://{host}:{port}"), REDIS_PORT)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The URL of a RabbitMQ container started once per process. The module's image waits for RabbitMQ's
    /// "Server startup complete" line; the tag is the compose file's, so streams are there.
    pub(super) fn rabbitmq_url() -> anyhow::Result<String> {
        static RABBITMQ: OnceLock<Result<String, String>> = OnceLock::new();
        RABBITMQ
            .get_or_init(|| {
                let image = RabbitMq::default().with_tag(RABBITMQ_TAG).with_label(LABEL, "rabbitmq");
                Owned::start("RabbitMQ", image, |host, port| format!("amqp://{host}:{port}/%2f"), 5672)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The Kafka container as the workbook starts it: the JVM image (the one `docker-compose.yml` runs), pinned,
    /// with the single-broker settings of [`KAFKA_EXTRA_ENV`].
    pub fn kafka_image() -> ContainerRequest<apache::Kafka> {
        let mut request = apache::Kafka::default().with_jvm_image().with_tag(KAFKA_TAG).with_label(LABEL, "kafka");
        for (name, value) in KAFKA_EXTRA_ENV {
            request = request.with_env_var(*name, *value);
        }
        request
    }

    /// The message for a container that would not start, which is nearly always "no Docker here".
    fn explain_start_failure(what: &str, error: &dyn std::fmt::Display) -> String {
        format!(
            "WORKBOOK_BROKER=testcontainers could not start {what} in Docker: {error}.\n\
             It needs a running Docker engine (check with `docker info`; DOCKER_HOST names a remote one). \
             Without Docker, unset WORKBOOK_BROKER to use the embedded broker, or run real Kafka elsewhere and set \
             KAFKA_BOOTSTRAP_SERVERS (and REDIS_URL)."
        )
    }

    /// The handle the exit hook uses to ask an owner thread to remove its container.
    struct Owner {
        what: &'static str,
        remove: mpsc::Sender<()>,
        removed: mpsc::Receiver<()>,
    }

    /// Every container this process started, removed by [`remove_all_at_exit`].
    static OWNERS: Mutex<Vec<Owner>> = Mutex::new(Vec::new());

    /// A container owned by a thread of its own (see the module docs).
    struct Owned;

    impl Owned {
        /// Starts `request` on a new owner thread and returns `address(host, mapped_port)` once it is ready.
        fn start<I: Image + 'static>(
            what: &'static str,
            request: impl Into<ContainerRequest<I>> + Send + 'static,
            address: fn(&str, u16) -> String,
            port: u16,
        ) -> anyhow::Result<String> {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
            let (remove_tx, remove_rx) = mpsc::channel::<()>();
            let (removed_tx, removed_rx) = mpsc::channel::<()>();
            eprintln!("starting {what} in Docker for WORKBOOK_BROKER=testcontainers (the first run pulls the image)…");
            std::thread::Builder::new().name(format!("testcontainer-{what}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready_tx.send(Err(format!("no tokio runtime for the container: {e}")))),
                };
                let started = runtime.block_on(async {
                    let container: ContainerAsync<I> =
                        request.into().start().await.map_err(|e| explain_start_failure(what, &e))?;
                    let host = container.get_host().await.map_err(|e| explain_start_failure(what, &e))?;
                    let mapped =
                        container.get_host_port_ipv4(port).await.map_err(|e| explain_start_failure(what, &e))?;
                    Ok::<_, String>((container, address(&host.to_string(), mapped)))
                });
                let container = match started {
                    Ok((container, address)) => {
                        let _ = ready_tx.send(Ok(address));
                        container
                    }
                    Err(message) => return drop(ready_tx.send(Err(message))),
                };
                // Park until the exit hook (or a closed channel) says the process is ending, then remove.
                let _ = remove_rx.recv();
                let _ = runtime.block_on(container.rm());
                let _ = removed_tx.send(());
            })?;
            let address = ready_rx
                .recv_timeout(START_TIMEOUT)
                .map_err(|_| anyhow::anyhow!("{what} did not start in Docker within {START_TIMEOUT:?}"))?
                .map_err(anyhow::Error::msg)?;
            register_exit_hook();
            OWNERS.lock().unwrap_or_else(|e| e.into_inner()).push(Owner {
                what,
                remove: remove_tx,
                removed: removed_rx,
            });
            eprintln!("{what} is up at {address}");
            Ok(address)
        }
    }

    fn register_exit_hook() {
        static REGISTERED: OnceLock<()> = OnceLock::new();
        REGISTERED.get_or_init(|| {
            // SAFETY: `atexit` only stores the function pointer; the function is `extern "C"` and never unwinds.
            unsafe { libc::atexit(remove_all_at_exit) };
        });
    }

    /// Runs when the process exits normally (as a test binary does): removes every container it started.
    extern "C" fn remove_all_at_exit() {
        let owners = std::mem::take(&mut *OWNERS.lock().unwrap_or_else(|e| e.into_inner()));
        for owner in &owners {
            let _ = owner.remove.send(());
        }
        for owner in owners {
            if owner.removed.recv_timeout(REMOVE_TIMEOUT).is_err() {
                eprintln!(
                    "the {} test container was not removed; find it with `docker ps --filter label={LABEL}`",
                    owner.what
                );
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn env_of(request: &ContainerRequest<apache::Kafka>) -> std::collections::BTreeMap<String, String> {
            request.env_vars().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        }

        #[test]
        fn the_kafka_container_can_run_transactions_on_one_broker() {
            let request = kafka_image();
            let env = env_of(&request);
            for (name, value) in KAFKA_EXTRA_ENV {
                assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{name} must be set on the container");
            }
            assert_eq!(env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR").map(String::as_str), Some("1"));
            assert_eq!(request.image().name(), "apache/kafka", "the JVM image, as in docker-compose.yml");
            assert_eq!(request.descriptor(), format!("apache/kafka:{KAFKA_TAG}"));
        }

        #[test]
        fn the_container_tags_match_docker_compose() {
            let compose = include_str!("../../docker-compose.yml");
            assert!(
                compose.contains(&format!("image: apache/kafka:{KAFKA_TAG}")),
                "apache/kafka:{KAFKA_TAG} in compose"
            );
            assert!(compose.contains(&format!("image: redis:{REDIS_TAG}")), "redis:{REDIS_TAG} in compose");
            assert!(compose.contains(&format!("image: rabbitmq:{RABBITMQ_TAG}")), "rabbitmq:{RABBITMQ_TAG} in compose");
        }

        #[test]
        fn a_failed_start_says_how_to_do_without_docker() {
            let message = explain_start_failure("Kafka", &"connection refused");
            assert!(message.contains("needs a running Docker engine"));
            assert!(message.contains("unset WORKBOOK_BROKER"));
            assert!(message.contains("KAFKA_BOOTSTRAP_SERVERS"));
        }
    }
}
