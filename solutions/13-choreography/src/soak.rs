//! The soak: many orders through the choreographed shop with faults everywhere, then the invariants a shop must
//! keep whatever happened. Faults, all from one seed (printed, so a failing run can be run again):
//!
//! - **stock shortfalls:** less stock than the orders ask for, so the later orders of a SKU find none;
//! - **payment declines:** a share of the orders pay with the card the gateway declines;
//! - **a flaky mail server:** a share of mail attempts fail (three attempts, then the dead-letter topic);
//! - **duplicated deliveries:** clients send a share of their orders twice, and a *duplicator* writes a share of
//!   the inventory's and the payment service's events a second time, as a retrying producer without idempotence
//!   would;
//! - **a crash:** once the first orders have ended, while the others flow, the inventory service dies between a batch's work and its commit, and a new
//!   instance starts from its changelog.
//!
//! The invariants, read from the services' changelogs (never from their memory): every order ended (confirmed
//! or cancelled); stock conserved (for each SKU, what it started with = available + sold, nothing left reserved);
//! money conserved (what was charged = the confirmed orders' total); no side effect twice (no card charged twice,
//! no customer told twice, every order's notification sent or dead-lettered).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::stage::{Deployment, Running};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::events::{Item, PlaceOrder};
use crate::reactions::{DECLINED_CARD, Gateway, Inventory, OrderRecord, OrderStatus, Payment, Reservation, Stock};
use crate::services::{
    FlakyMailer, InventoryService, NotificationService, OrderService, PaymentService, ShopTopics, Tally,
};

/// What to throw at the shop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakConfig {
    pub orders: usize,
    /// Everything random comes from this seed.
    pub seed: u64,
    /// The share of orders that pay with a declined card.
    pub decline_rate: f64,
    /// The share of mail attempts that fail.
    pub mail_failure_rate: f64,
    /// The share of orders a client sends twice, and of inventory and payment events written twice.
    pub duplicate_rate: f64,
    /// Stock per SKU, as a share of what the orders will ask of it on average (below 1: shortfalls).
    pub stock_share: f64,
    /// Whether the inventory service crashes once the first orders have ended (and a new instance takes over).
    pub crash_inventory: bool,
    /// How long every order may take to end, all together.
    pub within: Duration,
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig {
            orders: 1_000,
            seed: 13,
            decline_rate: 0.1,
            mail_failure_rate: 0.3,
            duplicate_rate: 0.05,
            stock_share: 0.8,
            crash_inventory: true,
            within: Duration::from_secs(300),
        }
    }
}

/// The shop's catalogue: SKU and unit price.
pub const CATALOGUE: [(&str, u64); 5] =
    [("LAPTOP", 99_999), ("MONITOR", 24_900), ("DOCK", 18_900), ("MOUSE", 2_500), ("CABLE", 990)];

/// The orders of a soak, from its seed: one to three lines of one to three units, a card of their own (so a
/// second charge of one order shows as a second charge of its card), some declined.
pub fn orders(config: &SoakConfig, run: &str) -> Vec<PlaceOrder> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    (0..config.orders)
        .map(|n| {
            let lines = rng.usize(1..=3);
            let mut skus: Vec<usize> = (0..CATALOGUE.len()).collect();
            rng.shuffle(&mut skus);
            let items = skus[..lines]
                .iter()
                .map(|&i| Item {
                    sku: sku(run, CATALOGUE[i].0),
                    quantity: rng.u32(1..=3),
                    unit_price_cents: CATALOGUE[i].1,
                })
                .collect();
            let declined = rng.f64() < config.decline_rate;
            PlaceOrder {
                order_id: format!("{run}-order-{n:04}"),
                customer_id: format!("{run}-customer-{}", n % 97),
                card: if declined { DECLINED_CARD.into() } else { format!("card-{run}-{n:04}") },
                items,
            }
        })
        .collect()
}

/// This run's name for a SKU of the catalogue: a shop's stock is kept across runs on real Kafka, so each run
/// stocks SKUs of its own.
pub fn sku(run: &str, name: &str) -> String {
    format!("{run}-{name}")
}

