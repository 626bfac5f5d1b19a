//! Lesson 13 — the same saga as lesson 12, choreographed: no orchestrator. Each service reacts to the events of
//! the others and announces what it did; compensations live with the services (the inventory releases stock when
//! the payment is declined). Then a soak: a thousand orders with faults everywhere — shortfalls, declines, a flaky
//! mail server, duplicated deliveries, a service killed and restarted — after which every order has ended and no
//! unit of stock or cent of money is out of place.
//!
//! - [`events`]: what the services announce;
//! - [`reactions`]: each service's reactions, pure;
//! - [`services`]: the four services as `kit::stage` stages;
//! - [`soak`]: the soak — orders, faults, and the invariants checked at the end.

pub mod events;
pub mod reactions;
pub mod services;
pub mod soak;

pub use events::{Event, Item, PlaceOrder, Source};
pub use reactions::{
    DECLINED_CARD, Gateway, Inventory, OrderRecord, OrderStatus, Orders, Payment, Payments, Reservation, Stock,
    TestGateway, out_of_stock_reason, payment_declined_reason,
};
