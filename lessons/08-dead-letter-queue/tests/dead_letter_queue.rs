//! Grades lesson 08: validation refuses each kind of invalid event, invalid events go straight to the DLQ with
//! the right headers, transient failures are retried with the policy's waits between attempts (and
//! dead-lettered only when they never pass), every record is accounted for, and a replay moves dead letters back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kit::events::sample_events;
use kit::{EventType, UserEvent};
use kit_testing::{ReadRecord, broker, read_topic, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use lesson_08::{
    Disposition, FailureKind, Jitter, Processor, RetryPolicy, RunReport, Until, consumer_config, dead_letter, handle,
    header, replay, run, validate,
};
use uuid::Uuid;

/// A processor that fails the first `failures[id]` attempts of chosen events, and remembers what it processed.
#[derive(Default)]
struct Flaky {
    failures: HashMap<Uuid, u32>,
    attempts: HashMap<Uuid, u32>,
    processed: Vec<Uuid>,
}

impl Processor for Flaky {
    async fn process(&mut self, event: &UserEvent) -> anyhow::Result<()> {
        let attempt = self.attempts.entry(event.event_id).or_default();
        *attempt += 1;
        if *attempt <= self.failures.get(&event.event_id).copied().unwrap_or(0) {
            anyhow::bail!("store unavailable (attempt {attempt})");
        }
        self.processed.push(event.event_id);
        Ok(())
    }
}

/// Short waits: the backoff is real but bounded to a few milliseconds.
const QUICK: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(2),
    max_delay: Duration::from_millis(10),
    jitter: Jitter::Full,
};

