//! A relay between a test's Redis client and the real Redis that the test can cut after a chosen number of
//! further commands: the crash of a worker between two Redis commands, made on purpose and at a known place.
//!
//! Lesson 07's rule is "the mark and the effect in ONE atomic step, so no crash can fall between them". Two
//! round trips (`SET NX`, then `HINCRBY`) are safe against concurrent workers — only one wins the `SET NX` — yet
//! a crash after the first one leaves the event marked and never counted. Only a crash at that exact point shows
//! it, so the tests connect through a [`RedisLink`], call [`RedisLink::sever_after`] with 0, 1, 2, … and check
//! that a redelivery still counts the event exactly once whichever command the cut fell before.
//!
//! The relay reads the client's commands (RESP arrays of bulk strings, which every Redis client sends) and
//! forwards whole commands only. Once the allowance is spent, the next command is not forwarded: the relay
//! closes its side towards Redis *after* Redis has answered what it was sent (so a forwarded command surely ran),
//! and drops the client's connection without those answers, as a crash would lose them.
//!
//! Written by hand rather than taken from a crate: a generic TCP chaos proxy cuts by bytes or time, not "after
//! the N-th command", and knowing the command boundaries is the whole point here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forward every command (the state before [`RedisLink::sever_after`] is called).
const UNLIMITED: usize = usize::MAX;

/// How long the relay waits for Redis to answer the commands it forwarded before the cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A local address that relays to Redis until cut. One client connection at a time is what the tests need;
/// each accepted connection is relayed on its own task.
pub struct RedisLink {
    /// The URL a client connects to: the original one, with the relay's address.
    url: String,
    /// Commands still allowed through; `UNLIMITED` until `sever_after` is called.
    allowance: Arc<AtomicUsize>,
    /// Commands forwarded so far, over every connection.
    forwarded: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl RedisLink {
    /// Starts relaying to the Redis at `redis_url` (`redis://[user:pass@]host:port[/db]`) from a free port on
    /// 127.0.0.1, or fails the test.
    pub async fn start(redis_url: &str) -> RedisLink {
        let upstream =
            host_port(redis_url).unwrap_or_else(|| panic!("the Redis URL {redis_url} names no host:port to relay to"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port for the Redis relay");
        let port = listener.local_addr().expect("the relay's address").port();
        // The same credentials and database, through the relay's address.
        let url = redis_url.replacen(&upstream, &format!("127.0.0.1:{port}"), 1);
        let url = if url.contains(&format!("127.0.0.1:{port}")) { url } else { format!("redis://127.0.0.1:{port}") };
        RedisLink::serve(listener, url, upstream)
    }

    fn serve(listener: TcpListener, url: String, upstream: String) -> RedisLink {
        let allowance = Arc::new(AtomicUsize::new(UNLIMITED));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (allowance_, forwarded_) = (allowance.clone(), forwarded.clone());
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, allowance, forwarded) = (upstream.clone(), allowance_.clone(), forwarded_.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, allowance, forwarded).await;
                    }
                });
            }
        });
        RedisLink { url, allowance, forwarded, accept_loop }
    }

    /// A `redis://` URL that reaches Redis through this relay.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, let `commands` more commands through, then cut every connection at the next one.
    pub fn sever_after(&self, commands: usize) {
        self.allowance.store(commands, Ordering::SeqCst);
    }

    /// How many commands reached Redis through this relay so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for RedisLink {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// The `host:port` of a `redis://[user:pass@]host:port[/db]` URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    Some(if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:6379") })
}

/// Relays one connection until the client leaves or the allowance runs out.
async fn relay(client: TcpStream, server: TcpStream, allowance: Arc<AtomicUsize>, forwarded: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Answers flow back untouched until the cut; after it, Redis's last answers are read and dropped.
    let cut = Arc::new(AtomicBool::new(false));
    let cut_ = cut.clone();
    let answers = tokio::spawn(async move {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(read @ 1..) = server_read.read(&mut chunk).await {
            if !cut_.load(Ordering::SeqCst) && client_write.write_all(&chunk[..read]).await.is_err() {
                break;
            }
        }
        // Dropping `client_write` here closes the client's side: it sees its connection end.
    });

    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    'read: loop {
        let read = match client_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break 'read,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        // Forward each whole command the allowance covers; the first one it does not cover is the cut.
        while let Some(length) = command_length(&pending) {
            let allowed = allowance
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                    UNLIMITED => Some(UNLIMITED),
                    0 => None,
                    left => Some(left - 1),
                })
                .is_ok();
            if !allowed {
                cut.store(true, Ordering::SeqCst);
                break 'read;
            }
            if server_write.write_all(&pending[..length]).await.is_err() {
                break 'read;
            }
            forwarded.fetch_add(1, Ordering::SeqCst);
            pending.drain(..length);
        }
    }
    // Redis sees the end of its input once it has run what it was sent, answers it and closes: only then does
    // the client's side close, so a forwarded command has surely run when the client learns of the cut.
    let _ = server_write.shutdown().await;
    let mut answers = answers;
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut answers).await.is_err() {
        answers.abort();
    }
}

/// The length of the first whole command in `buffer` (a RESP array of bulk strings), or `None` while it is
/// incomplete. Anything that is not such an array (inline commands, which clients do not send) counts as one
/// command per line.
fn command_length(buffer: &[u8]) -> Option<usize> {
    let line_end = |from: usize| buffer.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|i| from + i);
    let header_end = line_end(0)?;
    if buffer.first() != Some(&b'*') {
        return Some(header_end + 2);
    }
    let count: usize = std::str::from_utf8(&buffer[1..header_end]).ok()?.parse().ok()?;
    let mut at = header_end + 2;
    for _ in 0..count {
        let end = line_end(at)?;
        let length: usize = std::str::from_utf8(buffer.get(at + 1..end)?).ok()?.parse().ok()?;
        at = end + 2 + length + 2;
        if at > buffer.len() {
            return None;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_commands_are_measured_and_partial_ones_wait() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n";
        assert_eq!(command_length(set), Some(set.len()));
        let mut two = set.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(command_length(&two), Some(set.len()));
        for cut in 0..set.len() {
            assert_eq!(command_length(&set[..cut]), None, "{cut} bytes are not a whole command");
        }
        assert_eq!(command_length(b"PING\r\n"), Some(6));
    }

    #[test]
    fn the_upstream_address_comes_from_the_url() {
        assert_eq!(host_port("redis://127.0.0.1:6379").as_deref(), Some("127.0.0.1:6379"));
        assert_eq!(host_port("redis://user:secret@cache:6380/2").as_deref(), Some("cache:6380"));
        assert_eq!(host_port("redis://cache").as_deref(), Some("cache:6379"));
    }
}
