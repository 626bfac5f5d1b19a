//! Grades lesson 11's aggregate, `decide` and `evolve`, with no broker: given the events an order already has,
//! when a command comes, then these events (or this rejection) — every rule the exercise states, one by one. A
//! property test then checks, for random command sequences, that deciding and evolving one command at a time,
//! replaying every event from nothing, and restoring from a snapshot plus the events after it give one state.

use proptest::prelude::*;
use lesson_11::store::restore;
use lesson_11::{Command, Event, Line, OrderState, Rejection, Snapshot, Status, StoredEvent, decide, evolve, replay};

fn placed() -> Event {
    Event::OrderPlaced { customer_id: "customer-7".into() }
}

fn item(sku: &str, quantity: u32, unit_price_cents: u64) -> Event {
    Event::ItemAdded { sku: sku.into(), quantity, unit_price_cents, currency: "EUR".into() }
}

fn add(sku: &str, quantity: u32, unit_price_cents: u64, currency: &str) -> Command {
    Command::AddItem { sku: sku.into(), quantity, unit_price_cents, currency: currency.into() }
}

fn cancel(reason: &str) -> Command {
    Command::CancelOrder { reason: reason.into() }
}

/// Given `history`, when `command`: what `decide` answers. Also checks that deciding did not need to change
/// the state (it takes it by reference) and that the history replays to a state of its length.
fn given_when(history: &[Event], command: &Command) -> Result<Vec<Event>, Rejection> {
    let state = replay(history);
    assert_eq!(state.version, history.len() as u64, "the state after {} events has that version", history.len());
    decide(&state, command)
}

#[test]
fn placing_a_new_order_opens_it_for_its_customer_once() {
    let command = Command::PlaceOrder { customer_id: "customer-7".into() };
    assert_eq!(given_when(&[], &command), Ok(vec![placed()]));
    assert_eq!(given_when(&[placed()], &command), Err(Rejection::AlreadyPlaced));
    assert_eq!(given_when(&[placed(), item("LAPTOP", 1, 99_900)], &command), Err(Rejection::AlreadyPlaced));
    let confirmed = [placed(), item("LAPTOP", 1, 99_900), Event::OrderConfirmed { total_cents: 99_900 }];
    assert_eq!(given_when(&confirmed, &command), Err(Rejection::AlreadyPlaced));
    for blank in ["", "   "] {
        let command = Command::PlaceOrder { customer_id: blank.into() };
        assert!(
            matches!(given_when(&[], &command), Err(Rejection::Invalid(_))),
            "a blank customer id ({blank:?}) is invalid"
        );
    }
}

#[test]
fn nothing_but_placing_works_on_an_order_that_does_not_exist() {
    for command in [add("LAPTOP", 1, 99_900, "EUR"), Command::ConfirmOrder, cancel("changed my mind")] {
        assert_eq!(given_when(&[], &command), Err(Rejection::NotPlaced), "{command:?} on a new order");
    }
}

#[test]
fn adding_items_needs_a_valid_line_in_the_orders_currency() {
    assert_eq!(given_when(&[placed()], &add("LAPTOP", 2, 99_900, "EUR")), Ok(vec![item("LAPTOP", 2, 99_900)]));
    assert_eq!(
        given_when(&[placed()], &add("MOUSE", 1, 2_500, "USD")),
        Ok(vec![Event::ItemAdded {
            sku: "MOUSE".into(),
            quantity: 1,
            unit_price_cents: 2_500,
            currency: "USD".into()
        }]),
        "the first item sets the currency, whichever it is"
    );
    assert_eq!(
        given_when(&[placed(), item("LAPTOP", 1, 99_900)], &add("MOUSE", 1, 2_500, "USD")),
        Err(Rejection::CurrencyMismatch { order: "EUR".into(), item: "USD".into() })
    );
    assert_eq!(
        given_when(&[placed(), item("LAPTOP", 1, 99_900)], &add("MOUSE", 1, 2_500, "EUR")),
        Ok(vec![item("MOUSE", 1, 2_500)])
    );
    for (command, what) in
        [(add("LAPTOP", 0, 99_900, "EUR"), "a quantity of 0"), (add(" ", 1, 99_900, "EUR"), "a blank SKU")]
    {
        assert!(matches!(given_when(&[placed()], &command), Err(Rejection::Invalid(_))), "{what} is invalid");
    }
    assert_eq!(
        given_when(&[placed()], &add("FREE-SAMPLE", 1, 0, "EUR")),
        Ok(vec![item("FREE-SAMPLE", 1, 0)]),
        "a price of 0 is allowed: a free sample"
    );
}

