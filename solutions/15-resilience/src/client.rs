//! The e-mail client: one HTTP call to the provider (reqwest) inside tower's layers. What each layer does, from
//! the caller inwards:
//!
//! 1. **retry** (`tower::retry`, with the lesson's [`MailRetry`] policy and a `TpsBudget`): tries again what may
//!    succeed next time, after a growing wait, while the budget allows;
//! 2. **bulkhead** (`tower::load_shed` over `tower::limit::ConcurrencyLimit`): at most `max_in_flight` calls to
//!    the provider at once; a call beyond that fails at once with [`MailError::Overloaded`] instead of queueing;
//! 3. **circuit breaker** (the lesson's own, [`crate::breaker`]): after too many failures in a row, rejects
//!    every call without making it, then lets one probe through;
//! 4. **timeout** (`tower::timeout`): a call with no answer in time is a failure like any other.
//!
//! The order matters. The breaker sits inside the timeout's caller, so a timeout counts as a failure. The bulkhead
//! is inside the retry, so a request sleeping before its next attempt holds no slot. And the retry is outermost,
//! so every attempt goes through the breaker: once it opens, the next attempt is rejected and not retried.
//!
//! Every layer's error comes back as a [`MailError`], so that the breaker, the retry policy and the consumer all
//! decide on one type.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::breaker::{BreakerConfig, BreakerHandle, CircuitBreakerLayer};
use crate::retry::{Backoff, MailRetry};

/// The header that carries the order id, so that a provider can recognise a request it has already handled.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

// ANCHOR: request
/// An order-confirmation e-mail, as `mail.requests` carries it (JSON, keyed by the order id) and as the
/// provider receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRequest {
    pub order_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}
// ANCHOR_END: request

impl MailRequest {
    /// The confirmation of `order_id` for `to`.
    pub fn confirmation(order_id: &str, to: &str) -> MailRequest {
        MailRequest {
            order_id: order_id.to_string(),
            to: to.to_string(),
            subject: format!("Your order {order_id} is confirmed"),
            body: format!("Thank you for your order {order_id}. We will let you know when it ships."),
        }
    }

    /// The request a record's payload holds, or why it holds none.
    pub fn from_payload(payload: Option<&[u8]>) -> Result<MailRequest, String> {
        let payload = payload.ok_or("no payload")?;
        serde_json::from_slice(payload).map_err(|e| format!("not a mail request: {e}"))
    }
}

/// The provider took the e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub status: u16,
}

// ANCHOR: error
/// Why an e-mail was not sent. The breaker, the retry policy and the consumer each decide from this alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The provider answered, with an error status (4xx or 5xx). `retry_after` is its `Retry-After` header, if
    /// any (in seconds on the wire).
    #[error("the provider answered {status}: {body}")]
    Status { status: u16, retry_after: Option<Duration>, body: String },
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// No connection: refused, reset, closed before the answer.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The circuit breaker rejected the call: it was never made.
    #[error("the circuit breaker is open: call not made")]
    BreakerOpen,
    /// The bulkhead was full: the call was never made.
    #[error("overloaded: too many calls in flight, call not made")]
    Overloaded,
}
// ANCHOR_END: error

// ANCHOR: is_permanent
impl MailError {
    /// Whether sending again can never help: the provider understood the request and refused it (a 4xx, except
    /// 408 Request Timeout and 429 Too Many Requests, which say "not now" rather than "never"). Such an e-mail
    /// goes to the dead-letter topic.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}
// ANCHOR_END: is_permanent

impl MailError {
    /// The status the provider answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            MailError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `MailError` a tower layer's boxed error stands for: tower's timeout and load shedding have error types
    /// of their own, and pass the inner service's errors on boxed.
    pub fn from_box(error: BoxError) -> MailError {
        match error.downcast::<MailError>() {
            Ok(error) => *error,
            Err(error) if error.is::<tower::timeout::error::Elapsed>() => MailError::Timeout,
            Err(error) if error.is::<tower::load_shed::error::Overloaded>() => MailError::Overloaded,
            Err(error) => MailError::Connection(error.to_string()),
        }
    }
}

// ANCHOR: resilience
/// Every setting of the client's layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resilience {
    /// How long one call may take, connection included.
    pub timeout: Duration,
    pub breaker: BreakerConfig,
    pub backoff: Backoff,
    /// Retries after the first attempt, at most (the budget may allow fewer).
    pub max_retries: u32,
    pub budget: BudgetConfig,
    /// The bulkhead: calls in flight to the provider at once, at most.
    pub max_in_flight: usize,
}

