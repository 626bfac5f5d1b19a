//! Grades lesson 12's saga state machine, `transition`, with no broker: given a saga in some status, when a reply
//! or a time-out comes, then this status, these compensations awaited and these messages sent — one test per rule
//! the exercise states. A last test runs every status against every reply and a time-out, snapshots the whole
//! table, and checks the saga's invariants over it: a finished saga never moves, nothing is cancelled while a
//! compensation is unacknowledged, the stock is committed only after a charge, and a refund is asked only when the
//! card may have been charged.

use std::collections::{BTreeMap, BTreeSet};

use lesson_12::saga::{CancelReason, Decision, Input, Saga, Status, cancelled, confirmed, start, transition};
use lesson_12::{Command, Item, OrderEvent, Outgoing, Participant, PlaceOrder, Reply};

const ORDER: &str = "order-1";
const CUSTOMER: &str = "customer-1";
const CARD: &str = "4242-4242-4242-4242";
/// 2 × 99_999 + 1 × 2_500.
const TOTAL: u64 = 202_498;

/// The order every test's saga is about: 2 laptops and a mouse.
fn order() -> PlaceOrder {
    PlaceOrder {
        order_id: ORDER.into(),
        customer_id: CUSTOMER.into(),
        card: CARD.into(),
        items: vec![
            Item { sku: "LAPTOP".into(), quantity: 2, unit_price_cents: 99_999 },
            Item { sku: "MOUSE".into(), quantity: 1, unit_price_cents: 2_500 },
        ],
    }
}

/// A saga of [`order`] in `status`, awaiting no compensation and with no reason: PENDING, RESERVED, PAID or
/// CONFIRMED as the happy path leaves them.
fn saga(status: Status) -> Saga {
    Saga { order: order(), status, compensating: BTreeSet::new(), reason: None }
}

/// A saga COMPENSATING for `reason`, waiting for `awaited`'s compensations to be acknowledged.
fn compensating(awaited: &[Participant], reason: CancelReason) -> Saga {
    Saga {
        order: order(),
        status: Status::Compensating,
        compensating: awaited.iter().copied().collect(),
        reason: Some(reason),
    }
}

/// A saga that ended CANCELLED for `reason`.
fn cancelled_saga(reason: CancelReason) -> Saga {
    Saga { order: order(), status: Status::Cancelled, compensating: BTreeSet::new(), reason: Some(reason) }
}

fn no_answer(participant: Participant) -> CancelReason {
    CancelReason::NoAnswer { participant }
}

fn declined(reason: &str) -> CancelReason {
    CancelReason::PaymentDeclined { reason: reason.into() }
}

fn out_of_stock_reason() -> CancelReason {
    CancelReason::OutOfStock { sku: "LAPTOP".into(), requested: 2, available: 1 }
}

fn reply(reply: Reply) -> Input {
    Input::Reply { reply }
}

fn stock_reserved() -> Input {
    reply(Reply::StockReserved { order_id: ORDER.into() })
}

fn out_of_stock() -> Input {
    reply(Reply::OutOfStock { order_id: ORDER.into(), sku: "LAPTOP".into(), requested: 2, available: 1 })
}

fn stock_released() -> Input {
    reply(Reply::StockReleased { order_id: ORDER.into() })
}

fn stock_committed() -> Input {
    reply(Reply::StockCommitted { order_id: ORDER.into() })
}

fn payment_charged() -> Input {
    reply(Reply::PaymentCharged { order_id: ORDER.into(), amount_cents: TOTAL })
}

fn payment_declined(reason: &str) -> Input {
    reply(Reply::PaymentDeclined { order_id: ORDER.into(), reason: reason.into() })
}

fn payment_refunded() -> Input {
    reply(Reply::PaymentRefunded { order_id: ORDER.into(), amount_cents: TOTAL })
}

/// Every reply a participant can give about [`ORDER`], one of each kind.
fn every_reply() -> Vec<Input> {
    vec![
        stock_reserved(),
        out_of_stock(),
        stock_released(),
        stock_committed(),
        payment_charged(),
        payment_declined("card declined"),
        payment_refunded(),
    ]
}

/// Every input: each reply, and a time-out.
fn every_input() -> Vec<Input> {
    let mut inputs = every_reply();
    inputs.push(Input::Timeout);
    inputs
}