/// Valid events and raw poison payloads, keyed, written to `topic`.
async fn produce(topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = broker().producer_config().create().unwrap();
    for (key, payload) in records {
        producer
            .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn poison() -> Vec<(String, String)> {
    let purchase = UserEvent::purchase("user-9", 500);
    let mut no_amount = serde_json::to_value(&purchase).unwrap();
    no_amount.as_object_mut().unwrap().remove("amount_cents");
    let mut wrong_type = serde_json::to_value(&purchase).unwrap();
    wrong_type["amount_cents"] = serde_json::json!("five euros");
    vec![
        ("user-9".into(), "{not json".into()),
        ("user-9".into(), no_amount.to_string()),
        ("user-9".into(), wrong_type.to_string()),
        ("user-9".into(), serde_json::json!({"event_type": "click"}).to_string()),
    ]
}

async fn setup(partitions: i32) -> (String, String, String) {
    let broker = broker();
    let (topic, dlq, group) = (unique("lesson08-user-events"), unique("lesson08-dlq"), unique("lesson08-consumer"));
    broker.create_topic(&topic, partitions).await.unwrap();
    broker.create_topic(&dlq, 1).await.unwrap();
    (topic, dlq, group)
}

async fn run_consumer(topic: &str, dlq: &str, group: &str, processor: &mut Flaky, records: usize) -> RunReport {
    let consumer: StreamConsumer = consumer_config(broker(), group).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let producer: FutureProducer = broker().producer_config().create().unwrap();
    let until = Until { records, idle: Duration::from_secs(20) };
    tokio::time::timeout(Duration::from_secs(60), run(&consumer, &producer, dlq, processor, &QUICK, until))
        .await
        .expect("run did not return within 60 s")
        .expect("run failed")
}

/// A processor that fails every attempt, and notes the (virtual) instant of each.
#[derive(Default)]
struct AlwaysFails {
    attempts: Vec<tokio::time::Instant>,
}

impl Processor for AlwaysFails {
    async fn process(&mut self, _event: &UserEvent) -> anyhow::Result<()> {
        self.attempts.push(tokio::time::Instant::now());
        anyhow::bail!("store unavailable (attempt {})", self.attempts.len())
    }
}

/// The clock is paused (`start_paused`): tokio jumps it to the next timer whenever the test has nothing else to do,
/// so each `sleep` of `handle` lasts exactly what it asks for, in no real time, and the gaps between the instants
/// of the attempts are the waits, measured exactly. Without jitter the policy's waits are known in advance.
#[tokio::test(start_paused = true)]
async fn between_two_attempts_handle_waits_what_the_policy_says_for_the_failed_one() {
    let policy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        jitter: Jitter::None,
    };
    let expected: Vec<Duration> = (1..policy.max_attempts).map(|attempt| policy.delay(attempt)).collect();
    let ms = Duration::from_millis;
    assert_eq!(expected, [ms(100), ms(200), ms(400), ms(500)], "the test's policy: exponential, then capped");

    let event = UserEvent::purchase("user-1", 1_250);
    let mut processor = AlwaysFails::default();
    let disposition = handle(Some(event.to_json().as_bytes()), &mut processor, &policy).await;
    let returned = tokio::time::Instant::now();

    assert!(
        matches!(disposition, Disposition::DeadLetter { kind: FailureKind::Processing, attempts: 5, .. }),
        "a failure that never passes is dead-lettered after max_attempts: {disposition:?}"
    );
    assert_eq!(processor.attempts.len(), 5, "exactly max_attempts attempts");
    let waits: Vec<Duration> = processor.attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(
        waits, expected,
        "the wait before attempt n + 1 is policy.delay(n): longer after each failure, up to max_delay"
    );
    assert_eq!(
        returned - *processor.attempts.last().unwrap(),
        Duration::ZERO,
        "no wait after the last attempt: the record is dead-lettered at once"
    );
}

#[test]
fn validate_refuses_every_kind_of_invalid_event_and_accepts_valid_ones() {
    for event in sample_events(38, 40, 4) {
        assert_eq!(validate(Some(event.to_json().as_bytes())), Ok(event), "a valid event passes as it is");
    }

    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut json = serde_json::to_value(UserEvent::purchase("user-9", 500)).unwrap();
        change(&mut json);
        json.to_string().into_bytes()
    };
    let invalid: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("a missing payload", None),
        ("not JSON", Some(b"{not json".to_vec())),
        ("a wrong type", Some(with(&|json| json["amount_cents"] = serde_json::json!("five euros")))),
        ("missing fields", Some(serde_json::json!({"event_type": "click"}).to_string().into_bytes())),
        ("an empty user_id", Some(with(&|json| json["user_id"] = serde_json::json!("")))),
        ("a blank user_id", Some(with(&|json| json["user_id"] = serde_json::json!(" \t  ")))),
        (
            "a purchase without amount_cents",
            Some(with(&|json| {
                json.as_object_mut().unwrap().remove("amount_cents");
            })),
        ),
        ("a purchase of 0 cents", Some(with(&|json| json["amount_cents"] = serde_json::json!(0)))),
        ("a click with an amount", Some(with(&|json| json["event_type"] = serde_json::json!(EventType::Click)))),
        // A click carries no amount at all: 0 is an amount too, not its absence.
        (
            "a click with an amount of 0",
            Some(with(&|json| {
                json["event_type"] = serde_json::json!(EventType::Click);
                json["amount_cents"] = serde_json::json!(0);
            })),
        ),
    ];
    for (case, payload) in invalid {
        match validate(payload.as_deref()) {
            Ok(event) => panic!("{case} must be refused, but validate accepted {event:?}"),
            Err(reason) => assert!(!reason.trim().is_empty(), "{case}: the reason goes into a header: say why"),
        }
    }
}

fn header_of<'a>(record: &'a ReadRecord, name: &str) -> &'a str {
    record.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("dead letter without a {name} header"))
}

