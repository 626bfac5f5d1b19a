//! Which Redis a program keeps its derived state in (lessons 07 and later), and connecting to it.
//!
//! [`Redis::resolve`] looks in this order:
//! 1. `REDIS_URL` — any Redis (`redis://host:port/db`; a bare `host:port` is accepted too).
//! 2. `WORKBOOK_BROKER=testcontainers` — a throw-away Redis container, next to the Kafka one.
//! 3. otherwise `redis://127.0.0.1:6379`, where a locally installed `redis-server` listens.
//!
//! [`Redis::connect`] pings before handing the connection out, so a Redis that is not running is reported at
//! once, with how to start one, instead of as a failed command in the middle of a lesson.
//!
//! Many tests share one Redis: each works under a namespace of its own (a key prefix made with
//! [`crate::topics::unique`]) and can clear it with [`delete_namespace`].

use std::time::Duration;

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;

/// Names the Redis to use; set it to use one other than the local default.
pub const REDIS_URL_ENV: &str = "REDIS_URL";
/// Where a locally installed Redis listens.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How to get a Redis, for error messages.
pub const HOW_TO_START: &str = "Start Redis with `redis-server --daemonize yes` (Debian/Ubuntu: \
     `apt-get install redis-server`; macOS: `brew install redis`) or `docker run -d -p 6379:6379 redis:7`, \
     or set REDIS_URL=redis://host:port to a Redis that runs.";

/// How long connecting and the first PING may take before Redis counts as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A resolved Redis: its URL and why this one was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    url: String,
    origin: String,
}

impl Redis {
    /// Picks the Redis from the environment (see the module docs). It does not connect yet.
    pub fn resolve() -> anyhow::Result<Redis> {
        if let Some(url) = std::env::var(REDIS_URL_ENV).ok().filter(|s| !s.trim().is_empty()) {
            return Ok(Redis::at(&url, REDIS_URL_ENV));
        }
        match std::env::var(crate::broker::BROKER_ENV).as_deref() {
            Ok("testcontainers") => Ok(Redis::at(&crate::containers::redis_url()?, "a Redis test container")),
            _ => Ok(Redis::at(DEFAULT_URL, "the default local Redis")),
        }
    }