fn command(command: Command) -> Outgoing {
    Outgoing::Command(command)
}

fn release_stock() -> Outgoing {
    command(Command::ReleaseStock { order_id: ORDER.into() })
}

fn refund_payment() -> Outgoing {
    command(Command::RefundPayment { order_id: ORDER.into() })
}

fn commit_stock() -> Outgoing {
    command(Command::CommitStock { order_id: ORDER.into() })
}

/// What `outgoing` holds, in an order of its own: the compensations a saga sends together may come in any order.
fn any_order(outgoing: &[Outgoing]) -> Vec<String> {
    let mut all: Vec<String> = outgoing.iter().map(|o| format!("{o:?}")).collect();
    all.sort();
    all
}

/// The name of what is sent, as the table shows it: a command's or an event's wire name, or `NOTIFY`.
fn name(outgoing: &Outgoing) -> &'static str {
    match outgoing {
        Outgoing::Command(command) => command.kind(),
        Outgoing::Event(OrderEvent::OrderPlaced { .. }) => "ORDER_PLACED",
        Outgoing::Event(OrderEvent::OrderConfirmed { .. }) => "ORDER_CONFIRMED",
        Outgoing::Event(OrderEvent::OrderCancelled { .. }) => "ORDER_CANCELLED",
        Outgoing::Notify(_) => "NOTIFY",
    }
}

fn input_name(input: &Input) -> &'static str {
    match input {
        Input::Reply { reply } => reply.kind(),
        Input::Timeout => "TIME_OUT",
    }
}

fn sent(decision: &Decision) -> Vec<&'static str> {
    decision.outgoing.iter().map(name).collect()
}

/// Given `saga`, when `input`: what `transition` decides.
fn given_when(saga: &Saga, input: &Input) -> Decision {
    transition(saga, input)
}

#[test]
fn stock_reserved_while_pending_charges_the_orders_total_to_its_card() {
    let decision = given_when(&saga(Status::Pending), &stock_reserved());
    assert_eq!(decision.saga, saga(Status::Reserved), "RESERVED, nothing to compensate");
    assert_eq!(
        decision.outgoing,
        vec![command(Command::ChargePayment {
            order_id: ORDER.into(),
            customer_id: CUSTOMER.into(),
            card: CARD.into(),
            amount_cents: TOTAL,
        })],
        "the payment service is asked to charge the order's total to its customer's card"
    );
}

#[test]
fn payment_charged_while_reserved_commits_the_stock() {
    let decision = given_when(&saga(Status::Reserved), &payment_charged());
    assert_eq!(decision.saga, saga(Status::Paid), "PAID, nothing to compensate");
    assert_eq!(decision.outgoing, vec![commit_stock()], "the inventory is asked to commit the stock, only that");
}

#[test]
fn stock_committed_while_paid_confirms_the_order() {
    let decision = given_when(&saga(Status::Paid), &stock_committed());
    assert_eq!(decision.saga, saga(Status::Confirmed), "CONFIRMED, nothing to compensate");
    assert_eq!(decision.outgoing, confirmed(&order()), "the order's event and the customer's notification");
}

#[test]
fn the_happy_path_runs_from_start_to_confirmed() {
    let mut saga = start(order()).saga;
    let mut path = vec![(saga.status, Vec::new())];
    for input in [stock_reserved(), payment_charged(), stock_committed()] {
        let decision = transition(&saga, &input);
        path.push((decision.saga.status, sent(&decision)));
        saga = decision.saga;
    }
    assert_eq!(
        path,
        vec![
            (Status::Pending, vec![]),
            (Status::Reserved, vec!["CHARGE_PAYMENT"]),
            (Status::Paid, vec!["COMMIT_STOCK"]),
            (Status::Confirmed, vec!["ORDER_CONFIRMED", "NOTIFY"]),
        ]
    );
    assert!(saga.compensating.is_empty() && saga.reason.is_none(), "a confirmed saga has nothing to undo: {saga:?}");
}

#[test]
fn out_of_stock_while_pending_cancels_at_once_with_nothing_to_undo() {
    let decision = given_when(&saga(Status::Pending), &out_of_stock());
    let reason = out_of_stock_reason();
    assert_eq!(
        decision.saga,
        cancelled_saga(reason.clone()),
        "CANCELLED at once, compensating nothing, for the reply's sku, requested and available"
    );
    assert_eq!(
        decision.outgoing,
        cancelled(&order(), &reason),
        "the cancellation only: nothing was reserved, so no compensation is sent"
    );
}

