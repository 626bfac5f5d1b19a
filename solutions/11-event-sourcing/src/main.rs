//! Lesson 11, the runnable story: an order lives as its events. The single writer recovers the store from the
//! log, takes an order through its commands (a snapshot every 3 events), refuses a client that decided on a stale
//! version, shows in memory what two writers would make of one order, restarts (recovering from snapshots and
//! tails, and fencing its old self), and reads an event written years ago in the old schema. The read side (the
//! Redis projections and the CQRS service) is graded by the tests; the story does not run it yet.
//!
//! The topics are the manifest's (`order-events`, `order-snapshots`), so every run adds to them: this run's orders
//! carry an id of its own. Run it with `cargo xtask lesson 11` (your exercise) or `cargo xtask lesson 11
//! --solution`.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use kit::topics::{ORDER_EVENTS, ORDER_SNAPSHOTS};
use kit::{Broker, Capability};
use solution_11::store::{OrderWriter, StoreTopics, TxnProducer, producer_config, recover};
use solution_11::{Command, Event, HandleError, OrderState, StoredEvent, decode_event, evolve, restore};

/// One order's life as events, through a stale client, a restart and an old schema.
#[derive(Parser)]
struct Args {
    /// A snapshot after every this many events of an order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    snapshot_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(&[ORDER_EVENTS, ORDER_SNAPSHOTS]).await?;
    let run = kit::topics::unique("run");
    let topics = StoreTopics { events: ORDER_EVENTS.name.into(), snapshots: ORDER_SNAPSHOTS.name.into() };
    tokio::task::spawn_blocking(move || write_side(&broker, &topics, &run, args.snapshot_every).map(drop)).await?
}

/// Steps 1–6: the write side, blocking (librdkafka's transactional calls are). Returns the restarted writer.
fn write_side(broker: &Broker, topics: &StoreTopics, run: &str, snapshot_every: u64) -> anyhow::Result<OrderWriter> {
    let writer_id = format!("order-writer-{run}");
    println!("1. the order writer starts: it loads every order of {} from its snapshots and events", topics.events);
    let mut writer = start_writer(broker, topics, &writer_id, snapshot_every)?;

    let order = format!("{run}-order-1");
    println!("\n2. order {order}, command by command, each at the version the last one returned");
    let commands = [
        Command::PlaceOrder { customer_id: "customer-7".into() },
        add("LAPTOP", 1, 99_900),
        add("MOUSE", 2, 2_500),
        add("DOCK", 1, 18_900),
        Command::ConfirmOrder,
    ];
    let mut version = 0;
    for command in &commands {
        let before = version;
        version = writer.handle(&order, version, command)?;
        let snapshot = if version / snapshot_every > before / snapshot_every { "  + snapshot" } else { "" };
        println!("   v{before} → v{version}  {}{snapshot}", describe(command));
    }
    let state = writer.state(&order);
    println!("   the order: {:?}, {} lines, total {}", state.status, state.lines.len(), euros(state.total_cents));

    println!("\n3. a second client read the order at version 2 and now adds a cable");
    match writer.handle(&order, 2, &add("CABLE", 1, 990)) {
        Err(error @ HandleError::Stale { .. }) => println!("   refused: {error}"),
        other => println!("   UNEXPECTED: {other:?} (is the version checked?)"),
    }
    println!("   it must read the order again (version {version}) and decide anew: a confirmed order takes no cable");
    match writer.handle(&order, version, &add("CABLE", 1, 990)) {
        Err(error) => println!("   refused: {error}"),
        Ok(v) => println!("   UNEXPECTED: accepted at version {v}"),
    }

    println!("\n4. without a single writer (in memory, not in the log): two writers both read version 5");
    let mut log = history(&order, &commands)?;
    for (writer_name, event) in [
        ("writer A", Event::OrderCancelled { reason: "customer called".into() }),
        (
            "writer B",
            Event::ItemAdded { sku: "CABLE".into(), quantity: 1, unit_price_cents: 990, currency: "EUR".into() },
        ),
    ] {
        println!("   {writer_name} appends v6 {}", event.kind());
        log.push(StoredEvent { order_id: order.clone(), version: 6, event });
    }
    match restore(None, &log) {
        Err(error) => println!("   loading the order: {error}"),
        Ok(state) => println!("   UNEXPECTED: loaded as {:?} at version {}", state.status, state.version),
    }
    println!("   Kafka has no conditional append: only one writer per order keeps versions honest");

    println!("\n5. the writer restarts (same transactional id): it recovers from snapshots and tails");
    let restarted = start_writer(broker, topics, &writer_id, snapshot_every)?;
    let same = restarted.state(&order) == state;
    println!("   order {order} recovered {}", if same { "equal to what the old writer had" } else { "DIFFERENT (!)" });
    if broker.supports(Capability::ProducerFencing) {
        match writer.handle(&order, version, &Command::CancelOrder { reason: "zombie".into() }) {
            Err(error) => println!("   the old writer's next command fails: {}", root(&error)),
            Ok(_) => println!("   UNEXPECTED: the old writer was not fenced"),
        }
    } else {
        // The mock would let the old writer append, and its event would stay in the manifest topic for every
        // later run to trip over: the story leaves it out rather than corrupt the store.
        println!(
            "   the old writer is fenced on real Kafka; {} does not fence, so it is not tried here",
            broker.describe()
        );
    }
    drop(writer);

    println!("\n6. an event written in 2019, schema 1 (no schema field, no currency), read today");
    let old = br#"{"order_id":"order-2019","version":2,"event":{"type":"ITEM_ADDED","sku":"LAPTOP","quantity":1,"unit_price_cents":99900}}"#;
    let event = decode_event(old)?;
    println!("   stored: {}", String::from_utf8_lossy(old));
    println!("   read:   v{} {:?}", event.version, event.event);
    Ok(restarted)
}

