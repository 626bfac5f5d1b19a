//! The gateway's plumbing: an axum router over a Kafka producer, a background task that reads the topic into
//! the bounded buffer, start-up retries, and a graceful shutdown that flushes the producer.
//!
//! Routes:
//! - `POST /events` — validate, publish, answer 202 (where it landed), 422 (what to fix), 503 (Kafka is
//!   unreachable: retry later) or 500 (Kafka refused it);
//! - `GET /messages?limit=N` — the newest events the reader has seen, newest first;
//! - `GET /health` — 200 while the reader runs, 503 once it has stopped.
//!
//! Every refusal has the same JSON shape ([`ErrorBody`]): a body that is too large (413) or a query string that
//! does not parse (400) included, though axum would answer those in plain text by itself.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use kit::UserEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use crate::{FieldError, PublishError, keep_newest, newest_first, parse_body, publish, validate_event};

/// The largest request body the gateway reads. An event is a few hundred bytes; a client sending more than this
/// is refused (413) before its body is buffered, instead of axum's default of 2 MB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the gateway is told at start-up.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The topic events are published to and read back from.
    pub topic: String,
    /// How many events `GET /messages` can show: the newest ones, the rest are forgotten.
    pub buffer_capacity: usize,
    /// How long a `POST /events` may wait for Kafka's acknowledgement (`message.timeout.ms`) before it answers
    /// 503. An HTTP client will not wait librdkafka's default five minutes.
    pub publish_timeout: Duration,
    /// How patiently the producer waits for Kafka at start-up.
    pub startup: Backoff,
}

impl GatewaySettings {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            buffer_capacity: 100,
            publish_timeout: Duration::from_secs(5),
            startup: Backoff::default(),
        }
    }
}

/// Retries with exponential backoff: a service that starts next to Kafka (docker compose, Kubernetes) often
/// starts first, and should wait for it rather than crash.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each one, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long one attempt waits for the cluster's metadata.
    pub attempt_timeout: Duration,
}

impl Default for Backoff {
    /// Six attempts over roughly 20 s.
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The pause after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.first_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(self.max_delay)
    }
}

// ANCHOR: producer_config
/// The gateway's producer: on top of `base` (which names the brokers), every in-sync replica must have the
/// event before the client hears 202, retries cannot duplicate or reorder it, and a send gives up (503) after
/// `publish_timeout`.
pub fn producer_config(mut base: ClientConfig, publish_timeout: Duration) -> ClientConfig {
    base.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", publish_timeout.as_millis().to_string())
        // Requests arriving together share a batch; 5 ms is invisible next to an HTTP round trip.
        .set("linger.ms", "5");
    base
}
// ANCHOR_END: producer_config

/// Creates the producer and waits, with `backoff`, until the cluster answers and shows `topic`. librdkafka
/// connects lazily, so without this check a gateway would start "healthy" and fail its first requests.
pub async fn connect_producer(config: &ClientConfig, topic: &str, backoff: Backoff) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = config.create()?;
    let bootstrap = config.get("bootstrap.servers").unwrap_or("(no bootstrap.servers)").to_string();
    let mut last_problem = String::new();
    for attempt in 1..=backoff.attempts {
        let probe = producer.clone();
        let wanted = topic.to_string();
        // fetch_metadata blocks its thread: keep it off the async workers.
        let answer = tokio::task::spawn_blocking(move || {
            probe.client().fetch_metadata(Some(&wanted), backoff.attempt_timeout).map(|metadata| {
                metadata.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
            })
        })
        .await?;
        match answer {
            Ok(true) => {
                info!(attempt, %bootstrap, topic, "producer connected");
                return Ok(producer);
            }
            Ok(false) => last_problem = format!("the cluster answered, but has no topic {topic:?}"),
            Err(e) => last_problem = e.to_string(),
        }
        if attempt < backoff.attempts {
            let pause = backoff.delay_after(attempt);
            warn!(attempt, of = backoff.attempts, %bootstrap, "Kafka not ready ({last_problem}); retrying in {pause:?}");
            tokio::time::sleep(pause).await; // the backoff itself, not a synchronisation
        }
    }
    anyhow::bail!(
        "Kafka at {bootstrap} was not ready after {} attempts: {last_problem}.\n{}",
        backoff.attempts,
        kit::broker::HOW_TO_START
    )
}

