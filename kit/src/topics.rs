//! The workbook's named topics, in one manifest.
//!
//! The runnable stories (`cargo xtask lesson NN`) use these names; `cargo xtask broker` creates them on the
//! embedded broker before any client connects (the mock cannot create topics on request), and
//! `cargo xtask topics` creates them on a real broker. Tests never use these names: they make unique ones with
//! [`unique`] so they can run in parallel against one broker.

// ANCHOR: manifest
/// One topic as the workbook wants it. Retention and compression only apply on real Kafka; the mock keeps
/// everything (up to its 5 MiB per partition) and ignores topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// `retention.ms` on real Kafka; `None` keeps the broker default (7 days).
    pub retention_ms: Option<i64>,
    /// `compression.type` set on the topic (the broker recompresses if producers differ).
    pub compression: &'static str,
    /// `cleanup.policy=compact` on real Kafka: the log cleaner keeps the latest record of each key (lesson 11's
    /// snapshots). `false` is the default policy, `delete`: whole segments go when retention ends.
    pub compacted: bool,
    /// What the topic is for, shown by `cargo xtask topics`.
    pub purpose: &'static str,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// User clicks and purchases: the stream lessons 01–09 produce and consume. Keyed by `user_id`.
pub const USER_EVENTS: TopicSpec = TopicSpec {
    name: "user-events",
    partitions: 3,
    retention_ms: Some(7 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "user clicks and purchases, keyed by user_id",
};
// ANCHOR_END: manifest

/// Events that could not be processed, with the reason in headers (lesson 08).
pub const USER_EVENTS_DLQ: TopicSpec = TopicSpec {
    name: "user-events-dlq",
    partitions: 1,
    retention_ms: Some(30 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "dead letters from user-events, kept longer for inspection and replay",
};

/// The same kind of events sent without a key (lesson 03), to compare how they spread with `user-events`.
pub const USER_EVENTS_UNKEYED: TopicSpec = TopicSpec {
    name: "user-events-unkeyed",
    partitions: 3,
    retention_ms: Some(DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 03: user events without a key, scattered over the partitions",
};

/// Orders as the order service records them (lesson 10): `ORDER_CREATED`, keyed by `order_id`, written in one
/// transaction with the order's stock request.
pub const ORDERS_EVENTS: TopicSpec = TopicSpec {
    name: "orders.events",
    partitions: 3,
    retention_ms: Some(7 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lessons 10 and 12: what happened to each order (created, placed, confirmed, cancelled), keyed by order_id",
};

/// Stock reservations the order service asks of the inventory service (lesson 10), keyed by `order_id`.
pub const INVENTORY_REQUESTS: TopicSpec = TopicSpec {
    name: "inventory.requests",
    partitions: 3,
    retention_ms: Some(DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 10: RESERVE requests, written with their order in one transaction",
};

/// What the inventory service did with each request (lesson 10), written exactly once per request by a
/// consume-transform-produce transaction.
pub const INVENTORY_EVENTS: TopicSpec = TopicSpec {
    name: "inventory.events",
    partitions: 3,
    retention_ms: Some(7 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 10: STOCK_RESERVED events, one per inventory request",
};

/// An order's events (lesson 11), keyed by `order_id`: the event store, the source of truth. Kept for ever
/// (`retention.ms=-1`) and never compacted: an event store that forgets events is no longer one.
pub const ORDER_EVENTS: TopicSpec = TopicSpec {
    name: "order-events",
    partitions: 3,
    retention_ms: Some(-1),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 11: the event store, every event of every order, kept for ever",
};

/// The latest snapshot of each order (lesson 11), keyed by `order_id`, compacted: older snapshots of an order
/// are removed by the log cleaner, and losing them all costs only a longer replay.
pub const ORDER_SNAPSHOTS: TopicSpec = TopicSpec {
    name: "order-snapshots",
    partitions: 3,
    retention_ms: None,
    compression: "lz4",
    compacted: true,
    purpose: "lesson 11: the latest snapshot per order (compacted)",
};

/// Lesson 12's saga topics: seed 002's table (partitions, retention, compression), with the payment service it
/// lacked and a changelog per service. Every message is keyed by the order id, which is the saga's id.
const fn saga_topic(
    name: &'static str,
    retention_ms: i64,
    compression: &'static str,
    purpose: &'static str,
) -> TopicSpec {
    TopicSpec { name, partitions: 3, retention_ms: Some(retention_ms), compression, compacted: false, purpose }
}

/// A service's changelog: the latest value of each key of its state, compacted (lesson 12).
const fn changelog(name: &'static str, purpose: &'static str) -> TopicSpec {
    TopicSpec { name, partitions: 3, retention_ms: None, compression: "lz4", compacted: true, purpose }
}

pub const ORDERS_REQUESTS: TopicSpec =
    saga_topic("orders.requests", DAY_MS, "lz4", "lesson 12: clients' PlaceOrder requests, each starting a saga");
pub const ORDERS_SAGAS: TopicSpec = changelog("orders.sagas", "lesson 12: the order service's sagas (compacted)");
pub const INVENTORY_COMMANDS: TopicSpec =
    saga_topic("inventory.commands", DAY_MS, "lz4", "lesson 12: reserve, release and commit stock");
pub const INVENTORY_RESPONSES: TopicSpec =
    saga_topic("inventory.responses", DAY_MS, "lz4", "lesson 12: the inventory's answers");
pub const INVENTORY_STATE: TopicSpec =
    changelog("inventory.state", "lesson 12: stock per SKU and reservations per order (compacted)");
pub const PAYMENTS_COMMANDS: TopicSpec = saga_topic("payments.commands", DAY_MS, "lz4", "lesson 12: charge and refund");
pub const PAYMENTS_RESPONSES: TopicSpec =
    saga_topic("payments.responses", DAY_MS, "lz4", "lesson 12: the payment service's answers");
pub const PAYMENTS_STATE: TopicSpec =
    changelog("payments.state", "lesson 12: payments per order and money totals (compacted)");
pub const NOTIFICATIONS_REQUESTS: TopicSpec =
    saga_topic("notifications.requests", 2 * DAY_MS, "gzip", "lesson 12: messages for customers");
pub const NOTIFICATIONS_STATE: TopicSpec =
    changelog("notifications.state", "lesson 12: notifications sent or dead-lettered (compacted)");
pub const NOTIFICATIONS_DLQ: TopicSpec = TopicSpec {
    name: "notifications.dlq",
    partitions: 1,
    retention_ms: Some(30 * DAY_MS),
    compression: "gzip",
    compacted: false,
    purpose: "lesson 12: notifications not sent after 3 attempts, with why",
};
pub const SAGA_DLQ: TopicSpec = TopicSpec {
    name: "saga.dlq",
    partitions: 1,
    retention_ms: Some(30 * DAY_MS),
    compression: "gzip",
    compacted: false,
    purpose: "lesson 12: inputs of the saga's services that are not what their topic carries",
};

/// Every topic of lesson 12's saga.
pub const SAGA_TOPICS: &[TopicSpec] = &[
    ORDERS_REQUESTS,
    ORDERS_EVENTS,
    ORDERS_SAGAS,
    INVENTORY_COMMANDS,
    INVENTORY_RESPONSES,
    INVENTORY_STATE,
    PAYMENTS_COMMANDS,
    PAYMENTS_RESPONSES,
    PAYMENTS_STATE,
    NOTIFICATIONS_REQUESTS,
    NOTIFICATIONS_STATE,
    NOTIFICATIONS_DLQ,
    SAGA_DLQ,
];

/// Lesson 13's choreographed shop: each service announces on a topic of its own, and keeps a changelog.
const fn shop_topic(name: &'static str, purpose: &'static str) -> TopicSpec {
    saga_topic(name, 7 * DAY_MS, "lz4", purpose)
}

pub const SHOP_REQUESTS: TopicSpec = saga_topic("shop.requests", DAY_MS, "lz4", "lesson 13: clients' orders");
pub const SHOP_ORDERS: TopicSpec = shop_topic("shop.orders", "lesson 13: the order service's events");
pub const SHOP_INVENTORY: TopicSpec = shop_topic("shop.inventory", "lesson 13: the inventory's events");
pub const SHOP_PAYMENTS: TopicSpec = shop_topic("shop.payments", "lesson 13: the payment service's events");
pub const SHOP_ORDERS_STATE: TopicSpec = changelog("shop.orders.state", "lesson 13: the order service's orders");
pub const SHOP_INVENTORY_STATE: TopicSpec =
    changelog("shop.inventory.state", "lesson 13: stock per SKU and reservations per order");
pub const SHOP_PAYMENTS_STATE: TopicSpec = changelog("shop.payments.state", "lesson 13: payments per order");
pub const SHOP_NOTIFICATIONS_STATE: TopicSpec =
    changelog("shop.notifications.state", "lesson 13: notifications sent or dead-lettered");
pub const SHOP_NOTIFICATIONS_DLQ: TopicSpec = TopicSpec {
    name: "shop.notifications.dlq",
    purpose: "lesson 13: notifications not sent, with why",
    ..NOTIFICATIONS_DLQ
};
pub const SHOP_DLQ: TopicSpec =
    TopicSpec { name: "shop.dlq", purpose: "lesson 13: records a shop service could not read", ..SAGA_DLQ };

/// Every topic of lesson 13's shop.
pub const SHOP_TOPICS: &[TopicSpec] = &[
    SHOP_REQUESTS,
    SHOP_ORDERS,
    SHOP_INVENTORY,
    SHOP_PAYMENTS,
    SHOP_ORDERS_STATE,
    SHOP_INVENTORY_STATE,
    SHOP_PAYMENTS_STATE,
    SHOP_NOTIFICATIONS_STATE,
    SHOP_NOTIFICATIONS_DLQ,
    SHOP_DLQ,
];

/// Lesson 14's analytics: shoppers' events in, windows' results out.
/// One partition: the aggregator's stream time is then that of one ordered log. Over several partitions, one read
/// ahead of the others would make their events late (Kafka Streams keeps stream time per partition, and a global
/// window needs the slowest partition's: lesson 14's chapter says how).
pub const SHOP_ACTIVITY: TopicSpec = TopicSpec {
    partitions: 1,
    ..shop_topic("shop.activity", "lesson 14: shoppers' views, carts and purchases, keyed by user id")
};
pub const ANALYTICS_WINDOWS: TopicSpec = TopicSpec {
    name: "analytics.windows",
    partitions: 1,
    retention_ms: Some(30 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 14: each closed window's result, keyed by its start",
};
pub const ANALYTICS_LATE: TopicSpec = TopicSpec {
    name: "analytics.late",
    purpose: "lesson 14: events that came after their window closed",
    ..ANALYTICS_WINDOWS
};
pub const ANALYTICS_STATE: TopicSpec =
    TopicSpec { partitions: 1, ..changelog("analytics.state", "lesson 14: the aggregator's open windows and clock") };
pub const ANALYTICS_DLQ: TopicSpec =
    TopicSpec { name: "analytics.dlq", purpose: "lesson 14: records that are not shoppers' events", ..SAGA_DLQ };

/// Every topic of lesson 14.
pub const ANALYTICS_TOPICS: &[TopicSpec] =
    &[SHOP_ACTIVITY, ANALYTICS_WINDOWS, ANALYTICS_LATE, ANALYTICS_STATE, ANALYTICS_DLQ];

/// Lesson 15's notifications: orders whose customer gets an e-mail through a provider that fails. Keyed by order id.
pub const MAIL_REQUESTS: TopicSpec = TopicSpec {
    name: "mail.requests",
    partitions: 3,
    retention_ms: Some(7 * DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 15: e-mails to send, keyed by order id",
};
/// E-mails the provider refused for good (a 4xx other than 429), with the reason in headers.
pub const MAIL_DLQ: TopicSpec = TopicSpec {
    name: "mail.dlq",
    partitions: 1,
    retention_ms: Some(30 * DAY_MS),
    purpose: "lesson 15: e-mails the provider refused for good",
    ..MAIL_REQUESTS
};

/// Every topic of lesson 15.
pub const MAIL_TOPICS: &[TopicSpec] = &[MAIL_REQUESTS, MAIL_DLQ];

/// Lesson 16's traced flow: an order in, a shipment out, one trace across both hops. Keyed by order id.
pub const TRACED_ORDERS: TopicSpec = TopicSpec {
    name: "traced.orders",
    partitions: 3,
    retention_ms: Some(DAY_MS),
    compression: "lz4",
    compacted: false,
    purpose: "lesson 16: orders carrying a W3C traceparent header",
};
pub const TRACED_SHIPMENTS: TopicSpec = TopicSpec {
    name: "traced.shipments",
    purpose: "lesson 16: shipments, continuing each order's trace",
    ..TRACED_ORDERS
};
/// Lesson 16's performance lab: what the producer and consumer settings are measured on. No compression on the
/// topic: the producer's `compression.type` is one of the settings swept, and the broker keeps what it gets.
pub const PERF_LAB: TopicSpec = TopicSpec {
    name: "perf.lab",
    partitions: 3,
    retention_ms: Some(60 * 60 * 1000),
    compression: "producer",
    compacted: false,
    purpose: "lesson 16: the performance lab's records (one hour)",
};

/// Every topic of lesson 16.
pub const OBSERVABILITY_TOPICS: &[TopicSpec] = &[TRACED_ORDERS, TRACED_SHIPMENTS, PERF_LAB];

/// Every topic the workbook's stories use.
pub const WORKBOOK_TOPICS: &[TopicSpec] = &[
    USER_EVENTS,
    USER_EVENTS_DLQ,
    USER_EVENTS_UNKEYED,
    ORDERS_EVENTS,
    INVENTORY_REQUESTS,
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    ORDER_SNAPSHOTS,
    ORDERS_REQUESTS,
    ORDERS_SAGAS,
    INVENTORY_COMMANDS,
    INVENTORY_RESPONSES,
    INVENTORY_STATE,
    PAYMENTS_COMMANDS,
    PAYMENTS_RESPONSES,
    PAYMENTS_STATE,
    NOTIFICATIONS_REQUESTS,
    NOTIFICATIONS_STATE,
    NOTIFICATIONS_DLQ,
    SAGA_DLQ,
    SHOP_REQUESTS,
    SHOP_ORDERS,
    SHOP_INVENTORY,
    SHOP_PAYMENTS,
    SHOP_ORDERS_STATE,
    SHOP_INVENTORY_STATE,
    SHOP_PAYMENTS_STATE,
    SHOP_NOTIFICATIONS_STATE,
    SHOP_NOTIFICATIONS_DLQ,
    SHOP_DLQ,
    SHOP_ACTIVITY,
    ANALYTICS_WINDOWS,
    ANALYTICS_LATE,
    ANALYTICS_STATE,
    ANALYTICS_DLQ,
    MAIL_REQUESTS,
    MAIL_DLQ,
    TRACED_ORDERS,
    TRACED_SHIPMENTS,
    PERF_LAB,
];

/// Looks a topic up by name.
pub fn find(name: &str) -> Option<&'static TopicSpec> {
    WORKBOOK_TOPICS.iter().find(|t| t.name == name)
}

/// `prefix` plus a random suffix: topics and groups that no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