#[test]
fn confirming_needs_an_open_order_with_items_and_carries_its_total() {
    assert_eq!(given_when(&[placed()], &Command::ConfirmOrder), Err(Rejection::Empty));
    let history = [placed(), item("LAPTOP", 2, 99_900), item("MOUSE", 3, 2_500)];
    assert_eq!(
        given_when(&history, &Command::ConfirmOrder),
        Ok(vec![Event::OrderConfirmed { total_cents: 2 * 99_900 + 3 * 2_500 }])
    );
}

#[test]
fn cancelling_works_before_and_after_confirmation_with_a_reason() {
    let open = [placed(), item("LAPTOP", 1, 99_900)];
    let reason = "out of budget";
    assert_eq!(given_when(&open, &cancel(reason)), Ok(vec![Event::OrderCancelled { reason: reason.into() }]));
    assert_eq!(given_when(&[placed()], &cancel(reason)), Ok(vec![Event::OrderCancelled { reason: reason.into() }]));
    let confirmed = [placed(), item("LAPTOP", 1, 99_900), Event::OrderConfirmed { total_cents: 99_900 }];
    assert_eq!(given_when(&confirmed, &cancel(reason)), Ok(vec![Event::OrderCancelled { reason: reason.into() }]));
    assert!(matches!(given_when(&open, &cancel("  ")), Err(Rejection::Invalid(_))), "a blank reason is invalid");
}

#[test]
fn asking_again_for_what_is_already_so_is_no_error_and_no_event() {
    let confirmed = [placed(), item("LAPTOP", 1, 99_900), Event::OrderConfirmed { total_cents: 99_900 }];
    assert_eq!(given_when(&confirmed, &Command::ConfirmOrder), Ok(vec![]));
    let cancelled = [placed(), Event::OrderCancelled { reason: "duplicate order".into() }];
    assert_eq!(given_when(&cancelled, &cancel("duplicate order")), Ok(vec![]));
    assert_eq!(given_when(&cancelled, &cancel("another reason")), Ok(vec![]), "whatever the reason");
}

#[test]
fn a_closed_order_takes_no_other_change() {
    let confirmed = [placed(), item("LAPTOP", 1, 99_900), Event::OrderConfirmed { total_cents: 99_900 }];
    assert_eq!(
        given_when(&confirmed, &add("MOUSE", 1, 2_500, "EUR")),
        Err(Rejection::Closed { status: Status::Confirmed })
    );
    let cancelled = [placed(), item("LAPTOP", 1, 99_900), Event::OrderCancelled { reason: "fraud".into() }];
    assert_eq!(
        given_when(&cancelled, &add("MOUSE", 1, 2_500, "EUR")),
        Err(Rejection::Closed { status: Status::Cancelled })
    );
    assert_eq!(given_when(&cancelled, &Command::ConfirmOrder), Err(Rejection::Closed { status: Status::Cancelled }));
}