/// One event the reader has seen, and where it was in the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: UserEvent,
}

/// The newest events read, bounded by a capacity, shared by the reader task and the HTTP handlers.
#[derive(Debug)]
pub struct RecentEvents {
    capacity: usize,
    // A std mutex: it is held for a push or a copy, never across an `.await`.
    events: Mutex<VecDeque<ReadEvent>>,
    read: AtomicU64,
    skipped: AtomicU64,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            events: Mutex::new(VecDeque::with_capacity(capacity)),
            read: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    pub fn remember(&self, event: ReadEvent) {
        keep_newest(&mut self.events.lock().expect("buffer lock"), self.capacity, event);
        self.read.fetch_add(1, Ordering::Relaxed);
    }

    pub fn newest(&self, limit: usize) -> Vec<ReadEvent> {
        newest_first(&self.events.lock().expect("buffer lock"), limit)
    }
}

/// What every handler shares.
pub struct GatewayState {
    producer: FutureProducer,
    topic: String,
    recent: RecentEvents,
    reader_running: AtomicBool,
}

/// The body of every error answer: a summary, the details, whether the same request may succeed later, and the
/// fields to fix (of the body, or of the query string).
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
    retryable: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<FieldError>,
}

/// A client mistake, refused for good (`retryable: false`) with the fields to fix.
fn refused(status: StatusCode, error: &str, detail: &str, fields: Vec<FieldError>) -> Response {
    let body = ErrorBody { error, detail: detail.to_string(), retryable: false, fields };
    (status, axum::Json(body)).into_response()
}

fn invalid_event(fields: Vec<FieldError>) -> Response {
    // 422 for every client mistake, unparseable JSON included: one status to handle, and `fields` says which.
    let detail = "nothing was published: fix the fields listed and send the event again";
    refused(StatusCode::UNPROCESSABLE_ENTITY, "invalid event", detail, fields)
}

/// A body axum could not read — larger than [`MAX_BODY_BYTES`] (413), or cut off on the way (400) — refused in
/// the same shape as an invalid one, instead of axum's plain-text rejection.
fn unreadable_body(rejection: BytesRejection) -> Response {
    let status = rejection.status();
    let (error, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ("request too large", format!("must be at most {MAX_BODY_BYTES} bytes: one event takes a few hundred"))
    } else {
        ("unreadable request", rejection.body_text())
    };
    let detail = "nothing was published: send one event per request";
    refused(status, error, detail, vec![FieldError::new("body", message)])
}

/// A query string that names its parameters wrongly: 400, with the parameter to fix.
fn invalid_query(fields: Vec<FieldError>) -> Response {
    refused(StatusCode::BAD_REQUEST, "invalid query", "fix the query parameters listed and ask again", fields)
}

// ANCHOR: publish_error_response
impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        match self {
            PublishError::Unavailable { reason } => {
                let body = ErrorBody { error: "kafka unavailable", detail: reason, retryable: true, fields: vec![] };
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
            PublishError::Rejected { reason } => {
                let body =
                    ErrorBody { error: "kafka refused the event", detail: reason, retryable: false, fields: vec![] };
                (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
            }
        }
    }
}
// ANCHOR_END: publish_error_response

