//! One order followed across two hops: the order service sends it to `traced.orders` with a `traceparent`
//! header; the shipping service (a consumer and a producer) continues the trace, ships the order and sends the
//! shipment to `traced.shipments` with a header of its own; the tracker reads the shipment and continues the trace
//! once more. Each piece of work is a tracing span carrying W3C ids ([`crate::trace::span`]).
//!
//! The spans of one order, each the parent of the next:
//!
//! ```text
//! send order (order-service) → process order (shipping) → send shipment (shipping) → process shipment (tracker)
//! ```

use std::time::Duration;

use futures::StreamExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::trace::{self, SpanContext, TRACEPARENT};

// ANCHOR: order
/// An order, as `traced.orders` carries it (JSON, keyed by its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer: String,
    pub items: u32,
    pub total_cents: u64,
}

/// A shipment, as `traced.shipments` carries it (JSON, keyed by the order's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub order_id: String,
    pub carrier: String,
    pub parcels: u32,
}
// ANCHOR_END: order

/// The services' names, as the spans' `service` field says them.
pub const ORDER_SERVICE: &str = "order-service";
pub const SHIPPING: &str = "shipping";
pub const TRACKER: &str = "tracker";

/// What the shipping service ships an order as: one parcel per three items, by a carrier chosen by size.
pub fn ship(order: &Order) -> Shipment {
    let parcels = order.items.div_ceil(3).max(1);
    let carrier = if parcels > 2 { "freight" } else { "post" };
    Shipment { order_id: order.order_id.clone(), carrier: carrier.into(), parcels }
}

/// The value of a record's `traceparent` header, if it has one (the first, if several).
pub fn traceparent_of<M: Message>(message: &M) -> Option<Vec<u8>> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == TRACEPARENT).and_then(|h| h.value.map(<[u8]>::to_vec))
}

// ANCHOR: place_order
/// The order service: starts the order's trace and sends it, the span's `traceparent` in the record's headers.
pub async fn place_order<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    order: &Order,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<SpanContext> {
    let context = trace::continue_trace(None, rng);
    let span = trace::span("send order", ORDER_SERVICE, &context, &order.order_id);
    let header = context.traceparent();
    let headers = OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some(&header) });
    send(producer, topic, &order.order_id, &serde_json::to_vec(order)?, headers).instrument(span).await?;
    Ok(context)
}
// ANCHOR_END: place_order

/// Sends one record, within 30 s.
async fn send<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
) -> anyhow::Result<()> {
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(error, _)| error)?;
    Ok(())
}

/// The shipping service's topics.
#[derive(Debug, Clone)]
pub struct ShippingTopics {
    pub orders: String,
    pub shipments: String,
}

// ANCHOR: handle_order
/// The shipping service's work on one record of `traced.orders`: continue the trace the record carries (or start
/// one, when its header is missing or invalid), ship the order, send the shipment with the trace's next span in
/// its header. The context of the `process order` span.
pub async fn handle_order<C: ClientContext + 'static>(
    message: &BorrowedMessage<'_>,
    producer: &FutureProducer<C>,
    shipments: &str,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<SpanContext> {
    let incoming = traceparent_of(message).and_then(|value| trace::parse_traceparent(&value));
    let process = trace::continue_trace(incoming.as_ref(), rng);
    let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
    let span = trace::span("process order", SHIPPING, &process, &key);
    let send_context = process.child(rng);
    async {
        if incoming.is_none() {
            tracing::warn!(order_id = %key, "no valid traceparent on the order: a new trace starts here");
        }
        let order: Order = serde_json::from_slice(message.payload().unwrap_or_default())?;
        let shipment = ship(&order);
        let header = send_context.traceparent();
        let headers = OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some(&header) });
        let send_span = trace::span("send shipment", SHIPPING, &send_context, &order.order_id);
        send(producer, shipments, &order.order_id, &serde_json::to_vec(&shipment)?, headers).instrument(send_span).await
    }
    .instrument(span)
    .await?;
    Ok(process)
}
// ANCHOR_END: handle_order

/// The shipping service: reads `topics.orders` in its group until `stop` resolves, handles each record
/// ([`handle_order`]) and commits it once its shipment is acknowledged. A record that is not an order is logged
/// and skipped.
pub async fn run_shipping<C, P>(
    consumer: StreamConsumer<C>,
    producer: FutureProducer<P>,
    topics: ShippingTopics,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u64>
where
    C: ConsumerContext + 'static,
    P: ClientContext + 'static,
{
    consumer.subscribe(&[&topics.orders])?;
    let mut rng = fastrand::Rng::new();
    let mut shipped = 0;
    let mut stream = consumer.stream();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => break,
            next = stream.next() => match next {
                Some(message) => message?,
                None => break,
            },
        };
        match handle_order(&message, &producer, &topics.shipments, &mut rng).await {
            Ok(_) => shipped += 1,
            Err(error) => {
                tracing::warn!("skipped a record of {} at offset {}: {error:#}", topics.orders, message.offset())
            }
        }
        consumer.commit_message(&message, CommitMode::Async)?;
    }
    Ok(shipped)
}

// ANCHOR: track_shipment
/// The tracker: continues the trace of the shipment of `order_id` it read, whose `traceparent` header was
/// `traceparent` (its `process shipment` span).
pub fn track_shipment(order_id: &str, traceparent: Option<&[u8]>, rng: &mut fastrand::Rng) -> SpanContext {
    let incoming = traceparent.and_then(trace::parse_traceparent);
    let context = trace::continue_trace(incoming.as_ref(), rng);
    let _entered = trace::span("process shipment", TRACKER, &context, order_id).entered();
    context
}
// ANCHOR_END: track_shipment
