//! The CQRS service: commands go to the write side, queries to the read side, and a version ties them together.
//!
//! Routes:
//! - `POST /orders/{id}/commands` with `{"expected_version": N, "command": {"type": "ADD_ITEM", …}}` — the
//!   single writer decides and appends: 202 `{"order_id", "version"}`; 409 when the client decided on another
//!   version than the order's; 422 when the command is refused; 400 for a body that is not such a request; 503
//!   when the events could not be appended (nothing was written: the same request may be sent again); 421 for an
//!   order of a partition no writer of this service owns (another instance does: the client, or a router in front,
//!   sends it there).
//! - `GET /orders/{id}` — the order's summary from the read model (Redis) only, never from the writer: 404 for an
//!   order the read model does not know. `?min_version=N` is read-your-writes: the read model lags the log, so a
//!   client that got version N from its command asks for at least N, and the service waits for the projector
//!   (within a bound) — then answers 503 with `Retry-After`, saying which version the read model is at.
//!
//! Each writer is the single writer of the orders of its partitions: a command goes to the writer whose
//! partitions hold the order (by [`crate::store::partition_of`], as the log places it), one service instance per
//! set of partitions, the way the chapter deals orders out. A writer's calls block (librdkafka's transactions), so
//! each sits behind a std mutex of its own and runs on tokio's blocking pool; the mutex also makes the commands of
//! one order take turns, which the version check relies on, while orders of different writers go on in parallel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::order::Command;
use crate::projection::{OrderSummary, ReadModel};
use crate::store::{HandleError, OrderWriter, StoreTopics};

/// How the service waits for the read model on `?min_version=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWait {
    /// The longest a query waits for the read model to reach the version asked for, before it answers 503.
    pub within: Duration,
    /// How often the read model is looked at again while waiting.
    pub poll_every: Duration,
}

impl Default for ReadWait {
    /// 2 s: a projector that is running catches up in milliseconds; one that is seconds behind is better
    /// reported (503, retry) than waited for by every client at once.
    fn default() -> Self {
        ReadWait { within: Duration::from_secs(2), poll_every: Duration::from_millis(20) }
    }
}

/// What a query found in the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRead {
    /// The order's summary, at the version asked for or later.
    Found(OrderSummary),
    /// The read model knows no such order (and no version was asked for).
    Unknown,
    /// The read model did not reach the version asked for in time: it is at `at` (0: it knows no such order).
    Behind { at: u64 },
}

// EXERCISE: Answer a query for order `order_id` from the read model, for a client that needs at least version
// `min_version` of it (0: any version will do). The read model lags the log: right after a command the client's
// own event may not be projected yet, and answering with the version before it would show the client an order
// without the change it was just told had happened (read-your-writes).
// - `min_version` 0: answer at once with what the read model has: `Found`, or `Unknown` for no such order.
// - Otherwise answer `Found` as soon as the read model has the order at `min_version` or later. An order the read
//   model does not know yet is not unknown to a client that was given a version of it: wait for it too.
// - Wait at most `wait.within`, looking again every `wait.poll_every`; then answer `Behind { at }` with the
//   version the read model last had (0 when it had none). Never wait without a bound.
// The tests ask for versions that are there, that come while the query waits, and that never come (the answer
// must then be `Behind` after the bound, not the older summary).
// ANCHOR: read_order
/// The summary of `order_id` at `min_version` or later, waiting up to `wait.within` for the read model.
pub async fn read_order(
    read_model: &mut ReadModel,
    order_id: &str,
    min_version: u64,
    wait: ReadWait,
) -> anyhow::Result<OrderRead> {
    let deadline = Instant::now() + wait.within;
    loop {
        let summary = read_model.summary(order_id).await?;
        let at = summary.as_ref().map_or(0, |s| s.version);
        match summary {
            None if min_version == 0 => return Ok(OrderRead::Unknown),
            Some(summary) if summary.version >= min_version => return Ok(OrderRead::Found(summary)),
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(OrderRead::Behind { at });
        }
        // The polling interval, cut short by the deadline.
        tokio::time::sleep(wait.poll_every.min(deadline - now)).await;
    }
}
// ANCHOR_END: read_order

/// The body of `POST /orders/{id}/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The version of the order the client decided on (0 for an order it is about to place).
    pub expected_version: u64,
    pub command: Command,
}

/// What a command request that was carried out answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub order_id: String,
    /// The order's version after the command: ask the read side for it with `?min_version=`.
    pub version: u64,
}

/// What every handler shares.
struct ServiceState {
    /// The writer of each partition this service owns.
    owners: BTreeMap<i32, Arc<Mutex<OrderWriter>>>,
    topics: StoreTopics,
    read_model: ReadModel,
    read_wait: ReadWait,
}

