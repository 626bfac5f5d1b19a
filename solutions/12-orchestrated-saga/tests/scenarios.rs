//! Grades lesson 12's saga end to end on a broker, through the four services: seed 002's scenarios (an order
//! confirmed; 1,000 laptops with 50 in stock; a declined card after the reservation; a notification that cannot be
//! sent), a participant that does not answer in time, an order service restarted in the middle of a saga, a
//! duplicated command, and each saga step written in one transaction with the saga's new state.
//!
//! What happened is read from the topics — the order service's saga changelog (each saga's trail), the
//! inventory's and payment service's changelogs, the notifications' dead letters — never from the services'
//! memory. The trails are snapshots: the order of a saga's steps is the lesson.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kit::FaultProxy;
use kit::fault_proxy::TxnRequest;
use kit_testing::broker;
use serde_json::json;
use solution_12::engine::{Deployment, Running};
use solution_12::inventory::Stock;
use solution_12::services::{OrderService, SagaRecord, TestMailer, Totals};
use solution_12::{Command, DECLINED_CARD, Participant, Reply, Status};

/// A saga's trail and outcome, as the snapshots show it.
fn outcome(record: &SagaRecord) -> serde_json::Value {
    let trail: Vec<String> = record
        .trail
        .iter()
        .map(|step| {
            let from = step.from.map_or("·".to_string(), |s| s.to_string());
            format!("{from} --{}--> {} sends {}", step.input, step.to, step.sent.join(", "))
        })
        .collect();
    json!({ "status": record.saga.status, "reason": record.saga.reason.as_ref().map(|r| r.to_string()), "trail": trail })
}

fn money(totals: Totals) -> serde_json::Value {
    json!({ "charged_cents": totals.charged_cents, "refunded_cents": totals.refunded_cents })
}