#[test]
fn no_answer_from_the_inventory_releases_what_it_may_have_reserved() {
    let decision = given_when(&saga(Status::Pending), &Input::Timeout);
    assert_eq!(
        decision.saga,
        compensating(&[Participant::Inventory], no_answer(Participant::Inventory)),
        "COMPENSATING the inventory's step, because the inventory did not answer"
    );
    assert_eq!(decision.outgoing, vec![release_stock()], "RELEASE_STOCK only: nothing was charged yet");
}

#[test]
fn a_declined_payment_releases_the_stock_and_refunds_nothing() {
    let decision = given_when(&saga(Status::Reserved), &payment_declined("insufficient funds"));
    assert_eq!(
        decision.saga,
        compensating(&[Participant::Inventory], declined("insufficient funds")),
        "COMPENSATING the reservation only, for the gateway's reason"
    );
    assert_eq!(decision.outgoing, vec![release_stock()], "RELEASE_STOCK only: a declined payment took no money");
}

#[test]
fn no_answer_from_the_payment_refunds_and_releases() {
    let decision = given_when(&saga(Status::Reserved), &Input::Timeout);
    assert_eq!(
        decision.saga,
        compensating(&[Participant::Inventory, Participant::Payment], no_answer(Participant::Payment)),
        "COMPENSATING both steps, because the payment service did not answer"
    );
    assert_eq!(
        any_order(&decision.outgoing),
        any_order(&[refund_payment(), release_stock()]),
        "REFUND_PAYMENT (the card may have been charged) and RELEASE_STOCK, once each"
    );
}

#[test]
fn past_the_payment_a_time_out_only_sends_the_commit_again() {
    let paid = saga(Status::Paid);
    let mut current = paid.clone();
    for attempt in 1..=3 {
        let decision = given_when(&current, &Input::Timeout);
        assert_eq!(decision.saga, paid, "time-out {attempt}: still PAID, nothing undone after the payment");
        assert_eq!(decision.outgoing, vec![commit_stock()], "time-out {attempt}: COMMIT_STOCK again, only that");
        current = decision.saga;
    }
}

#[test]
fn each_acknowledgment_removes_its_compensation_and_the_last_one_cancels() {
    let reason = no_answer(Participant::Payment);
    let both = compensating(&[Participant::Inventory, Participant::Payment], reason.clone());
    let orders = [
        (stock_released(), Participant::Payment, payment_refunded()),
        (payment_refunded(), Participant::Inventory, stock_released()),
    ];
    for (first, left, last) in orders {
        let what = format!("{} then {}", input_name(&first), input_name(&last));
        let decision = given_when(&both, &first);
        assert_eq!(decision.saga, compensating(&[left], reason.clone()), "{what}: still waiting for {left:?}");
        assert!(decision.outgoing.is_empty(), "{what}: nothing sent while one is awaited: {:?}", decision.outgoing);
        let decision = given_when(&decision.saga, &last);
        assert_eq!(decision.saga, cancelled_saga(reason.clone()), "{what}: CANCELLED, for the same reason");
        assert_eq!(decision.outgoing, cancelled(&order(), &reason), "{what}: the cancellation, word for word");
    }

    let reason = declined("insufficient funds");
    let decision = given_when(&compensating(&[Participant::Inventory], reason.clone()), &stock_released());
    assert_eq!(decision.saga, cancelled_saga(reason.clone()), "the one compensation acknowledged: CANCELLED");
    assert_eq!(decision.outgoing, cancelled(&order(), &reason), "told why: the payment was declined");

    let reason = no_answer(Participant::Inventory);
    let decision = given_when(&compensating(&[Participant::Payment], reason.clone()), &payment_refunded());
    assert_eq!(decision.saga, cancelled_saga(reason.clone()), "the refund was the last one awaited: CANCELLED");
    assert_eq!(decision.outgoing, cancelled(&order(), &reason));
}