#[test]
fn every_event_folds_into_the_state() {
    let mut history = vec![placed()];
    let open = replay(&history);
    assert_eq!(
        open,
        OrderState {
            version: 1,
            status: Status::Open,
            customer_id: Some("customer-7".into()),
            currency: None,
            lines: vec![],
            total_cents: 0,
        }
    );
    history.extend([
        item("LAPTOP", 1, 99_900),
        item("MOUSE", 2, 2_500),
        item("LAPTOP", 2, 99_900),
        item("LAPTOP", 1, 89_900),
    ]);
    let with_items = replay(&history);
    assert_eq!(
        with_items,
        OrderState {
            version: 5,
            status: Status::Open,
            customer_id: Some("customer-7".into()),
            currency: Some("EUR".into()),
            lines: vec![
                Line { sku: "LAPTOP".into(), quantity: 3, unit_price_cents: 99_900 },
                Line { sku: "MOUSE".into(), quantity: 2, unit_price_cents: 2_500 },
                Line { sku: "LAPTOP".into(), quantity: 1, unit_price_cents: 89_900 },
            ],
            total_cents: 3 * 99_900 + 2 * 2_500 + 89_900,
        },
        "the same SKU at the same price adds to its line; at another price it starts a line"
    );
    let confirmed = evolve(with_items.clone(), &Event::OrderConfirmed { total_cents: with_items.total_cents });
    assert_eq!(confirmed, OrderState { version: 6, status: Status::Confirmed, ..with_items.clone() });
    let cancelled = evolve(confirmed.clone(), &Event::OrderCancelled { reason: "fraud".into() });
    assert_eq!(cancelled, OrderState { version: 7, status: Status::Cancelled, ..with_items.clone() });
    let cancelled_open = evolve(with_items.clone(), &Event::OrderCancelled { reason: "fraud".into() });
    assert_eq!(cancelled_open.status, Status::Cancelled, "an open order can be cancelled too");
    let usd = evolve(
        replay(&[placed()]),
        &Event::ItemAdded { sku: "MOUSE".into(), quantity: 1, unit_price_cents: 2_500, currency: "USD".into() },
    );
    assert_eq!(usd.currency.as_deref(), Some("USD"), "the first item's currency is the order's");
    // `evolve` never refuses, so it folds whatever the log holds; the order's currency stays its first item's.
    let then_eur = evolve(usd, &item("DOCK", 1, 18_900));
    assert_eq!(then_eur.currency.as_deref(), Some("USD"), "a later item does not change the order's currency");
}

/// A command a client might send, valid or not, for the property test.
fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => prop::sample::select(vec!["customer-1", "customer-2", " "])
            .prop_map(|c| Command::PlaceOrder { customer_id: c.into() }),
        5 => (prop::sample::select(vec!["LAPTOP", "MOUSE", "DOCK", ""]), 0u32..4, prop::sample::select(vec![0u64, 2_500, 99_900]),
              prop::sample::select(vec!["EUR", "EUR", "EUR", "USD"]))
            .prop_map(|(sku, quantity, price, currency)| add(sku, quantity, price, currency)),
        1 => Just(Command::ConfirmOrder),
        1 => prop::sample::select(vec!["fraud", ""]).prop_map(cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Replay, snapshot + tail, and incremental evolution agree, for any sequence of commands and any snapshot
    /// interval; and a refused command or one that causes nothing never changes a thing.
    #[test]
    fn replay_snapshot_and_incremental_evolution_agree(
        commands in prop::collection::vec(any_command(), 0..40),
        snapshot_every in 1u64..7,
    ) {
        let mut state = OrderState::default();
        let mut log: Vec<StoredEvent> = Vec::new();
        let mut latest_snapshot: Option<Snapshot> = None;
        for command in &commands {
            let before = state.clone();
            match decide(&state, command) {
                Ok(events) => {
                    for event in events {
                        state = evolve(state, &event);
                        log.push(StoredEvent { order_id: "order-1".into(), version: state.version, event });
                        if state.version % snapshot_every == 0 {
                            latest_snapshot = Some(Snapshot { order_id: "order-1".into(), state: state.clone() });
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&state, &before, "a refused command changes nothing"),
            }
            prop_assert_eq!(state.version, log.len() as u64, "the version counts the events");
        }
        let replayed = replay(log.iter().map(|e| &e.event));
        prop_assert_eq!(&replayed, &state, "a full replay gives the incremental state");
        let total: u64 = state.lines.iter().map(|l| u64::from(l.quantity) * l.unit_price_cents).sum();
        prop_assert_eq!(state.total_cents, total, "the total is the lines' sum");
        prop_assert_eq!(restore(None, &log), Ok(state.clone()), "restoring without a snapshot is a full replay");
        if let Some(snapshot) = &latest_snapshot {
            let from = snapshot.state.version as usize;
            prop_assert_eq!(restore(Some(snapshot), &log), Ok(state.clone()), "snapshot + whole history");
            prop_assert_eq!(restore(Some(snapshot), &log[from..]), Ok(state.clone()), "snapshot + its tail");
        }
    }
}