/// The stock the soak starts with: `stock_share` of what its orders ask of each SKU on average.
pub fn initial_stock(config: &SoakConfig, run: &str) -> Inventory {
    // Each order has 2 lines on average, of 2 units, spread over the catalogue.
    let asked = config.orders as f64 * 2.0 * 2.0 / CATALOGUE.len() as f64;
    let units = (asked * config.stock_share).round() as u32;
    let skus: Vec<(String, u32)> = CATALOGUE.iter().map(|(name, _)| (sku(run, name), units)).collect();
    let stock: Vec<(&str, u32)> = skus.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    Inventory::with_stock(&stock)
}

/// A gateway that takes every card but the declined one, and counts its charges per card where the soak can see
/// them (the payment service's memory is not the place: a service can die).
#[derive(Debug, Clone, Default)]
pub struct CountingGateway {
    pub charges: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Gateway for CountingGateway {
    fn charge(&mut self, card: &str, _amount_cents: u64) -> Result<(), String> {
        if card == DECLINED_CARD {
            return Err("card declined".into());
        }
        *self.charges.lock().unwrap_or_else(|p| p.into_inner()).entry(card.to_string()).or_default() += 1;
        Ok(())
    }
}

/// How far the soak is, for a live view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub placed: usize,
    pub by_status: BTreeMap<&'static str, usize>,
    pub elapsed_ms: u128,
    pub inventory_restarts: usize,
}

/// What a soak did, and whether the invariants held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub orders: usize,
    pub confirmed: usize,
    pub cancelled_out_of_stock: usize,
    pub cancelled_declined: usize,
    pub orders_not_ended: Vec<String>,
    /// Per SKU: (started with, available, reserved, sold).
    pub stock: BTreeMap<String, (u32, u32, u32, u32)>,
    pub stock_conserved: bool,
    pub charged_cents: u64,
    pub confirmed_total_cents: u64,
    pub money_conserved: bool,
    pub cards_charged_twice: usize,
    pub notifications_sent: usize,
    pub notifications_dead_lettered: usize,
    pub customers_told_twice: usize,
    pub mail_attempts: usize,
    pub duplicate_requests: usize,
    pub duplicated_events: usize,
    pub inventory_crashed: bool,
    pub seconds: f64,
}

impl SoakReport {
    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.orders_not_ended.is_empty()
            && self.stock_conserved
            && self.money_conserved
            && self.cards_charged_twice == 0
            && self.customers_told_twice == 0
            && self.notifications_sent + self.notifications_dead_lettered == self.orders
    }
}