#[test]
fn a_time_out_while_compensating_sends_again_what_is_not_acknowledged() {
    let reason = no_answer(Participant::Payment);
    let cases = [
        (vec![Participant::Inventory, Participant::Payment], vec![release_stock(), refund_payment()]),
        (vec![Participant::Inventory], vec![release_stock()]),
        (vec![Participant::Payment], vec![refund_payment()]),
    ];
    for (awaited, again) in cases {
        let saga = compensating(&awaited, reason.clone());
        let decision = given_when(&saga, &Input::Timeout);
        assert_eq!(decision.saga, saga, "awaiting {awaited:?}: the saga waits on, unchanged");
        assert_eq!(
            any_order(&decision.outgoing),
            any_order(&again),
            "awaiting {awaited:?}: exactly the compensations not yet acknowledged, once each"
        );
    }
}

#[test]
fn a_duplicate_or_unawaited_acknowledgment_changes_nothing() {
    let reason = no_answer(Participant::Payment);
    let both = compensating(&[Participant::Inventory, Participant::Payment], reason.clone());

    let after_release = given_when(&both, &stock_released()).saga;
    assert_eq!(after_release, compensating(&[Participant::Payment], reason.clone()));
    assert_eq!(
        given_when(&after_release, &stock_released()),
        Decision::unchanged(&after_release),
        "STOCK_RELEASED twice: the second changes nothing, the refund is still awaited"
    );

    let after_refund = given_when(&both, &payment_refunded()).saga;
    assert_eq!(after_refund, compensating(&[Participant::Inventory], reason.clone()));
    assert_eq!(
        given_when(&after_refund, &payment_refunded()),
        Decision::unchanged(&after_refund),
        "PAYMENT_REFUNDED twice: the second changes nothing, the release is still awaited"
    );

    let only_stock = compensating(&[Participant::Inventory], declined("card declined"));
    assert_eq!(
        given_when(&only_stock, &payment_refunded()),
        Decision::unchanged(&only_stock),
        "a refund that was never asked for (the payment was declined) acknowledges nothing"
    );
}

#[test]
fn replies_the_saga_is_not_waiting_for_change_nothing() {
    let pending = saga(Status::Pending);
    let reserved = saga(Status::Reserved);
    let paid = saga(Status::Paid);
    let releasing = compensating(&[Participant::Inventory], no_answer(Participant::Inventory));
    let both = compensating(&[Participant::Inventory, Participant::Payment], no_answer(Participant::Payment));
    let cases = [
        (&pending, stock_released(), "a release acknowledged before any was asked"),
        (&pending, stock_committed(), "a commit never asked"),
        (&pending, payment_charged(), "a charge before the reservation"),
        (&pending, payment_declined("card declined"), "a decline before the reservation"),
        (&pending, payment_refunded(), "a refund never asked"),
        (&reserved, stock_reserved(), "STOCK_RESERVED twice"),
        (&reserved, out_of_stock(), "a late refusal after the reservation"),
        (&reserved, stock_released(), "a release never asked"),
        (&reserved, stock_committed(), "a commit before the payment"),
        (&reserved, payment_refunded(), "a refund never asked"),
        (&paid, stock_reserved(), "a late STOCK_RESERVED"),
        (&paid, out_of_stock(), "a late refusal"),
        (&paid, payment_charged(), "PAYMENT_CHARGED twice"),
        (&paid, payment_declined("card declined"), "a decline after the charge"),
        (&paid, stock_released(), "a release never asked"),
        (&paid, payment_refunded(), "a refund never asked"),
        (&releasing, stock_reserved(), "a late STOCK_RESERVED while releasing"),
        (&releasing, out_of_stock(), "a late refusal while releasing"),
        (&releasing, stock_committed(), "a commit while releasing"),
        (&releasing, payment_charged(), "a charge while releasing"),
        (&releasing, payment_declined("card declined"), "a decline while releasing"),
        (&both, stock_reserved(), "a late STOCK_RESERVED while compensating"),
        (&both, payment_charged(), "a late PAYMENT_CHARGED while compensating"),
        (&both, payment_declined("card declined"), "a late PAYMENT_DECLINED while compensating"),
        (&both, stock_committed(), "a commit while compensating"),
        (&both, out_of_stock(), "a late refusal while compensating"),
    ];
    for (saga, input, what) in cases {
        assert_eq!(
            given_when(saga, &input),
            Decision::unchanged(saga),
            "{} + {}: {what} changes nothing and sends nothing",
            saga.status,
            input_name(&input)
        );
    }
}

