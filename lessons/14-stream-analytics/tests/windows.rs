//! Grades lesson 14's windows with no broker: `Windows::accept` (window assignment, stream time, grace and
//! lateness, what an event adds to its window), `Windows::close_due` (which windows close, when, in what order,
//! once), `top_products` and `funnel` — every rule the exercises state, one by one, on hand-made sequences with
//! one-minute windows and ten seconds of grace. A snapshot shows a few minutes of shopping as the aggregator sees
//! it, and a property test checks, for random sequences with events out of order and late, that every event is
//! counted exactly once and every window emitted once, in order.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::json;
use lesson_14::{
    Activity, Catalog, Funnel, Kind, Placement, Segment, TopProduct, WindowResult, WindowSpec, WindowState, Windows,
    funnel, top_products,
};

/// One-minute tumbling windows, each taking events up to ten seconds after its end.
const SPEC: WindowSpec = WindowSpec { size_ms: 60_000, grace_ms: 10_000 };

/// An event of `user` on `product` at `event_time_ms`.
fn event(user: &str, product: &str, kind: Kind, quantity: u32, event_time_ms: i64) -> Activity {
    Activity {
        event_id: format!("{user}-{product}-{event_time_ms}"),
        user_id: user.into(),
        product_id: product.into(),
        kind,
        quantity,
        event_time_ms,
    }
}

/// A view of P001 by U001 (a Standard user) at `event_time_ms`.
fn view_at(event_time_ms: i64) -> Activity {
    event("U001", "P001", Kind::View, 1, event_time_ms)
}

/// Fresh windows fed `events` in order: the windows and where each event went.
fn fed(events: &[Activity], catalog: &Catalog) -> (Windows, Vec<Placement>) {
    let mut windows = Windows::new(SPEC);
    let placements = events.iter().map(|e| windows.accept(e, catalog)).collect();
    (windows, placements)
}

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| u.to_string()).collect()
}

fn starts(results: &[WindowResult]) -> Vec<i64> {
    results.iter().map(|r| r.start_ms).collect()
}

/// A window that has taken `views` views of P001 by U001.
fn viewed_window(start_ms: i64, views: u64) -> WindowState {
    WindowState {
        start_ms,
        counts: BTreeMap::from([(Kind::View, views)]),
        by_segment: BTreeMap::from([(Segment::Standard, views)]),
        interactions: BTreeMap::from([("P001".to_string(), views)]),
        viewers: set(&["U001"]),
        ..WindowState::default()
    }
}

/// Windows at stream time `stream_time_ms`, with a window open at each of `open` (built by hand, so that
/// `close_due` is graded on its own).
fn windows_at(stream_time_ms: Option<i64>, open: &[i64]) -> Windows {
    Windows {
        spec: SPEC,
        stream_time_ms,
        open: open.iter().enumerate().map(|(i, &start)| (start, viewed_window(start, i as u64 + 1))).collect(),
        late: 0,
    }
}

// ─── accept: which window, stream time, lateness ─────────────────────────────────────────────────────────────

#[test]
fn an_event_goes_to_the_tumbling_window_that_holds_its_time() {
    let catalog = Catalog::shipped();
    for (time, start) in [
        (0, 0),
        (1, 0),
        (59_999, 0),
        (60_000, 60_000),
        (60_001, 60_000),
        (119_999, 60_000),
        (120_000, 120_000),
        (-1, -60_000),
        (-59_999, -60_000),
        (-60_000, -60_000),
        (-60_001, -120_000),
        (1_796_115_659_999, 1_796_115_600_000),
        (1_796_115_660_000, 1_796_115_660_000),
    ] {
        let mut windows = Windows::new(SPEC);
        assert_eq!(
            windows.accept(&view_at(time), &catalog),
            Placement::Window { start_ms: start },
            "an event at {time} belongs to the window [{start}, {})",
            start + SPEC.size_ms
        );
        assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![start], "the one window open, for {time}");
        assert_eq!(windows.open[&start].start_ms, start, "the window opened for {time} knows its start");
    }
}