/// `tower::retry::budget::TpsBudget::new`'s three arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a request counts towards the retries it allows (1 to 60 s).
    pub ttl: Duration,
    /// Retries allowed per second whatever the traffic, for a client that sends little.
    pub min_per_sec: u32,
    /// Retries allowed per request: 0.2 lets retries add at most 20% to the load.
    pub retry_ratio: f32,
}
// ANCHOR_END: resilience

impl Resilience {
    /// The lesson's settings: tight enough that an outage shows in a few seconds.
    pub fn lesson() -> Resilience {
        Resilience {
            timeout: Duration::from_millis(500),
            breaker: BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(1000) },
            backoff: Backoff { base: Duration::from_millis(50), cap: Duration::from_millis(400) },
            max_retries: 3,
            budget: BudgetConfig { ttl: Duration::from_secs(10), min_per_sec: 1, retry_ratio: 0.2 },
            max_in_flight: 4,
        }
    }

    /// The same without a breaker (`--no-breaker`): it never opens, however many calls fail.
    pub fn without_breaker(self) -> Resilience {
        Resilience { breaker: BreakerConfig { failure_threshold: u32::MAX, ..self.breaker }, ..self }
    }
}

/// The e-mail client: cheap to clone, every clone sharing the breaker, the bulkhead and the budget.
#[derive(Clone)]
pub struct MailClient {
    service: BoxCloneSyncService<MailRequest, Delivery, MailError>,
    /// The breaker's state, shared with every clone (the consumer reads it to know when to resume).
    pub breaker: BreakerHandle,
}

impl std::fmt::Debug for MailClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailClient").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}

impl MailClient {
    /// A client of the provider at `endpoint` (`http://host:port`) with `resilience`'s layers.
    pub fn new(endpoint: &str, resilience: &Resilience) -> anyhow::Result<MailClient> {
        let http = HttpSend { http: reqwest::Client::builder().build()?, url: format!("{endpoint}/v1/send") };
        let breaker = BreakerHandle::new(resilience.breaker);
        let budget = resilience.budget;
        let policy = MailRetry::new(
            resilience.backoff,
            resilience.max_retries,
            Arc::new(TpsBudget::new(budget.ttl, budget.min_per_sec, budget.retry_ratio)),
        );
        // ANCHOR: stack
        let service = ServiceBuilder::new()
            .retry(policy)
            .map_err(MailError::from_box)
            .load_shed()
            .concurrency_limit(resilience.max_in_flight)
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .map_err(MailError::from_box)
            .timeout(resilience.timeout)
            .service(http);
        // ANCHOR_END: stack
        Ok(MailClient { service: BoxCloneSyncService::new(service), breaker })
    }

    /// Sends `request` through every layer.
    pub async fn send(&self, request: MailRequest) -> Result<Delivery, MailError> {
        self.service.clone().oneshot(request).await
    }
}

/// One call to the provider: `POST {url}` with the e-mail as JSON and the order id as `Idempotency-Key`. A 2xx
/// is a [`Delivery`]; any other status a [`MailError::Status`].
#[derive(Debug, Clone)]
struct HttpSend {
    http: reqwest::Client,
    url: String,
}

impl Service<MailRequest> for HttpSend {
    type Response = Delivery;
    type Error = MailError;
    type Future = BoxFuture<'static, Result<Delivery, MailError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MailError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: MailRequest) -> Self::Future {
        let call = self.http.post(&self.url).header(IDEMPOTENCY_KEY, &request.order_id).json(&request).send();
        Box::pin(async move {
            let response = call.await.map_err(|e| MailError::Connection(error_chain(&e)))?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                return Ok(Delivery { status });
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().await.unwrap_or_default();
            Err(MailError::Status { status, retry_after, body })
        })
    }
}

/// An error and its causes on one line ("error sending request: … Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
