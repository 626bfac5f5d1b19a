//! An in-memory span collector: a `tracing` layer that keeps every finished span carrying W3C ids
//! ([`crate::trace::span`]), so the tests and the story can look at a trace without a tracing backend.
//!
//! In production the same spans would go to Jaeger, Tempo or any OpenTelemetry collector through
//! `tracing-opentelemetry`; here they stay in a `Vec`, which is what a test needs: no exporter, no network, no
//! sampling, and the spans are there the moment they close. Written by hand because it is thirty lines: the
//! `Layer` trait does the work.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// ANCHOR: collected
/// A finished span, as the collector kept it. Ids are lower-case hex, as in the header; `parent_id` is empty for
/// the first span of a trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CollectedSpan {
    pub name: String,
    pub service: String,
    pub order_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    /// From the span's creation to its close.
    #[serde(skip)]
    pub duration: Duration,
    /// When it started, for ordering.
    #[serde(skip)]
    pub started: Option<Instant>,
}
// ANCHOR_END: collected

/// The layer, and the finished spans it has kept. Clones share the spans.
#[derive(Debug, Clone, Default)]
pub struct SpanCollector {
    finished: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl SpanCollector {
    pub fn new() -> SpanCollector {
        SpanCollector::default()
    }

    /// A subscriber made of this collector alone (nothing printed), to run code under with
    /// `tracing::dispatcher::with_default` or `WithSubscriber::with_subscriber`.
    pub fn dispatch(&self) -> Dispatch {
        Dispatch::new(tracing_subscriber::registry().with(self.clone()))
    }

    /// This collector next to a log line per event on stderr, with the workbook's filter (the stories).
    pub fn dispatch_with_logs(&self) -> Dispatch {
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let logs = logs.with_filter(kit::telemetry::filter());
        Dispatch::new(tracing_subscriber::registry().with(self.clone()).with(logs))
    }

    /// Every span finished so far, in the order they started.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        let mut spans = self.finished.lock().expect("the span list").clone();
        spans.sort_by_key(|s| s.started);
        spans
    }

    /// The finished spans of one order.
    pub fn spans_of(&self, order_id: &str) -> Vec<CollectedSpan> {
        self.spans().into_iter().filter(|s| s.order_id == order_id).collect()
    }
}

/// The fields a span was created with, by name.
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for SpanCollector
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        let Some(trace_id) = fields.0.remove("trace_id") else { return };
        let mut get = |name: &str| fields.0.remove(name).unwrap_or_default();
        let span = CollectedSpan {
            name: get("otel.name"),
            service: get("service"),
            order_id: get("order_id"),
            trace_id,
            span_id: get("span_id"),
            parent_id: get("parent_id"),
            duration: Duration::ZERO,
            started: Some(Instant::now()),
        };
        if let Some(entry) = ctx.span(id) {
            entry.extensions_mut().insert(span);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(entry) = ctx.span(&id) else { return };
        let Some(mut span) = entry.extensions_mut().remove::<CollectedSpan>() else { return };
        span.duration = span.started.map(|s| s.elapsed()).unwrap_or_default();
        self.finished.lock().expect("the span list").push(span);
    }
}

// ANCHOR: tree
/// One trace as an indented tree, each span under its parent, with its service and duration; spans whose parent
/// is not among `spans` start a line of their own.
pub fn tree(spans: &[CollectedSpan]) -> Vec<String> {
    fn line(span: &CollectedSpan, depth: usize) -> String {
        let label = format!("{}{} ({})", "   ".repeat(depth), span.name, span.service);
        format!("{label:<42} span {}  {:>7.2} ms", span.span_id, span.duration.as_secs_f64() * 1000.0)
    }
    fn walk(spans: &[CollectedSpan], parent: &CollectedSpan, depth: usize, lines: &mut Vec<String>) {
        for child in spans.iter().filter(|s| s.parent_id == parent.span_id && s.trace_id == parent.trace_id) {
            lines.push(line(child, depth));
            walk(spans, child, depth + 1, lines);
        }
    }
    let mut lines = Vec::new();
    let is_root = |s: &CollectedSpan| !spans.iter().any(|p| p.span_id == s.parent_id && p.trace_id == s.trace_id);
    for root in spans.iter().filter(|s| is_root(s)) {
        lines.push(format!("trace {}", root.trace_id));
        lines.push(line(root, 1));
        walk(spans, root, 2, &mut lines);
    }
    lines
}
// ANCHOR_END: tree