/// A writer with the identity `writer_id` (which fences any earlier one with it), recovered from the log.
fn start_writer(
    broker: &Broker,
    topics: &StoreTopics,
    writer_id: &str,
    snapshot_every: u64,
) -> anyhow::Result<OrderWriter> {
    let producer: TxnProducer = producer_config(broker.bootstrap_servers(), writer_id).create()?;
    // The writer fences its predecessor before it calls this: what it reads is all the old writer ever committed.
    let load = || -> anyhow::Result<HashMap<String, OrderState>> {
        let config = broker.consumer_config(&kit::topics::unique("order-writer-recovery"));
        let started = std::time::Instant::now();
        let recovered = recover(&config, topics, ORDER_EVENTS.partitions, Duration::from_secs(30))?;
        println!(
            "   orders: {}, from {} events; {} snapshots used, so {} events folded and {} skipped ({} ms)",
            recovered.orders.len(),
            recovered.events_read,
            recovered.snapshots_used,
            recovered.events_folded,
            recovered.events_read - recovered.events_folded,
            started.elapsed().as_millis()
        );
        Ok(recovered.orders)
    };
    OrderWriter::start(producer, topics.clone(), snapshot_every, load)
}

/// The events `commands` make, in memory: the log the writer wrote for them.
fn history(order_id: &str, commands: &[Command]) -> anyhow::Result<Vec<StoredEvent>> {
    let mut state = OrderState::default();
    let mut log = Vec::new();
    for command in commands {
        for event in solution_11::decide(&state, command)? {
            state = evolve(state, &event);
            log.push(StoredEvent { order_id: order_id.into(), version: state.version, event });
        }
    }
    Ok(log)
}

fn add(sku: &str, quantity: u32, unit_price_cents: u64) -> Command {
    Command::AddItem { sku: sku.into(), quantity, unit_price_cents, currency: "EUR".into() }
}

fn describe(command: &Command) -> String {
    match command {
        Command::PlaceOrder { customer_id } => format!("PLACE_ORDER for {customer_id}"),
        Command::AddItem { sku, quantity, unit_price_cents, .. } => {
            format!("ADD_ITEM {quantity} × {sku} at {}", euros(*unit_price_cents))
        }
        Command::ConfirmOrder => "CONFIRM_ORDER".into(),
        Command::CancelOrder { reason } => format!("CANCEL_ORDER ({reason})"),
    }
}

fn euros(cents: u64) -> String {
    format!("{}.{:02} EUR", cents / 100, cents % 100)
}

fn root(error: &HandleError) -> String {
    match error {
        HandleError::Append { cause, .. } => cause.root_cause().to_string(),
        other => other.to_string(),
    }
}
