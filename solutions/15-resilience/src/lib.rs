//! Lesson 15 — a consumer that survives a failing dependency: the shop's notification step reads
//! `mail.requests` and sends each order-confirmation e-mail through a provider over HTTP. The provider slows
//! down, answers errors, goes away altogether and comes back; the consumer neither hammers it while it is down,
//! nor loses an e-mail, nor sends one twice.
//!
//! - [`provider`]: the fake e-mail provider (axum), which the tests and the story steer at run time;
//! - [`client`]: the HTTP client (reqwest) inside tower's layers — timeout, retry, bulkhead — and the breaker;
//! - [`breaker`]: the circuit breaker, a pure state machine and the tower layer around it (tower has none);
//! - [`retry`]: what is worth retrying, the backoff, and the retry policy with its budget;
//! - [`mailer`]: the consumer, which pauses its partitions while the breaker is open.

pub mod breaker;
pub mod client;
pub mod mailer;
pub mod provider;
pub mod retry;

pub use breaker::{Admission, Breaker, BreakerConfig, BreakerHandle, BreakerState, counts_as_failure};
pub use client::{Delivery, MailClient, MailError, MailRequest, Resilience};
pub use mailer::{Handled, MailTopics, Mailer};
pub use provider::{FakeProvider, Mode};
pub use retry::{Backoff, MailRetry, is_retryable};