#[test]
fn events_of_one_window_gather_in_it_and_the_next_window_opens_at_its_end() {
    let catalog = Catalog::shipped();
    let (windows, placements) = fed(&[view_at(0), view_at(30_000), view_at(59_999), view_at(60_000)], &catalog);
    let to = |start_ms| Placement::Window { start_ms };
    assert_eq!(placements, vec![to(0), to(0), to(0), to(60_000)]);
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![0, 60_000]);
    assert_eq!(windows.open[&0].counts, BTreeMap::from([(Kind::View, 3)]), "three views in [0, 60000)");
    assert_eq!(windows.open[&60_000].counts, BTreeMap::from([(Kind::View, 1)]), "one view at 60000, the boundary");
}

#[test]
fn stream_time_is_the_greatest_event_time_seen_and_never_goes_back() {
    let catalog = Catalog::shipped();
    let mut windows = Windows::new(SPEC);
    assert_eq!(windows.stream_time_ms, None, "no stream time before the first event");
    for (time, stream_time) in
        [(5_000, 5_000), (3_000, 5_000), (61_000, 61_000), (65_000, 65_000), (58_000, 65_000), (64_999, 65_000)]
    {
        windows.accept(&view_at(time), &catalog);
        assert_eq!(windows.stream_time_ms, Some(stream_time), "stream time after an event at {time}");
    }
    assert_eq!(windows.late, 0, "every event of this sequence was in time");
    let (negative, _) = fed(&[view_at(-90_000), view_at(-95_000)], &catalog);
    assert_eq!(negative.stream_time_ms, Some(-90_000), "stream time before the epoch is still the greatest seen");
}

#[test]
fn an_event_is_late_exactly_when_stream_time_has_reached_its_window_end_plus_the_grace() {
    let catalog = Catalog::shipped();
    // Window [0, 60000) closes at stream time 70000.
    let (mut windows, placements) = fed(&[view_at(10_000), view_at(69_999), view_at(0)], &catalog);
    assert_eq!(
        placements[2],
        Placement::Window { start_ms: 0 },
        "at stream time 69999, end + grace − 1, the window [0, 60000) still takes events"
    );
    assert_eq!(windows.late, 0);
    assert_eq!(windows.accept(&view_at(70_000), &catalog), Placement::Window { start_ms: 60_000 });
    let before = windows.clone();
    assert_eq!(
        windows.accept(&event("U004", "P002", Kind::Purchase, 1, 59_999), &catalog),
        Placement::Late { start_ms: 0 },
        "at stream time 70000, end + grace, the window [0, 60000) has closed"
    );
    assert_eq!(windows.late, 1, "the late event is counted");
    assert_eq!(windows.open, before.open, "a late event changes no window");
    assert_eq!(windows.stream_time_ms, Some(70_000));
    assert_eq!(windows.accept(&view_at(1), &catalog), Placement::Late { start_ms: 0 });
    assert_eq!(windows.late, 2, "every late event is counted");
    assert_eq!(windows.open, before.open, "a second late event changes no window either");
}

#[test]
fn a_late_event_opens_no_window_even_one_never_seen() {
    let catalog = Catalog::shipped();
    // Stream time 200000: the windows starting at 60000 (closed at 130000) and -60000 never had an event.
    let (mut windows, _) = fed(&[view_at(200_000)], &catalog);
    for (time, start) in [(61_000, 60_000), (-1, -60_000), (129_999, 120_000)] {
        assert_eq!(windows.accept(&view_at(time), &catalog), Placement::Late { start_ms: start }, "event at {time}");
    }
    assert_eq!(windows.late, 3);
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![180_000], "no window opened for a late event");
    assert_eq!(windows.open[&180_000].counts, BTreeMap::from([(Kind::View, 1)]));
    assert_eq!(windows.stream_time_ms, Some(200_000), "late events do not move stream time");
}

// ─── accept: what an event adds to its window ────────────────────────────────────────────────────────────────

