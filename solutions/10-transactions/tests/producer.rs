//! Grades lesson 10's order service and readers: the transactional producer's configuration and identity on the
//! wire, an order's two records committed in one transaction, a refused write that aborts the whole order, and
//! what a reader with the lesson's consumer configuration sees of committed, aborted and open transactions.
//!
//! The embedded broker delivers aborted records to every reader, so there what a transaction did is graded from
//! the requests `kit::FaultProxy` forwards (which partitions joined it, commit or abort), and what readers see is
//! graded on real Kafka only ("NOT GRADED ON THIS BROKER" on the embedded one).

mod common;

use std::collections::BTreeMap;

use common::{Txn, blocking, order_counts, read_to_end, read_to_end_with, ready_producer, transactions};
use kit::{Capability, FaultProxy, TxnRequest};
use kit_testing::{broker, can_grade, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use solution_10::{
    OrderCreated, OrderTopics, ReserveStock, TRANSACTION_TIMEOUT_MS, TXN_CALL_TIMEOUT, consumer_config, place_order,
    producer_config, sample_orders,
};

/// Snapshot settings: the workbook's redactions, plus what differs from run to run in a transaction log.
fn redactions() -> insta::Settings {
    let mut settings = kit_testing::redact::settings();
    for field in ["producer_id", "producer_epoch", "transactional_id"] {
        settings.add_redaction(&format!(".**.{field}"), format!("[{field}]"));
    }
    settings
}

/// Two fresh topics for the order service, three partitions each.
async fn order_topics() -> OrderTopics {
    let topics =
        OrderTopics { orders: unique("lesson10-orders"), inventory_requests: unique("lesson10-inventory-requests") };
    for topic in [&topics.orders, &topics.inventory_requests] {
        broker().create_topic(topic, 3).await.expect("topic");
    }
    topics
}

fn roles(topics: &OrderTopics) -> [(&str, &str); 2] {
    [(topics.orders.as_str(), "orders.events"), (topics.inventory_requests.as_str(), "inventory.requests")]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_producer_is_transactional_under_its_own_id() {
    let config = producer_config("127.0.0.1:1", "order-service-1");
    assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:1"), "the brokers given");
    assert_eq!(config.get("transactional.id"), Some("order-service-1"), "the identity given, as transactional.id");
    assert_eq!(
        config.get("transaction.timeout.ms"),
        Some(TRANSACTION_TIMEOUT_MS.to_string().as_str()),
        "an open transaction is aborted by the broker after TRANSACTION_TIMEOUT_MS"
    );

    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let id = unique("lesson10-order-service");
    let _producer = ready_producer(proxy.bootstrap_servers(), &id).await;
    let given: Vec<TxnRequest> = proxy
        .transaction_log()
        .into_iter()
        .filter(|e| matches!(e, TxnRequest::InitProducerId { error_code: 0, .. }))
        .collect();
    let [TxnRequest::InitProducerId { transactional_id, producer_id, .. }] = &given[..] else {
        panic!("one producer id given, through the proxy: {given:?}");
    };
    assert_eq!(transactional_id.as_deref(), Some(id.as_str()), "the producer asked for its id as {id}");
    assert!(*producer_id >= 0, "the broker gave it a producer id: {given:?}");
    let seen = serde_json::json!({
        "transactional.id": "[given]",
        "transaction.timeout.ms": config.get("transaction.timeout.ms"),
        "on the wire": given,
    });
    redactions().bind(|| insta::assert_json_snapshot!("transactional_identity", seen));
}

#[test]
fn the_consumer_reads_committed_records_and_never_commits_by_itself() {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", "127.0.0.1:1")
        .set("group.id", "inventory-service")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10");
    let config = consumer_config(base.clone());
    for (key, value) in base.config_map() {
        assert_eq!(config.get(key), Some(value), "{key} is kept as given");
    }
    assert_eq!(
        config.get("isolation.level"),
        Some("read_committed"),
        "records of aborted and open transactions stay hidden (written down, even though it is librdkafka's default)"
    );
    assert_eq!(
        config.get("enable.auto.commit"),
        Some("false"),
        "offsets are committed by the transactions, never by the consumer on its own"
    );
    let map: BTreeMap<&str, &str> = config.config_map().iter().map(|(k, v)| (*k, *v)).collect();
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("consumer_config", map));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_and_its_stock_request_commit_in_one_transaction() {
    let topics = order_topics().await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-order-service")).await;
    let orders = sample_orders(1, 3);
    let (placing, placed_topics) = (orders.clone(), topics.clone());
    blocking(move || {
        for order in &placing {
            place_order(&producer, &placed_topics, order).unwrap_or_else(|e| panic!("{}: {e:#}", order.order_id));
        }
    })
    .await;

    let txns = transactions(&proxy.transaction_log(), &roles(&topics));
    assert_eq!(txns.len(), orders.len(), "one transaction per order: {txns:#?}");
    for (txn, order) in txns.iter().zip(&orders) {
        let joined: Vec<&str> = txn.partitions.iter().map(|p| p.split('/').next().unwrap()).collect();
        assert_eq!(
            joined,
            ["inventory.requests", "orders.events"],
            "{}: both topics in its transaction",
            order.order_id
        );
        assert_eq!(txn.end, "commit", "{}: the transaction was committed", order.order_id);
        assert!(txn.offsets.is_empty(), "the order service commits no consumer offsets: {txn:?}");
    }

    // No transaction was aborted here, so every broker shows exactly what was committed.
    let created = read_to_end(&topics.orders, 3, "read_committed").await;
    let requested = read_to_end(&topics.inventory_requests, 3, "read_committed").await;
    for order in &orders {
        let (event, request) = order.records();
        let find = |read: &[common::Read]| -> Vec<common::Read> {
            read.iter().filter(|r| r.key == order.order_id).cloned().collect()
        };
        let [created] = &find(&created)[..] else { panic!("{}: one ORDER_CREATED keyed by its id", order.order_id) };
        let [requested] = &find(&requested)[..] else { panic!("{}: one RESERVE keyed by its id", order.order_id) };
        assert_eq!(serde_json::from_str::<OrderCreated>(&created.payload).unwrap(), event, "the event, as JSON");
        assert_eq!(serde_json::from_str::<ReserveStock>(&requested.payload).unwrap(), request, "the request");
    }
    redactions().bind(|| insta::assert_json_snapshot!("one_transaction_per_order", txns));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_write_aborts_the_whole_order() {
    let test = "a_refused_write_aborts_the_whole_order";
    let topics = order_topics().await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-order-service")).await;
    let orders = sample_orders(1, 3);
    let (placing, placed_topics) = (orders.clone(), topics.clone());
    let proxy = std::sync::Arc::new(proxy);
    let faults = std::sync::Arc::clone(&proxy);
    let results = blocking(move || {
        let mut results = Vec::new();
        for (n, order) in placing.iter().enumerate() {
            if n == 1 {
                // The broker refuses the second order's writes: the producer's id is unknown to it (as after its
                // state expired). librdkafka fails the transaction; it must be aborted.
                faults.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
            }
            results.push(place_order(&producer, &placed_topics, order).map_err(|e| format!("{e:#}")));
        }
        results
    })
    .await;
    assert!(results[0].is_ok(), "the first order is placed: {results:?}");
    assert!(results[1].is_err(), "an order whose write was refused is an error, not a success: {results:?}");
    assert!(
        results[2].is_ok(),
        "the producer is ready for the next order after a failed one (was the failed transaction aborted?): {results:?}"
    );
    assert_eq!(proxy.stats().requests_failed, 1, "one write was refused: {:?}", proxy.stats());

    let txns = transactions(&proxy.transaction_log(), &roles(&topics));
    let ends: Vec<&str> = txns.iter().map(|t| t.end).collect();
    assert_eq!(ends, ["commit", "abort", "commit"], "the failed order's transaction was aborted: {txns:#?}");
    let aborted: &Txn = &txns[1];
    assert!(!aborted.partitions.is_empty(), "the aborted transaction had begun writing: {aborted:?}");

    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        // Whatever of the failed order reached the log, a read_committed reader sees none of it.
        for topic in [&topics.orders, &topics.inventory_requests] {
            let seen = order_counts(&read_to_end(topic, 3, "read_committed").await);
            let expected: BTreeMap<String, usize> =
                [&orders[0], &orders[2]].iter().map(|o| (o.order_id.clone(), 1)).collect();
            assert_eq!(seen, expected, "{topic}: the placed orders once each, nothing of the failed one");
        }
    }
}

/// Writes `payload` to partition 0 of `topic` in a transaction of its own, which it commits or aborts.
fn write_one(producer: &solution_10::TxnProducer, topic: &str, payload: &str, commit: bool) {
    producer.begin_transaction().expect("begin");
    producer.send(BaseRecord::<str, str>::to(topic).partition(0).payload(payload)).map_err(|(e, _)| e).expect("send");
    if commit {
        producer.commit_transaction(TXN_CALL_TIMEOUT).expect("commit");
    } else {
        producer.flush(TXN_CALL_TIMEOUT).expect("the record is in the log before the abort");
        producer.abort_transaction(TXN_CALL_TIMEOUT).expect("abort");
    }
}

/// A reader with the learner's consumer configuration.
fn learner_reader() -> ClientConfig {
    consumer_config(broker().consumer_config(&unique("lesson10-reader")))
}

fn payloads(read: &[common::Read]) -> Vec<&str> {
    read.iter().map(|r| r.payload.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn aborted_records_stay_hidden() {
    let test = "aborted_records_stay_hidden";
    let topic = unique("lesson10-visibility");
    broker().create_topic(&topic, 1).await.expect("topic");
    let config = learner_reader();
    let producer = ready_producer(broker().bootstrap_servers(), &unique("lesson10-writer")).await;
    let written = topic.clone();
    blocking(move || {
        write_one(&producer, &written, "committed 1", true);
        write_one(&producer, &written, "aborted", false);
        write_one(&producer, &written, "committed 2", true);
    })
    .await;
    let everything = read_to_end(&topic, 1, "read_uncommitted").await;
    assert_eq!(payloads(&everything), ["committed 1", "aborted", "committed 2"], "all three are in the log");
    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        let committed = read_to_end_with(config, &topic, 1, "").await;
        assert_eq!(
            payloads(&committed),
            ["committed 1", "committed 2"],
            "the lesson's reader skips the aborted record"
        );
        let seen =
            serde_json::json!({ "read_uncommitted": payloads(&everything), "lesson's reader": payloads(&committed) });
        redactions().bind(|| insta::assert_json_snapshot!("aborted_records_stay_hidden", seen));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_holds_read_committed_readers_back() {
    let test = "an_open_transaction_holds_read_committed_readers_back";
    let topic = unique("lesson10-open");
    broker().create_topic(&topic, 1).await.expect("topic");
    let config = learner_reader();
    let first = ready_producer(broker().bootstrap_servers(), &unique("lesson10-writer")).await;
    let slow = ready_producer(broker().bootstrap_servers(), &unique("lesson10-slow-writer")).await;
    let (written, slow_writer) = (topic.clone(), std::sync::Arc::clone(&slow));
    blocking(move || {
        write_one(&first, &written, "before", true);
        // A transaction left open: its record is in the log, its commit not yet.
        slow_writer.begin_transaction().expect("begin");
        slow_writer
            .send(BaseRecord::<str, str>::to(&written).partition(0).payload("open"))
            .map_err(|(e, _)| e)
            .expect("send");
        slow_writer.flush(TXN_CALL_TIMEOUT).expect("the open transaction's record is in the log");
        write_one(&first, &written, "after, committed", true);
    })
    .await;
    let everything = read_to_end(&topic, 1, "read_uncommitted").await;
    assert_eq!(payloads(&everything), ["before", "open", "after, committed"], "all three are in the log");
    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        // The last stable offset stops at the open transaction's first record: what follows it waits, committed
        // or not, so that a read_committed reader sees records in log order.
        let held_back = read_to_end_with(config.clone(), &topic, 1, "").await;
        assert_eq!(payloads(&held_back), ["before"], "nothing after the open transaction's record, yet");
        blocking(move || slow.commit_transaction(TXN_CALL_TIMEOUT).expect("commit")).await;
        let released = read_to_end_with(config, &topic, 1, "").await;
        assert_eq!(payloads(&released), ["before", "open", "after, committed"], "once it commits, all, in log order");
        let seen = serde_json::json!({ "while open": payloads(&held_back), "once committed": payloads(&released) });
        redactions().bind(|| insta::assert_json_snapshot!("open_transaction", seen));
    }
}
