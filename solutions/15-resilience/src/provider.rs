//! A fake e-mail provider (axum) that the tests and the story steer while it runs: healthy, slow, failing with a
//! chosen status, rate-limiting with `Retry-After`, refusing one order for good, or down altogether (its port
//! closed: connections refused) — and back.
//!
//! It answers `POST /v1/send` (a [`MailRequest`] as JSON, the order id in the `Idempotency-Key` header) and keeps
//! a log of every call and of every e-mail it accepted. It does **not** de-duplicate: an order sent twice is two
//! e-mails in its log, which is how the tests see a record handled twice. (A real provider may honour the
//! idempotency key and drop the second; the consumer must not count on it.)

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{IDEMPOTENCY_KEY, MailRequest};

/// How the provider answers every call (a refusal set with [`FakeProvider::refuse`] or an answer set with
/// [`FakeProvider::answer_next`] comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 202 Accepted: the e-mail is sent.
    Healthy,
    /// This status for everything, e.g. 500 or 503: a full outage that still answers.
    Failing(u16),
    /// 429 Too Many Requests with `Retry-After` (whole seconds).
    RateLimited { retry_after_secs: u64 },
    /// No server at all: the port is closed, every connection is refused.
    Down,
}

/// One call as the provider saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Its `Idempotency-Key` header (the order id).
    pub order_id: Option<String>,
    /// When it arrived (tokio's clock).
    pub at: Instant,
    /// The status it was answered.
    pub status: u16,
}

/// An e-mail the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its `Idempotency-Key` header.
    pub order_id: String,
    pub to: String,
    pub at: Instant,
}

#[derive(Debug)]
struct Behaviour {
    mode: Mode,
    latency: Duration,
    refusals: BTreeMap<String, (u16, String)>,
    script: VecDeque<u16>,
    calls: Vec<Call>,
    accepted: Vec<Accepted>,
}

type Shared = Arc<Mutex<Behaviour>>;

/// The fake provider, listening on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct FakeProvider {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::sync::Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl FakeProvider {
    /// A healthy provider on a free port.
    pub async fn start() -> anyhow::Result<FakeProvider> {
        let shared: Shared = Arc::new(Mutex::new(Behaviour {
            mode: Mode::Healthy,
            latency: Duration::ZERO,
            refusals: BTreeMap::new(),
            script: VecDeque::new(),
            calls: Vec::new(),
            accepted: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = serve(listener, shared.clone());
        Ok(FakeProvider { addr, shared, server: tokio::sync::Mutex::new(Some(server)) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers every call per `mode` from now on. `Mode::Down` closes the port (after the calls in flight are
    /// answered) and returns once connections are refused; leaving it opens the same port again.
    pub async fn set_mode(&self, mode: Mode) -> anyhow::Result<()> {
        self.lock().mode = mode;
        let mut server = self.server.lock().await;
        match (mode, server.take()) {
            (Mode::Down, Some(running)) => {
                let _ = running.shutdown.send(());
                running.task.await??;
            }
            (Mode::Down, None) => {}
            (_, Some(running)) => *server = Some(running),
            (_, None) => {
                let listener = tokio::net::TcpListener::bind(self.addr).await?;
                *server = Some(serve(listener, self.shared.clone()));
            }
        }
        Ok(())
    }

    /// Waits `latency` before answering each call.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Refuses every e-mail of `order_id` with `status` and `reason` (a 400 for a mailbox that does not exist).
    pub fn refuse(&self, order_id: &str, status: u16, reason: &str) {
        self.lock().refusals.insert(order_id.to_string(), (status, reason.to_string()));
    }

    /// Answers the next calls with these statuses, one each, before going back to the mode.
    pub fn answer_next(&self, statuses: impl IntoIterator<Item = u16>) {
        self.lock().script.extend(statuses);
    }

    /// Every call so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every e-mail accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.lock().accepted.clone()
    }

    /// E-mails accepted per order id.
    pub fn emails_per_order(&self) -> BTreeMap<String, usize> {
        let mut per_order = BTreeMap::new();
        for email in self.lock().accepted.iter() {
            *per_order.entry(email.order_id.clone()).or_default() += 1;
        }
        per_order
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(running) = self.server.get_mut().take() {
            let _ = running.shutdown.send(());
            running.task.abort();
        }
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Shared) -> Server {
    let app = axum::Router::new().route("/v1/send", post(send)).with_state(shared);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Server { shutdown, task }
}

async fn send(State(shared): State<Shared>, headers: HeaderMap, Json(email): Json<MailRequest>) -> Response {
    let order_id = headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (status, reason, retry_after, latency) = {
        let mut behaviour = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let refusal = order_id.as_ref().and_then(|id| behaviour.refusals.get(id).cloned());
        let (status, reason, retry_after) = if order_id.is_none() {
            (400, format!("missing {IDEMPOTENCY_KEY} header"), None)
        } else if let Some((status, reason)) = refusal {
            (status, reason, None)
        } else if let Some(status) = behaviour.script.pop_front() {
            (status, format!("scripted {status}"), None)
        } else {
            match behaviour.mode {
                Mode::Healthy | Mode::Down => (202, String::new(), None),
                Mode::Failing(status) => (status, "the provider is failing".to_string(), None),
                Mode::RateLimited { retry_after_secs } => (429, "slow down".to_string(), Some(retry_after_secs)),
            }
        };
        behaviour.calls.push(Call { order_id: order_id.clone(), at: Instant::now(), status });
        (status, reason, retry_after, behaviour.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        let mut behaviour = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let order_id = order_id.unwrap_or_default();
        behaviour.accepted.push(Accepted { order_id: order_id.clone(), to: email.to, at: Instant::now() });
        return (status, Json(serde_json::json!({ "accepted": order_id }))).into_response();
    }
    let mut response = (status, reason).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    response
}