/// One window's worth of events on the shipped catalog: U004 and U008 are Premium, U001 and U002 Standard, U999
/// and P999 are in no catalogue.
fn one_window() -> Vec<Activity> {
    vec![
        event("U004", "P001", Kind::View, 1, 1_000),
        event("U001", "P001", Kind::View, 1, 2_000),
        event("U001", "P003", Kind::AddToCart, 2, 3_000),
        event("U001", "P003", Kind::RemoveFromCart, 1, 4_000),
        event("U001", "P001", Kind::Purchase, 2, 5_000),
        event("U004", "P005", Kind::Purchase, 3, 6_000),
        event("U999", "P999", Kind::Purchase, 5, 7_000),
        event("U008", "P005", Kind::AddToCart, 4, 8_000),
        event("U002", "P007", Kind::RemoveFromCart, 1, 9_000),
    ]
}

fn one_window_state() -> WindowState {
    let (windows, placements) = fed(&one_window(), &Catalog::shipped());
    assert!(placements.iter().all(|p| *p == Placement::Window { start_ms: 0 }), "all in [0, 60000): {placements:?}");
    assert_eq!(windows.open.len(), 1);
    windows.open[&0].clone()
}

#[test]
fn an_accepted_event_is_counted_by_its_kind() {
    let state = one_window_state();
    let expected =
        BTreeMap::from([(Kind::View, 2), (Kind::AddToCart, 2), (Kind::RemoveFromCart, 2), (Kind::Purchase, 3)]);
    assert_eq!(state.counts, expected);
}

#[test]
fn an_accepted_event_is_counted_by_its_users_segment_and_an_unknown_user_is_standard() {
    let state = one_window_state();
    // Premium: U004's view and purchase, U008's cart; Standard: U001's four, U002's and U999's (unknown).
    assert_eq!(state.by_segment, BTreeMap::from([(Segment::Premium, 3), (Segment::Standard, 6)]));
    // The catalog given is the one that says: here U001 is Premium and U004 unknown.
    let catalog = Catalog::parse(
        r#"[{"id": "P001", "name": "Kettle", "category": "Home", "price_cents": 100}]"#,
        r#"[{"id": "U001", "region": "North", "segment": "Premium"}]"#,
    )
    .unwrap();
    let (windows, _) = fed(
        &[view_at(1_000), event("U004", "P001", Kind::View, 1, 2_000), event("U001", "P001", Kind::Purchase, 1, 3_000)],
        &catalog,
    );
    assert_eq!(windows.open[&0].by_segment, BTreeMap::from([(Segment::Premium, 2), (Segment::Standard, 1)]));
}

#[test]
fn every_kind_of_event_is_an_interaction_with_its_product() {
    let state = one_window_state();
    let expected = BTreeMap::from([
        ("P001".to_string(), 3),
        ("P003".to_string(), 2),
        ("P005".to_string(), 2),
        ("P007".to_string(), 1),
        ("P999".to_string(), 1),
    ]);
    assert_eq!(state.interactions, expected);
}

#[test]
fn revenue_is_quantity_times_price_of_purchases_only() {
    let state = one_window_state();
    // 2 × P001 (129900) + 3 × P005 (2900) + 5 × P999 (not in the catalogue: 0); carts and removals add nothing.
    assert_eq!(state.revenue_cents, 2 * 129_900 + 3 * 2_900);
    let catalog = Catalog::parse(
        r#"[{"id": "P001", "name": "Kettle", "category": "Home", "price_cents": 100}]"#,
        r#"[{"id": "U001", "region": "North", "segment": "Premium"}]"#,
    )
    .unwrap();
    let (windows, _) = fed(&[event("U001", "P001", Kind::Purchase, 7, 1_000)], &catalog);
    assert_eq!(windows.open[&0].revenue_cents, 700, "the price comes from the catalog given");
}

#[test]
fn viewers_carters_and_buyers_are_the_users_who_did_each() {
    let state = one_window_state();
    assert_eq!(state.viewers, set(&["U001", "U004"]), "viewers");
    assert_eq!(state.carters, set(&["U001", "U008"]), "carters: ADD_TO_CART only, not a removal");
    assert_eq!(state.buyers, set(&["U001", "U004", "U999"]), "buyers, with or without a view");
    assert_eq!(state.out_of_order, 0, "every event came in order");
}

