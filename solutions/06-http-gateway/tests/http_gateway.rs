//! Grades lesson 06: validation into field-level errors, publishing with broker errors mapped to 503, the
//! bounded newest-first buffer — and all of them together, through a real HTTP client against the running
//! gateway.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use kit::{EventType, UserEvent};
use kit_testing::{broker, read_topic, unique, wait_until};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use serde_json::{Value, json};
use solution_06::gateway::{Backoff, Gateway, GatewaySettings, MAX_BODY_BYTES, ShutdownReport, producer_config};
use solution_06::{
    FieldError, MAX_USER_ID_CHARS, PublishError, classify, keep_newest, newest_first, parse_body, publish,
    validate_event,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The problems the gateway finds in `body`, sorted (the order they are found in is not the lesson).
fn problems(body: &str) -> Vec<FieldError> {
    let received_at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let mut found = match parse_body(body.as_bytes()) {
        Err(problem) => vec![problem],
        Ok(fields) => match validate_event(&fields, received_at) {
            Ok(event) => panic!("{body} should be refused, but became {event:?}"),
            Err(problems) => problems,
        },
    };
    found.sort();
    found
}

#[test]
fn each_bad_body_is_refused_field_by_field() {
    let long_user = "u".repeat(129);
    let cases = BTreeMap::from([
        ("01 not json", "{\"user_id\": \"user-1\",".to_string()),
        ("02 not an object", r#"["user-1", "click"]"#.to_string()),
        ("03 empty object", "{}".to_string()),
        ("04 blank user", r#"{"user_id": "  ", "event_type": "click"}"#.to_string()),
        ("05 user too long", format!(r#"{{"user_id": "{long_user}", "event_type": "click"}}"#)),
        ("06 user not a string", r#"{"user_id": 7, "event_type": "click"}"#.to_string()),
        // Many clients serialise a field they have no value for as `null`: it is missing, not of the wrong type.
        ("06b null user", r#"{"user_id": null, "event_type": "click"}"#.to_string()),
        ("07 unknown type", r#"{"user_id": "user-1", "event_type": "refund"}"#.to_string()),
        ("08 type not a string", r#"{"user_id": "user-1", "event_type": 1}"#.to_string()),
        ("09 purchase without amount", r#"{"user_id": "user-1", "event_type": "purchase"}"#.to_string()),
        ("10 purchase of zero", r#"{"user_id": "user-1", "event_type": "purchase", "amount_cents": 0}"#.to_string()),
        (
            "11 purchase in euros",
            r#"{"user_id": "user-1", "event_type": "purchase", "amount_cents": 19.99}"#.to_string(),
        ),
        ("12 negative purchase", r#"{"user_id": "user-1", "event_type": "purchase", "amount_cents": -5}"#.to_string()),
        ("13 amount as text", r#"{"user_id": "user-1", "event_type": "purchase", "amount_cents": "1999"}"#.to_string()),
        ("14 click with amount", r#"{"user_id": "user-1", "event_type": "click", "amount_cents": 100}"#.to_string()),
        ("15 bad event id", r#"{"user_id": "user-1", "event_type": "click", "event_id": "42"}"#.to_string()),
        ("16 bad timestamp", r#"{"user_id": "user-1", "event_type": "click", "timestamp": "yesterday"}"#.to_string()),
        ("17 unknown field", r#"{"user_id": "user-1", "event_type": "click", "price": 3}"#.to_string()),
        (
            "18 everything wrong",
            r#"{"user_id": "", "event_type": "refund", "amount_cents": -1, "event_id": 5, "timestamp": 0, "x": 1}"#
                .to_string(),
        ),
    ]);
    let answers: BTreeMap<&str, Vec<FieldError>> = cases.iter().map(|(name, body)| (*name, problems(body))).collect();
    for (name, found) in &answers {
        assert!(!found.is_empty(), "{name}: refused without saying why");
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("field_errors_of_bad_bodies", answers));
}

#[test]
fn a_good_body_becomes_exactly_the_event_it_describes() {
    let received_at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let validate = |body: Value| {
        let fields = parse_body(body.to_string().as_bytes()).expect("an object");
        validate_event(&fields, received_at).unwrap_or_else(|problems| panic!("{body} refused: {problems:?}"))
    };

    let full = validate(json!({
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "user_id": "user-3",
        "event_type": "purchase",
        "amount_cents": 1999,
        "timestamp": "2026-03-01T12:30:00+01:00",
    }));
    assert_eq!(
        full,
        UserEvent {
            event_id: "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap(),
            user_id: "user-3".into(),
            event_type: EventType::Purchase,
            amount_cents: Some(1999),
            timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 11, 30, 0).unwrap(),
        },
        "every field the client sent is kept (the time in UTC)"
    );

    let click = validate(json!({ "user_id": "user-4", "event_type": "click", "amount_cents": null }));
    assert_eq!((click.user_id.as_str(), click.event_type, click.amount_cents), ("user-4", EventType::Click, None));
    assert_eq!(click.timestamp, received_at, "no timestamp sent: the event happened when it was received");
    let again = validate(json!({ "user_id": "user-4", "event_type": "click" }));
    assert_ne!(click.event_id, again.event_id, "no event_id sent: each event gets a fresh one");
    assert_eq!(click.event_id.get_version_num(), 4, "a fresh id is a random (v4) UUID");

    // The longest user id allowed is allowed: "at most MAX_USER_ID_CHARS characters", counted as characters.
    let longest = "ü".repeat(MAX_USER_ID_CHARS);
    let at_the_limit = validate(json!({ "user_id": longest, "event_type": "click" }));
    assert_eq!(at_the_limit.user_id.chars().count(), MAX_USER_ID_CHARS, "a user id of exactly the maximum passes");
}

#[test]
fn the_buffer_keeps_only_the_newest_and_shows_them_first() {
    let mut buffer = VecDeque::new();
    for n in 1..=10 {
        keep_newest(&mut buffer, 4, n);
        assert!(buffer.len() <= 4, "the buffer grew past its capacity to {}", buffer.len());
    }
    assert_eq!(Vec::from(buffer.clone()), vec![7, 8, 9, 10], "the four newest stay, oldest first inside");
    assert_eq!(newest_first(&buffer, 3), vec![10, 9, 8], "newest first, at most `limit`");
    assert_eq!(newest_first(&buffer, 100), vec![10, 9, 8, 7], "a large limit shows what there is");
    assert_eq!(newest_first(&buffer, 0), Vec::<i32>::new());

    let mut nothing = VecDeque::new();
    keep_newest(&mut nothing, 0, "event");
    assert!(nothing.is_empty(), "a capacity of 0 keeps nothing");
}

#[test]
fn kafka_errors_are_sorted_into_retry_later_and_refused() {
    let codes = [
        RDKafkaErrorCode::MessageTimedOut,
        RDKafkaErrorCode::QueueFull,
        RDKafkaErrorCode::AllBrokersDown,
        RDKafkaErrorCode::BrokerTransportFailure,
        RDKafkaErrorCode::LeaderNotAvailable,
        RDKafkaErrorCode::NotEnoughReplicas,
        RDKafkaErrorCode::MessageSizeTooLarge,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::InvalidRecord,
    ];
    let mut sorted = BTreeMap::new();
    for code in codes {
        let error = KafkaError::MessageProduction(code);
        let kind = match classify(&error) {
            PublishError::Unavailable { reason } => {
                assert_eq!(reason, error.to_string(), "the reason is the Kafka error, word for word");
                "unavailable (503)"
            }
            PublishError::Rejected { reason } => {
                assert_eq!(reason, error.to_string(), "the reason is the Kafka error, word for word");
                "rejected (500)"
            }
        };
        sorted.insert(format!("{code:?}"), kind);
    }
    // An error with no librdkafka code at all is not a known outage.
    assert!(matches!(classify(&KafkaError::Canceled), PublishError::Rejected { .. }));
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("kafka_errors_by_kind", sorted));
}

/// A gateway serving on an ephemeral port of 127.0.0.1, and the switch that shuts it down.
struct Served {
    base: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<ShutdownReport>>,
}

async fn serve(gateway: Gateway) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    Served { base, stop, server }
}

/// Shuts `served` down and waits for the report, bounded: a shutdown that hangs fails the test.
async fn shut_down(served: Served) -> ShutdownReport {
    let _ = served.stop.send(());
    tokio::time::timeout(Duration::from_secs(20), served.server)
        .await
        .expect("the gateway did not shut down within 20 s")
        .expect("the server task panicked")
        .expect("the shutdown failed")
}

/// POSTs `body` to /events: the status, the JSON answer, and the `Retry-After` header if any.
async fn post(client: &reqwest::Client, base: &str, body: &str) -> (u16, Value, Option<String>) {
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        client.post(format!("{base}/events")).header("content-type", "application/json").body(body.to_string()).send(),
    )
    .await
    .expect("no answer to POST /events within 20 s")
    .expect("POST /events");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| json!({ "not json": text })), retry_after)
}

/// GETs `url`: the status and the JSON answer.
async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn over_http_good_events_are_published_bad_ones_refused_and_the_newest_read_back() {
    let broker = broker();
    let topic = unique("lesson06-user-events");
    broker.create_topic(&topic, 3).await.unwrap();
    let mut settings = GatewaySettings::new(&topic);
    settings.buffer_capacity = 3;
    settings.publish_timeout = Duration::from_secs(15);
    let gateway = tokio::time::timeout(
        Duration::from_secs(30),
        Gateway::start(broker.producer_config(), broker.consumer_base(), &settings),
    )
    .await
    .expect("the gateway did not start within 30 s")
    .expect("the gateway could not start");
    let served = serve(gateway).await;
    let client = reqwest::Client::new();

    // Four good events by one user: one partition, so their order is the order they were posted in.
    let good = [
        json!({ "user_id": "user-7", "event_type": "click" }),
        json!({ "user_id": "user-7", "event_type": "purchase", "amount_cents": 1999 }),
        json!({ "user_id": "user-7", "event_type": "click", "timestamp": "2026-01-01T09:00:00Z" }),
        json!({ "user_id": "user-7", "event_type": "purchase", "amount_cents": 250 }),
    ];
    let mut accepted = Vec::new();
    for body in &good {
        let (status, answer, _) = post(&client, &served.base, &body.to_string()).await;
        assert_eq!(status, 202, "a good event is accepted with 202; got {status}: {answer}");
        accepted.push(answer);
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("accepted_answer", accepted[1]));

    // Bad events are refused with 422 and a message per field; none of them may reach the topic.
    let bad = [
        r#"{"event_type": "click"}"#,
        r#"{"user_id": "user-7", "event_type": "refund"}"#,
        r#"{"user_id": "user-7", "event_type": "click", "amount_cents": 100}"#,
        r#"{"user_id": "user-7", "event_type": "purchase", "amount_cents": -5}"#,
        r#"{"user_id": "user-7", "#,
    ];
    let mut refused = BTreeMap::new();
    for body in bad {
        let (status, answer, _) = post(&client, &served.base, body).await;
        assert_eq!(status, 422, "a bad event is refused with 422; got {status}: {answer}");
        refused.insert(body, answer);
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("refused_answers", refused));

    // The test's own view of the topic: the four good events, each exactly where its 202 said.
    let records = read_topic(broker, &topic, good.len(), Duration::from_secs(20)).await;
    assert_eq!(records.len(), good.len(), "every good event and no bad one is in the topic");
    let by_position: BTreeMap<(i64, i64), _> = records.iter().map(|r| ((r.partition as i64, r.offset), r)).collect();
    for answer in &accepted {
        let position = (answer["partition"].as_i64().expect("partition"), answer["offset"].as_i64().expect("offset"));
        let record =
            by_position.get(&position).unwrap_or_else(|| panic!("nothing at {position:?} as answered: {answer}"));
        let stored: UserEvent = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(stored.event_id.to_string(), answer["event_id"].as_str().unwrap(), "the event at {position:?}");
        assert_eq!(record.key.as_deref(), Some("user-7"), "keyed by user");
    }

    // GET /messages shows what the reader read: the newest three (the capacity), newest first.
    let newest_id = accepted[3]["event_id"].clone();
    let messages = wait_until("GET /messages to show the last accepted event", Duration::from_secs(20), || {
        let (client, url, newest_id) = (client.clone(), format!("{}/messages", served.base), newest_id.clone());
        async move {
            let (_, body) = get(&client, url).await;
            let listed = body["messages"].as_array().cloned().unwrap_or_default();
            listed.iter().any(|m| m["event"]["event_id"] == newest_id).then_some(listed)
        }
    })
    .await;
    let listed_ids: Vec<&Value> = messages.iter().map(|m| &m["event"]["event_id"]).collect();
    let expected_ids: Vec<&Value> = accepted[1..].iter().rev().map(|a| &a["event_id"]).collect();
    assert_eq!(listed_ids, expected_ids, "the three newest accepted events, newest first");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("newest_messages", messages));
    let (_, two) = get(&client, format!("{}/messages?limit=2", served.base)).await;
    assert_eq!(two["messages"].as_array().map(Vec::len), Some(2), "?limit=2 shows two: {two}");

    let (status, health) = get(&client, format!("{}/health", served.base)).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "healthy while the reader runs: {health}");

    // Graceful shutdown: the server stops, the reader stops, the producer is flushed.
    let report = shut_down(served).await;
    assert!(report.producer_flushed, "the producer was flushed on shutdown");
    assert!(report.events_read >= 3, "the reader read the events it showed: {report:?}");
}

#[tokio::test]
async fn an_unreachable_kafka_is_a_503_with_a_clear_body_not_a_hang() {
    // An address where nothing listens: a port the system just handed out and that was closed again.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut nowhere = ClientConfig::new();
    nowhere.set("bootstrap.servers", &nobody).set("log_level", "0");
    let mut settings = GatewaySettings::new(unique("lesson06-nowhere"));
    settings.publish_timeout = Duration::from_millis(1500);
    settings.startup = Backoff {
        attempts: 2,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        attempt_timeout: Duration::from_millis(500),
    };

    // At start-up, the gateway retries, then gives up saying how to start Kafka.
    let refused = Gateway::start(nowhere.clone(), nowhere.clone(), &settings).await.expect_err("no Kafka, no start");
    let message = format!("{refused:#}");
    assert!(message.contains("not ready after 2 attempts") && message.contains(kit::broker::HOW_TO_START), "{message}");

    // Kafka gone while the gateway runs: an event waits at most `publish_timeout`, then the client hears 503.
    let producer: FutureProducer = producer_config(nowhere, settings.publish_timeout).create().unwrap();
    let served = serve(Gateway::with_producer(producer, &settings)).await;
    let client = reqwest::Client::new();
    let (status, answer, retry_after) =
        post(&client, &served.base, r#"{"user_id": "user-1", "event_type": "click"}"#).await;
    assert_eq!(status, 503, "Kafka unreachable is 503 Service Unavailable; got {status}: {answer}");
    assert!(retry_after.is_some(), "a 503 says when to come back (Retry-After)");
    assert_eq!(answer["retryable"], json!(true), "the client is told to try again later: {answer}");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("unavailable_answer", answer));

    // Validation does not need Kafka: a bad event is still a 422, at once.
    let (status, answer, _) = post(&client, &served.base, r#"{"user_id": "user-1", "event_type": "refund"}"#).await;
    assert_eq!(status, 422, "a bad event is refused even while Kafka is down; got {status}: {answer}");

    let _ = shut_down(served).await;
}

/// A gateway for requests that never reach Kafka: its producer points at an address where nothing listens.
async fn serve_without_kafka() -> Served {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut nowhere = ClientConfig::new();
    nowhere.set("bootstrap.servers", &nobody).set("log_level", "0");
    let settings = GatewaySettings::new(unique("lesson06-no-kafka"));
    let producer: FutureProducer = producer_config(nowhere, settings.publish_timeout).create().unwrap();
    serve(Gateway::with_producer(producer, &settings)).await
}

/// The top-level keys of a JSON answer, and the fields it names: its shape, whatever the words.
fn shape(answer: &Value) -> (Vec<String>, Vec<String>) {
    let keys = answer.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let fields = answer["fields"].as_array().into_iter().flatten();
    (keys, fields.filter_map(|f| f["field"].as_str().map(String::from)).collect())
}

#[tokio::test]
async fn an_oversized_body_is_a_413_in_the_shape_of_every_other_refusal() {
    let served = serve_without_kafka().await;
    let client = reqwest::Client::new();
    let padding = "x".repeat(MAX_BODY_BYTES);
    let oversized = format!(r#"{{"user_id": "user-1", "event_type": "click", "note": "{padding}"}}"#);
    let (status, too_large, _) = post(&client, &served.base, &oversized).await;
    assert_eq!(status, 413, "a body over MAX_BODY_BYTES is 413 Payload Too Large; got {status}: {too_large}");
    assert_eq!(shape(&too_large).1, ["body"], "the answer is JSON naming the body as what to fix: {too_large}");
    assert_eq!(too_large["retryable"], json!(false), "the same request will never fit: {too_large}");

    // An invalid event of a normal size: the 413 must read like this 422, so clients handle one shape.
    let (status, invalid, _) = post(&client, &served.base, r#"{"user_id": "user-1", "event_type": "refund"}"#).await;
    assert_eq!(status, 422, "a bad event is refused with 422; got {status}: {invalid}");
    assert_eq!(
        shape(&too_large).0,
        shape(&invalid).0,
        "413 and 422 answers have the same keys: {too_large} / {invalid}"
    );
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("too_large_answer", too_large));

    let _ = shut_down(served).await;
}

#[tokio::test]
async fn a_bad_query_string_is_a_400_that_names_the_parameter() {
    let served = serve_without_kafka().await;
    let client = reqwest::Client::new();
    let mut refused = BTreeMap::new();
    for (query, field) in [("limit=ten", "limit"), ("limit=-1", "limit"), ("limit=1&limit=2", "query")] {
        let (status, answer) = get(&client, format!("{}/messages?{query}", served.base)).await;
        assert_eq!(status, 400, "?{query} is 400 Bad Request; got {status}: {answer}");
        assert_eq!(shape(&answer).1, [field], "?{query}: the answer names `{field}`: {answer}");
        assert_eq!(answer["retryable"], json!(false), "?{query}: {answer}");
        refused.insert(query, answer);
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("bad_query_answers", refused));

    // A good limit is still served: nothing has been read yet, so the list is empty.
    let (status, answer) = get(&client, format!("{}/messages?limit=5", served.base)).await;
    assert_eq!((status, &answer["messages"]), (200, &json!([])), "?limit=5 is served: {answer}");

    let _ = shut_down(served).await;
}

#[tokio::test]
async fn a_record_kafka_will_never_take_is_a_500_not_a_503() {
    // Not every failure is an outage. This producer takes records of at most 1000 bytes (librdkafka's smallest
    // `message.max.bytes`) and refuses a larger one itself, at once, broker up or not: sending it again later
    // changes nothing, so the client must not be told to come back (503) but that the gateway failed (500).
    let broker = broker();
    let mut config = broker.producer_config();
    config.set("message.max.bytes", "1000");
    let producer: FutureProducer = config.create().unwrap();
    let topic = unique("lesson06-too-large");
    let too_large = UserEvent::click("u".repeat(2000));
    let answer = tokio::time::timeout(Duration::from_secs(10), publish(&producer, &topic, &too_large))
        .await
        .expect("a record larger than message.max.bytes is refused by the producer at once, yet publish hung");
    match answer {
        Err(PublishError::Rejected { reason }) => assert!(
            reason.to_lowercase().contains("too large"),
            "the reason is the Kafka error (message size too large): {reason}"
        ),
        other => panic!(
            "a record too large for the producer is Rejected (500): retrying later cannot help; sort the failure \
             with `classify`. Got {other:?}"
        ),
    }
}

#[tokio::test]
async fn a_full_local_queue_is_a_503_at_once_not_a_held_request() {
    // A producer whose local queue holds one record, aimed where nothing listens: the record stays queued.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &nobody)
        .set("log_level", "0")
        .set("queue.buffering.max.messages", "1")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let topic = unique("lesson06-full-queue");

    // The first event fills the queue: polled once, its send is queued and waits for an ack that cannot come.
    let first_event = UserEvent::click("user-1");
    let mut first = std::pin::pin!(publish(&producer, &topic, &first_event));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(answer) = first.as_mut().poll(cx) {
            panic!("nothing listens at {nobody}, yet the first publish already answered: {answer:?}");
        }
        std::task::Poll::Ready(())
    })
    .await;
    // (The count also holds librdkafka's own pending requests and events, so it is at least one.)
    assert!(producer.in_flight_count() >= 1, "the first event waits in the producer's local queue");

    // The second finds the queue full: the answer is a 503 now. The bound only stops a held request from hanging
    // the test; it is well under any wait a publish could choose for room in the queue.
    let second_event = UserEvent::click("user-2");
    let answer = tokio::time::timeout(Duration::from_secs(2), publish(&producer, &topic, &second_event))
        .await
        .expect("with the local queue full, publish held the request instead of answering 503 at once");
    match answer {
        Err(PublishError::Unavailable { reason }) => {
            assert!(reason.to_lowercase().contains("queue"), "the reason says the queue is full: {reason}")
        }
        other => panic!("a full local queue is Unavailable (503), got {other:?}"),
    }
}
