//! Grades lesson 11's CQRS service through a real HTTP client: every answer of `POST /orders/{id}/commands`
//! (202, 409, 422, 400, and 503 when the broker refuses the append), `GET /orders/{id}` from the read model only
//! (200, 404, 400), and `read_order`'s read-your-writes: a version that comes while the query waits is answered,
//! one that never comes is a 503 after the bound — and, end to end, behind the live projector, every client reads
//! its own writes.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kit::FaultProxy;
use kit_testing::redis_link::RedisLink;
use kit_testing::{broker, unique, wait_until};
use rdkafka::types::RDKafkaRespErr;
use serde::Serialize;
use serde_json::{Value, json};
use lesson_11::projection::{OrderSummary, ReadModel};
use lesson_11::service::{OrderRead, ReadWait, read_order, router};
use lesson_11::store::OrderWriter;

/// Serves the service of one writer on a free local port; its base URL.
async fn serve(writer: Arc<Mutex<OrderWriter>>, read_model: ReadModel, read_wait: ReadWait) -> String {
    serve_owners(vec![writer], read_model, read_wait).await
}

/// Serves the service of `writers` (each the owner of its partitions) on a free local port; its base URL.
async fn serve_owners(writers: Vec<Arc<Mutex<OrderWriter>>>, read_model: ReadModel, read_wait: ReadWait) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("the service's address");
    let app = router(writers, read_model, read_wait).expect("the writers own distinct partitions");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the service runs") });
    format!("http://{address}")
}

/// An answer as the tests compare and snapshot it.
#[derive(Debug, Serialize)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
    let body = response.json().await.expect("every answer is JSON");
    Answer { status, retry_after, body }
}

async fn post(base: &str, order_id: &str, body: String) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{base}/orders/{order_id}/commands"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the service answers");
    answer(response).await
}

async fn command(base: &str, order_id: &str, expected_version: u64, command: Value) -> Answer {
    post(base, order_id, json!({ "expected_version": expected_version, "command": command }).to_string()).await
}

async fn get(base: &str, path: &str) -> Answer {
    answer(reqwest::get(format!("{base}{path}")).await.expect("the service answers")).await
}

