//! The workload both brokers get, and the message format: every message starts with its number and its send time,
//! so a consumer can tell which message it holds, in which order, and how long it took to arrive.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How much of everything a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Messages per throughput run.
    pub messages: u64,
    /// Bytes per message (at least [`HEADER_BYTES`]).
    pub size: usize,
    /// Messages each broker takes (written and read, not measured) before the measured runs.
    pub warmup: u64,
    /// Messages per second in the latency runs, and for how long.
    pub latency_rate: u64,
    pub latency_duration: Duration,
    pub crash: CrashPlan,
    /// Messages written, read and settled, then read again.
    pub replay: u64,
}

/// The consumer crash: `total` messages in the topic or queue; the first consumer handles `handled` of them,
/// settling (commit, ack) each right after handling it except the last `unsettled`, and dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPlan {
    pub total: u64,
    pub handled: u64,
    pub unsettled: u64,
    /// RabbitMQ's prefetch for the crashing consumer: how many it may hold unacknowledged.
    pub prefetch: u16,
}

impl CrashPlan {
    pub fn settled(&self) -> u64 {
        self.handled - self.unsettled
    }
}

impl Workload {
    /// The book's figures: about a minute and a half on two cores.
    pub fn full(messages: Option<u64>, size: usize) -> Workload {
        let messages = messages.unwrap_or(100_000);
        Workload {
            messages,
            size,
            warmup: (messages / 5).clamp(1_000, 20_000),
            latency_rate: 1_000,
            latency_duration: Duration::from_secs(10),
            crash: CrashPlan { total: 100, handled: 60, unsettled: 5, prefetch: 10 },
            replay: 1_000,
        }
    }

    /// For CI: every scenario, small, so the whole command takes well under a minute once built.
    pub fn quick(messages: Option<u64>, size: usize) -> Workload {
        let messages = messages.unwrap_or(5_000);
        Workload {
            messages,
            size,
            warmup: (messages / 5).clamp(200, 2_000),
            latency_rate: 500,
            latency_duration: Duration::from_secs(2),
            crash: CrashPlan { total: 40, handled: 20, unsettled: 3, prefetch: 5 },
            replay: 200,
        }
    }

    /// Messages per latency run.
    pub fn latency_messages(&self) -> u64 {
        (self.latency_rate as f64 * self.latency_duration.as_secs_f64()).round() as u64
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} messages of {} bytes per throughput run, one producer and one consumer, one partition / one queue; \
             latency at {} msg/s for {} s; a consumer crash after handling {} of {} messages ({} unsettled); {} \
             messages read again; a warm-up of {} messages per broker first",
            crate::report::thousands(self.messages),
            self.size,
            crate::report::thousands(self.latency_rate),
            self.latency_duration.as_secs_f64(),
            self.crash.handled,
            self.crash.total,
            self.crash.unsettled,
            crate::report::thousands(self.replay),
            crate::report::thousands(self.warmup),
        )
    }
}

/// Every payload starts with its sequence number and its send time (little-endian u64 each).
pub const HEADER_BYTES: usize = 16;

/// A payload of `size` bytes (at least the header) for message `seq` sent at `sent_nanos` ([`now_nanos`]).
pub fn payload(seq: u64, sent_nanos: u64, size: usize) -> Vec<u8> {
    let mut bytes = vec![b'x'; size.max(HEADER_BYTES)];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    bytes[8..16].copy_from_slice(&sent_nanos.to_le_bytes());
    bytes
}

/// (sequence number, send time) of a payload written by [`payload`]; `None` for anything shorter.
pub fn read_header(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// Nanoseconds on this process's monotonic clock. Producer and consumer run in this one process, so their clocks
/// agree exactly: no clock skew enters the latencies.
pub fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Microseconds since `sent_nanos`, for the latency histogram (at least 1: the histogram starts at 1 µs).
pub fn micros_since(sent_nanos: u64) -> u64 {
    (now_nanos().saturating_sub(sent_nanos) / 1_000).max(1)
}

/// Whether the numbers arrived in ascending order.
pub fn ascending(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_number_and_send_time_and_has_the_size_asked() {
        let bytes = payload(42, 123_456_789, 1024);
        assert_eq!(bytes.len(), 1024);
        assert_eq!(read_header(&bytes), Some((42, 123_456_789)));
        assert_eq!(payload(1, 2, 4).len(), HEADER_BYTES, "never shorter than its header");
        assert_eq!(read_header(b"short"), None);
    }

    #[test]
    fn the_quick_workload_is_smaller_in_every_scenario() {
        let (full, quick) = (Workload::full(None, 1024), Workload::quick(None, 1024));
        assert!(quick.messages < full.messages && quick.replay < full.replay && quick.crash.total < full.crash.total);
        assert!(quick.latency_messages() < full.latency_messages());
        assert_eq!(full.latency_messages(), 10_000);
        for plan in [full.crash, quick.crash] {
            assert!(plan.unsettled < plan.handled && plan.handled < plan.total, "{plan:?}");
            assert!(u64::from(plan.prefetch) > plan.unsettled, "the crashing consumer holds every unsettled message");
        }
    }

    #[test]
    fn order_is_checked_on_the_numbers() {
        assert!(ascending(&[3, 4, 9]));
        assert!(!ascending(&[3, 9, 4]));
        assert!(ascending(&[]));
    }
}