    /// The Redis at `url` (with or without the `redis://` scheme), chosen because of `origin`.
    pub fn at(url: &str, origin: &str) -> Redis {
        let url = url.trim();
        let url = if url.contains("://") { url.to_string() } else { format!("redis://{url}") };
        Redis { url, origin: origin.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One line for humans: where, and why this one.
    pub fn describe(&self) -> String {
        format!("Redis at {} — {}", self.url, self.origin)
    }

    /// Opens a multiplexed connection (one socket that many tasks can share by cloning it) and checks that
    /// Redis answers a PING. The connection belongs to the tokio runtime that made it.
    pub async fn connect(&self) -> anyhow::Result<MultiplexedConnection> {
        let absent = |cause: String| {
            anyhow::anyhow!("no Redis answered at {} (from {}): {cause}.\n{HOW_TO_START}", self.url, self.origin)
        };
        let client = ::redis::Client::open(self.url.as_str()).map_err(|e| absent(e.to_string()))?;
        let attempt = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            let _: String = ::redis::cmd("PING").query_async(&mut connection).await?;
            Ok::<_, ::redis::RedisError>(connection)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(absent(e.to_string())),
            Err(_) => Err(absent(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }
}

/// Resolves the Redis from the environment and connects to it.
pub async fn connect() -> anyhow::Result<MultiplexedConnection> {
    Redis::resolve()?.connect().await
}

/// For tests: a connection to the resolved Redis, or a failed test that says how to start one.
pub async fn test_connection() -> MultiplexedConnection {
    connect().await.unwrap_or_else(|e| panic!("the tests need Redis: {e:#}"))
}

/// Deletes every key under `namespace` (keys that start with `namespace:`) and returns how many there were.
/// SCAN walks the keyspace in small steps, where KEYS would block a busy Redis for the whole walk.
pub async fn delete_namespace(connection: &mut MultiplexedConnection, namespace: &str) -> anyhow::Result<usize> {
    let keys = scan_namespace(connection, namespace).await?;
    if !keys.is_empty() {
        let _: usize = connection.del(&keys).await?;
    }
    Ok(keys.len())
}

/// Every key under `namespace`, sorted.
pub async fn scan_namespace(connection: &mut MultiplexedConnection, namespace: &str) -> anyhow::Result<Vec<String>> {
    let pattern = namespace_pattern(namespace);
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = scan_step(cursor, &pattern).query_async(connection).await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup(); // SCAN may return a key twice when the keyspace is rehashed during the walk
    Ok(keys)
}

/// The SCAN pattern of the keys under `namespace`. `*`, `?`, `[` and `\` are pattern characters to MATCH: they
/// are escaped so the namespace is taken literally.
fn namespace_pattern(namespace: &str) -> String {
    let mut pattern = String::with_capacity(namespace.len() + 2);
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":*");
    pattern
}

/// One step of a SCAN walk over `pattern`, from `cursor`.
fn scan_step(cursor: u64, pattern: &str) -> ::redis::Cmd {
    let mut command = ::redis::cmd("SCAN");
    command.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500);
    command
}

/// Where [`ClearOnDrop`] lists the namespaces in use, each scored with the second it was taken.
pub const SCRATCH_NAMESPACES_KEY: &str = "workbook:scratch-namespaces";

/// How long a listed namespace may live before any later [`ClearOnDrop::new`] deletes it: longer than any test
/// may run (the suite kills a test after 120 s by default).
pub const SCRATCH_NAMESPACE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Deletes the keys under a namespace when dropped, also when a test panics half-way: failed runs (a learner's
/// `todo!()`, a wrong answer the proofs try) leave nothing behind in a Redis that outlives them.
///
/// A process that is killed runs no `Drop` (the proofs stop a wrong answer's other tests once one has failed,
/// and a test that runs out of time is killed). So each guard also lists its namespace under
/// [`SCRATCH_NAMESPACES_KEY`], and every new guard first deletes the listed namespaces older than
/// [`SCRATCH_NAMESPACE_LIFETIME`]: what a killed test wrote lives until the next test run, no longer.
///
/// `Drop` cannot await, so this uses a blocking connection of its own for the few milliseconds a SCAN and a
/// DEL of a test's keys take. Failing to clean up is logged, never a panic (that would abort a panicking test).
pub struct ClearOnDrop {
    url: String,
    namespace: String,
}

impl ClearOnDrop {
    /// Lists `namespace` of the resolved Redis for deletion, deletes the namespaces abandoned by earlier runs,
    /// and clears `namespace` when dropped.
    pub fn new(namespace: impl Into<String>) -> anyhow::Result<ClearOnDrop> {
        let guard = ClearOnDrop { url: Redis::resolve()?.url, namespace: namespace.into() };
        if let Err(e) = guard.list_and_sweep() {
            tracing::warn!(namespace = %guard.namespace, "could not list the namespace for clean-up: {e}");
        }
        Ok(guard)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn connect(&self) -> ::redis::RedisResult<::redis::Connection> {
        ::redis::Client::open(self.url.as_str())?.get_connection_with_timeout(CONNECT_TIMEOUT)
    }

    fn list_and_sweep(&self) -> ::redis::RedisResult<()> {
        let mut connection = self.connect()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let _: () =
            ::redis::cmd("ZADD").arg(SCRATCH_NAMESPACES_KEY).arg(now).arg(&self.namespace).query(&mut connection)?;
        let abandoned: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(SCRATCH_NAMESPACES_KEY)
            .arg("-inf")
            .arg(now.saturating_sub(SCRATCH_NAMESPACE_LIFETIME.as_secs()))
            .query(&mut connection)?;
        for namespace in abandoned {
            clear_namespace(&mut connection, &namespace)?;
            let _: () = ::redis::cmd("ZREM").arg(SCRATCH_NAMESPACES_KEY).arg(&namespace).query(&mut connection)?;
        }
        Ok(())
    }

    fn clear(&self) -> ::redis::RedisResult<usize> {
        let mut connection = self.connect()?;
        let deleted = clear_namespace(&mut connection, &self.namespace)?;
        let _: () = ::redis::cmd("ZREM").arg(SCRATCH_NAMESPACES_KEY).arg(&self.namespace).query(&mut connection)?;
        Ok(deleted)
    }
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            tracing::warn!(namespace = %self.namespace, "could not delete the namespace's Redis keys: {e}");
        }
    }
}

/// Deletes every key under `namespace` over a blocking connection; returns how many there were.
fn clear_namespace(connection: &mut ::redis::Connection, namespace: &str) -> ::redis::RedisResult<usize> {
    let pattern = namespace_pattern(namespace);
    let (mut cursor, mut deleted) = (0u64, 0usize);
    loop {
        let (next, batch): (u64, Vec<String>) = scan_step(cursor, &pattern).query(connection)?;
        if !batch.is_empty() {
            deleted += ::redis::cmd("DEL").arg(&batch).query::<usize>(connection)?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_gets_the_redis_scheme() {
        assert_eq!(Redis::at("10.0.0.5:6380", "test").url(), "redis://10.0.0.5:6380");
        assert_eq!(Redis::at("rediss://cache:6379/2", "test").url(), "rediss://cache:6379/2");
    }

    #[tokio::test]
    async fn an_absent_redis_is_reported_with_how_to_start_one() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let error = Redis::at("127.0.0.1:1", "this test").connect().await.unwrap_err().to_string();
        assert!(error.contains("no Redis answered at redis://127.0.0.1:1"), "{error}");
        assert!(error.contains("redis-server"), "{error}");
    }
}
