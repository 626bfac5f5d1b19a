//! Lesson 16 — observability and performance: what a Kafka client can tell about itself, and what its settings
//! do to throughput and latency.
//!
//! - [`statistics`]: librdkafka's statistics (`statistics.interval.ms`) as Prometheus metrics through the
//!   `metrics` facade: throughput, round trips per broker, consumer lag per partition;
//! - [`exposition`]: `/metrics` served by axum, and Prometheus' text format read back;
//! - [`trace`]: W3C Trace Context (`traceparent`) carried in record headers;
//! - [`spans`]: an in-memory span collector, to look at a trace without a tracing backend;
//! - [`shipping`]: one order followed across two hops, order service → shipping → tracker;
//! - [`tuning`]: a producer and a consumer tuned for throughput and latency;
//! - [`perf`]: the performance lab (throughput, end-to-end latency, the benchmark and the sweep);
//! - [`lab_report`]: the lab's results as markdown and an SVG chart.

pub mod exposition;
pub mod lab_report;
pub mod perf;
pub mod shipping;
pub mod spans;
pub mod statistics;
pub mod trace;
pub mod tuning;

pub use statistics::{Metrics, StatsContext};
pub use trace::{SpanContext, TraceParent, continue_trace, parse_traceparent};
