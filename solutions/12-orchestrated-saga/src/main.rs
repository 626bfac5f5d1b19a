//! Lesson 12, the runnable story: the four services of seed 002's shop — order (the orchestrator), inventory,
//! payment, notification — run as independent consumer groups, each on a thread of its own, and four orders go
//! through them: a thousand laptops with fifty in stock (first, alone: cancelled); then, at once, one confirmed, a
//! declined card after the stock was reserved (released again: the compensation), and a customer whose mail
//! server is down (confirmed all the same, the notification dead-lettered after three attempts). Then the order
//! service stops, an order comes while it is away, and a new instance takes it, after reading its sagas back from
//! `orders.sagas`.
//!
//! `--service NAME` runs one service alone, as its own process, until Ctrl-C; `--place` is a client that places
//! the same four orders and prints their trails. On real Kafka (`cargo xtask kafka --detach`), start the four
//! services in four terminals and `--place` in a fifth: the story's flow, as five processes. These share one
//! deployment with the story (the same groups and transactional ids): do not run the story at the same time, or
//! its services fence theirs. Their SKUs and customers carry no run id: the inventory's stock of `LAPTOP` goes
//! down from one `--place` to the next, as a shop's would.
//!
//! The topics are the manifest's (`kit::topics::SAGA_TOPICS`); this run's orders and SKUs carry an id of their own,
//! since a real Kafka keeps earlier runs' records (and the services' state, which they read back on start).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_12::engine::{Deployment, Running, Stage};
use solution_12::services::{
    InventoryService, NotificationService, OrderService, PaymentService, Retry, SagaRecord, SagaTopics, TestMailer,
};
use solution_12::{DECLINED_CARD, Inventory, Item, PlaceOrder, TestGateway};

/// Seed 002's shop as a saga: four services, four orders, one restart.
#[derive(Parser)]
struct Args {
    /// Run one service alone until Ctrl-C, instead of the story.
    #[arg(long, value_enum, conflicts_with = "place")]
    service: Option<Service>,
    /// Place the story's four orders for services running elsewhere (`--service`), and print their trails.
    #[arg(long)]
    place: bool,
    /// How long a step may go unanswered before the saga acts (seconds).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    step_timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Service {
    Order,
    Inventory,
    Payment,
    Notification,
}

/// The deployment every run of the story and every `--service` share: one consumer group and one transactional
/// id per service, so a new instance takes over from (and fences) the one before.
const DEPLOYMENT: &str = "workbook-saga";

/// The story's SKUs and their stock (seed 002's shortage: fifty laptops).
const STOCK: [(&str, u32); 3] = [("LAPTOP", 50), ("MOUSE", 500), ("DOCK", 100)];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(kit::topics::SAGA_TOPICS).await?;
    let deployment = Deployment::on(&broker, DEPLOYMENT);
    let topics = SagaTopics::manifest();
    let step_timeout = Duration::from_secs(args.step_timeout);
    let run = kit::topics::unique("run");
    match (args.service, args.place) {
        // Services in processes of their own share plain SKUs and customers (no prefix).
        (Some(service), _) => serve(service, topics, deployment, step_timeout, "").await,
        (None, true) => place_elsewhere(&broker, &topics, &run).await,
        (None, false) => story(&broker, topics, deployment, step_timeout, &run).await,
    }
}

/// `name` (a SKU or a customer) under `prefix`: the story's run id, or none.
fn named(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}-{name}") }
}

/// The stock the inventory starts with, where its changelog says nothing.
fn initial_stock(prefix: &str) -> Inventory {
    let skus: Vec<(String, u32)> = STOCK.iter().map(|(s, n)| (named(prefix, s), *n)).collect();
    let borrowed: Vec<(&str, u32)> = skus.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    Inventory::with_stock(&borrowed)
}