#[test]
fn out_of_order_counts_events_whose_window_had_already_ended_in_stream_time() {
    let catalog = Catalog::shipped();
    let mut windows = Windows::new(SPEC);
    let out_of_order = |windows: &mut Windows, time: i64| {
        let placement = windows.accept(&view_at(time), &catalog);
        let Placement::Window { start_ms } = placement else { panic!("the event at {time} is in time: {placement:?}") };
        windows.open[&start_ms].out_of_order
    };
    assert_eq!(out_of_order(&mut windows, 10_000), 0);
    assert_eq!(out_of_order(&mut windows, 5_000), 0, "after a later event of its own window, it is not out of order");
    assert_eq!(out_of_order(&mut windows, 60_000), 0, "the event that ends a window is in the next, in order");
    assert_eq!(out_of_order(&mut windows, 20_000), 1, "stream time 60000 is the end of [0, 60000): out of order");
    assert_eq!(out_of_order(&mut windows, 69_999), 0);
    assert_eq!(out_of_order(&mut windows, 59_999), 2, "within the grace: taken, and out of order");
    assert_eq!(out_of_order(&mut windows, 61_000), 0, "[60000, 120000) has not ended");
    assert_eq!(windows.accept(&view_at(70_000), &catalog), Placement::Window { start_ms: 60_000 });
    assert_eq!(windows.accept(&view_at(30_000), &catalog), Placement::Late { start_ms: 0 });
    assert_eq!(windows.open[&0].out_of_order, 2, "a late event is not out of order: it is not taken");
    assert_eq!(windows.open[&0].counts, BTreeMap::from([(Kind::View, 4)]));
}

// ─── close_due ───────────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn nothing_closes_without_stream_time() {
    let catalog = Catalog::shipped();
    assert_eq!(Windows::new(SPEC).close_due(&catalog, 5), vec![], "no event, no window, nothing to close");
    let mut windows = windows_at(None, &[-120_000, 0]);
    assert_eq!(windows.close_due(&catalog, 5), vec![], "time moves only with events");
    assert_eq!(windows, windows_at(None, &[-120_000, 0]), "both windows stay open, unchanged");
}

#[test]
fn a_window_closes_exactly_when_stream_time_reaches_its_end_plus_the_grace_and_only_once() {
    let catalog = Catalog::shipped();
    let (mut windows, _) = fed(&[view_at(1_000), view_at(69_999)], &catalog);
    assert_eq!(windows.close_due(&catalog, 5), vec![], "at 69999, end + grace − 1, [0, 60000) is still open");
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![0, 60_000]);
    let zero = windows.open[&0].clone();
    windows.accept(&view_at(70_000), &catalog);
    let closed = windows.close_due(&catalog, 5);
    assert_eq!(closed, vec![WindowResult::of(&zero, SPEC, &catalog, 5)], "at 70000, end + grace, it closes");
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![60_000], "the other stays open");
    assert_eq!(windows.close_due(&catalog, 5), vec![], "closed once: with no new event nothing more closes");
    assert_eq!(windows.close_due(&catalog, 5), vec![], "and still nothing");
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![60_000]);
}

#[test]
fn the_windows_due_close_together_in_start_order_and_the_others_stay_open() {
    let catalog = Catalog::shipped();
    // Closing at 10000, 70000, 130000, 190000 (the exact edge) and 250000; stream time 190000.
    let open = [-60_000, 0, 60_000, 120_000, 180_000];
    let mut windows = windows_at(Some(190_000), &open);
    let before = windows.clone();
    let closed = windows.close_due(&catalog, 5);
    assert_eq!(starts(&closed), vec![-60_000, 0, 60_000, 120_000], "the four due, oldest first");
    let expected: Vec<WindowResult> =
        open[..4].iter().map(|s| WindowResult::of(&before.open[s], SPEC, &catalog, 5)).collect();
    assert_eq!(closed, expected);
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![180_000], "the one not due stays open");
    assert_eq!(windows.open[&180_000], before.open[&180_000], "unchanged");
    assert_eq!(windows.stream_time_ms, Some(190_000), "closing does not move stream time");
    assert_eq!(windows.close_due(&catalog, 5), vec![], "none of them closes twice");
    windows.accept(&view_at(250_000), &catalog);
    let closed = windows.close_due(&catalog, 5);
    assert_eq!(starts(&closed), vec![180_000], "the last one closes at 250000, alone");
    assert_eq!(closed[0].events, 5);
    assert_eq!(windows.open.keys().copied().collect::<Vec<_>>(), vec![240_000]);
}

