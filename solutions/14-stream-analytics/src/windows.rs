//! Windowed aggregation by event time: the lesson's heart, as pure code (the aggregator in `aggregator.rs` runs it
//! on Kafka). Kafka Streams' vocabulary throughout:
//!
//! - a **tumbling window** of `size_ms`: `[start, start + size)`, back to back, every event in exactly one;
//! - **stream time**: the greatest event time seen so far — time moves only when events come, never by the clock;
//! - **grace**: how long after its end a window still takes events that arrive out of order; a window *closes*
//!   when stream time reaches `end + grace`, and only then is its result emitted, once (what Kafka Streams calls
//!   suppression until the window closes);
//! - a **late** event is one whose window has closed: it is counted and sent to a late-events topic, never folded
//!   into a result already emitted, and never silently dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::activity::{Activity, Kind};
use crate::catalog::{Catalog, Segment};

// ANCHOR: spec
/// The windows' shape: tumbling windows of `size_ms`, each taking events up to `grace_ms` after its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub grace_ms: i64,
}

impl WindowSpec {
    /// The start of the window an event at `event_time_ms` belongs to.
    pub fn start_of(&self, event_time_ms: i64) -> i64 {
        event_time_ms.div_euclid(self.size_ms) * self.size_ms
    }

    /// When the window starting at `start_ms` closes, in stream time: its end plus the grace.
    pub fn closes_at(&self, start_ms: i64) -> i64 {
        start_ms + self.size_ms + self.grace_ms
    }
}
// ANCHOR_END: spec

// ANCHOR: window_state
/// What one open window has gathered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    pub start_ms: i64,
    /// Events by kind.
    pub counts: BTreeMap<Kind, u64>,
    /// Events by the segment of their user.
    pub by_segment: BTreeMap<Segment, u64>,
    /// Events per product, every kind counted: its interactions.
    pub interactions: BTreeMap<String, u64>,
    /// Quantity × price of every purchase.
    pub revenue_cents: u64,
    /// The users who viewed, added to a cart, purchased, in this window.
    pub viewers: BTreeSet<String>,
    pub carters: BTreeSet<String>,
    pub buyers: BTreeSet<String>,
    /// Events taken after stream time had passed the window's end (out of order, within the grace).
    pub out_of_order: u64,
}
// ANCHOR_END: window_state

// ANCHOR: placement
/// Where an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Placement {
    /// Into the open window starting at `start_ms`.
    Window { start_ms: i64 },
    /// Nowhere: its window (starting at `start_ms`) had closed. To the late-events topic.
    Late { start_ms: i64 },
}
// ANCHOR_END: placement

// ANCHOR: windows
/// The windows an aggregator keeps open, and its stream time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    pub spec: WindowSpec,
    /// The greatest event time seen; `None` before the first event.
    pub stream_time_ms: Option<i64>,
    /// Open windows by start.
    pub open: BTreeMap<i64, WindowState>,
    /// Late events so far.
    pub late: u64,
}
// ANCHOR_END: windows

impl Windows {
    pub fn new(spec: WindowSpec) -> Windows {
        Windows { spec, stream_time_ms: None, open: BTreeMap::new(), late: 0 }
    }

    // EXERCISE: Take one event. It belongs to the tumbling window that contains its event time (`self.spec`
    // says the size). Stream time is the greatest event time seen, this event's included. If its window has
    // closed — stream time has reached the window's end plus the grace (`closes_at`) — the event is late: count
    // it in `self.late`, change no window, and answer `Placement::Late`. Otherwise fold it into its window (open
    // it if needed) and answer `Placement::Window`: count it by kind and by its user's segment (the catalog says
    // which), count an interaction for its product, add `quantity × price` to the revenue for a purchase, and add
    // its user to the viewers, carters (ADD_TO_CART) or buyers. An event whose window had already ended in stream
    // time when it came (but not closed) also counts in `out_of_order`. The tests feed hand-made sequences in and
    // out of order, at window edges, and beyond the grace.
    // ANCHOR: accept
    /// Takes `event` into its window, or counts it late.
    pub fn accept(&mut self, event: &Activity, catalog: &Catalog) -> Placement {
        let start_ms = self.spec.start_of(event.event_time_ms);
        let before = self.stream_time_ms;
        let now = before.map_or(event.event_time_ms, |t| t.max(event.event_time_ms));
        self.stream_time_ms = Some(now);
        if now >= self.spec.closes_at(start_ms) {
            self.late += 1;
            return Placement::Late { start_ms };
        }
        let window = self.open.entry(start_ms).or_insert_with(|| WindowState { start_ms, ..WindowState::default() });
        *window.counts.entry(event.kind).or_default() += 1;
        *window.by_segment.entry(catalog.segment_of(&event.user_id)).or_default() += 1;
        *window.interactions.entry(event.product_id.clone()).or_default() += 1;
        match event.kind {
            Kind::View => {
                window.viewers.insert(event.user_id.clone());
            }
            Kind::AddToCart => {
                window.carters.insert(event.user_id.clone());
            }
            Kind::RemoveFromCart => {}
            Kind::Purchase => {
                window.buyers.insert(event.user_id.clone());
                window.revenue_cents += u64::from(event.quantity) * catalog.price_of(&event.product_id);
            }
        }
        if before.is_some_and(|t| t >= start_ms + self.spec.size_ms) {
            window.out_of_order += 1;
        }
        Placement::Window { start_ms }
    }
    // ANCHOR_END: accept