/// A mailer that is down for the fourth customer.
fn mailer(prefix: &str) -> TestMailer {
    TestMailer { down_for: [named(prefix, "customer-4")].into(), ..TestMailer::default() }
}

/// A card the test gateway takes.
const GOOD_CARD: &str = "4242-4242-4242-4242";

/// The four orders, each with what it shows: order ids carry `run`; SKUs and customers `prefix`.
fn scenario_orders(prefix: &str, run: &str) -> Vec<(PlaceOrder, &'static str)> {
    let item = |name: &str, quantity: u32, unit_price_cents: u64| Item {
        sku: named(prefix, name),
        quantity,
        unit_price_cents,
    };
    let place = |n: u32, card: &str, items: Vec<Item>| PlaceOrder {
        order_id: format!("{run}-order-{n}"),
        customer_id: named(prefix, &format!("customer-{n}")),
        card: card.into(),
        items,
    };
    vec![
        (place(1, GOOD_CARD, vec![item("LAPTOP", 2, 99_999), item("MOUSE", 1, 2_500)]), "stock, a good card"),
        (place(2, GOOD_CARD, vec![item("LAPTOP", 1_000, 99_999)]), "1,000 laptops, 50 in stock"),
        (place(3, DECLINED_CARD, vec![item("LAPTOP", 3, 99_999)]), "a card the bank declines"),
        (place(4, GOOD_CARD, vec![item("DOCK", 1, 18_900)]), "a customer whose mail server is down"),
    ]
}

/// Places the orders — the thousand laptops first, alone, then the other three at once — and waits for each
/// batch's sagas to end; every saga's record.
async fn place_all(
    broker: &kit::Broker,
    topics: &SagaTopics,
    run: &str,
    orders: &[(PlaceOrder, &'static str)],
) -> anyhow::Result<BTreeMap<String, SagaRecord>> {
    let mut sagas = BTreeMap::new();
    let (alone, together): (Vec<_>, Vec<_>) = orders.iter().partition(|(o, _)| o.order_id.ends_with("order-2"));
    for batch in [alone, together] {
        for (order, what) in &batch {
            println!("   {}: {what}, {}", short(run, &order.order_id), euros(order.total_cents()));
        }
        let placed: Vec<PlaceOrder> = batch.iter().map(|(o, _)| o.clone()).collect();
        publish(broker, topics, &placed).await?;
        let ids: Vec<String> = placed.iter().map(|o| o.order_id.clone()).collect();
        sagas = wait_for_ends(broker, topics, &ids, Duration::from_secs(60)).await?;
    }
    Ok(sagas)
}

/// `--place`: the four orders, for services that run in other processes.
async fn place_elsewhere(broker: &kit::Broker, topics: &SagaTopics, run: &str) -> anyhow::Result<()> {
    println!("placing four orders for the services of deployment {DEPLOYMENT} (start them with --service)");
    let orders = scenario_orders("", run);
    let sagas = place_all(broker, topics, run, &orders).await.map_err(|e| {
        e.context(
            "are the four services running? `cargo xtask lesson 12 -- --service order` (and inventory, payment, \
             notification), each in a terminal of its own",
        )
    })?;
    println!();
    for (order, _) in &orders {
        print_trail(run, &sagas[&order.order_id]);
    }
    Ok(())
}

async fn serve(
    service: Service,
    topics: SagaTopics,
    deployment: Deployment,
    step_timeout: Duration,
    prefix: &str,
) -> anyhow::Result<()> {
    println!("running the {} service of deployment {DEPLOYMENT}; Ctrl-C stops it", name(service));
    println!("(group {0}, transactional id {0}: a second instance fences this one)", deployment.group(name(service)));
    let report = match service {
        Service::Order => until_ctrl_c(Running::start(OrderService::new(topics, step_timeout), deployment)).await?,
        Service::Inventory => {
            until_ctrl_c(Running::start(InventoryService::new(topics, initial_stock(prefix)), deployment)).await?
        }
        Service::Payment => {
            until_ctrl_c(Running::start(PaymentService::new(topics, TestGateway::default()), deployment)).await?
        }
        Service::Notification => {
            let service = NotificationService::new(topics, mailer(prefix), Retry::default());
            until_ctrl_c(Running::start(service, deployment)).await?
        }
    };
    println!("stopped: {report}");
    Ok(())
}

fn name(service: Service) -> &'static str {
    match service {
        Service::Order => "order",
        Service::Inventory => "inventory",
        Service::Payment => "payment",
        Service::Notification => "notification",
    }
}

async fn until_ctrl_c<S: Stage + Send + 'static>(running: Running<S>) -> anyhow::Result<String> {
    tokio::signal::ctrl_c().await?;
    let (report, _) = tokio::task::spawn_blocking(move || running.stop()).await?;
    let report = report?;
    Ok(format!(
        "{} changelog records restored, {} inputs handled ({} dead letters) in {} transactions",
        report.restored, report.handled, report.dead_letters, report.transactions
    ))
}