#[test]
fn a_closed_windows_result_sums_its_counts_ends_after_the_size_and_keeps_the_top_n() {
    let catalog = Catalog::shipped();
    let state = WindowState {
        start_ms: 120_000,
        counts: BTreeMap::from([(Kind::View, 4), (Kind::AddToCart, 2), (Kind::Purchase, 1)]),
        by_segment: BTreeMap::from([(Segment::Premium, 3), (Segment::Standard, 4)]),
        interactions: BTreeMap::from([("P001".into(), 2), ("P002".into(), 3), ("P003".into(), 2)]),
        revenue_cents: 99_900,
        viewers: set(&["U001", "U004", "U008"]),
        carters: set(&["U001", "U004"]),
        buyers: set(&["U004"]),
        out_of_order: 1,
    };
    for top_n in [0, 2, 5] {
        let mut windows = Windows {
            spec: SPEC,
            stream_time_ms: Some(190_000),
            open: BTreeMap::from([(120_000, state.clone())]),
            late: 4,
        };
        let closed = windows.close_due(&catalog, top_n);
        assert_eq!(closed, vec![WindowResult::of(&state, SPEC, &catalog, top_n)], "top {top_n}");
        let result = &closed[0];
        assert_eq!((result.start_ms, result.end_ms, result.events), (120_000, 180_000, 7));
        assert_eq!(result.top_products.len(), top_n.min(3), "top {top_n} of 3 products");
        assert_eq!(windows.late, 4, "closing does not touch the late count");
        assert!(windows.open.is_empty());
    }
}

// ─── top_products ────────────────────────────────────────────────────────────────────────────────────────────

fn interactions(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
    counts.iter().map(|(id, n)| (id.to_string(), *n)).collect()
}

fn ranked(top: &[TopProduct]) -> Vec<(&str, u64)> {
    top.iter().map(|p| (p.product_id.as_str(), p.interactions)).collect()
}

#[test]
fn ties_go_to_the_smaller_id_however_many_products_tie() {
    // Sixty products with counts 1 to 4, many tied, some across the cut: the list is the one a full sort by count
    // (most first) then id gives — not whatever order a sort leaves equal counts in (an unstable sort keeps the
    // map's order for short lists only).
    let catalog = Catalog::shipped();
    let counts: BTreeMap<String, u64> = (0..60u64).map(|i| (format!("X{:03}", (i * 37) % 60), 1 + i % 4)).collect();
    let mut expected: Vec<(&String, &u64)> = counts.iter().collect();
    expected.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for n in [1, 5, 14, 15, 16, 33, 60] {
        let top = top_products(&counts, &catalog, n);
        let got: Vec<(&str, u64)> = top.iter().map(|p| (p.product_id.as_str(), p.interactions)).collect();
        let want: Vec<(&str, u64)> = expected.iter().take(n).map(|(id, c)| (id.as_str(), **c)).collect();
        assert_eq!(got, want, "the top {n}: most first, ties to the smaller id");
    }
}

#[test]
fn top_products_are_the_most_active_first_ties_to_the_smaller_id() {
    let catalog = Catalog::shipped();
    let counts = interactions(&[("P007", 1), ("P010", 5), ("P002", 2), ("P003", 5), ("P001", 2), ("P020", 9)]);
    assert_eq!(
        ranked(&top_products(&counts, &catalog, 6)),
        vec![("P020", 9), ("P003", 5), ("P010", 5), ("P001", 2), ("P002", 2), ("P007", 1)]
    );
    assert_eq!(
        ranked(&top_products(&counts, &catalog, 4)),
        vec![("P020", 9), ("P003", 5), ("P010", 5), ("P001", 2)],
        "a tie at the cut goes to the smaller id"
    );
    assert_eq!(ranked(&top_products(&counts, &catalog, 2)), vec![("P020", 9), ("P003", 5)], "a tie cut in two");
}