fn stock_of(stock: &BTreeMap<String, Stock>, sku: &str) -> Stock {
    stock.get(sku).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_with_stock_and_a_good_card_is_confirmed() {
    let mut system = System::start(Setup::default()).await;
    let placed = order("order-1", "customer-1", GOOD_CARD, vec![item("LAPTOP", 2, 99_999), item("MOUSE", 1, 2_500)]);
    system.place(std::slice::from_ref(&placed)).await;
    let sagas = system.ended(&["order-1"], Duration::from_secs(60)).await;
    let record = &sagas["order-1"];
    assert_eq!(record.saga.status, Status::Confirmed, "{record:#?}");

    let stock = system.stock().await;
    assert_eq!(stock_of(&stock, "LAPTOP"), Stock { available: 48, reserved: 0, sold: 2 });
    assert_eq!(stock_of(&stock, "MOUSE"), Stock { available: 499, reserved: 0, sold: 1 });
    let totals = system.totals().await;
    assert_eq!(totals, Totals { charged_cents: placed.total_cents(), refunded_cents: 0 }, "the total, charged once");
    let told = system.wait_for_notifications(1).await;
    assert_eq!(told[0].message, "order confirmed");
    let events = system.event_types("order-1").await;
    assert_eq!(events, ["ORDER_PLACED", "ORDER_CONFIRMED"], "what the order service announced");
    let seen = json!({ "saga": outcome(record), "money": money(totals), "events": events });
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("confirmed", seen));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_beyond_the_stock_is_cancelled_with_nothing_reserved_or_charged() {
    let mut system = System::start(Setup::default()).await;
    // Seed 002's second scenario: a thousand laptops, fifty in stock.
    let placed =
        order("order-2", "customer-2", GOOD_CARD, vec![item("MOUSE", 1, 2_500), item("LAPTOP", 1_000, 99_999)]);
    system.place(&[placed]).await;
    let sagas = system.ended(&["order-2"], Duration::from_secs(60)).await;
    let record = &sagas["order-2"];
    assert_eq!(record.saga.status, Status::Cancelled, "{record:#?}");

    let stock = system.stock().await;
    assert_eq!(stock_of(&stock, "LAPTOP"), Stock { available: 50, reserved: 0, sold: 0 }, "stock unchanged");
    assert_eq!(stock_of(&stock, "MOUSE"), Stock { available: 500, reserved: 0, sold: 0 }, "not even the mouse");
    assert_eq!(system.totals().await, Totals::default(), "nothing charged");
    let payment_commands = system.records(&system.topics.payment_commands, 3).await;
    assert!(payment_commands.is_empty(), "the payment service was never asked: {payment_commands:?}");
    let told = system.wait_for_notifications(1).await;
    assert_eq!(told[0].message, "order cancelled: out of stock: 1000 × LAPTOP requested, 50 available");
    let events = system.event_types("order-2").await;
    assert_eq!(events, ["ORDER_PLACED", "ORDER_CANCELLED"]);
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("out_of_stock", outcome(record)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_releases_the_reserved_stock() {
    let mut system = System::start(Setup::default()).await;
    let placed = order("order-3", "customer-3", DECLINED_CARD, vec![item("LAPTOP", 3, 99_999)]);
    system.place(&[placed]).await;
    let sagas = system.ended(&["order-3"], Duration::from_secs(60)).await;
    let record = &sagas["order-3"];
    assert_eq!(record.saga.status, Status::Cancelled, "{record:#?}");
    let statuses: Vec<Status> = record.trail.iter().map(|s| s.to).collect();
    assert_eq!(
        statuses,
        [Status::Pending, Status::Reserved, Status::Compensating, Status::Cancelled],
        "reserved, then compensated: {record:#?}"
    );

    let stock = system.stock().await;
    assert_eq!(stock_of(&stock, "LAPTOP"), Stock { available: 50, reserved: 0, sold: 0 }, "the laptops are back");
    assert_eq!(system.totals().await, Totals::default(), "nothing charged, nothing to refund");
    let refunds: Vec<_> = system.commands("order-3").await.into_iter().filter(|c| c == "REFUND_PAYMENT").collect();
    assert!(refunds.is_empty(), "a declined payment took no money: no refund asked");
    let told = system.wait_for_notifications(1).await;
    assert_eq!(told[0].message, "order cancelled: payment declined: card declined");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("payment_declined", outcome(record)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_that_cannot_be_sent_goes_to_the_dlq_and_the_order_stays_confirmed() {
    let mailer = TestMailer { down_for: ["customer-4".to_string()].into(), ..TestMailer::default() };
    let mut system = System::start(Setup { mailer: mailer.clone(), ..Setup::default() }).await;
    let placed = order("order-4", "customer-4", GOOD_CARD, vec![item("DOCK", 1, 18_900)]);
    system.place(&[placed]).await;
    let sagas = system.ended(&["order-4"], Duration::from_secs(60)).await;
    assert_eq!(sagas["order-4"].saga.status, Status::Confirmed, "a failed e-mail does not undo a paid order");

    let dead = system.wait_for_records(&system.topics.notifications_dlq.clone(), 1, 1).await;
    let notification: serde_json::Value =
        serde_json::from_slice(&dead[0].payload).expect("the notification, as it came");
    assert_eq!(notification["order_id"], "order-4");
    assert_eq!(notification["message"], "order confirmed");
    let headers = system.dlq_headers().await;
    assert_eq!(headers.get("dlq.attempts").map(String::as_str), Some("3"), "{headers:?}");
    assert!(
        headers.get("dlq.reason").is_some_and(|r| r.contains("mail server")),
        "the mailer's own reason: {headers:?}"
    );
    assert_eq!(*mailer.attempts.lock().unwrap(), 3, "three attempts, then the dead-letter topic");
    assert!(mailer.sent.lock().unwrap().is_empty());
    kit_testing::redact::settings()
        .bind(|| insta::assert_json_snapshot!("notification_dead_lettered", outcome(&sagas["order-4"])));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_service_that_does_not_answer_is_compensated() {
    let setup = Setup { step_timeout: Duration::from_millis(1500), with_payment: false, ..Setup::default() };
    let mut system = System::start(setup).await;
    let placed = order("order-5", "customer-5", GOOD_CARD, vec![item("LAPTOP", 1, 99_999)]);
    system.place(std::slice::from_ref(&placed)).await;

    // No payment service: the charge is never answered. After the step's time limit the saga undoes both steps
    // (the charge may have gone through unseen), and the stock comes back at once.
    let sagas = system
        .until("the saga compensates after the payment's time-out", Duration::from_secs(60), |sagas| {
            sagas
                .get("order-5")
                .is_some_and(|r| r.saga.status == Status::Compensating && r.saga.compensating.len() == 1)
        })
        .await;
    let record = &sagas["order-5"];
    assert_eq!(record.saga.compensating.iter().copied().collect::<Vec<_>>(), [Participant::Payment], "{record:#?}");
    let stock = system.stock().await;
    assert_eq!(stock_of(&stock, "LAPTOP"), Stock { available: 50, reserved: 0, sold: 0 }, "released");

    // The payment service comes back: it finds the charge, then the refunds, in the order they were sent.
    system.start_payment();
    let sagas = system.ended(&["order-5"], Duration::from_secs(60)).await;
    let record = &sagas["order-5"];
    assert_eq!(record.saga.status, Status::Cancelled, "{record:#?}");
    let totals = system.totals().await;
    assert_eq!(
        totals.charged_cents, totals.refunded_cents,
        "whatever was charged late was refunded, exactly once: {totals:?}"
    );
    let told = system.wait_for_notifications(1).await;
    assert_eq!(told[0].message, "order cancelled: the payment service did not answer in time");
    let inputs: Vec<&str> = record.trail.iter().map(|s| s.input.as_str()).collect();
    assert_eq!(inputs[..3], ["PLACE_ORDER", "STOCK_RESERVED", "TIMEOUT"], "{record:#?}");
    assert_eq!(inputs.last(), Some(&"PAYMENT_REFUNDED"), "{record:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_order_service_resumes_its_open_sagas() {
    let setup = Setup { with_payment: false, ..Setup::default() };
    let mut system = System::start(setup).await;
    let placed = order("order-6", "customer-6", GOOD_CARD, vec![item("MOUSE", 2, 2_500)]);
    system.place(std::slice::from_ref(&placed)).await;
    system
        .until("the saga waits for its payment", Duration::from_secs(60), |sagas| {
            sagas.get("order-6").is_some_and(|r| r.saga.status == Status::Reserved)
        })
        .await;

    // The order service goes; the payment is answered while it is away; a new instance starts.
    let (stopped, _) = system.order.take().expect("the order service runs").stop();
    stopped.expect("the order service stops cleanly");
    system.start_payment();
    let replies = system.wait_for_records(&system.topics.payment_responses.clone(), 3, 1).await;
    assert_eq!(replies.len(), 1);
    system.order = Some(Running::start(
        OrderService::new(system.topics.clone(), Duration::from_secs(30)),
        system.deployment.clone(),
    ));
    let sagas = system.ended(&["order-6"], Duration::from_secs(60)).await;
    let record = &sagas["order-6"];
    assert_eq!(record.saga.status, Status::Confirmed, "resumed from its changelog: {record:#?}");
    assert_eq!(system.totals().await.charged_cents, placed.total_cents(), "charged once");
    let charges = system.commands("order-6").await.into_iter().filter(|c| c == "CHARGE_PAYMENT").count();
    assert_eq!(charges, 1, "the new instance did not ask for the payment again: it knew it had");
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("resumed", outcome(record)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicated_command_is_answered_again_and_applied_once() {
    let mut system = System::start(Setup::default()).await;
    let reserve = Command::ReserveStock { order_id: "order-7".into(), items: vec![item("LAPTOP", 5, 99_999)] };
    system.send_command(&reserve).await;
    system.send_command(&reserve).await;
    let replies = system.wait_for_records(&system.topics.inventory_responses.clone(), 3, 2).await;
    let replies: Vec<Reply> = replies.iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect();
    let reserved = Reply::StockReserved { order_id: "order-7".into() };
    assert_eq!(replies, [reserved.clone(), reserved], "each copy answered, the same way");
    let stock = system.stock().await;
    assert_eq!(stock_of(&stock, "LAPTOP"), Stock { available: 45, reserved: 5, sold: 0 }, "reserved once");
    system.check_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_saga_step_commits_its_state_with_its_messages() {
    // Every service writes through a proxy that records every transactional request.
    let proxy = FaultProxy::start(broker().bootstrap_servers()).expect("a fault proxy");
    let mut deployment = Deployment::on(broker(), kit_testing::unique("lesson12"));
    deployment.producer.set("bootstrap.servers", proxy.bootstrap_servers());
    let orchestrator = deployment.transactional_id("order");
    let mut system = System::start_on(saga_topics().await, deployment, Setup::default()).await;

    system.place(&[order("order-8", "customer-8", GOOD_CARD, vec![item("LAPTOP", 1, 99_999)])]).await;
    system.ended(&["order-8"], Duration::from_secs(60)).await;

    // Each committed transaction of the order service: the topics it wrote, and whether it committed offsets.
    let mut open: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    let mut committed = Vec::new();
    let of_the_order_service = |id: &String| *id == orchestrator;
    for request in proxy.transaction_log() {
        match request {
            TxnRequest::AddPartitionsToTxn { ref transactional_id, .. }
            | TxnRequest::AddOffsetsToTxn { ref transactional_id, .. }
            | TxnRequest::EndTxn { ref transactional_id, .. }
                if !of_the_order_service(transactional_id) => {}
            TxnRequest::AddPartitionsToTxn { transactional_id, partitions, .. } => {
                let entry = open.entry(transactional_id).or_default();
                entry.0.extend(partitions.into_iter().map(|(topic, _)| topic));
            }
            TxnRequest::AddOffsetsToTxn { transactional_id, .. } => open.entry(transactional_id).or_default().1 = true,
            TxnRequest::EndTxn { transactional_id, committed: true, .. } => {
                committed.push(open.remove(&transactional_id).unwrap_or_default());
            }
            TxnRequest::EndTxn { transactional_id, .. } => {
                open.remove(&transactional_id);
            }
            _ => {}
        }
    }
    let commands = [&system.topics.inventory_commands, &system.topics.payment_commands];
    let with_commands: Vec<_> = committed.iter().filter(|(t, _)| t.iter().any(|t| commands.contains(&t))).collect();
    assert!(with_commands.len() >= 3, "reserve, charge and commit were sent: {committed:?}");
    for (written, offsets) in &with_commands {
        assert!(written.contains(&system.topics.sagas), "a command goes with the saga's new state: {written:?}");
        assert!(*offsets, "and with the offset of the input that caused it: {written:?}");
    }
}
