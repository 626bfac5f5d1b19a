//! The live dashboard: an axum page (`/`) that draws the windows' results as they close, fed by Server-Sent Events
//! (`/events`); `/windows` answers the results so far as JSON. The page is one self-contained HTML file — its
//! charts are drawn on a canvas by a few lines of inline JavaScript, with no library and no CDN — so it works
//! offline and a test can read all of it.
//!
//! A [`Board`] keeps the latest results and hands each new one to every open event stream (a tokio broadcast
//! channel: a client that falls behind skips results rather than slowing the others). [`follow`] fills it from
//! `analytics.windows`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::Stream;
use tokio::sync::broadcast;

use crate::windows::WindowResult;

/// How many windows the board keeps (the page shows them all).
pub const KEPT_WINDOWS: usize = 30;

/// The results the dashboard shows, and the stream of new ones.
#[derive(Clone)]
pub struct Board {
    results: Arc<Mutex<BTreeMap<i64, WindowResult>>>,
    updates: broadcast::Sender<WindowResult>,
}

impl Default for Board {
    fn default() -> Self {
        Board { results: Arc::default(), updates: broadcast::channel(256).0 }
    }
}

impl Board {
    /// Adds `result` (a window closes once, so a result for a window the board has replaces it: a replayed
    /// topic shows each window once) and tells every open stream.
    pub fn publish(&self, result: WindowResult) {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        results.insert(result.start_ms, result.clone());
        while results.len() > KEPT_WINDOWS {
            results.pop_first();
        }
        drop(results);
        let _ = self.updates.send(result);
    }

    /// A receiver of every result published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WindowResult> {
        self.updates.subscribe()
    }

    /// The results kept, oldest first.
    pub fn results(&self) -> Vec<WindowResult> {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// The dashboard's routes over `board`.
pub fn router(board: Board) -> Router {
    Router::new().route("/", get(page)).route("/windows", get(windows)).route("/events", get(events)).with_state(board)
}

async fn page() -> impl IntoResponse {
    Html(PAGE)
}

async fn windows(State(board): State<Board>) -> impl IntoResponse {
    axum::Json(board.results())
}

/// Every result kept, then each new one, as `event: window` messages with the result as JSON.
async fn events(State(board): State<Board>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading what is kept: a result published in between is then sent twice (the page keys
    // results by window), never lost.
    let receiver = board.updates.subscribe();
    let kept = board.results();
    let initial = futures::stream::iter(kept.into_iter().map(|r| Ok(window_event(&r))));
    let live = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(result) => return Some((Ok(window_event(&result)), receiver)),
                // Too slow a client misses results rather than holding the others back.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    Sse::new(initial.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

fn window_event(result: &WindowResult) -> Event {
    Event::default().event("window").data(serde_json::to_string(result).unwrap_or_default())
}

/// Reads `topic` (`analytics.windows`) from its beginning with a consumer made from `config` and publishes every
/// result on `board`, until `stop` completes.
pub async fn follow(
    config: rdkafka::ClientConfig,
    topic: String,
    board: Board,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let mut config = config;
    config.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create()?;
    {
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)?;
        consumer.assign(&assignment)?;
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            received = consumer.recv() => match received {
                Ok(message) => {
                    match serde_json::from_slice::<WindowResult>(message.payload().unwrap_or_default()) {
                        Ok(result) => board.publish(result),
                        Err(error) => tracing::warn!(offset = message.offset(), "not a window result: {error}"),
                    }
                }
                Err(error) => tracing::warn!("receive failed: {error}"),
            },
        }
    }
}

/// A window's result as console lines (seed 004's console dashboard).
pub fn console(result: &WindowResult) -> Vec<String> {
    let minute = |ms: i64| {
        let seconds = ms.div_euclid(1000);
        format!(
            "{:02}:{:02}:{:02}",
            seconds.div_euclid(3600).rem_euclid(24),
            seconds.div_euclid(60).rem_euclid(60),
            seconds.rem_euclid(60)
        )
    };
    let count = |kind| result.counts.get(&kind).copied().unwrap_or(0);
    let top =
        result.top_products.iter().map(|p| format!("{} ({})", p.name, p.interactions)).collect::<Vec<_>>().join(", ");
    vec![
        format!(
            "window {}–{}: {} events ({} out of order)",
            minute(result.start_ms),
            minute(result.end_ms),
            result.events,
            result.out_of_order
        ),
        format!(
            "  views {} · added {} · removed {} · purchases {} · revenue {}.{:02} EUR",
            count(crate::Kind::View),
            count(crate::Kind::AddToCart),
            count(crate::Kind::RemoveFromCart),
            count(crate::Kind::Purchase),
            result.revenue_cents / 100,
            result.revenue_cents % 100
        ),
        format!(
            "  segments: {}",
            result.by_segment.iter().map(|(s, n)| format!("{s:?} {n}")).collect::<Vec<_>>().join(" · ")
        ),
        format!(
            "  funnel: {} viewed → {} carted ({}.{}%) → {} bought ({}.{}%)",
            result.funnel.viewed,
            result.funnel.carted,
            result.funnel.view_to_cart_per_mille / 10,
            result.funnel.view_to_cart_per_mille % 10,
            result.funnel.purchased,
            result.funnel.cart_to_purchase_per_mille / 10,
            result.funnel.cart_to_purchase_per_mille % 10
        ),
        format!("  top: {top}"),
    ]
}

/// The page: one file, no external resource.
pub const PAGE: &str = include_str!("dashboard.html");