#[tokio::test]
async fn poison_events_go_to_the_dlq_with_their_origin_in_headers() {
    let (topic, dlq, group) = setup(1).await;
    let valid: Vec<(String, String)> =
        sample_events(8, 16, 3).iter().map(|e| (e.user_id.clone(), e.to_json())).collect();
    let poison = poison();
    let mut all = valid.clone();
    for (i, p) in poison.iter().enumerate() {
        all.insert(3 + i * 4, p.clone()); // poison scattered among the valid events
    }
    produce(&topic, &all).await;

    let mut processor = Flaky::default();
    let report = run_consumer(&topic, &dlq, &group, &mut processor, all.len()).await;
    assert_eq!(
        report,
        RunReport { records: all.len(), processed: valid.len(), dead_lettered: poison.len() },
        "every valid event processed, every poison event dead-lettered, the consumer never stopped"
    );
    assert_eq!(processor.processed.len(), valid.len(), "the processor saw each valid event once, and no poison");

    let source = read_topic(broker(), &topic, all.len(), Duration::from_secs(20)).await;
    let letters = read_topic(broker(), &dlq, poison.len(), Duration::from_secs(20)).await;
    assert_eq!(letters.len(), poison.len(), "exactly the poison events are in the DLQ");
    let mut snapshot = Vec::new();
    for letter in &letters {
        let offset: i64 = header_of(letter, header::ORIGINAL_OFFSET).parse().expect("offset header is a number");
        let original = source.iter().find(|r| r.offset == offset).expect("the original offset points at a record");
        assert_eq!(letter.payload, original.payload, "the dead letter keeps the original payload");
        assert_eq!(letter.key, original.key, "the dead letter keeps the original key");
        assert_eq!(header_of(letter, header::ORIGINAL_TOPIC), topic);
        assert_eq!(header_of(letter, header::ORIGINAL_PARTITION), "0");
        assert_eq!(header_of(letter, header::KIND), "invalid");
        assert_eq!(header_of(letter, header::ATTEMPTS), "0", "invalid events are never retried");
        // The reason is `validate`'s own, whatever its wording: the snapshot keeps what the rule fixes.
        let refused = validate(original.payload.as_deref().map(str::as_bytes)).expect_err("validate refuses poison");
        assert_eq!(header_of(letter, header::REASON), refused, "the reason header carries validate's reason");
        snapshot.push(serde_json::json!({
            "key": letter.key,
            "kind": header_of(letter, header::KIND),
            "reason": "(validate's reason)",
            "attempts": header_of(letter, header::ATTEMPTS),
        }));
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("dead_letters_of_poison_events", snapshot));
}

#[tokio::test]
async fn transient_failures_are_retried_and_only_persistent_ones_dead_lettered() {
    let (topic, dlq, group) = setup(2).await;
    let events = sample_events(18, 12, 3);
    let mut processor = Flaky::default();
    let recovers = events[2].event_id; // fails twice, passes on the third and last attempt
    let never = events[7].event_id; // fails every attempt
    processor.failures.insert(recovers, 2);
    processor.failures.insert(never, u32::MAX);
    produce(&topic, &events.iter().map(|e| (e.user_id.clone(), e.to_json())).collect::<Vec<_>>()).await;

    let report = run_consumer(&topic, &dlq, &group, &mut processor, events.len()).await;
    assert_eq!(report.processed + report.dead_lettered, events.len(), "processed + dead-lettered = produced");
    assert_eq!(report, RunReport { records: 12, processed: 11, dead_lettered: 1 });
    assert_eq!(processor.attempts[&recovers], 3, "the recovering event is retried until it passes");
    assert!(processor.processed.contains(&recovers), "a transient failure that recovers is processed");
    assert_eq!(processor.attempts[&never], QUICK.max_attempts, "exactly max_attempts attempts, then the DLQ");

    let letters = read_topic(broker(), &dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1, "only the event that never recovers is dead-lettered");
    let letter = &letters[0];
    let original: UserEvent = serde_json::from_str(letter.payload.as_deref().unwrap()).unwrap();
    assert_eq!(original.event_id, never);
    assert_eq!(header_of(letter, header::KIND), "processing");
    assert_eq!(header_of(letter, header::ATTEMPTS), "3");
    // The reason's wording is the learner's; what it must say is checked here, and the snapshot keeps the rest.
    let reason = header_of(letter, header::REASON);
    // The error's own text says "attempt 3": the attempts must be named outside it too.
    let last_error = "store unavailable (attempt 3)";
    assert!(
        reason.contains(last_error) && reason.replace(last_error, "").contains('3'),
        "the reason names the attempts (3), besides the last error ({last_error:?}): {reason:?}"
    );
    let headers: BTreeMap<&str, &str> = letter
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != header::ORIGINAL_TOPIC && k.as_str() != header::ORIGINAL_OFFSET)
        .map(|(k, v)| {
            (
                k.as_str(),
                if k.as_str() == header::REASON { "(names the attempts and the last error)" } else { v.as_str() },
            )
        })
        .collect();
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("dead_letter_after_retries", headers));
}

