//! `/metrics` over HTTP, and reading Prometheus' text format back.
//!
//! The route renders a [`Metrics`] on each scrape, as Prometheus expects: a pull, every 15 s or so, of the
//! current values. metrics-exporter-prometheus can run an HTTP listener of its own; the lesson serves the route
//! from axum instead, next to whatever else the service answers, so one port serves it all.
//!
//! [`parse`] reads the text format back (the tests' and the story's view of a scrape). It is a dozen lines for
//! the subset the exporter writes — `name{label="value",…} value` lines and `#` comments — so it is written here
//! rather than taken from a crate.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::statistics::Metrics;

/// The content type of Prometheus' text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// ANCHOR: router
/// `GET /metrics`: every metric of `metrics`, or a 500 saying why recording failed.
pub fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    if let Some(failure) = metrics.failure() {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], failure);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}
// ANCHOR_END: router

/// Serves [`router`] on `127.0.0.1:port` (0: any free port) in a task of its own; the address it listens on.
pub async fn serve(metrics: Metrics, port: u16) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(metrics)).await {
            tracing::error!("/metrics stopped: {error}");
        }
    });
    Ok((address, server))
}

/// One sample of a scrape: a series (name and labels) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether this sample is `name` with (at least) these labels.
    pub fn is(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.labels.get(*k).is_some_and(|l| l == v))
    }
}

/// The samples of a scrape in Prometheus' text format; comment lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some(Sample { name: series.to_string(), labels: BTreeMap::new(), value });
    };
    let mut parsed = BTreeMap::new();
    // The exporter escapes `"` and `\` inside values; the label values here (ids, topics, numbers) have none.
    for pair in labels.strip_suffix('}')?.split("\",").filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once("=\"")?;
        parsed.insert(key.to_string(), value.trim_end_matches('"').to_string());
    }
    Some(Sample { name: name.to_string(), labels: parsed, value })
}

/// The value of the one sample that is `name` with these labels, if there is one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find(|s| s.is(name, labels)).map(|s| s.value)
}

/// Fetches `/metrics` from `base` (`http://127.0.0.1:PORT`): its samples, or why not.
pub async fn scrape_over_http(client: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Sample>> {
    let response = client.get(format!("{base}/metrics")).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "/metrics answered {status}: {text}");
    Ok(parse(&text))
}