// ANCHOR: post_event
async fn post_event(State(state): State<Arc<GatewayState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable_body(rejection),
    };
    let event =
        match parse_body(&body).map_err(|e| vec![e]).and_then(|fields| validate_event(&fields, chrono::Utc::now())) {
            Ok(event) => event,
            Err(problems) => return invalid_event(problems),
        };
    match publish(&state.producer, &state.topic, &event).await {
        Ok(delivery) => {
            info!(event_id = %event.event_id, delivery.partition, delivery.offset, "published");
            let body = json!({
                "status": "accepted",
                "event_id": event.event_id,
                "topic": state.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(error) => {
            warn!(event_id = %event.event_id, "not published: {error}");
            error.into_response()
        }
    }
}
// ANCHOR_END: post_event

/// `GET /messages?limit=N`. The limit is read as text and checked here, so a bad one gets a message that names
/// it (axum's `Query` would refuse it in plain text).
#[derive(Debug, Deserialize)]
struct MessagesQuery {
    limit: Option<String>,
}

/// What `?limit=` says: absent is `None`, a whole number is `Some`, anything else names the parameter.
fn parse_limit(query: &MessagesQuery) -> Result<Option<usize>, FieldError> {
    match query.limit.as_deref().map(str::trim) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            FieldError::new("limit", format!("must be a whole number of events such as 20, not {text:?}"))
        }),
    }
}

async fn get_messages(
    State(state): State<Arc<GatewayState>>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(query)) => parse_limit(&query),
        Err(rejection) => Err(FieldError::new("query", rejection.body_text())),
    };
    let limit = match limit {
        Ok(limit) => limit,
        Err(problem) => return invalid_query(vec![problem]),
    };
    let recent = &state.recent;
    let body = json!({
        "capacity": recent.capacity,
        "read": recent.read.load(Ordering::Relaxed),
        "skipped": recent.skipped.load(Ordering::Relaxed),
        "messages": recent.newest(limit.unwrap_or(recent.capacity)),
    });
    axum::Json(body).into_response()
}

async fn health(State(state): State<Arc<GatewayState>>) -> Response {
    // Liveness of the gateway's own parts only: Kafka's health shows in each POST's answer (503), and a
    // health check that called Kafka would take every replica out of a load balancer at once.
    let running = state.reader_running.load(Ordering::Relaxed);
    let (status, word) = if running { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "degraded") };
    let reader = if running { "running" } else { "stopped" };
    (status, axum::Json(json!({ "status": word, "reader": reader, "topic": state.topic }))).into_response()
}

/// The reader task and the switch that stops it.
#[derive(Debug)]
struct Reader {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Every record the producer still held reached the broker before it closed.
    pub producer_flushed: bool,
    /// Events the reader had read in all.
    pub events_read: u64,
}

/// A running gateway: its shared state and its reader. [`Gateway::serve`] puts it on a listener.
pub struct Gateway {
    state: Arc<GatewayState>,
    reader: Option<Reader>,
    flush_timeout: Duration,
}

impl std::fmt::Debug for Gateway {
    // By hand: the producer has no `Debug`, and the topic and reader say what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("topic", &self.state.topic).field("reading", &self.reader.is_some()).finish()
    }
}

impl Gateway {
    /// Connects the producer (with retries) and starts the reader. `producer_base` and `reader_base` name the
    /// brokers (and whatever tuning the broker needs); the gateway adds its own settings.
    pub async fn start(
        producer_base: ClientConfig,
        reader_base: ClientConfig,
        settings: &GatewaySettings,
    ) -> anyhow::Result<Gateway> {
        let config = producer_config(producer_base, settings.publish_timeout);
        let producer = connect_producer(&config, &settings.topic, settings.startup).await?;
        let mut gateway = Gateway::with_producer(producer, settings);
        gateway.start_reader(reader_base).await?;
        Ok(gateway)
    }

    /// A gateway over a producer made elsewhere, not yet reading: `GET /messages` stays empty and `/health`
    /// says so until [`Gateway::start_reader`].
    pub fn with_producer(producer: FutureProducer, settings: &GatewaySettings) -> Gateway {
        let state = GatewayState {
            producer,
            topic: settings.topic.clone(),
            recent: RecentEvents::new(settings.buffer_capacity),
            reader_running: AtomicBool::new(false),
        };
        Gateway { state: Arc::new(state), reader: None, flush_timeout: settings.publish_timeout }
    }