#[tokio::test]
async fn a_replay_moves_dead_letters_back_to_their_topic() {
    let (topic, dlq, group) = setup(1).await;
    let valid: Vec<(String, String)> =
        sample_events(28, 6, 2).iter().map(|e| (e.user_id.clone(), e.to_json())).collect();
    let poison = poison();
    let all: Vec<_> = valid.iter().chain(&poison).cloned().collect();
    produce(&topic, &all).await;
    let report = run_consumer(&topic, &dlq, &group, &mut Flaky::default(), all.len()).await;
    assert_eq!(report.dead_lettered, poison.len());

    let consumer: StreamConsumer = consumer_config(broker(), &unique("lesson08-replay")).create().unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let producer: FutureProducer = broker().producer_config().create().unwrap();
    let until = Until { records: poison.len(), idle: Duration::from_secs(20) };
    let moved = tokio::time::timeout(Duration::from_secs(60), replay(&consumer, &producer, until))
        .await
        .expect("replay did not return within 60 s")
        .expect("replay failed");
    assert_eq!(moved, poison.len());
    let after = read_topic(broker(), &topic, all.len() + poison.len(), Duration::from_secs(20)).await;
    let replayed: Vec<_> =
        after[all.len()..].iter().map(|r| (r.key.clone().unwrap(), r.payload.clone().unwrap())).collect();
    assert_eq!(replayed, poison, "the dead letters are back in their topic, key and payload unchanged");
    assert!(after[all.len()..].iter().all(|r| r.headers.is_empty()), "replayed records carry no DLQ headers");
}

/// Every record of partition 0 of `topic`, raw: key and payload as bytes, headers by name.
async fn read_raw(topic: &str, expected: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use futures::StreamExt;
    let consumer: StreamConsumer = consumer_config(broker(), &unique("lesson08-raw-reader")).create().unwrap();
    {
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
        consumer.assign(&assignment).unwrap();
    }
    let mut stream = consumer.stream();
    let mut records = Vec::new();
    while records.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} records in {topic} within 20 s", records.len()))
            .expect("stream open")
            .expect("record");
        records.push(message.detach());
    }
    records
}

#[tokio::test]
async fn a_dead_letter_keeps_the_key_or_its_absence_and_the_payload_byte_for_byte() {
    use rdkafka::Message;
    use rdkafka::message::{Headers, OwnedMessage, Timestamp};
    let (topic, dlq, _) = setup(1).await;
    let producer: FutureProducer = broker().producer_config().create().unwrap();
    let originals = [
        // not UTF-8: a copy through a string would alter it
        OwnedMessage::new(
            Some(b"\xff\xfe{".to_vec()),
            Some(b"user-9".to_vec()),
            topic.clone(),
            Timestamp::NotAvailable,
            0,
            41,
            None,
        ),
        // no key: the dead letter has none either (an empty key is a key)
        OwnedMessage::new(Some(b"{not json".to_vec()), None, topic.clone(), Timestamp::NotAvailable, 0, 42, None),
    ];
    for original in &originals {
        tokio::time::timeout(
            Duration::from_secs(30),
            dead_letter(&producer, &dlq, original, FailureKind::Invalid, "not a user event", 0),
        )
        .await
        .expect("dead_letter did not return within 30 s")
        .expect("dead_letter failed");
    }
    let letters = read_raw(&dlq, originals.len()).await;
    for (letter, original) in letters.iter().zip(&originals) {
        assert_eq!(letter.payload(), original.payload(), "the dead letter keeps the payload byte for byte");
        assert_eq!(letter.key(), original.key(), "the dead letter keeps the key, or its absence");
        let offset = letter.headers().and_then(|hs| hs.iter().find(|h| h.key == header::ORIGINAL_OFFSET)?.value);
        assert_eq!(offset, Some(original.offset().to_string().as_bytes()), "the original offset is in a header");
    }
}

#[tokio::test]
async fn dead_letter_returns_only_once_the_broker_has_the_record() {
    // A producer whose broker never answers: the dead letter cannot be stored, so dead_letter must say so (an Err),
    // not return Ok after handing the record to the producer's queue.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "2000")
        .create()
        .unwrap();
    let original = rdkafka::message::OwnedMessage::new(
        Some(b"{not json".to_vec()),
        Some(b"user-9".to_vec()),
        unique("lesson08-user-events"),
        rdkafka::message::Timestamp::NotAvailable,
        0,
        7,
        None,
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        dead_letter(&producer, &unique("lesson08-dlq"), &original, FailureKind::Invalid, "not a user event", 0),
    )
    .await
    .expect("dead_letter did not return within 30 s of its broker being unreachable");
    assert!(outcome.is_err(), "no broker stored the dead letter, yet dead_letter returned {outcome:?}");
}
