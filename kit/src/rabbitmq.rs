//! Which RabbitMQ the comparison talks to (lessons 04, 05, 08 and 10 with `--rabbitmq`, their RabbitMQ tests,
//! `cargo xtask compare`), and connecting to it with lapin.
//!
//! [`RabbitMq::resolve`] looks in this order, as [`crate::redis`] does:
//! 1. `RABBITMQ_URL` — any RabbitMQ (`amqp://user:pass@host:port/vhost`; a bare `host:port` is accepted too).
//! 2. `WORKBOOK_BROKER=testcontainers` — a throw-away RabbitMQ container (testcontainers' RabbitMQ module).
//! 3. otherwise `amqp://127.0.0.1:5672/%2f`, where a locally installed `rabbitmq-server` listens (user `guest`,
//!    which RabbitMQ only lets in from loopback).
//!
//! [`RabbitMq::connect`] opens the AMQP connection within a deadline, so a RabbitMQ that is not running is
//! reported at once, with how to start one, instead of as a hang in the middle of a lesson.
//!
//! Many tests share one RabbitMQ (one virtual host): each declares queues and exchanges under names of its own
//! ([`crate::topics::unique`]) and deletes them when it is done ([`delete_queues`], [`delete_exchanges`]).
//! Queues a test forgets are declared with a TTL of their own ([`SCRATCH_QUEUE_TTL`]) where it matters.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};

/// Names the RabbitMQ to use; set it to use one other than the local default.
pub const RABBITMQ_URL_ENV: &str = "RABBITMQ_URL";
/// Where a locally installed RabbitMQ listens (the default virtual host is `/`, written `%2f`).
pub const DEFAULT_URL: &str = "amqp://127.0.0.1:5672/%2f";
/// How to get a RabbitMQ, for error messages.
pub const HOW_TO_START: &str = "Start RabbitMQ with `rabbitmq-server -detached` (Debian/Ubuntu: `apt-get install \
     rabbitmq-server`; macOS: `brew install rabbitmq`) or `docker run -d -p 5672:5672 rabbitmq:4.1`, or set \
     RABBITMQ_URL=amqp://host:port/%2f to a RabbitMQ that runs. With Docker, WORKBOOK_BROKER=testcontainers \
     starts one for the tests.";
/// The `x-expires` argument tests give their queues: a queue nobody uses for this long deletes itself, so a test
/// killed half-way leaves nothing behind for long.
pub const SCRATCH_QUEUE_TTL: Duration = Duration::from_secs(600);

/// How long connecting may take before RabbitMQ counts as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A resolved RabbitMQ: its URL and why this one was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMq {
    url: String,
    origin: String,
}

impl RabbitMq {
    /// Picks the RabbitMQ from the environment (see the module docs). It does not connect yet.
    pub fn resolve() -> anyhow::Result<RabbitMq> {
        if let Some(url) = std::env::var(RABBITMQ_URL_ENV).ok().filter(|s| !s.trim().is_empty()) {
            return Ok(RabbitMq::at(&url, RABBITMQ_URL_ENV));
        }
        match std::env::var(crate::broker::BROKER_ENV).as_deref() {
            Ok("testcontainers") => Ok(RabbitMq::at(&crate::containers::rabbitmq_url()?, "a RabbitMQ test container")),
            _ => Ok(RabbitMq::at(DEFAULT_URL, "the default local RabbitMQ")),
        }
    }

    /// The RabbitMQ at `url` (with or without the `amqp://` scheme and the virtual host), chosen because of
    /// `origin`.
    pub fn at(url: &str, origin: &str) -> RabbitMq {
        let url = url.trim();
        let url = if url.contains("://") { url.to_string() } else { format!("amqp://{url}/%2f") };
        RabbitMq { url, origin: origin.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One line for humans: where, and why this one.
    pub fn describe(&self) -> String {
        format!("RabbitMQ at {} — {}", self.url, self.origin)
    }

    /// Opens an AMQP connection (many channels can share it). lapin drives the connection on the tokio runtime
    /// of the caller.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let absent = |cause: String| {
            anyhow::anyhow!("no RabbitMQ answered at {} (from {}): {cause}.\n{HOW_TO_START}", self.url, self.origin)
        };
        let attempt = Connection::connect(&self.url, ConnectionProperties::default());
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(absent(e.to_string())),
            Err(_) => Err(absent(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }
}

/// Resolves the RabbitMQ from the environment and connects to it.
pub async fn connect() -> anyhow::Result<Connection> {
    RabbitMq::resolve()?.connect().await
}

/// For tests: a connection to the resolved RabbitMQ, or a failed test that says how to start one.
pub async fn test_connection() -> Connection {
    connect().await.unwrap_or_else(|e| panic!("the RabbitMQ tests need RabbitMQ: {e:#}"))
}

/// Deletes the queues named (those that exist; a missing one is not an error), with whatever they hold.
pub async fn delete_queues(channel: &Channel, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        channel.queue_delete((*name).into(), QueueDeleteOptions::default()).await?;
    }
    Ok(())
}

/// Deletes the exchanges named (those that exist).
pub async fn delete_exchanges(channel: &Channel, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        channel.exchange_delete((*name).into(), ExchangeDeleteOptions::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_gets_the_scheme_and_the_default_virtual_host() {
        assert_eq!(RabbitMq::at("10.0.0.1:5673", "test").url(), "amqp://10.0.0.1:5673/%2f");
        assert_eq!(RabbitMq::at(" amqp://u:p@h:1/v ", "test").url(), "amqp://u:p@h:1/v");
    }

    #[tokio::test]
    async fn a_missing_rabbitmq_is_reported_with_how_to_start_one() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let error = RabbitMq::at("127.0.0.1:1", "this test").connect().await.expect_err("nothing listens on port 1");
        let message = format!("{error:#}");
        assert!(message.contains("no RabbitMQ answered at amqp://127.0.0.1:1/%2f"), "{message}");
        assert!(message.contains("rabbitmq-server -detached"), "{message}");
    }
}