#[test]
fn top_products_are_named_from_the_catalog_or_by_their_id() {
    let catalog = Catalog::shipped();
    let counts = interactions(&[("P001", 3), ("X-42", 2), ("P014", 1)]);
    let names: Vec<(String, String)> =
        top_products(&counts, &catalog, 3).into_iter().map(|p| (p.product_id, p.name)).collect();
    assert_eq!(
        names,
        vec![
            ("P001".to_string(), "Laptop Pro 14".to_string()),
            ("X-42".to_string(), "X-42".to_string()),
            ("P014".to_string(), "Kafka: The Definitive Guide".to_string()),
        ]
    );
    let kettles =
        Catalog::parse(r#"[{"id": "P001", "name": "Kettle", "category": "Home", "price_cents": 100}]"#, "[]").unwrap();
    assert_eq!(top_products(&counts, &kettles, 1)[0].name, "Kettle", "the name comes from the catalog given");
}

#[test]
fn top_products_are_fewer_when_there_are_fewer_products_and_none_for_zero() {
    let catalog = Catalog::shipped();
    let counts = interactions(&[("P005", 1), ("P004", 4)]);
    assert_eq!(ranked(&top_products(&counts, &catalog, 5)), vec![("P004", 4), ("P005", 1)]);
    assert_eq!(top_products(&counts, &catalog, 0), vec![], "top 0 is empty");
    assert_eq!(top_products(&BTreeMap::new(), &catalog, 5), vec![], "no product, no top");
}

// ─── funnel ──────────────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn the_funnel_follows_the_users_who_viewed_to_the_cart_and_to_the_purchase() {
    // Every combination of steps: v viewed, c carted, b bought.
    let viewers = set(&["v", "vc", "vcb", "vb"]);
    let carters = set(&["vc", "vcb", "c", "cb"]);
    let buyers = set(&["vcb", "vb", "cb", "b"]);
    let funnel = funnel(&viewers, &carters, &buyers);
    assert_eq!((funnel.viewed, funnel.carted, funnel.purchased), (4, 2, 1), "{funnel:?}");
    assert_eq!(
        funnel,
        Funnel { viewed: 4, carted: 2, purchased: 1, view_to_cart_per_mille: 500, cart_to_purchase_per_mille: 500 }
    );
}

#[test]
fn a_buyer_who_did_not_view_in_the_window_counts_in_no_step() {
    let funnel = funnel(&set(&["U001"]), &set(&["U001", "U002"]), &set(&["U002", "U003"]));
    assert_eq!(
        funnel,
        Funnel { viewed: 1, carted: 1, purchased: 0, view_to_cart_per_mille: 1000, cart_to_purchase_per_mille: 0 }
    );
}

#[test]
fn funnel_rates_are_per_mille_of_the_step_before_rounded_down() {
    let two_of_three = funnel(&set(&["a", "b", "c"]), &set(&["a", "b"]), &set(&["a"]));
    assert_eq!(
        two_of_three,
        Funnel { viewed: 3, carted: 2, purchased: 1, view_to_cart_per_mille: 666, cart_to_purchase_per_mille: 500 }
    );
    let one_of_three = funnel(&set(&["a", "b", "c"]), &set(&["a", "b", "c"]), &set(&["a", "b"]));
    assert_eq!((one_of_three.view_to_cart_per_mille, one_of_three.cart_to_purchase_per_mille), (1000, 666));
    let seven = funnel(&set(&["a", "b", "c", "d", "e", "f", "g"]), &set(&["a"]), &set(&["a"]));
    assert_eq!((seven.view_to_cart_per_mille, seven.cart_to_purchase_per_mille), (142, 1000), "1/7 is 142.857…");
}

