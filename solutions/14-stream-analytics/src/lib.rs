//! Lesson 14 — real-time analytics with windows: shoppers' events (seed 004's views, carts and purchases) are
//! aggregated into tumbling windows by the time they happened, not the time they arrived; late events are kept
//! apart, never lost; each window's result is emitted once, exactly once even across a crash; and a live
//! dashboard shows them as they close.
//!
//! - [`catalog`]: the products and users shipped with the lesson;
//! - [`activity`]: the events, and a simulator of shopping sessions;
//! - [`windows`]: windows, stream time, grace and lateness, top products and the funnel — pure;
//! - [`aggregator`]: the windows as a `kit::stage` service, exactly once;
//! - [`dashboard`]: the live page (axum, Server-Sent Events) and the console view.

pub mod activity;
pub mod aggregator;
pub mod catalog;
pub mod dashboard;
pub mod windows;

pub use activity::{Activity, Kind, Sessions};
pub use catalog::{Catalog, Product, Segment, User};
pub use windows::{
    Funnel, Placement, TopProduct, WindowResult, WindowSpec, WindowState, Windows, funnel, top_products,
};
