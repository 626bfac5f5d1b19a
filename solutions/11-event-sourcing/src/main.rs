//! Lesson 11, the runnable story: an order lives as its events. The write side: the single writer recovers the
//! store from the log, takes an order through its commands (a snapshot every 3 events), refuses a client that
//! decided on a stale version, shows in memory what two writers would make of one order, restarts (recovering
//! from snapshots and tails, and fencing its old self), and reads an event written years ago in the old schema.
//! The read side: a projector that has run since the start folds the events into Redis; the CQRS service takes
//! commands over HTTP and answers queries from the read model, waiting for the client's own version; a rebuild
//! from offset 0 into a fresh namespace equals the live read model.
//!
//! The topics are the manifest's (`order-events`, `order-snapshots`), so every run adds to them: this run's orders
//! and customer carry an id of its own, and its Redis keys a namespace of its own (deleted at the end unless
//! `--keep`). Run it with `cargo xtask lesson 11` (your exercise) or `cargo xtask lesson 11 --solution`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use kit::redis::Redis;
use kit::topics::{ORDER_EVENTS, ORDER_SNAPSHOTS};
use kit::{Broker, Capability};
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};
use solution_11::projection::{ProjectorReport, ReadModel, projector_config, rebuild, run_projector};
use solution_11::service::{ReadWait, router};
use solution_11::store::{OrderWriter, StoreTopics, TxnProducer, producer_config, recover};
use solution_11::{Command, Event, HandleError, OrderState, StoredEvent, decode_event, evolve, restore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One order's life as events, through a stale client, a restart and an old schema.
#[derive(Parser)]
struct Args {
    /// A snapshot after every this many events of an order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    snapshot_every: u64,
    /// Keep this run's Redis keys (the live and the rebuilt read model) instead of deleting them at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = kit::story::start(&[ORDER_EVENTS, ORDER_SNAPSHOTS]).await?;
    let redis = Redis::resolve()?;
    println!("redis:  {}", redis.describe());
    let connection = redis.connect().await?;
    let run = kit::topics::unique("run");
    let namespace = format!("workbook:lesson11:{run}");
    let live = ReadModel::new(connection.clone(), format!("{namespace}:live"));
    let mut rebuilt = ReadModel::new(connection, format!("{namespace}:rebuilt"));
    println!("state:  Redis keys under {namespace}:*\n");

    // The projector starts before the writer: the read side runs beside the write side, as in production, and
    // its group join (seconds on the embedded broker) overlaps steps 1–6 instead of adding to them.
    let projector = Projector::start(&broker, live.clone())?;
    let topics = StoreTopics {
        events: ORDER_EVENTS.name.into(),
        snapshots: ORDER_SNAPSHOTS.name.into(),
        partitions: ORDER_EVENTS.partitions,
    };
    let rebuild_config = broker.consumer_config(&kit::topics::unique("order-rebuild"));
    let write_run = run.clone();
    // The write side blocks (librdkafka's transactional calls do): on the blocking pool, which hands the broker
    // (the embedded one lives as long as it does) back with the restarted writer.
    let (broker, writer) = tokio::task::spawn_blocking(move || {
        write_side(&broker, &topics, &write_run, args.snapshot_every).map(|writer| (broker, writer))
    })
    .await??;

    let read = read_side(writer, &live, &mut rebuilt, rebuild_config, &run, projector).await;
    if args.keep {
        println!("\nkept: Redis keys under {namespace}:*");
    } else {
        let mut connection = live.clone();
        kit::redis::delete_namespace(connection.connection(), &namespace).await?;
    }
    drop(broker);
    read
}

/// The customer of this run's orders: its own, so that its totals are this run's even where the topic holds
/// earlier runs' orders.
fn customer(run: &str) -> String {
    format!("{run}-customer-7")
}

/// Steps 1–6: the write side, blocking (librdkafka's transactional calls are). Returns the restarted writer.
fn write_side(broker: &Broker, topics: &StoreTopics, run: &str, snapshot_every: u64) -> anyhow::Result<OrderWriter> {
    let writer_id = format!("order-writer-{run}");
    println!("1. the order writer starts: it loads every order of {} from its snapshots and events", topics.events);
    let mut writer = start_writer(broker, topics, &writer_id, snapshot_every)?;

    let order = format!("{run}-order-1");
    println!("\n2. order {order}, command by command, each at the version the last one returned");
    let commands = [
        Command::PlaceOrder { customer_id: customer(run) },
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

/// Steps 7–9: the read side, beside the restarted writer.
async fn read_side(
    writer: OrderWriter,
    live: &ReadModel,
    rebuilt: &mut ReadModel,
    rebuild_config: rdkafka::ClientConfig,
    run: &str,
    projector: Projector,
) -> anyhow::Result<()> {
    let first_order = format!("{run}-order-1");
    let first_version = writer.state(&first_order).version;
    // A short bound, so that step 7's query for a version that never comes ends soon.
    let wait = ReadWait { within: Duration::from_secs(1), ..ReadWait::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(vec![Arc::new(Mutex::new(writer))], live.clone(), wait)?;
    // The service stops when asked, and only then drops the writer, whose producer must close before the broker.
    let (shutdown, shut) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = shut.await;
            })
            .await
    });
    let http = Http { base, client: reqwest::Client::new() };

    println!("\n7. the read side: a projector has folded {} into Redis since step 1", ORDER_EVENTS.name);
    println!("   the CQRS service at {}: commands go to the writer, queries to the read model", http.base);
    let (status, body) = http.get(&first_order, Some(first_version)).await?;
    exchange(&format!("GET order-1 ?min_version={first_version}"), status, &summary_line(&body));

    let order = format!("{run}-order-2");
    let place = json!({ "type": "PLACE_ORDER", "customer_id": customer(run) });
    let (status, body) = http.command(&order, 0, place).await?;
    exchange("POST order-2 PLACE_ORDER, at v0", status, &body.to_string());
    let keyboard = json!({
        "type": "ADD_ITEM", "sku": "KEYBOARD", "quantity": 1, "unit_price_cents": 7_900, "currency": "EUR"
    });
    let (status, body) = http.command(&order, 1, keyboard.clone()).await?;
    let version = body["version"].as_u64().unwrap_or(0);
    exchange("POST order-2 ADD_ITEM KEYBOARD, at v1", status, &body.to_string());
    let (status, body) = http.command(&order, 1, keyboard).await?;
    exchange("the same POST again (a client's retry)", status, &error_of(&body));
    // What the read model has at this instant depends on how far the projector got: it lags the log.
    let (status, body) = http.get(&order, None).await?;
    exchange("GET order-2, at once", status, &format!("{}  (as far as the projector got)", summary_line(&body)));
    let asked = Instant::now();
    let (status, body) = http.get(&order, Some(version)).await?;
    let waited = asked.elapsed();
    exchange(
        &format!("GET order-2 ?min_version={version}"),
        status,
        &format!("{}  (in {waited:.1?}: the client's own write)", summary_line(&body)),
    );
    let (status, body) = http.get(&order, Some(version + 1)).await?;
    exchange(&format!("GET order-2 ?min_version={}", version + 1), status, &error_of(&body));
    println!(
        "   {:<40}   (no command made v{}: after {} ms the service gives up and says where the read model is)",
        "",
        version + 1,
        wait.within.as_millis()
    );
    drop(http);
    let _ = shutdown.send(());
    server.await??;
    let totals = live.clone().customer(&customer(run)).await?;
    println!(
        "   customer totals: {} orders placed, {} confirmed for {}, {} cancelled",
        totals.orders_placed,
        totals.orders_confirmed,
        euros(u64::try_from(totals.confirmed_total_cents).unwrap_or(0)),
        totals.orders_cancelled
    );

    println!("\n8. a rebuild: the whole of {} from offset 0, into a fresh namespace", ORDER_EVENTS.name);
    let report =
        rebuild(rebuild_config, ORDER_EVENTS.name, ORDER_EVENTS.partitions, rebuilt, Duration::from_secs(30)).await?;
    println!(
        "   {} events read: {} applied, {} duplicates; {} orders, {} customers in all",
        report.events, report.applied, report.duplicates, report.orders, report.customers
    );
    // The live projector reads the same log, each partition at its own pace: wait (bounded) until it has caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut live_now = live.clone();
    let same = loop {
        let same = live_now.summaries().await? == rebuilt.summaries().await?
            && live_now.customers().await? == rebuilt.customers().await?;
        if same || Instant::now() >= deadline {
            break same;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("   the rebuilt read model is {} the live one", if same { "equal to" } else { "DIFFERENT from (!)" });

    println!("\n9. the projector stops");
    let report = projector.stop().await?;
    println!(
        "   {} records, each committed after its change was in Redis: {} applied, {} duplicates",
        report.records, report.applied, report.duplicates
    );
    Ok(())
}

/// The live projector, a member of a group of its own, running in the background until [`Projector::stop`].
struct Projector {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<ProjectorReport>>,
}

impl Projector {
    fn start(broker: &Broker, mut read_model: ReadModel) -> anyhow::Result<Projector> {
        let group = kit::topics::unique("order-projector");
        let consumer: StreamConsumer = projector_config(broker.consumer_config(&group)).create()?;
        consumer.subscribe(&[ORDER_EVENTS.name])?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let report = run_projector(&consumer, &mut read_model, async {
                let _ = stopped.await;
            })
            .await;
            // Leaving the group blocks for a moment: not on an async worker.
            tokio::task::spawn_blocking(move || drop(consumer)).await?;
            report
        });
        Ok(Projector { stop, task })
    }

    async fn stop(self) -> anyhow::Result<ProjectorReport> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// The story's HTTP client of the service.
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn command(&self, order_id: &str, expected_version: u64, command: Value) -> anyhow::Result<(u16, Value)> {
        let request = json!({ "expected_version": expected_version, "command": command });
        let response =
            self.client.post(format!("{}/orders/{order_id}/commands", self.base)).json(&request).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn get(&self, order_id: &str, min_version: Option<u64>) -> anyhow::Result<(u16, Value)> {
        let query = min_version.map(|v| format!("?min_version={v}")).unwrap_or_default();
        let response = self.client.get(format!("{}/orders/{order_id}{query}", self.base)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }
}

/// One request to the service and its answer, as a line of the story.
fn exchange(request: &str, status: u16, answer: &str) {
    println!("   {request:<40} → {status} {answer}");
}

/// The message of an error answer.
fn error_of(body: &Value) -> String {
    body["error"].as_str().map_or_else(|| body.to_string(), str::to_string)
}

/// An order summary as one line, or the error the service answered.
fn summary_line(body: &Value) -> String {
    match (&body["status"], &body["version"]) {
        (Value::String(status), Value::Number(version)) => {
            let lines = body["lines"].as_array().map_or(0, Vec::len);
            let total = euros(body["total_cents"].as_u64().unwrap_or(0));
            format!("{status} v{version}, {lines} line{}, {total}", if lines == 1 { "" } else { "s" })
        }
        _ => error_of(body),
    }
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
        let recovered = recover(&config, topics, &topics.all_partitions(), Duration::from_secs(30))?;
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
    // This story's writer owns every partition; the chapter's section on owners shows writers sharing them.
    OrderWriter::start(producer, topics.clone(), topics.all_partitions(), snapshot_every, load)
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