/// Runs the soak on `topics` (created already) as `deployment`, calling `progress` as it goes (every 250 ms while
/// placing the orders, every 50 ms while waiting for them to end).
/// Blocking: run it on a thread of its own (the story and the tests use `spawn_blocking`).
pub fn run(
    topics: &ShopTopics,
    deployment: &Deployment,
    config: SoakConfig,
    run_id: &str,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let orders = orders(&config, run_id);
    let stock = initial_stock(&config, run_id);
    let tally: Tally = Arc::default();
    let gateway = CountingGateway::default();
    let mailer = FlakyMailer::new(config.mail_failure_rate, config.seed ^ 0x5eed);
    let order_service =
        Running::start(OrderService::new(topics.clone(), Arc::clone(&tally), format!("{run_id}-")), deployment.clone());
    let mut inventory = Some(Running::start(InventoryService::new(topics.clone(), stock.clone()), deployment.clone()));
    let payment = Running::start(PaymentService::new(topics.clone(), gateway.clone()), deployment.clone());
    let notifier = NotificationService::new(topics.clone(), mailer.clone());
    let notified = Arc::clone(&notifier.ended);
    let notification = Running::start(notifier, deployment.clone());

    let stop_duplicator = Arc::new(AtomicBool::new(false));
    let duplicated = Arc::new(AtomicUsize::new(0));
    let duplicator = {
        let (consumer, producer) = (deployment.consumer.clone(), deployment.producer.clone());
        let sources = [topics.inventory.clone(), topics.payments.clone()];
        let (stop, count, rate, seed) =
            (Arc::clone(&stop_duplicator), Arc::clone(&duplicated), config.duplicate_rate, config.seed);
        std::thread::spawn(move || duplicate(consumer, producer, &sources, rate, seed, &stop, &count))
    };

    let client: BaseProducer = deployment.producer.clone().create()?;
    let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_add(1));
    let mut report = SoakReport { orders: orders.len(), ..SoakReport::default() };
    let mut last_view = Instant::now();
    let mut inventory_restarts = 0;
    for (n, order) in orders.iter().enumerate() {
        let payload = serde_json::to_vec(order)?;
        let copies = if rng.f64() < config.duplicate_rate { 2 } else { 1 };
        report.duplicate_requests += copies - 1;
        for _ in 0..copies {
            send(&client, &topics.requests, &order.order_id, &payload)?;
        }
        if last_view.elapsed() >= Duration::from_millis(250) {
            progress(&view(n + 1, &tally, started, inventory_restarts));
            last_view = Instant::now();
        }
    }
    client.flush(Duration::from_secs(30))?;

    // Wait until the order service has ended every order (or the bound is reached: the invariants then say which).
    let deadline = Instant::now() + config.within;
    let mut crash_tried = false;
    loop {
        let current = view(orders.len(), &tally, started, inventory_restarts);
        let ended = current.by_status.get("CONFIRMED").unwrap_or(&0) + current.by_status.get("CANCELLED").unwrap_or(&0);
        progress(&current);
        if ended >= orders.len() || Instant::now() >= deadline {
            break;
        }
        // A service that stopped by itself (an error, a panic) will not come back: say so now, not at the bound.
        // Joining it brings its panic (an exercise's `todo!()`) or its error up here.
        if order_service.has_ended() {
            return Err(ended_by_itself("order", order_service.stop().0));
        }
        if payment.has_ended() {
            return Err(ended_by_itself("payment", payment.stop().0));
        }
        if notification.has_ended() {
            return Err(ended_by_itself("notification", notification.stop().0));
        }
        if let Some(running) = inventory.take_if(|r| r.has_ended()) {
            return Err(ended_by_itself("inventory", running.stop().0));
        }
        // Once the first orders have ended, while the others flow, the inventory dies between a batch's work and its
        // commit; a new instance starts from its changelog and reads the uncommitted inputs again.
        if config.crash_inventory && !crash_tried && ended >= 1 {
            crash_tried = true;
            if let Some(running) = inventory.take() {
                report.inventory_crashed = running.crash(Duration::from_secs(10));
            }
            inventory_restarts += 1;
            inventory = Some(Running::start(InventoryService::new(topics.clone(), stock.clone()), deployment.clone()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    stop_duplicator.store(true, Ordering::Relaxed);
    let duplicator_result = duplicator.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    report.duplicated_events = duplicated.load(Ordering::Relaxed);
    // Let the notification service catch up with the last orders before it stops.
    let notified_deadline = Instant::now() + Duration::from_secs(60);
    while notified.load(Ordering::Relaxed) < orders.len() && Instant::now() < notified_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, result) in [
        ("order", order_service.stop().0),
        ("payment", payment.stop().0),
        ("notification", notification.stop().0),
        ("inventory", inventory.take().map_or(Ok(Default::default()), |r| r.stop().0)),
    ] {
        result.map_err(|e| e.context(format!("the {name} service failed")))?;
    }
    duplicator_result?;

    check(topics, deployment, run_id, &orders, &stock, &gateway, &mailer, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The error of a service whose run ended by itself.
fn ended_by_itself(name: &str, result: anyhow::Result<kit::stage::RunReport>) -> anyhow::Error {
    match result {
        Err(error) => error.context(format!("the {name} service stopped")),
        Ok(_) => anyhow::anyhow!("the {name} service stopped by itself"),
    }
}

fn view(placed: usize, tally: &Tally, started: Instant, inventory_restarts: usize) -> Progress {
    Progress {
        placed,
        by_status: tally.lock().map(|t| t.clone()).unwrap_or_default(),
        elapsed_ms: started.elapsed().as_millis(),
        inventory_restarts,
    }
}

fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(payload)) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

/// The duplicator: reads `sources` (committed records) and writes a share `rate` of them a second time, marked
/// so that it never copies its own copies. A retrying producer without idempotence does the same to a topic.
fn duplicate(
    consumer: ClientConfig,
    producer: ClientConfig,
    sources: &[String],
    rate: f64,
    seed: u64,
    stop: &AtomicBool,
    count: &AtomicUsize,
) -> anyhow::Result<()> {
    const COPY: &str = "soak.copy";
    let mut config = consumer;
    config.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    {
        let mut assignment = TopicPartitionList::new();
        for topic in sources {
            for partition in 0..3 {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&assignment)?;
    }
    let producer: BaseProducer = producer.create()?;
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(2));
    while !stop.load(Ordering::Relaxed) {
        producer.poll(Duration::ZERO);
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else { continue };
        let is_copy = message.headers().is_some_and(|h| h.iter().any(|h| h.key == COPY));
        if is_copy || rng.f64() >= rate {
            continue;
        }
        let headers = OwnedHeaders::new().insert(Header { key: COPY, value: Some("1") });
        let mut record = BaseRecord::to(message.topic()).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if producer.send(record).is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Reads the services' changelogs and fills in the invariants.
#[allow(clippy::too_many_arguments)]
fn check(
    topics: &ShopTopics,
    deployment: &Deployment,
    run_id: &str,
    orders: &[PlaceOrder],
    stock: &Inventory,
    gateway: &CountingGateway,
    mailer: &FlakyMailer,
    report: &mut SoakReport,
) -> anyhow::Result<()> {
    // Only this run's keys: on real Kafka the changelogs also hold earlier runs' orders.
    let this_run = |key: &str| key.trim_start_matches("order/").starts_with(run_id);
    let latest = |topic: &str| -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut config = deployment.consumer.clone();
        config.set("group.id", kit::topics::unique("soak-check")).set("isolation.level", "read_committed");
        let mut values = BTreeMap::new();
        for record in kit::read::read_to_end(config, topic, 3, Duration::from_secs(60))? {
            let key = record.key.unwrap_or_default();
            if record.payload.is_empty() {
                values.remove(&key);
            } else {
                values.insert(key, record.payload);
            }
        }
        Ok(values)
    };
    let recorded: BTreeMap<String, OrderRecord> = latest(&topics.orders_state)?
        .into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_slice(&v)?)))
        .collect::<anyhow::Result<_>>()?;
    for order in orders {
        match recorded.get(&order.order_id).map(|r| &r.status) {
            Some(OrderStatus::Confirmed) => {
                report.confirmed += 1;
                report.confirmed_total_cents += order.total_cents();
            }
            Some(OrderStatus::Cancelled { reason }) if reason.starts_with("out of stock") => {
                report.cancelled_out_of_stock += 1
            }
            Some(OrderStatus::Cancelled { .. }) => report.cancelled_declined += 1,
            _ => report.orders_not_ended.push(order.order_id.clone()),
        }
    }

    let mut units: BTreeMap<String, Stock> = stock.stock.clone();
    let mut reservations = 0;
    for (key, value) in latest(&topics.inventory_state)? {
        if let Some(sku) = key.strip_prefix("stock/") {
            units.insert(sku.to_string(), serde_json::from_slice(&value)?);
        } else if key.starts_with("order/") && this_run(&key) {
            let reservation: Reservation = serde_json::from_slice(&value)?;
            reservations += usize::from(matches!(reservation, Reservation::Reserved { .. }));
        }
    }
    report.stock_conserved = reservations == 0;
    for (sku, started_with) in &stock.stock {
        let now = units.get(sku).copied().unwrap_or_default();
        report.stock.insert(sku.clone(), (started_with.available, now.available, now.reserved, now.sold));
        report.stock_conserved &= now.reserved == 0 && now.available + now.sold == started_with.available;
    }

    report.charged_cents = latest(&topics.payments_state)?
        .iter()
        .filter(|(k, _)| this_run(k))
        .map(|(_, v)| match serde_json::from_slice::<Payment>(v) {
            Ok(Payment::Charged { amount_cents }) => amount_cents,
            _ => 0,
        })
        .sum();
    report.money_conserved = report.charged_cents == report.confirmed_total_cents;
    report.cards_charged_twice = gateway.charges.lock().map(|c| c.values().filter(|n| **n > 1).count()).unwrap_or(0);

    let deliveries = latest(&topics.notifications_state)?;
    report.notifications_dead_lettered =
        deliveries.iter().filter(|(k, v)| this_run(k) && v.as_slice() == br#""DEAD_LETTERED""#).count();
    let sent = mailer.sent.lock().map(|s| s.clone()).unwrap_or_default();
    report.notifications_sent = sent.len();
    let mut told: BTreeMap<&str, usize> = BTreeMap::new();
    for (order_id, _) in &sent {
        *told.entry(order_id.as_str()).or_default() += 1;
    }
    report.customers_told_twice = told.values().filter(|n| **n > 1).count();
    report.mail_attempts = *mailer.attempts.lock().unwrap_or_else(|p| p.into_inner());
    Ok(())
}