    // ANCHOR: start_reader
    /// Starts the background task that reads the topic into the buffer.
    ///
    /// It assigns itself every partition instead of joining a consumer group: each gateway replica should show
    /// the newest events of the whole topic, where a group would split the partitions among replicas. It starts
    /// `capacity` records before the end of each partition, so the buffer fills with recent history at once.
    /// `group.id` is set only because the client requires one; nothing is ever committed.
    pub async fn start_reader(&mut self, reader_base: ClientConfig) -> anyhow::Result<()> {
        let topic = self.state.topic.clone();
        let consumer: StreamConsumer = reader_base
            .clone()
            .set("group.id", format!("http-gateway-reader-{}", uuid::Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .create()?;
        let wanted = topic.clone();
        let tail = self.state.recent.capacity as i64;
        let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<StreamConsumer> {
            let metadata = consumer.fetch_metadata(Some(&wanted), Duration::from_secs(10))?;
            let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
            anyhow::ensure!(partitions > 0, "topic {wanted:?} has no partitions: create it first");
            let mut assignment = TopicPartitionList::new();
            for partition in 0..partitions as i32 {
                assignment.add_partition_offset(&wanted, partition, Offset::OffsetTail(tail))?;
            }
            consumer.assign(&assignment)?;
            drop(assignment); // before the consumer can ever be dropped: a live list makes that drop hang
            Ok(consumer)
        })
        .await??;

        let (stop, stopped) = watch::channel(false);
        let state = Arc::clone(&self.state);
        state.reader_running.store(true, Ordering::Relaxed);
        let task = tokio::spawn(read_into_buffer(consumer, state, stopped));
        self.reader = Some(Reader { task, stop });
        info!(topic, "reader started");
        Ok(())
    }
    // ANCHOR_END: start_reader

    /// The routes, over this gateway's state. Bodies are read up to [`MAX_BODY_BYTES`]; a panic in a handler
    /// becomes a 500 instead of a dropped connection, and every request is traced.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/events", post(post_event))
            .route("/messages", get(get_messages))
            .route("/health", get(health))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::clone(&self.state))
            .layer(CatchPanicLayer::new())
            .layer(TraceLayer::new_for_http())
    }

    // ANCHOR: serve
    /// Serves on `listener` until `shutdown` completes, then shuts down in order: stop accepting and let the
    /// requests in flight finish (each waits for its acknowledgement), stop the reader, and flush the producer
    /// so no record it still holds (a request whose client hung up, say) is lost.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<ShutdownReport> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await?;
        info!("HTTP server stopped; stopping the reader and flushing the producer");
        if let Some(reader) = self.reader {
            let _ = reader.stop.send(true);
            let _ = reader.task.await;
        }
        let producer = self.state.producer.clone();
        let flush_timeout = self.flush_timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(flush_timeout)).await?;
        if let Err(e) = &flushed {
            warn!("the producer could not deliver everything before shutting down: {e}");
        }
        Ok(ShutdownReport {
            producer_flushed: flushed.is_ok(),
            events_read: self.state.recent.read.load(Ordering::Relaxed),
        })
    }
    // ANCHOR_END: serve
}

/// The reader's loop: every record that holds a [`UserEvent`] goes into the buffer; any other is counted and
/// logged (it stays in the topic: the gateway only displays, so skipping loses nothing).
async fn read_into_buffer(consumer: StreamConsumer, state: Arc<GatewayState>, mut stop: watch::Receiver<bool>) {
    let mut stream = consumer.stream();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            next = stream.next() => match next {
                Some(Ok(message)) => {
                    let payload = message.payload().unwrap_or_default();
                    match serde_json::from_slice::<UserEvent>(payload) {
                        Ok(event) => state.recent.remember(ReadEvent {
                            partition: message.partition(),
                            offset: message.offset(),
                            event,
                        }),
                        Err(e) => {
                            state.recent.skipped.fetch_add(1, Ordering::Relaxed);
                            warn!(partition = message.partition(), offset = message.offset(), "not a user event, skipped: {e}");
                        }
                    }
                }
                // Connection trouble: librdkafka keeps reconnecting on its own; say so and carry on.
                Some(Err(e)) => warn!("reading {}: {e}", state.topic),
                None => break,
            },
        }
    }
    drop(stream);
    state.reader_running.store(false, Ordering::Relaxed);
    info!(topic = state.topic, "reader stopped");
}