/// The service's routes over `writers` (the single writers of the orders of their partitions, between them the
/// partitions this instance serves) and `read_model`. Fails when no writer is given, when they are writers of
/// different stores, or when two own one partition: that partition's orders would have two writers.
pub fn router(
    writers: Vec<Arc<Mutex<OrderWriter>>>,
    read_model: ReadModel,
    read_wait: ReadWait,
) -> anyhow::Result<Router> {
    let mut owners = BTreeMap::new();
    let mut topics: Option<StoreTopics> = None;
    for writer in writers {
        let (owned, store) = {
            let locked = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (locked.owned().clone(), locked.topics().clone())
        };
        if let Some(topics) = &topics {
            anyhow::ensure!(*topics == store, "writers of two stores: {topics:?} and {store:?}");
        }
        topics = Some(store);
        for partition in owned {
            anyhow::ensure!(
                owners.insert(partition, Arc::clone(&writer)).is_none(),
                "two writers own partition {partition}: its orders would have two writers"
            );
        }
    }
    let topics = topics.ok_or_else(|| anyhow::anyhow!("a service needs at least one writer"))?;
    let state = ServiceState { owners, topics, read_model, read_wait };
    Ok(Router::new()
        .route("/orders/{order_id}/commands", post(post_command))
        .route("/orders/{order_id}", get(get_order))
        .with_state(Arc::new(state)))
}

/// An error answer: `{"error": message, …details}`.
fn error(status: StatusCode, message: impl Into<String>, details: serde_json::Value) -> Response {
    let mut body = json!({ "error": message.into() });
    if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
        body.extend(details.clone());
    }
    (status, axum::Json(body)).into_response()
}

/// `response` with a `Retry-After` of one second: the same request may succeed shortly.
fn retry_soon(mut response: Response) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

// ANCHOR: post_command
async fn post_command(State(state): State<Arc<ServiceState>>, Path(order_id): Path<String>, body: Bytes) -> Response {
    // Parsed by hand, not with axum's `Json`: its refusals are plain text, and a client needs to know what to fix.
    let request: CommandRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let expected =
                r#"{"expected_version": 0, "command": {"type": "PLACE_ORDER", "customer_id": "customer-7"}}"#;
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a command request: {e}"),
                json!({ "expected": expected }),
            );
        }
    };
    let partition = state.topics.partition_of(&order_id);
    let Some(writer) = state.owners.get(&partition) else {
        let owned: Vec<i32> = state.owners.keys().copied().collect();
        let message = format!(
            "order {order_id} is in partition {partition}, which this service does not own (it owns {owned:?}): send \
             the command to the instance that owns partition {partition}"
        );
        return error(StatusCode::MISDIRECTED_REQUEST, message, json!({ "partition": partition, "owned": owned }));
    };
    let (writer, id) = (Arc::clone(writer), order_id.clone());
    // The writer blocks (transactions): on the blocking pool, one command at a time per writer.
    let handled = tokio::task::spawn_blocking(move || {
        let mut writer = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writer.handle(&id, request.expected_version, &request.command)
    })
    .await;
    match handled {
        Ok(Ok(version)) => (StatusCode::ACCEPTED, axum::Json(Accepted { order_id, version })).into_response(),
        Ok(Err(stale @ HandleError::Stale { .. })) => {
            let HandleError::Stale { expected, actual, .. } = &stale else { unreachable!() };
            let details = json!({ "expected_version": expected, "actual_version": actual });
            error(StatusCode::CONFLICT, stale.to_string(), details)
        }
        Ok(Err(HandleError::Rejected(rejection))) => {
            let details = json!({ "rejection": rejection });
            error(StatusCode::UNPROCESSABLE_ENTITY, rejection.to_string(), details)
        }
        Ok(Err(append @ HandleError::Append { .. })) => {
            tracing::warn!("command not carried out: {append:#}");
            retry_soon(error(StatusCode::SERVICE_UNAVAILABLE, format!("{append:#}"), json!({})))
        }
        Err(panicked) => {
            tracing::error!("the writer panicked: {panicked}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the writer failed on this command", json!({}))
        }
    }
}
// ANCHOR_END: post_command

/// `GET /orders/{id}?min_version=N`. The version is read as text and checked here, so a bad one gets a message
/// that names it.
#[derive(Debug, Deserialize)]
struct OrderQuery {
    min_version: Option<String>,
}

async fn get_order(
    State(state): State<Arc<ServiceState>>,
    Path(order_id): Path<String>,
    query: Result<Query<OrderQuery>, QueryRejection>,
) -> Response {
    let min_version = match query.map(|Query(q)| q.min_version) {
        Ok(None) => 0,
        Ok(Some(text)) => match text.trim().parse::<u64>() {
            Ok(version) => version,
            Err(_) => {
                let message = format!("min_version must be a version number such as 3, not {text:?}");
                return error(StatusCode::BAD_REQUEST, message, json!({}));
            }
        },
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text(), json!({})),
    };
    let mut read_model = state.read_model.clone();
    match read_order(&mut read_model, &order_id, min_version, state.read_wait).await {
        Ok(OrderRead::Found(summary)) => axum::Json(summary).into_response(),
        Ok(OrderRead::Unknown) => error(
            StatusCode::NOT_FOUND,
            format!("the read model knows no order {order_id}"),
            json!({ "order_id": order_id }),
        ),
        Ok(OrderRead::Behind { at }) => {
            let message = format!(
                "the read model has order {order_id} at version {at}, not yet at version {min_version}: ask again shortly"
            );
            let details = json!({ "order_id": order_id, "min_version": min_version, "read_model_version": at });
            retry_soon(error(StatusCode::SERVICE_UNAVAILABLE, message, details))
        }
        Err(e) => retry_soon(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the read model is unavailable: {e:#}"),
            json!({}),
        )),
    }
}