#[test]
fn funnel_rates_are_zero_when_the_step_before_is_empty() {
    assert_eq!(funnel(&set(&[]), &set(&[]), &set(&[])), Funnel::default(), "an empty window");
    assert_eq!(
        funnel(&set(&["a", "b"]), &set(&[]), &set(&["a"])),
        Funnel { viewed: 2, carted: 0, purchased: 0, view_to_cart_per_mille: 0, cart_to_purchase_per_mille: 0 },
        "viewers but no one carted"
    );
    assert_eq!(funnel(&set(&[]), &set(&["a"]), &set(&["a"])), Funnel::default(), "no viewer, no funnel");
}

// ─── Given a few minutes of shopping, then… (snapshot) ───────────────────────────────────────────────────────

/// 09:00 UTC on 1 December 2026, a window's start.
const NINE: i64 = 1_796_115_600_000;

fn at(seconds: f64) -> i64 {
    NINE + (seconds * 1000.0) as i64
}

#[test]
fn given_three_minutes_of_shopping_then_each_window_closes_once_with_its_analytics() {
    let catalog = Catalog::shipped();
    let events = [
        // 09:00 – 09:01
        event("U004", "P001", Kind::View, 1, at(2.0)),
        event("U001", "P013", Kind::View, 1, at(5.0)),
        event("U004", "P001", Kind::AddToCart, 1, at(9.0)),
        event("U001", "P013", Kind::AddToCart, 2, at(15.0)),
        event("U008", "P005", Kind::View, 1, at(21.0)),
        event("U004", "P001", Kind::Purchase, 1, at(30.0)),
        event("U007", "P014", Kind::View, 1, at(41.0)),
        event("U001", "P013", Kind::RemoveFromCart, 2, at(52.0)),
        event("U001", "P014", Kind::View, 1, at(58.0)),
        // 09:01 – 09:02, with a phone's events from 09:00 arriving late
        event("U012", "P009", Kind::View, 1, at(63.0)),
        event("U008", "P005", Kind::AddToCart, 2, at(59.5)),
        event("U012", "P009", Kind::AddToCart, 1, at(71.0)),
        event("U008", "P005", Kind::Purchase, 2, at(66.0)),
        event("U007", "P014", Kind::Purchase, 1, at(55.0)),
        event("U012", "P009", Kind::Purchase, 1, at(95.0)),
        event("U019", "P017", Kind::View, 1, at(118.0)),
        // 09:02 –
        event("U019", "P018", Kind::View, 1, at(124.0)),
        event("U020", "P020", Kind::View, 1, at(131.0)),
    ];
    let mut windows = Windows::new(SPEC);
    let mut steps = Vec::new();
    for event in &events {
        let placed = windows.accept(event, &catalog);
        let closed = windows.close_due(&catalog, 3);
        let kind = serde_json::to_value(event.kind).unwrap();
        let (user, product, quantity) = (&event.user_id, &event.product_id, event.quantity);
        let what =
            format!("09:00 +{}ms {user} {} {product} ×{quantity}", event.event_time_ms - NINE, kind.as_str().unwrap());
        steps.push(json!({ "event": what, "placed": placed, "closed": closed }));
    }
    let closed: Vec<&serde_json::Value> = steps.iter().flat_map(|s| s["closed"].as_array().unwrap()).collect();
    assert_eq!(closed.len(), 2, "09:00 and 09:01 have closed, 09:02 is open");
    assert_eq!(windows.late, 1, "U007's purchase at 09:00:55 came after 09:00 closed");
    kit_testing::redact::settings().bind(|| {
        insta::assert_json_snapshot!(
            "windows__three_minutes_of_shopping",
            json!({
                "steps": steps,
                "still_open": windows.open.keys().collect::<Vec<_>>(),
                "stream_time_ms": windows.stream_time_ms,
                "late": windows.late,
            })
        )
    });
}

// ─── Property: every event counted once, every window emitted once, in order ─────────────────────────────────

fn fixed(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(14), failure_persistence: None, ..ProptestConfig::default() }
}

const USERS: [&str; 5] = ["U001", "U004", "U008", "U013", "U999"];
const PRODUCTS: [&str; 5] = ["P001", "P005", "P013", "P020", "P999"];

