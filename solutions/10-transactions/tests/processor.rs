//! Grades lesson 10's inventory service, a consume-transform-produce stage: a batch's outputs and the offsets that
//! follow it committed in one transaction, a failing request and a refused write that abort the batch and have it
//! processed again, a request that is not JSON that aborts its batch every time, a zombie instance fenced by its
//! successor that stops instead of retrying, and a crash between the sends and the commit after which every request
//! still has exactly one output.
//!
//! What a transaction did is read from the requests `kit::FaultProxy` forwards, on every broker. The embedded
//! broker neither hides aborted records nor stores offsets committed in a transaction, and does not fence: the
//! counts "exactly one output per request" after an abort, a fence or a crash are graded on real Kafka, and on the
//! embedded broker the proxy answers the fenced instance's write as Kafka does (`INVALID_PRODUCER_EPOCH`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assigned_consumer, blocking, ids, order_counts, publish_records, publish_requests, read_to_end, ready_producer,
    spread, transactions,
};
use kit::{Capability, FaultProxy};
use kit_testing::{broker, can_grade, unique, wait_until};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use solution_10::{Batch, BatchError, ReserveStock, Run, StockReserved, process_batch, reserve, run_until_idle};

/// A stage's topics: its input (`inventory.requests`) and output (`inventory.events`), and its group.
struct Stage {
    input: String,
    output: String,
    group: String,
    partitions: i32,
}

impl Stage {
    async fn new(partitions: i32) -> Stage {
        let stage = Stage {
            input: unique("lesson10-requests"),
            output: unique("lesson10-reservations"),
            group: unique("lesson10-inventory"),
            partitions,
        };
        for topic in [&stage.input, &stage.output] {
            broker().create_topic(topic, partitions).await.expect("topic");
        }
        stage
    }

    fn roles(&self) -> [(&str, &str); 3] {
        [
            (self.input.as_str(), "inventory.requests"),
            (self.output.as_str(), "inventory.events"),
            (self.group.as_str(), "the consumer's group"),
        ]
    }

    /// The group's committed offsets, per partition of the input (real Kafka stores them; the mock does not).
    async fn committed(&self) -> BTreeMap<i32, i64> {
        let consumer = assigned_consumer(broker().bootstrap_servers(), &self.group, &self.input, self.partitions);
        blocking(move || {
            let committed = consumer.committed(Duration::from_secs(10)).expect("committed offsets");
            let offsets =
                committed.elements().iter().map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1))).collect();
            drop(committed); // before the consumer
            offsets
        })
        .await
    }
}

/// A transform that counts its calls per order (an effect outside Kafka) and fails the first call for the orders
/// in `fail_once`.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    fail_once: BTreeSet<String>,
}

impl Counting {
    fn failing_once(order_id: &str) -> Counting {
        Counting { fail_once: [order_id.to_string()].into(), ..Counting::default() }
    }

    fn call(&self, request: &ReserveStock) -> anyhow::Result<StockReserved> {
        let mut calls = self.calls.lock().unwrap();
        let count = calls.entry(request.order_id.clone()).or_default();
        *count += 1;
        if *count == 1 && self.fail_once.contains(&request.order_id) {
            anyhow::bail!("the stock service did not answer for {}", request.order_id);
        }
        reserve(request)
    }

    fn calls(&self) -> BTreeMap<String, usize> {
        self.calls.lock().unwrap().clone()
    }
}

