//! W3C Trace Context over Kafka: the `traceparent` header a producer adds to a record and a consumer reads back,
//! so that one order's work in several services is one trace.
//!
//! The header is W3C's (<https://www.w3.org/TR/trace-context/>), version `00`:
//! `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`, lower-case. The same text goes in an HTTP header
//! or a Kafka record header, so any OpenTelemetry SDK (Java's, Go's, the `opentelemetry` crate's
//! `TraceContextPropagator`) reads what this lesson writes and the other way round. The lesson writes the
//! parsing by hand: it is a few rules, and they are the lesson.

use std::fmt;

/// The record header that carries the trace, named as W3C names it.
pub const TRACEPARENT: &str = "traceparent";

/// The `sampled` flag: the caller decided to record this trace. A new trace here is always sampled.
pub const SAMPLED: u8 = 0x01;

// ANCHOR: traceparent
/// A `traceparent` as it came on the wire: the trace, the span of the sender (the receiver's parent) and the
/// sender's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}
// ANCHOR_END: traceparent

// ANCHOR: span_context
/// The identity of one span: its trace, its own id, the span it continues (none for the first span of a
/// trace) and the trace's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub flags: u8,
}

impl SpanContext {
    /// The header a record sent from inside this span carries: the receiver's parent is this span.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// What a receiver of [`SpanContext::traceparent`] parses.
    pub fn as_parent(&self) -> TraceParent {
        TraceParent { trace_id: self.trace_id, parent_id: self.span_id, flags: self.flags }
    }

    /// A span started inside this one, in this process: the same rule as across Kafka.
    pub fn child(&self, rng: &mut fastrand::Rng) -> SpanContext {
        continue_trace(Some(&self.as_parent()), rng)
    }
}
// ANCHOR_END: span_context

/// Ids shown the way the header writes them.
pub fn trace_hex(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

pub fn span_hex(span_id: u64) -> String {
    format!("{span_id:016x}")
}

impl fmt::Display for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

// ANCHOR: ids
/// A fresh trace id: random, never all zeros (W3C's "invalid" value).
pub fn new_trace_id(rng: &mut fastrand::Rng) -> u128 {
    loop {
        let id = rng.u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A fresh span id: random, never all zeros.
pub fn new_span_id(rng: &mut fastrand::Rng) -> u64 {
    loop {
        let id = rng.u64(..);
        if id != 0 {
            return id;
        }
    }
}
// ANCHOR_END: ids

// EXERCISE: Read a `traceparent` header value as W3C Trace Context version `00` writes it: `00-`, the
// trace id (32 hex digits), `-`, the parent id (16 hex digits), `-`, the flags (2 hex digits) — exactly 55
// characters, nothing before or after. Hex digits are lower-case (`0-9`, `a-f`): an upper-case digit, a sign,
// a space or any other character makes the whole header invalid, and so do a trace id or a parent id of all
// zeros, another version than `00`, and bytes that are not UTF-8. An invalid header gives `None`, and the
// caller starts a new trace; it must never panic, whatever the bytes. The tests parse W3C's own example,
// dozens of near misses, and thousands of random byte strings.
// ANCHOR: parse_traceparent
/// The trace a record's `traceparent` header continues, or `None` when the value is not a valid one.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    /// `digits` as a number, if every one of them is a lower-case hex digit.
    fn lower_hex(digits: &[u8]) -> Option<u128> {
        digits.iter().try_fold(0u128, |n, &d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                _ => return None,
            };
            Some(n * 16 + u128::from(v))
        })
    }
    if value.len() != 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if &value[..2] != b"00" {
        return None;
    }
    let trace_id = lower_hex(&value[3..35])?;
    let parent_id = lower_hex(&value[36..52])? as u64;
    let flags = lower_hex(&value[53..55])? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent { trace_id, parent_id, flags })
}
// ANCHOR_END: parse_traceparent

// EXERCISE: The context of the span that handles a record. With an `incoming` parent (a valid header),
// the span continues its trace: the same trace id, the sender's span as its parent, the same flags (sampling
// is decided once, by the trace's first span), and a span id of its own, fresh from `rng` (`new_span_id`),
// never the parent's. Without one (no header, or one `parse_traceparent` refused) it starts a new trace: a
// fresh trace id (`new_trace_id`), a fresh span id, no parent, and the flags `SAMPLED`. The tests continue
// headers with each flag, and start traces many times from one `rng`.
// ANCHOR: continue_trace
/// The span context of a unit of work caused by `incoming`, or the first span of a new trace.
pub fn continue_trace(incoming: Option<&TraceParent>, rng: &mut fastrand::Rng) -> SpanContext {
    match incoming {
        Some(parent) => SpanContext {
            trace_id: parent.trace_id,
            span_id: new_span_id(rng),
            parent_id: Some(parent.parent_id),
            flags: parent.flags,
        },
        None => SpanContext { trace_id: new_trace_id(rng), span_id: new_span_id(rng), parent_id: None, flags: SAMPLED },
    }
}
// ANCHOR_END: continue_trace

/// A tracing span for `context`: its name says what the work is, its fields carry the W3C ids (read by
/// [`crate::spans::SpanCollector`], and shown by any tracing subscriber), `service` who did it.
pub fn span(name: &'static str, service: &'static str, context: &SpanContext, order_id: &str) -> tracing::Span {
    let parent = context.parent_id.map(span_hex).unwrap_or_default();
    tracing::info_span!(
        "work",
        otel.name = name,
        service,
        order_id,
        trace_id = %trace_hex(context.trace_id),
        span_id = %span_hex(context.span_id),
        parent_id = %parent,
    )
}