/// One event of a random sequence: how far the clock moves on, how far back this event's time is (0 for most,
/// up to beyond the grace for some), and what it is; and whether the aggregator closes windows after it.
fn step() -> impl Strategy<Value = (i64, i64, usize, usize, usize, u32, bool)> {
    (
        0i64..=20_000,
        prop_oneof![3 => Just(0i64), 1 => 0i64..=45_000],
        0..Kind::ALL.len(),
        0..USERS.len(),
        0..PRODUCTS.len(),
        1u32..=3,
        proptest::bool::weighted(0.3),
    )
}

proptest! {
    #![proptest_config(fixed(300))]

    /// Whatever the times and their order: each event is either taken into the window that holds its time or
    /// counted late; each window's result counts exactly the events taken into it; every event ends up in a
    /// closed result, in an open window or in `late`; results come out once each, in strictly increasing start
    /// order across calls, only when due; no event is taken into a window already emitted; and the windows left
    /// open are exactly those not yet due.
    #[test]
    fn every_event_is_counted_once_and_every_window_emitted_once_in_order(
        start in -150_000i64..=150_000,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let catalog = Catalog::shipped();
        let mut windows = Windows::new(SPEC);
        let mut clock = start;
        let mut taken: BTreeMap<i64, u64> = BTreeMap::new();
        let mut late = 0u64;
        let mut emitted: Vec<WindowResult> = Vec::new();
        let mut greatest = i64::MIN;
        for (i, &(forward, back, kind, user, product, quantity, close)) in steps.iter().enumerate() {
            clock += forward;
            let time = clock - back;
            greatest = greatest.max(time);
            let activity = event(USERS[user], PRODUCTS[product], Kind::ALL[kind], quantity, time);
            let placement = windows.accept(&activity, &catalog);
            prop_assert_eq!(windows.stream_time_ms, Some(greatest));
            match placement {
                Placement::Window { start_ms } => {
                    prop_assert_eq!(start_ms, SPEC.start_of(time));
                    prop_assert!(greatest < SPEC.closes_at(start_ms), "event {} taken into a closed window", i);
                    prop_assert!(!emitted.iter().any(|r| r.start_ms == start_ms), "taken into an emitted window");
                    *taken.entry(start_ms).or_default() += 1;
                }
                Placement::Late { start_ms } => {
                    prop_assert_eq!(start_ms, SPEC.start_of(time));
                    prop_assert!(greatest >= SPEC.closes_at(start_ms), "event {} late though its window is open", i);
                    late += 1;
                }
            }
            prop_assert_eq!(windows.late, late);
            if close || i + 1 == steps.len() {
                let closed = windows.close_due(&catalog, 3);
                for result in &closed {
                    prop_assert!(
                        emitted.last().is_none_or(|last| last.start_ms < result.start_ms),
                        "window {} emitted after {:?}", result.start_ms, emitted.last().map(|r| r.start_ms)
                    );
                    prop_assert!(SPEC.closes_at(result.start_ms) <= greatest, "window {} not due", result.start_ms);
                    prop_assert_eq!(result.events, taken[&result.start_ms], "window {}", result.start_ms);
                    prop_assert_eq!(result.end_ms, result.start_ms + SPEC.size_ms);
                }
                emitted.extend(closed);
                for (start_ms, state) in &windows.open {
                    prop_assert!(SPEC.closes_at(*start_ms) > greatest, "window {} due but still open", start_ms);
                    prop_assert_eq!(state.counts.values().sum::<u64>(), taken[start_ms], "open window {}", start_ms);
                }
            }
        }
        let in_results: u64 = emitted.iter().map(|r| r.events).sum();
        let in_open: u64 = windows.open.values().flat_map(|w| w.counts.values()).sum();
        prop_assert_eq!(in_results + in_open + windows.late, steps.len() as u64, "every event counted exactly once");
        let starts: BTreeSet<i64> = emitted.iter().map(|r| r.start_ms).collect();
        prop_assert_eq!(starts.len(), emitted.len(), "no window emitted twice");
        prop_assert!(windows.open.keys().all(|s| !starts.contains(s)), "an emitted window is open again");
    }
}