/// A read wait short enough for a test that waits for it to run out.
const SHORT_WAIT: ReadWait = ReadWait { within: Duration::from_millis(300), poll_every: Duration::from_millis(20) };

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_answered_202_409_422_or_400() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (read_model, _clear) = read_model("lesson11-commands").await;
    let base = serve(Arc::clone(&writer), read_model, SHORT_WAIT).await;

    let placed = command(&base, "order-1", 0, json!({"type": "PLACE_ORDER", "customer_id": "customer-7"})).await;
    let added = command(
        &base,
        "order-1",
        1,
        json!({"type": "ADD_ITEM", "sku": "LAPTOP", "quantity": 1, "unit_price_cents": 99900, "currency": "EUR"}),
    )
    .await;
    assert_eq!((placed.status, added.status), (202, 202), "{placed:?} {added:?}");
    assert_eq!(added.body, json!({"order_id": "order-1", "version": 2}), "202 names the order and its new version");

    // A second client still at version 1.
    let stale = command(&base, "order-1", 1, json!({"type": "CONFIRM_ORDER"})).await;
    assert_eq!(stale.status, 409, "{stale:?}");
    assert_eq!((stale.body["expected_version"].as_u64(), stale.body["actual_version"].as_u64()), (Some(1), Some(2)));
    let rejected = command(
        &base,
        "order-1",
        2,
        json!({"type": "ADD_ITEM", "sku": "MOUSE", "quantity": 1, "unit_price_cents": 2500, "currency": "USD"}),
    )
    .await;
    assert_eq!(rejected.status, 422, "{rejected:?}");
    assert_eq!(rejected.body["error"], "the order is in EUR, not USD", "the rejection's message, word for word");
    let not_json = post(&base, "order-1", "{\"expected_version\": 2,".into()).await;
    let unknown_command = command(&base, "order-1", 2, json!({"type": "SHIP_ORDER"})).await;
    let no_version = post(&base, "order-1", json!({"command": {"type": "CONFIRM_ORDER"}}).to_string()).await;
    for bad in [&not_json, &unknown_command, &no_version] {
        assert_eq!(bad.status, 400, "a body that is no command request is a 400: {bad:?}");
    }
    assert_eq!(writer.lock().unwrap().state("order-1").version, 2, "no refused request changed the order");
    let confirmed = command(&base, "order-1", 2, json!({"type": "CONFIRM_ORDER"})).await;
    assert_eq!((confirmed.status, &confirmed.body["version"]), (202, &json!(3)));

    let answers = json!({
        "stale": stale, "rejected": rejected, "not_json": not_json, "unknown_command": unknown_command,
        "no_version": no_version,
    });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("command_refusals", answers));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_command_goes_to_the_writer_of_its_orders_partition() {
    let topics = store_topics().await;
    let in_partition = |wanted: &dyn Fn(i32) -> bool| {
        (0..).map(|i| format!("order-{i}")).find(|id| wanted(topics.partition_of(id))).expect("an order id")
    };
    let (ours, theirs) = (in_partition(&|p| p == 0), in_partition(&|p| p != 0));
    let first = owner(broker().bootstrap_servers(), &topics, BTreeSet::from([0])).await;
    let rest = owner(broker().bootstrap_servers(), &topics, (1..PARTITIONS).collect()).await;
    let (read_model, _clear) = read_model("lesson11-owners").await;

    // One service over both owners: each order's commands reach its owner, whose versions it checks.
    let base = serve_owners(vec![Arc::clone(&first), Arc::clone(&rest)], read_model.clone(), SHORT_WAIT).await;
    for order in [&ours, &theirs] {
        let placed = command(&base, order, 0, json!({"type": "PLACE_ORDER", "customer_id": "customer-7"})).await;
        assert_eq!(placed.status, 202, "{order}: {placed:?}");
    }
    let version = |writer: &Arc<Mutex<OrderWriter>>, order: &str| writer.lock().unwrap().state(order).version;
    assert_eq!((version(&first, &ours), version(&first, &theirs)), (1, 0), "partition 0's order went to its owner");
    assert_eq!((version(&rest, &theirs), version(&rest, &ours)), (1, 0), "the other order went to its owner");

    // A service over partition 0 only: a command for another partition's order is not its to carry out.
    let partial = serve_owners(vec![Arc::clone(&first)], read_model.clone(), SHORT_WAIT).await;
    let misdirected = command(&partial, &theirs, 1, json!({"type": "CONFIRM_ORDER"})).await;
    assert_eq!(misdirected.status, 421, "{misdirected:?}");
    assert_eq!(misdirected.body["partition"], json!(topics.partition_of(&theirs)), "{misdirected:?}");
    assert_eq!(version(&rest, &theirs), 1, "the misdirected command changed nothing");

    // Two writers of one partition would be two writers of its orders: the service refuses to start.
    let twice = router(vec![Arc::clone(&first), Arc::clone(&first)], read_model, SHORT_WAIT);
    let error = twice.expect_err("two owners of partition 0 are refused").to_string();
    assert!(error.contains("partition 0"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_the_broker_refuses_is_a_503_and_the_order_stays_as_it_was() {
    let topics = store_topics().await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let writer = writer(proxy.bootstrap_servers(), &topics).await;
    let (read_model, _clear) = read_model("lesson11-append").await;
    let base = serve(Arc::clone(&writer), read_model, SHORT_WAIT).await;
    let placed = command(&base, "order-2", 0, json!({"type": "PLACE_ORDER", "customer_id": "customer-8"})).await;
    assert_eq!(placed.status, 202, "{placed:?}");

    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
    let add = json!({"type": "ADD_ITEM", "sku": "DESK", "quantity": 1, "unit_price_cents": 45000, "currency": "EUR"});
    let failed = command(&base, "order-2", 1, add.clone()).await;
    assert_eq!(failed.status, 503, "an append the broker refused: {failed:?}");
    assert!(failed.retry_after.is_some(), "a 503 says when to try again: {failed:?}");
    let message = failed.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("order order-2: the events could not be appended"), "{message}");

    let again = command(&base, "order-2", 1, add).await;
    assert_eq!(
        (again.status, &again.body["version"]),
        (202, &json!(2)),
        "the same request, sent again, is carried out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_answer_from_the_read_model_only() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (mut read_model, _clear) = read_model("lesson11-queries").await;
    let base = serve(Arc::clone(&writer), read_model.clone(), SHORT_WAIT).await;

    // Projected by hand: the read model is all a query sees.
    for event in numbered("order-3", 1, vec![placed("customer-9"), item("LAMP", 2, 3_000)]) {
        read_model.apply(&event).await.expect("applied");
    }
    let found = get(&base, "/orders/order-3").await;
    assert_eq!(found.status, 200, "{found:?}");
    let summary: OrderSummary = serde_json::from_value(found.body.clone()).expect("the body is an order summary");
    assert_eq!((summary.version, summary.units, summary.total_cents), (2, 2, 6_000));
    let at_version = get(&base, "/orders/order-3?min_version=2").await;
    assert_eq!((at_version.status, &at_version.body), (200, &found.body), "a version that is there: at once");
    let older = get(&base, "/orders/order-3?min_version=1").await;
    assert_eq!(older.body["version"], 2, "an older version asked for: the newest is fine");

    // The writer knows order-4; the read model does not: queries never ask the writer.
    assert_eq!(send(&writer, "order-4", vec![place("customer-9")]).await, 1);
    let unknown = get(&base, "/orders/order-4").await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let bad_version = get(&base, "/orders/order-3?min_version=latest").await;
    assert_eq!(bad_version.status, 400, "{bad_version:?}");
    // No version asked for: the answer is at once, whatever the bound. Given a minute to wait, `read_order` must
    // answer an unknown order long before it (the test allows it 20 s, for a Redis read of a few milliseconds).
    let patient = ReadWait { within: Duration::from_secs(60), poll_every: Duration::from_millis(20) };
    let at_once = tokio::time::timeout(Duration::from_secs(20), read_order(&mut read_model, "order-4", 0, patient))
        .await
        .expect("min_version 0 answers at once, without waiting for the bound")
        .expect("the read model answers");
    assert_eq!(at_once, OrderRead::Unknown);
    let answers = json!({ "found": found, "unknown": unknown, "bad_version": bad_version });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("query_answers", answers));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_the_read_model_does_not_reach_is_a_503_after_the_bound() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (mut read_model, _clear) = read_model("lesson11-behind").await;
    let base = serve(writer, read_model.clone(), SHORT_WAIT).await;
    // A client that placed an order (version 1) asks before the projector saw it: not yet there, not unknown.
    let not_yet = get(&base, "/orders/order-6?min_version=1").await;
    assert_eq!(not_yet.status, 503, "an order a client was given a version of is waited for: {not_yet:?}");
    assert_eq!(not_yet.body["read_model_version"], 0);

    for event in numbered("order-5", 1, vec![placed("customer-1"), item("BOOK", 1, 1_500)]) {
        read_model.apply(&event).await.expect("applied");
    }

    // No projector runs: version 3 never comes.
    let behind = get(&base, "/orders/order-5?min_version=3").await;
    assert_eq!(behind.status, 503, "the read model is at 2, the client asked for 3: not the old summary, {behind:?}");
    assert!(behind.retry_after.is_some(), "a 503 says when to ask again: {behind:?}");
    assert_eq!((behind.body["read_model_version"].as_u64(), behind.body["min_version"].as_u64()), (Some(2), Some(3)));
    let message = behind.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("at version 2") && message.contains("version 3"), "{message}");
    kit_testing::redact::settings()
        .bind(|| insta::assert_json_snapshot!("queries_behind_the_bound", json!([behind, not_yet])));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_waits_for_the_version_it_asks_for() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (mut read_model, _clear) = read_model("lesson11-waits").await;
    // The service reads Redis through a relay that counts its commands: the test sees the query look.
    let link = RedisLink::start(kit::redis::Redis::resolve().expect("a Redis").url()).await;
    let relayed = kit::redis::Redis::at(link.url(), "the test's relay").connect().await.expect("Redis via the relay");
    let service_model = ReadModel::new(relayed, read_model.namespace());
    let patient = ReadWait { within: Duration::from_secs(30), poll_every: Duration::from_millis(20) };
    let base = serve(writer, service_model, patient).await;
    let events = numbered("order-7", 1, vec![placed("customer-2"), item("PEN", 10, 150), confirmed(1_500)]);
    for event in &events[..2] {
        read_model.apply(event).await.expect("applied");
    }

    let before = link.forwarded();
    let query = tokio::spawn({
        let base = base.clone();
        async move { get(&base, "/orders/order-7?min_version=3").await }
    });
    // The query has looked at the read model (at version 2) at least once; only then does version 3 come.
    wait_until("the query to read the read model", Duration::from_secs(20), || async {
        (link.forwarded() > before).then_some(())
    })
    .await;
    assert!(!query.is_finished(), "the query waits for version 3, it did not answer with version 2");
    read_model.apply(&events[2]).await.expect("applied");
    let answer = query.await.expect("the query");
    assert_eq!(answer.status, 200, "version 3 came while the query waited: {answer:?}");
    assert_eq!((answer.body["version"].as_u64(), answer.body["status"].as_str()), (Some(3), Some("CONFIRMED")));
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_the_live_projector_every_client_reads_its_own_writes() {
    let topics = store_topics().await;
    let writer = writer(broker().bootstrap_servers(), &topics).await;
    let (read_model, _clear) = read_model("lesson11-ryw").await;
    let group = unique("lesson11-ryw-projector");
    let projector = Projector::start(&topics.events, &group, &read_model);
    let read_wait = ReadWait { within: Duration::from_secs(30), poll_every: Duration::from_millis(20) };
    let base = serve(Arc::clone(&writer), read_model, read_wait).await;

    let commands = [
        json!({"type": "PLACE_ORDER", "customer_id": "customer-3"}),
        json!({"type": "ADD_ITEM", "sku": "LAPTOP", "quantity": 1, "unit_price_cents": 99900, "currency": "EUR"}),
        json!({"type": "ADD_ITEM", "sku": "MOUSE", "quantity": 2, "unit_price_cents": 2500, "currency": "EUR"}),
        json!({"type": "CONFIRM_ORDER"}),
    ];
    let mut version = 0;
    for body in commands {
        let accepted = command(&base, "order-8", version, body).await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
        version = accepted.body["version"].as_u64().expect("a version");
        let read = get(&base, &format!("/orders/order-8?min_version={version}")).await;
        assert_eq!(read.status, 200, "the client's own write, read back: {read:?}");
        assert!(read.body["version"].as_u64() >= Some(version), "never older than the client's write: {read:?}");
    }
    let last = get(&base, "/orders/order-8?min_version=4").await;
    let summary: OrderSummary = serde_json::from_value(last.body).expect("a summary");
    assert_eq!(summary, OrderSummary::of("order-8", &writer.lock().unwrap().state("order-8")));
    projector.stop().await.expect("the projector stops cleanly");
}