async fn story(
    broker: &kit::Broker,
    topics: SagaTopics,
    deployment: Deployment,
    step_timeout: Duration,
    run: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mailer = mailer(run);
    println!("1. the four services start, each a consumer group with its own transactional id and changelog");
    let order = Running::start(OrderService::new(topics.clone(), step_timeout), deployment.clone());
    let inventory = Running::start(InventoryService::new(topics.clone(), initial_stock(run)), deployment.clone());
    let payment = Running::start(PaymentService::new(topics.clone(), TestGateway::default()), deployment.clone());
    let notification =
        Running::start(NotificationService::new(topics.clone(), mailer.clone(), Retry::default()), deployment.clone());
    for (service, stock) in STOCK {
        println!("   stock of {service}: {stock}");
    }

    let orders = scenario_orders(run, run);
    println!("\n2. the thousand laptops are ordered first, alone; then the three other orders, at once");
    let sagas = place_all(broker, &topics, run, &orders).await?;
    println!("\n3. each saga's trail, as the order service's changelog (orders.sagas) has it");
    for (order, _) in &orders {
        print_trail(run, &sagas[&order.order_id]);
    }

    println!("\n4. the order service stops; order 5 is placed while it is away; a new instance starts");
    let (stopped, _) = stop(order).await?;
    stopped?;
    let fifth = PlaceOrder {
        order_id: format!("{run}-order-5"),
        customer_id: named(run, "customer-5"),
        card: GOOD_CARD.into(),
        items: vec![Item { sku: named(run, "MOUSE"), quantity: 2, unit_price_cents: 2_500 }],
    };
    publish(broker, &topics, std::slice::from_ref(&fifth)).await?;
    let order = Running::start(OrderService::new(topics.clone(), step_timeout), deployment.clone());
    let ids = [fifth.order_id.clone()];
    let sagas = wait_for_ends(broker, &topics, &ids, Duration::from_secs(60)).await?;
    print_trail(run, &sagas[&fifth.order_id]);

    let (order_report, _) = stop(order).await?;
    let (inventory_report, inventory) = stop(inventory).await?;
    let (payment_report, payment) = stop(payment).await?;
    let (notification_report, _) = stop(notification).await?;
    let order_report = order_report?;
    for report in [inventory_report, payment_report, notification_report] {
        report?;
    }
    println!("   the new instance read {} saga records back before taking order 5", order_report.restored);

    println!("\n5. what the services hold at the end");
    for (name, _) in STOCK {
        let stock = inventory.inventory.stock_of(&named(run, name));
        println!("   {name}: {} available, {} reserved, {} sold", stock.available, stock.reserved, stock.sold);
    }
    let this_run = |id: &String| id.starts_with(run);
    let charged: u64 = payment
        .payments
        .orders
        .iter()
        .filter(|(id, _)| this_run(id))
        .filter_map(|(_, p)| match p {
            solution_12::Payment::Charged { amount_cents } => Some(*amount_cents),
            _ => None,
        })
        .sum();
    println!("   payments: {} charged for this run's orders", euros(charged));
    let sent = mailer.sent.lock().map(|s| s.clone()).unwrap_or_default();
    for notification in sent.iter().filter(|n| this_run(&n.order_id)) {
        println!("   mail to {}: {}", short(run, &notification.customer_id), unprefixed(run, &notification.message));
    }
    let attempts = *mailer.attempts.lock().map_err(|_| anyhow::anyhow!("the mailer's lock"))?;
    println!(
        "   mail attempts in all: {attempts}; customer-4's confirmation is in {} after 3 of them",
        topics.notifications_dlq
    );
    println!("\n(the story took {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Stops a service (joining its thread blocks: on the blocking pool).
async fn stop<S: Stage + Send + 'static>(
    running: Running<S>,
) -> anyhow::Result<(anyhow::Result<solution_12::engine::RunReport>, S)> {
    Ok(tokio::task::spawn_blocking(move || running.stop()).await?)
}

/// Sends `orders` to the order service, as clients do.
async fn publish(broker: &kit::Broker, topics: &SagaTopics, orders: &[PlaceOrder]) -> anyhow::Result<()> {
    let producer: FutureProducer = broker.producer_config().create()?;
    for order in orders {
        let payload = serde_json::to_string(order)?;
        let record = FutureRecord::to(&topics.order_requests).key(&order.order_id).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Waits until every saga of `ids` has ended, reading the order service's changelog; the sagas.
async fn wait_for_ends(
    broker: &kit::Broker,
    topics: &SagaTopics,
    ids: &[String],
    within: Duration,
) -> anyhow::Result<BTreeMap<String, SagaRecord>> {
    let deadline = Instant::now() + within;
    loop {
        let sagas = read_sagas(broker, &topics.sagas).await?;
        if ids.iter().all(|id| sagas.get(id).is_some_and(|r| r.saga.status.is_terminal())) {
            return Ok(sagas);
        }
        anyhow::ensure!(Instant::now() < deadline, "the sagas {ids:?} did not all end within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latest record of each saga in `topic`.
async fn read_sagas(broker: &kit::Broker, topic: &str) -> anyhow::Result<BTreeMap<String, SagaRecord>> {
    let mut config = broker.consumer_config(&kit::topics::unique("saga-reader"));
    config.set("isolation.level", "read_committed");
    let topic = topic.to_string();
    let records =
        tokio::task::spawn_blocking(move || kit::read::read_to_end(config, &topic, 3, Duration::from_secs(30)))
            .await??;
    let mut sagas = BTreeMap::new();
    for record in records {
        if let (Some(key), false) = (record.key, record.payload.is_empty()) {
            sagas.insert(key, serde_json::from_slice(&record.payload)?);
        }
    }
    Ok(sagas)
}

fn print_trail(run: &str, record: &SagaRecord) {
    let reason =
        record.saga.reason.as_ref().map(|r| format!(" ({})", unprefixed(run, &r.to_string()))).unwrap_or_default();
    println!("   {}: {}{reason}", short(run, record.saga.order_id()), record.saga.status);
    for step in &record.trail {
        let from = step.from.map_or("·".to_string(), |s| s.to_string());
        println!("      {from:>12} --{}--> {}  sends {}", step.input, step.to, step.sent.join(", "));
    }
}

/// `text` without this run's prefix on the ids and SKUs it names.
fn unprefixed(run: &str, text: &str) -> String {
    text.replace(&format!("{run}-"), "")
}

/// `id` without this run's prefix.
fn short(run: &str, id: &str) -> String {
    id.strip_prefix(run).map_or(id, |rest| rest.trim_start_matches('-')).to_string()
}

fn euros(cents: u64) -> String {
    format!("{}.{:02} EUR", cents / 100, cents % 100)
}