    // EXERCISE: Close the windows that are due: every open window whose end plus the grace stream time has
    // reached — no other, and each once. Return their results in window order (`WindowResult::of`, with the
    // top `top_n` products), and keep open only the windows still taking events. Time moves with events, not the
    // clock: with no new event, nothing more closes. The tests close windows at their exact edge, one at a time
    // and several at once, and call this again and again.
    // ANCHOR: close_due
    /// The results of the windows that closed, oldest first.
    pub fn close_due(&mut self, catalog: &Catalog, top_n: usize) -> Vec<WindowResult> {
        let Some(now) = self.stream_time_ms else {
            return Vec::new();
        };
        let due: Vec<i64> = self.open.keys().copied().filter(|start| now >= self.spec.closes_at(*start)).collect();
        due.into_iter()
            .filter_map(|start| self.open.remove(&start))
            .map(|state| WindowResult::of(&state, self.spec, catalog, top_n))
            .collect()
    }
    // ANCHOR_END: close_due
}

// ANCHOR: results
/// A product among a window's most active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopProduct {
    pub product_id: String,
    pub name: String,
    pub interactions: u64,
}

/// A window's conversion funnel: of the users who viewed, how many also added to a cart, and of those, how many
/// also bought — all within the window. Rates in per mille, rounded down (0 when there is no one to convert).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    pub viewed: u64,
    pub carted: u64,
    pub purchased: u64,
    pub view_to_cart_per_mille: u64,
    pub cart_to_purchase_per_mille: u64,
}

/// What a closed window says (`analytics.windows`, keyed by the window's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowResult {
    pub start_ms: i64,
    pub end_ms: i64,
    pub events: u64,
    pub counts: BTreeMap<Kind, u64>,
    pub by_segment: BTreeMap<Segment, u64>,
    pub top_products: Vec<TopProduct>,
    pub revenue_cents: u64,
    pub funnel: Funnel,
    pub out_of_order: u64,
}
// ANCHOR_END: results

impl WindowResult {
    /// The result of a closed window.
    pub fn of(state: &WindowState, spec: WindowSpec, catalog: &Catalog, top_n: usize) -> WindowResult {
        WindowResult {
            start_ms: state.start_ms,
            end_ms: state.start_ms + spec.size_ms,
            events: state.counts.values().sum(),
            counts: state.counts.clone(),
            by_segment: state.by_segment.clone(),
            top_products: top_products(&state.interactions, catalog, top_n),
            revenue_cents: state.revenue_cents,
            funnel: funnel(&state.viewers, &state.carters, &state.buyers),
            out_of_order: state.out_of_order,
        }
    }
}

// EXERCISE: The `n` products with the most interactions, most first, each with its name from the catalog (its id,
// for a product the catalog does not have). Ties go to the smaller product id, so that the same counts always give
// the same list; fewer than `n` products give a shorter list. The tests include ties at the cut.
// ANCHOR: top_products
/// The `n` most active products of `interactions`.
pub fn top_products(interactions: &BTreeMap<String, u64>, catalog: &Catalog, n: usize) -> Vec<TopProduct> {
    let mut ranked: Vec<(&String, &u64)> = interactions.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(id, count)| TopProduct {
            product_id: id.clone(),
            name: catalog.products.get(id).map_or_else(|| id.clone(), |p| p.name.clone()),
            interactions: *count,
        })
        .collect()
}
// ANCHOR_END: top_products

// EXERCISE: The window's funnel. `viewed`: the users who viewed; `carted`: those of them who also added to a cart;
// `purchased`: those of the carted who also bought. A user who bought without viewing in this window (they
// viewed in the window before) counts in no step. Rates in per mille of the step before, rounded down, and 0 when
// the step before is empty. The tests give users in every combination of steps.
// ANCHOR: funnel
/// The funnel of the users who viewed, carted and bought.
pub fn funnel(viewers: &BTreeSet<String>, carters: &BTreeSet<String>, buyers: &BTreeSet<String>) -> Funnel {
    let carted: BTreeSet<&String> = viewers.intersection(carters).collect();
    let purchased = carted.iter().filter(|u| buyers.contains(**u)).count() as u64;
    let (viewed, carted) = (viewers.len() as u64, carted.len() as u64);
    let per_mille = |part: u64, whole: u64| (part * 1000).checked_div(whole).unwrap_or(0);
    Funnel {
        viewed,
        carted,
        purchased,
        view_to_cart_per_mille: per_mille(carted, viewed),
        cart_to_purchase_per_mille: per_mille(purchased, carted),
    }
}
// ANCHOR_END: funnel