/// Runs the instance until a batch finds nothing, on the blocking pool.
async fn run(
    consumer: &Arc<rdkafka::consumer::BaseConsumer>,
    producer: &Arc<solution_10::TxnProducer>,
    output: &str,
    transform: &Counting,
) -> Result<Run, String> {
    let (consumer, producer, output, transform) =
        (Arc::clone(consumer), Arc::clone(producer), output.to_string(), transform.clone());
    blocking(move || {
        run_until_idle(&consumer, &producer, &output, &mut |r| transform.call(r), 3).map_err(|e| format!("{e:#}"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_commits_its_outputs_with_the_offsets_that_follow_it() {
    let test = "a_batch_commits_its_outputs_with_the_offsets_that_follow_it";
    let stage = Stage::new(3).await;
    let requests = spread(1, &[4, 3, 2]);
    publish_requests(&stage.input, &requests).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-inventory-service")).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, stage.partitions);
    let transform = Counting::default();

    let done = run(&consumer, &producer, &stage.output, &transform).await.expect("the requests are processed");
    assert_eq!(done.records, requests.len(), "every request in a committed batch: {done:?}");
    assert_eq!(done.aborted, 0, "nothing failed, nothing aborted: {done:?}");
    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    assert_eq!(txns.len(), done.committed, "one transaction per batch, no empty one for an idle poll: {txns:#?}");
    let mut resume_at = BTreeMap::new();
    for txn in &txns {
        assert_eq!(txn.end, "commit", "{txn:?}");
        assert!(
            txn.partitions.iter().all(|p| p.starts_with("inventory.events/")),
            "a batch writes its outputs, nothing else: {txn:?}"
        );
        assert_eq!(
            txn.offsets_for,
            BTreeSet::from(["the consumer's group".to_string()]),
            "the input offsets are committed in the transaction, for the consumer's group: {txn:?}"
        );
        resume_at.extend(txn.offsets.clone());
    }
    let expected: BTreeMap<String, i64> =
        [4, 3, 2].iter().enumerate().map(|(p, n)| (format!("inventory.requests/{p}"), *n)).collect();
    assert_eq!(resume_at, expected, "the committed offsets are those of the next record to read, per partition");

    // No transaction was aborted: every broker shows exactly what was committed.
    let outputs = read_to_end(&stage.output, stage.partitions, "read_committed").await;
    let once: BTreeMap<String, usize> = ids(&requests).into_iter().map(|id| (id, 1)).collect();
    assert_eq!(order_counts(&outputs), once, "one reservation per request");
    for read in &outputs {
        let reserved: StockReserved = serde_json::from_str(&read.payload).expect("a StockReserved, as JSON");
        assert_eq!(read.key, reserved.order_id, "keyed by the order id");
        let (_, order) = requests.iter().find(|(_, o)| o.order_id == reserved.order_id).unwrap();
        assert_eq!(reserved, reserve(&order.records().1).unwrap(), "the transform's result, as it returned it");
    }
    if can_grade(broker(), Capability::TransactionalOffsetCommits, test) {
        assert_eq!(stage.committed().await, BTreeMap::from([(0, 4), (1, 3), (2, 2)]), "the group resumes after them");
    }
    let committed_batches = proxy.transaction_log().len();
    let (c, p, output) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone());
    let idle = blocking(move || process_batch(&c, &p, &output, &mut |r| reserve(r)).map_err(|e| e.to_string())).await;
    assert_eq!(idle, Ok(Batch::Idle), "no record left: an idle batch");
    assert_eq!(proxy.transaction_log().len(), committed_batches, "an idle batch opens no transaction");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("committed_offsets", resume_at));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_request_aborts_its_batch_which_is_processed_again() {
    let test = "a_failing_request_aborts_its_batch_which_is_processed_again";
    let stage = Stage::new(1).await;
    let requests = spread(1, &[6]);
    publish_requests(&stage.input, &requests).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-inventory-service")).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);
    let failing = requests[3].1.order_id.clone();
    let transform = Counting::failing_once(&failing);

    let done = run(&consumer, &producer, &stage.output, &transform).await.expect("processed after one failure");
    assert_eq!(done.aborted, 1, "the batch with the failing request was aborted, not committed: {done:?}");
    assert_eq!(done.records, requests.len(), "then every request was processed and committed: {done:?}");
    let calls = transform.calls();
    assert_eq!(calls[&failing], 2, "the failing request was processed again after the abort: {calls:?}");
    assert_eq!(calls.keys().cloned().collect::<BTreeSet<_>>(), ids(&requests), "every request reached the transform");

    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    let committed: Vec<_> = txns.iter().filter(|t| t.end == "commit").collect();
    assert!(!committed.is_empty(), "the batch was committed once processed: {txns:#?}");
    for txn in &committed {
        assert_eq!(txn.offsets_for.len(), 1, "every committed batch carries its offsets: {txn:?}");
    }
    let last = committed.last().unwrap();
    assert_eq!(last.offsets.get("inventory.requests/0"), Some(&6), "the group resumes after the last request");

    // Outputs the aborted batch wrote before the failure are in the log: the mock shows them to every reader.
    let outputs = order_counts(&read_to_end(&stage.output, 1, "read_committed").await);
    assert_eq!(outputs.keys().cloned().collect::<BTreeSet<_>>(), ids(&requests), "every request has an output");
    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        assert!(outputs.values().all(|n| *n == 1), "exactly one output per request: {outputs:?}");
    }
    // The stock service was called again for the records of the aborted batch: Kafka's transaction rolled back
    // the outputs, not what the transform did outside Kafka.
    let effects_outside_kafka: usize = calls.values().sum();
    assert!(effects_outside_kafka > requests.len(), "{calls:?}");
    let seen = serde_json::json!({
        "aborted": done.aborted,
        "records committed": done.records,
        "calls of the failing request": calls[&failing],
        "every request has an output": true,
        "the transform ran more often than there are requests": effects_outside_kafka > requests.len(),
    });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("aborted_and_processed_again", seen));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_cannot_commit_is_aborted_and_processed_again() {
    let test = "a_batch_that_cannot_commit_is_aborted_and_processed_again";
    let stage = Stage::new(1).await;
    let requests = spread(1, &[4]);
    publish_requests(&stage.input, &requests).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-inventory-service")).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);
    // The broker refuses the batch's outputs (it no longer knows the producer's id, as after its state expired):
    // the transform succeeded, but the transaction cannot commit.
    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
    let (c, p, output) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone());
    let first = blocking(move || match process_batch(&c, &p, &output, &mut |r| reserve(r)) {
        Err(BatchError::Aborted(_)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    first.expect("a batch whose commit failed is BatchError::Aborted");
    assert_eq!(proxy.stats().requests_failed, 1, "{:?}", proxy.stats());

    let done = run(&consumer, &producer, &stage.output, &Counting::default()).await.expect("processed again");
    assert_eq!(done.records, requests.len(), "the same requests are processed again and committed: {done:?}");
    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    let ends: Vec<&str> = txns.iter().map(|t| t.end).collect();
    assert_eq!(ends.first(), Some(&"abort"), "the failed transaction was aborted: {txns:#?}");
    assert_eq!(ends.last(), Some(&"commit"), "{txns:#?}");
    assert_eq!(txns.last().unwrap().offsets.get("inventory.requests/0"), Some(&4), "resumes after every request");
    let outputs = order_counts(&read_to_end(&stage.output, 1, "read_committed").await);
    assert_eq!(outputs.keys().cloned().collect::<BTreeSet<_>>(), ids(&requests), "every request has an output");
    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        assert!(outputs.values().all(|n| *n == 1), "exactly one output per request: {outputs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_is_not_json_aborts_its_batch_every_time() {
    // A poison record: a request no one can read. This stage has no dead-letter topic (lesson 08), so the batch
    // holding it is aborted and rewound like any failed batch, every time. Skipping it would commit its offset
    // without an output: a request lost, with nothing saying so.
    let test = "a_request_that_is_not_json_aborts_its_batch_every_time";
    let stage = Stage::new(1).await;
    let before = spread(1, &[5]);
    let poison = before.len() as i64; // its offset
    publish_requests(&stage.input, &before).await;
    publish_records(&stage.input, &[(0, "order-0006".into(), "RESERVE order-0006: 1 x SKU-1".into())]).await;
    publish_requests(&stage.input, &spread(7, &[2])).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-inventory-service")).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);

    for attempt in ["the first call", "the call after it (the consumer was rewound)"] {
        let (c, p, output) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone());
        let outcome = blocking(move || match process_batch(&c, &p, &output, &mut |r| reserve(r)) {
            Err(BatchError::Aborted(cause)) => Ok(format!("{cause:#}")),
            other => Err(format!("{other:?}")),
        })
        .await;
        let message = outcome.unwrap_or_else(|other| {
            panic!("{attempt}: the batch holding the request that is not JSON is BatchError::Aborted: {other}")
        });
        assert!(
            message.split(|c: char| !c.is_ascii_digit()).any(|n| n == poison.to_string()),
            "{attempt}: the error names the request that could not be read, offset {poison}: {message}"
        );
    }
    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    assert!(
        txns.iter().all(|t| t.end != "commit"),
        "nothing of a batch holding the poison request is committed, neither outputs nor offsets: {txns:#?}"
    );
    if can_grade(broker(), Capability::TransactionalOffsetCommits, test) {
        let committed = stage.committed().await;
        assert!(committed.values().all(|o| *o < 0), "the group has committed no offset: {committed:?}");
    }
    if can_grade(broker(), Capability::ReadCommittedHidesAborted, test) {
        let outputs = read_to_end(&stage.output, 1, "read_committed").await;
        assert!(outputs.is_empty(), "no output of the aborted batches is visible: {outputs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_fenced_while_it_aborts_stops_at_once() {
    // The batch cannot commit (its outputs are refused), and the abort that follows is answered "fenced": another
    // instance took over the transactional id meanwhile. That is fatal too: no retry, no rewind.
    let stage = Stage::new(1).await;
    publish_requests(&stage.input, &spread(1, &[3])).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let producer = ready_producer(proxy.bootstrap_servers(), &unique("lesson10-inventory-service")).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);
    proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
    proxy.fail_end_txn_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH]);
    let (c, p, output) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone());
    let outcome = blocking(move || match process_batch(&c, &p, &output, &mut |r| reserve(r)) {
        Err(BatchError::Fatal(e)) => Ok(e.rdkafka_error_code()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let code = outcome.expect("a producer fenced while aborting is BatchError::Fatal");
    assert!(
        matches!(code, Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::InvalidProducerEpoch)),
        "fenced: {code:?}"
    );
    assert_eq!(proxy.stats().requests_failed, 2, "the refused write and the fenced abort: {:?}", proxy.stats());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_instance_stops_and_its_successor_finishes() {
    let test = "a_fenced_instance_stops_and_its_successor_finishes";
    let stage = Stage::new(1).await;
    let first = spread(1, &[4]);
    let later = spread(5, &[4]);
    publish_requests(&stage.input, &first).await;
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy");
    let id = unique("lesson10-inventory-service");
    let zombie = ready_producer(proxy.bootstrap_servers(), &id).await;
    let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);
    let transform = Counting::default();
    let (c, p, output, t) = (Arc::clone(&consumer), Arc::clone(&zombie), stage.output.clone(), transform.clone());
    let batch =
        blocking(move || process_batch(&c, &p, &output, &mut |r| t.call(r)).map_err(|e| format!("{e:#}"))).await;
    assert_eq!(batch, Ok(Batch::Committed { records: 4 }), "the first instance processes the first requests");

    // A second instance starts with the same transactional id: the broker fences the first.
    let successor = ready_producer(broker().bootstrap_servers(), &id).await;
    if !broker().supports(Capability::ProducerFencing) {
        // The mock lets a fenced producer go on writing. The proxy answers the first instance's next write as
        // Kafka does, so what the instance does with it is graded here too.
        proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH]);
    }
    publish_requests(&stage.input, &later).await;
    let (c, p, output, t) = (Arc::clone(&consumer), Arc::clone(&zombie), stage.output.clone(), transform.clone());
    let fenced = blocking(move || match process_batch(&c, &p, &output, &mut |r| t.call(r)) {
        Err(BatchError::Fatal(error)) => Ok(error.rdkafka_error_code()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let code = fenced.expect("a fenced instance's batch ends in BatchError::Fatal");
    assert!(
        matches!(code, Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)),
        "the error says the instance was fenced: {code:?}"
    );
    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    let ends: Vec<&str> = txns.iter().filter(|t| t.end != "open").map(|t| t.end).collect();
    assert_eq!(ends, ["commit"], "the fenced instance neither committed nor aborted anything more: {txns:#?}");

    // The successor takes over where the group's committed offsets say, with a consumer of its own.
    let taking_over = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, 1);
    let done = run(&taking_over, &successor, &stage.output, &transform).await.expect("the successor runs");
    if can_grade(broker(), Capability::TransactionalOffsetCommits, test) {
        assert_eq!(done.records, later.len(), "the successor processes what the first instance did not commit");
        let outputs = order_counts(&read_to_end(&stage.output, 1, "read_committed").await);
        let all: BTreeSet<String> = ids(&first).into_iter().chain(ids(&later)).collect();
        assert_eq!(outputs.keys().cloned().collect::<BTreeSet<_>>(), all, "every request has an output");
        assert!(outputs.values().all(|n| *n == 1), "exactly one output per request: {outputs:?}");
    }
    let seen = serde_json::json!({
        "first instance's first batch": batch,
        "its next batch ends fenced": true,
        "transactions it ended": ends,
    });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("fenced", seen));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_commit_leaves_exactly_one_output_per_request() {
    let test = "a_crash_before_the_commit_leaves_exactly_one_output_per_request";
    let stage = Stage::new(3).await;
    let requests = spread(1, &[100, 100, 100]);
    publish_requests(&stage.input, &requests).await;
    let proxy = Arc::new(FaultProxy::start(broker().bootstrap_servers()).expect("fault proxy"));
    let id = unique("lesson10-inventory-service");
    let producer = ready_producer(proxy.bootstrap_servers(), &id).await;
    // The consumer goes through the proxy too: the crash cuts the whole instance off.
    let consumer = assigned_consumer(proxy.bootstrap_servers(), &stage.group, &stage.input, stage.partitions);
    let transform = Counting::default();
    let mut committed_before_the_crash = 0;
    for _ in 0..2 {
        let (c, p, output, t) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone(), transform.clone());
        let batch =
            blocking(move || process_batch(&c, &p, &output, &mut |r| t.call(r)).map_err(|e| format!("{e:#}"))).await;
        let Ok(Batch::Committed { records }) = batch else { panic!("a batch is committed: {batch:?}") };
        committed_before_the_crash += records;
    }

    // The instance dies after its third batch's sends and offsets, before its commit reaches the broker. Its
    // producer and consumer are leaked, as lesson 05 does: a dead process closes nothing.
    proxy.crash_before_next_end_txn();
    let (c, p, output, t) = (Arc::clone(&consumer), Arc::clone(&producer), stage.output.clone(), transform.clone());
    drop((consumer, producer));
    std::thread::spawn(move || {
        let _ = process_batch(&c, &p, &output, &mut |r| t.call(r));
        std::mem::forget((c, p));
    });
    let cut = Arc::clone(&proxy);
    wait_until("the instance to reach its third commit", Duration::from_secs(60), || {
        let stats = cut.stats();
        async move { (stats.end_txn_cut == 1).then_some(()) }
    })
    .await;
    let txns = transactions(&proxy.transaction_log(), &stage.roles());
    let ends: Vec<&str> = txns.iter().map(|t| t.end).collect();
    assert_eq!(ends, ["commit", "commit", "open"], "two batches committed, the third left open: {txns:#?}");
    assert!(!txns[2].offsets.is_empty(), "the third batch had sent its offsets, in its transaction: {:?}", txns[2]);

    if can_grade(broker(), Capability::TransactionalOffsetCommits, test)
        && can_grade(broker(), Capability::ReadCommittedHidesAborted, test)
    {
        // A new instance with the same transactional id: starting it aborts what the dead one left open.
        let successor = ready_producer(broker().bootstrap_servers(), &id).await;
        let consumer = assigned_consumer(broker().bootstrap_servers(), &stage.group, &stage.input, stage.partitions);
        let done = run(&consumer, &successor, &stage.output, &transform).await.expect("the successor runs");
        assert_eq!(
            done.records + committed_before_the_crash,
            requests.len(),
            "the successor resumes where the last committed transaction left the group: {done:?}"
        );
        let outputs = order_counts(&read_to_end(&stage.output, stage.partitions, "read_committed").await);
        assert_eq!(
            outputs.len(),
            requests.len(),
            "every request has an output: {} of {}",
            outputs.len(),
            requests.len()
        );
        let twice: Vec<_> = outputs.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "exactly one output per request for read_committed readers: {twice:?}");
        let everything = read_to_end(&stage.output, stage.partitions, "read_uncommitted").await;
        assert!(
            everything.len() > requests.len(),
            "the crashed batch's outputs are in the log, aborted: {} records for {} requests",
            everything.len(),
            requests.len()
        );
        let calls = transform.calls();
        let again = calls.values().filter(|n| **n > 1).count();
        assert!(again > 0, "the requests of the crashed batch were processed again");
        let seen = serde_json::json!({
            "requests": requests.len(),
            "outputs for read_committed": outputs.values().sum::<usize>(),
            "each request once": twice.is_empty(),
            "the successor's batches all committed": done.aborted == 0,
        });
        kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("crash_before_commit", seen));
    }
}