#[test]
fn a_finished_saga_ignores_everything() {
    for finished in [saga(Status::Confirmed), cancelled_saga(out_of_stock_reason()), cancelled_saga(declined("no"))] {
        for input in every_input() {
            assert_eq!(
                given_when(&finished, &input),
                Decision::unchanged(&finished),
                "{} + {}: a finished saga neither moves nor sends",
                finished.status,
                input_name(&input)
            );
        }
    }
}

/// One saga in each status, and in COMPENSATING one for each set of compensations it can wait for, with the
/// reason that leads there; each with its label in the table.
fn every_saga() -> Vec<(String, Saga)> {
    vec![
        ("PENDING".into(), saga(Status::Pending)),
        ("RESERVED".into(), saga(Status::Reserved)),
        ("PAID".into(), saga(Status::Paid)),
        ("COMPENSATING [inventory]".into(), compensating(&[Participant::Inventory], declined("card declined"))),
        ("COMPENSATING [payment]".into(), compensating(&[Participant::Payment], no_answer(Participant::Payment))),
        (
            "COMPENSATING [inventory, payment]".into(),
            compensating(&[Participant::Inventory, Participant::Payment], no_answer(Participant::Payment)),
        ),
        ("CONFIRMED".into(), saga(Status::Confirmed)),
        ("CANCELLED".into(), cancelled_saga(out_of_stock_reason())),
    ]
}

#[test]
fn every_status_against_every_input() {
    let mut table = BTreeMap::new();
    for (label, saga) in every_saga() {
        for input in every_input() {
            let row = format!("{label} + {}", input_name(&input));
            let decision = transition(&saga, &input);
            let to = &decision.saga;
            let names = sent(&decision);

            assert_eq!(to.order, saga.order, "{row}: the order never changes");
            for outgoing in &decision.outgoing {
                let about = match outgoing {
                    Outgoing::Command(command) => command.order_id(),
                    Outgoing::Event(event) => event.order_id(),
                    Outgoing::Notify(notification) => &notification.order_id,
                };
                assert_eq!(about, ORDER, "{row}: everything sent is about the saga's order: {outgoing:?}");
            }
            if saga.status.is_terminal() {
                assert_eq!(decision, Decision::unchanged(&saga), "{row}: a finished saga never changes");
            }
            if to.status == Status::Cancelled {
                assert!(to.compensating.is_empty(), "{row}: CANCELLED with compensations unacknowledged: {to:?}");
                assert!(to.reason.is_some(), "{row}: a cancelled saga says why");
            }
            if to.status == Status::Compensating {
                assert!(!to.compensating.is_empty(), "{row}: COMPENSATING with nothing awaited: {to:?}");
                assert!(to.reason.is_some(), "{row}: a compensating saga says why");
            }
            let charged = saga.status == Status::Paid
                || (saga.status == Status::Reserved
                    && matches!(input, Input::Reply { reply: Reply::PaymentCharged { .. } }));
            if names.contains(&"COMMIT_STOCK") {
                assert!(charged, "{row}: COMMIT_STOCK sent, but the payment was not charged");
            }
            let maybe_charged = matches!(input, Input::Timeout)
                && (saga.status == Status::Reserved
                    || (saga.status == Status::Compensating && saga.compensating.contains(&Participant::Payment)));
            assert_eq!(
                names.contains(&"REFUND_PAYMENT"),
                maybe_charged,
                "{row}: REFUND_PAYMENT is sent when (and only when) the card may have been charged and no refund was \
                 acknowledged: {names:?}"
            );

            // A row that changes nothing and sends nothing reads "unchanged"; the others show the new status,
            // the compensations awaited, what is sent (sorted: compensations sent together have no order) and why.
            let entry = if decision == Decision::unchanged(&saga) {
                serde_json::json!("unchanged")
            } else {
                let mut names = names;
                names.sort_unstable();
                let mut entry = serde_json::json!({
                    "to": to.status,
                    "compensating": to.compensating,
                    "sent": names,
                });
                if let Some(reason) = &to.reason {
                    entry["reason"] = serde_json::json!(reason.to_string());
                }
                entry
            };
            table.insert(row, entry);
        }
    }
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("saga__transitions", table));
}
