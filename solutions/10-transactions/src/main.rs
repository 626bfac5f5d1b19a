//! Lesson 10, the runnable story: the order service writes each order and its stock request in one transaction
//! (one order's writes are refused: it is aborted, whole); the inventory service turns requests into reservations
//! exactly once, committing its input offsets in the same transaction, through a failing request (abort, rewind,
//! again) and a zombie instance that its successor fences. Along the way it counts the e-mails the inventory
//! service sends: an effect outside Kafka, which no transaction rolls back.
//!
//! The topics are the manifest's (`orders.events`, `inventory.requests`, `inventory.events`), so every run adds to
//! them: this run's orders carry an id of its own, and the story reads back only those. Each service instance
//! talks through a `kit::FaultProxy`, which refuses one write and, on the embedded broker (which does not fence),
//! answers the zombie's write as Kafka would. Everything after the opening is blocking (librdkafka's transactional
//! calls are), so it runs on tokio's blocking pool.
//!
//! With `--rabbitmq` it tells the RabbitMQ counterpart instead (module `rabbitmq_story` at the end; no Kafka is
//! started): publisher confirms against per-message AMQP transactions, timed; a transaction committed and one
//! rolled back; and the inventory service forwarding requests with `forward_in_tx` through a failure part-way.
//!
//! Run it with `cargo xtask lesson 10` (your exercise) or `cargo xtask lesson 10 --solution`, and add
//! `--rabbitmq` for the RabbitMQ counterpart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::Parser;
use kit::topics::{INVENTORY_EVENTS, INVENTORY_REQUESTS, ORDERS_EVENTS};
use kit::{Broker, Capability, FaultProxy};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use solution_10::{
    Batch, BatchError, Order, OrderTopics, ReadToEnd, ReserveStock, StockReserved, TXN_CALL_TIMEOUT, TxnProducer,
    consumer_config, place_order, process_batch, producer_config, reserve, sample_orders,
};

/// Orders and stock reservations, each exactly once, through an aborted order, a failing request and a zombie.
#[derive(Parser)]
struct Args {
    /// How many orders the order service takes (the second one's writes are refused).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(3..=200))]
    orders: u32,
    /// Tell the RabbitMQ counterpart instead (confirms, AMQP transactions, forward_in_tx): no Kafka is started.
    #[arg(long)]
    rabbitmq: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rabbitmq {
        return rabbitmq_story::run().await;
    }
    let broker = kit::story::start(&[ORDERS_EVENTS, INVENTORY_REQUESTS, INVENTORY_EVENTS]).await?;
    tokio::task::spawn_blocking(move || story(&broker, args.orders)).await?
}

fn story(broker: &Broker, count: u32) -> anyhow::Result<()> {
    // This run's own ids: the manifest topics keep every earlier run's records.
    let run = &uuid_like();
    let orders: Vec<Order> = sample_orders(1, count + 2)
        .into_iter()
        .map(|o| Order { order_id: format!("{run}-{}", o.order_id), ..o })
        .collect();
    let (first, later) = orders.split_at(count as usize);
    let topics = OrderTopics { orders: ORDERS_EVENTS.name.into(), inventory_requests: INVENTORY_REQUESTS.name.into() };
    let group = format!("inventory-service-{run}");
    // The inventory service starts at the end of its input: it processes this run's requests only.
    let start = end_offsets(broker, INVENTORY_REQUESTS.name, INVENTORY_REQUESTS.partitions)?;

    println!(
        "1. the order service writes each order to {} and its stock request to {}, in one transaction",
        topics.orders, topics.inventory_requests
    );
    let proxy = FaultProxy::start(broker.bootstrap_servers())?;
    let orders_producer = ready(&proxy, &format!("order-service-{run}"))?;
    for (n, order) in first.iter().enumerate() {
        if n == 1 {
            proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
        }
        match place_order(&orders_producer, &topics, order) {
            Ok(()) => println!("   {} placed", order.order_id),
            Err(e) => println!("   {} NOT placed, its transaction aborted: {}", order.order_id, e.root_cause()),
        }
    }
    let placed = keys_read(broker, topics.orders.as_str(), ORDERS_EVENTS.partitions, "read_committed", run)?;
    let requested =
        keys_read(broker, &topics.inventory_requests, INVENTORY_REQUESTS.partitions, "read_committed", run)?;
    println!(
        "   a read_committed reader finds {} orders and {} stock requests: both or neither, per order",
        placed.len(),
        requested.len()
    );
    if !broker.supports(Capability::ReadCommittedHidesAborted) {
        println!("   (the embedded broker shows aborted records to every reader: on real Kafka the counts are equal)");
    }

    println!("\n2. the inventory service reserves stock for each request, exactly once; the stock service fails once");
    let stage_proxy = FaultProxy::start(broker.bootstrap_servers())?;
    let instance_id = format!("inventory-service-{run}");
    let producer = ready(&stage_proxy, &instance_id)?;
    let consumer = assigned(broker, &group, Some(&start))?;
    let mut mailer = Mailer::default();
    let failing = first.last().map(|o| o.order_id.clone()).unwrap_or_default();
    let mut failed_once = false;
    let mut transform = |request: &ReserveStock| -> anyhow::Result<StockReserved> {
        mailer.send(&request.order_id);
        if request.order_id == failing && !failed_once {
            failed_once = true;
            anyhow::bail!("the stock service did not answer");
        }
        reserve(request)
    };
    let done = run_until(&consumer, &producer, &mut transform, requested.len())?;
    println!(
        "   {} batch(es) committed with {} requests, {} aborted and processed again",
        done.committed, done.records, done.aborted
    );
    let committed_view = keys_read(broker, INVENTORY_EVENTS.name, INVENTORY_EVENTS.partitions, "read_committed", run)?;
    let everything = keys_read(broker, INVENTORY_EVENTS.name, INVENTORY_EVENTS.partitions, "read_uncommitted", run)?;
    println!(
        "   reservations: read_committed sees {} for {} requests; read_uncommitted sees {} (it counts the outputs of an \
         aborted batch that reached the log before the abort)",
        committed_view.values().sum::<usize>(),
        requested.len(),
        everything.values().sum::<usize>()
    );
    if !broker.supports(Capability::ReadCommittedHidesAborted) {
        println!(
            "   (the embedded broker shows aborted records to every reader: run against real Kafka to see the difference)"
        );
    }
    println!(
        "   e-mails sent: {} for {} orders — the aborted batch's e-mails went out; no Kafka transaction takes them back.",
        mailer.sent,
        requested.len()
    );
    println!("   With lesson 07's idempotency (an e-mail per order id, remembered): {} e-mails.", mailer.once.len());

    println!(
        "\n3. a second inventory-service instance starts with the same transactional id: the first is a zombie now"
    );
    let successor = ready_direct(broker, &instance_id)?;
    if !broker.supports(Capability::ProducerFencing) {
        println!("   (the embedded broker does not fence: the proxy answers the zombie's next write as Kafka does)");
        stage_proxy.fail_produce_requests(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH]);
    }
    for order in later {
        place_order(&orders_producer, &topics, order)?;
    }
    // The successor resumes where the group's last transaction left it; the embedded broker does not store
    // offsets committed in a transaction, so there it resumes where the zombie's last commit left its consumer.
    // A partition the zombie read nothing from resumes where this run started.
    let resume = if broker.supports(Capability::TransactionalOffsetCommits) {
        None
    } else {
        let mut at = start.clone();
        at.extend(positions(&consumer)?);
        Some(at)
    };
    match process_batch(&consumer, &producer, INVENTORY_EVENTS.name, &mut |r| reserve(r)) {
        Err(BatchError::Fatal(e)) => {
            println!("   the zombie's next batch: {} — it stops, without retrying", fatal_reason(&e))
        }
        other => println!("   the zombie's next batch: {other:?} (it should have been fenced)"),
    }
    std::mem::forget(consumer); // the zombie's process is gone: nothing of it closes cleanly
    std::mem::forget(producer);
    // Its leaked client still talks through `stage_proxy` until this process exits: closing the proxy (or the
    // embedded broker) would only make it log that every broker went away. The story ends with `exit` for that.
    std::mem::forget(stage_proxy);
    let taking_over = assigned(broker, &group, resume.as_ref())?;
    let done = run_until(&taking_over, &successor, &mut |r| reserve(r), later.len())?;
    println!("   the successor processed {} request(s) the zombie had not committed", done.records);
    let reservations = keys_read(broker, INVENTORY_EVENTS.name, INVENTORY_EVENTS.partitions, "read_committed", run)?;
    let requests = keys_read(broker, &topics.inventory_requests, INVENTORY_REQUESTS.partitions, "read_committed", run)?;
    let once = reservations.values().all(|n| *n == 1) && reservations.len() == requests.len();
    println!(
        "\n=> {} requests, {} reservations for read_committed readers: {}",
        requests.len(),
        reservations.values().sum::<usize>(),
        if once { "exactly one each" } else { "NOT exactly one each" }
    );
    if !once && !broker.supports(Capability::ReadCommittedHidesAborted) {
        println!(
            "   (the embedded broker counts aborted records too; real Kafka shows exactly one each: `cargo xtask kafka --detach`)"
        );
    }
    // The zombie was leaked, as a crashed process leaves its connections: end here, before the broker this story
    // started closes under it and it logs the fact.
    use std::io::Write;
    std::io::stdout().flush()?;
    std::process::exit(0)
}

/// What [`run_until`] did.
#[derive(Debug, Default)]
struct Done {
    committed: usize,
    records: usize,
    aborted: usize,
}

/// Processes batches until `expected` requests are committed (the story knows how many it wrote, so it need not
/// wait for an idle batch). An aborted batch is processed again, up to three times.
fn run_until(
    consumer: &BaseConsumer,
    producer: &TxnProducer,
    transform: &mut dyn FnMut(&ReserveStock) -> anyhow::Result<StockReserved>,
    expected: usize,
) -> anyhow::Result<Done> {
    let mut done = Done::default();
    while done.records < expected {
        match process_batch(consumer, producer, INVENTORY_EVENTS.name, transform) {
            Ok(Batch::Committed { records }) => {
                done.committed += 1;
                done.records += records;
            }
            Ok(Batch::Idle) => anyhow::bail!("{} of {expected} requests came", done.records),
            Err(BatchError::Aborted(cause)) if done.aborted < 3 => {
                println!("   a batch was aborted and rewound: {}", cause.root_cause());
                done.aborted += 1;
            }
            Err(stop) => return Err(stop.into()),
        }
    }
    Ok(done)
}

/// Counts the e-mails an inventory service sends: every call, and (lesson 07) the order ids already mailed.
#[derive(Default)]
struct Mailer {
    sent: usize,
    once: BTreeSet<String>,
}

impl Mailer {
    fn send(&mut self, order_id: &str) {
        self.sent += 1;
        self.once.insert(order_id.to_string());
    }
}

fn fatal_reason(error: &KafkaError) -> String {
    error.rdkafka_error_code().map_or_else(|| error.to_string(), |code| code.to_string())
}

/// Eight hex digits from the clock: this run's ids.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:08x}", (nanos as u64) & 0xffff_ffff)
}

/// A producer of the lesson's configuration through `proxy`, ready for transactions.
fn ready(proxy: &FaultProxy, transactional_id: &str) -> anyhow::Result<TxnProducer> {
    let producer: TxnProducer = producer_config(proxy.bootstrap_servers(), transactional_id).create()?;
    producer.init_transactions(TXN_CALL_TIMEOUT)?;
    Ok(producer)
}

fn ready_direct(broker: &Broker, transactional_id: &str) -> anyhow::Result<TxnProducer> {
    let producer: TxnProducer = producer_config(broker.bootstrap_servers(), transactional_id).create()?;
    producer.init_transactions(TXN_CALL_TIMEOUT)?;
    Ok(producer)
}

/// The end of each partition of `topic`.
fn end_offsets(broker: &Broker, topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = broker.client_config().create()?;
    (0..partitions).map(|p| Ok((p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?.1))).collect()
}

/// The inventory service's consumer for `group`, assigned every partition of `inventory.requests`, at `at` when
/// given, else where the group committed. Assigned, not subscribed: no group join to wait for.
fn assigned(broker: &Broker, group: &str, at: Option<&BTreeMap<i32, i64>>) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = consumer_config(broker.consumer_config(group)).create()?;
    {
        let mut assignment = TopicPartitionList::new();
        for p in 0..INVENTORY_REQUESTS.partitions {
            let offset = at.and_then(|at| at.get(&p)).map_or(Offset::Stored, |o| Offset::Offset(*o));
            assignment.add_partition_offset(INVENTORY_REQUESTS.name, p, offset)?;
        }
        consumer.assign(&assignment)?;
    }
    Ok(consumer)
}

/// Where `consumer` stands in each partition.
fn positions(consumer: &BaseConsumer) -> anyhow::Result<BTreeMap<i32, i64>> {
    let list = consumer.position()?;
    // A partition the consumer has fetched nothing from yet has no position (librdkafka's -1001): left out.
    let at = list
        .elements()
        .iter()
        .filter_map(|e| Some((e.partition(), e.offset().to_raw().filter(|offset| *offset >= 0)?)))
        .collect();
    drop(list);
    Ok(at)
}

/// The keys starting with `run` in `topic`, with how often each was read, reading to the end of every partition
/// with `isolation_level` (for read_committed, the end is the last stable offset).
fn keys_read(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    isolation_level: &str,
    run: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let consumer: BaseConsumer<ReadToEnd> = broker
        .consumer_config(&format!("story-reader-{run}"))
        .set("isolation.level", isolation_level)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(ReadToEnd)?;
    {
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
    }
    let mut keys = BTreeMap::new();
    let mut ended = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ended.len() < partitions as usize {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{topic} was not read to its end within 10 s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                if key.starts_with(run) {
                    *keys.entry(key).or_default() += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(keys)
}

/// The RabbitMQ counterpart of the story (`--rabbitmq`): what RabbitMQ offers where Kafka has transactions.
mod rabbitmq_story {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use kit::rabbitmq::{RabbitMq, SCRATCH_QUEUE_TTL, delete_queues};
    use lapin::options::{
        BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRecoverOptions,
        QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{Channel, Connection};
    use solution_10::rabbit::{
        LineReserved, Outgoing, forward_in_tx, persistent_json, publish_confirmed, reserve_lines,
    };
    use solution_10::{ReserveStock, sample_orders};

    /// How many messages the timed acts publish.
    const TIMED: usize = 1000;
    /// How many requests the inventory service forwards in act 4.
    const REQUESTS: u32 = 4;
    /// The longest the inventory service waits for its next request.
    const NEXT_REQUEST: Duration = Duration::from_secs(5);

    pub async fn run() -> anyhow::Result<()> {
        let rabbitmq = RabbitMq::resolve()?;
        println!("{}", rabbitmq.describe());
        let connection = rabbitmq.connect().await?;
        let admin = connection.create_channel().await?;
        let timed = kit::topics::unique("l10-story-timed");
        let requests = kit::topics::unique("l10-story-requests");
        let reservations = kit::topics::unique("l10-story-reservations");
        for queue in [&timed, &requests, &reservations] {
            declare(&admin, queue).await?;
        }
        let told = tell(&connection, &admin, &timed, &requests, &reservations).await;
        // Whatever happened, leave nothing behind.
        delete_queues(&admin, &[&timed, &requests, &reservations]).await?;
        connection.close(200, "OK".into()).await?;
        told
    }

    async fn tell(
        connection: &Connection,
        admin: &Channel,
        timed: &str,
        requests: &str,
        reservations: &str,
    ) -> anyhow::Result<()> {
        let messages: Vec<Outgoing> = (0..TIMED).map(|n| Outgoing::to_queue(timed, format!("{{\"n\":{n}}}"))).collect();

        println!(
            "\n1. publisher confirms: {TIMED} persistent messages, published at once, each confirmed by the broker"
        );
        let confirming = connection.create_channel().await?;
        let started = Instant::now();
        publish_confirmed(&confirming, &messages).await?;
        let confirmed_in = started.elapsed();
        println!(
            "   {TIMED} confirmed in {} ms: each confirm says \"this message is safe\", and nothing about any other",
            confirmed_in.as_millis()
        );
        admin.queue_purge(timed.into(), Default::default()).await?;

        println!("\n2. an AMQP transaction on one channel (tx.select once; each commit or rollback ends one)");
        let tx = connection.create_channel().await?;
        tx.tx_select().await?;
        let (kept, dropped) = (request("order-kept", 2), request("order-dropped", 3));
        publish_all(&tx, reserve_lines(&kept, reservations)).await?;
        println!("   {} lines of {} published, not committed yet: a consumer sees {} message(s)", 2, kept.order_id, {
            ready(admin, reservations).await?
        });
        tx.tx_commit().await?;
        publish_all(&tx, reserve_lines(&dropped, reservations)).await?;
        tx.tx_rollback().await?;
        let seen = drain_lines(admin, reservations).await?;
        println!(
            "   after tx.commit of {} and tx.rollback of {}: a consumer finds {:?} — the rolled-back publishes were \
             never enqueued",
            kept.order_id,
            dropped.order_id,
            seen.keys().collect::<Vec<_>>()
        );

        println!("\n3. the same {TIMED} messages, one transaction each (publish, tx.commit)");
        let started = Instant::now();
        for message in &messages {
            tx.basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.payload,
                persistent_json(),
            )
            .await?;
            tx.tx_commit().await?;
        }
        let transacted_in = started.elapsed();
        println!(
            "   {TIMED} committed in {} ms: {:.0}x the confirms — every commit is a round trip, and a disk sync",
            transacted_in.as_millis(),
            transacted_in.as_secs_f64() / confirmed_in.as_secs_f64().max(1e-6)
        );
        tx.close(200, "OK".into()).await?;

        println!(
            "\n4. the inventory service forwards {REQUESTS} requests with forward_in_tx: its lines and the request's \
             ack in one transaction; the stock service fails once, part-way"
        );
        let orders: Vec<ReserveStock> = sample_orders(1, REQUESTS).iter().map(|o| o.records().1).collect();
        let inputs: Vec<Outgoing> = orders
            .iter()
            .map(|r| Ok(Outgoing::to_queue(requests, serde_json::to_vec(r)?)))
            .collect::<anyhow::Result<_>>()?;
        publish_confirmed(admin, &inputs).await?;
        let failing = orders.iter().rev().find(|r| r.items.len() > 1).map(|r| r.order_id.clone()).unwrap_or_default();
        let mut failed_once = false;
        let service = connection.create_channel().await?;
        service.basic_qos(1, BasicQosOptions::default()).await?;
        let mut deliveries = service
            .basic_consume(requests.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let mut forwarded = 0;
        while forwarded < orders.len() {
            let delivery = tokio::time::timeout(NEXT_REQUEST, deliveries.next())
                .await
                .map_err(|_| anyhow::anyhow!("no request came within {NEXT_REQUEST:?}"))?
                .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
            let request: ReserveStock = serde_json::from_slice(&delivery.data)?;
            let again = if delivery.redelivered { " (redelivered)" } else { "" };
            let outputs = reserve_lines(&request, reservations);
            let visible_before = ready(admin, reservations).await?;
            let result = if request.order_id == failing && !failed_once {
                failed_once = true;
                let failing_part_way =
                    outputs.take(1).chain([Err(anyhow::anyhow!("the stock service did not answer"))]);
                forward_in_tx(&service, &delivery, failing_part_way).await
            } else {
                forward_in_tx(&service, &delivery, outputs).await
            };
            match result {
                Ok(lines) => {
                    forwarded += 1;
                    println!("   {}{again}: {lines} line(s) published, request acked, in one commit", request.order_id);
                }
                Err(error) => {
                    println!(
                        "   {}{again}: failed after its first line ({}) — rolled back: the output queue holds \
                         {} line(s), the {visible_before} it held before; the request is unacknowledged",
                        request.order_id,
                        error.root_cause(),
                        ready(admin, reservations).await?
                    );
                    // The request is still unacknowledged, held by this channel: ask for it again.
                    service.basic_recover(BasicRecoverOptions { requeue: true }).await?;
                }
            }
        }
        service.close(200, "OK".into()).await?;
        let lines = drain_lines(admin, reservations).await?;
        let expected: usize = orders.iter().map(|r| r.items.len()).sum();
        let once = lines.values().all(|n| *n == 1) && lines.len() == expected;
        println!(
            "   => {} requests, {} lines reserved ({}), {} request(s) left in the queue",
            orders.len(),
            lines.values().sum::<usize>(),
            if once { "each exactly once" } else { "NOT each exactly once" },
            ready(admin, requests).await?
        );

        println!("\nKafka vs RabbitMQ:");
        println!(
            "   Kafka: one transaction spans partitions of several topics and the consumer group's offsets; aborted \
             records stay in the log, and read_committed readers skip them."
        );
        println!(
            "   RabbitMQ: one transaction spans one channel's publishes and acks; a rolled-back publish is never \
             enqueued, a rolled-back ack leaves the message held, to come back redelivered."
        );
        println!(
            "   RabbitMQ's price: synchronous commits ({:.0}x slower than confirms here); no atomicity promised if the \
             broker fails during tx.commit (its docs: effects may show in some queues only); and no identity to fence \
             a zombie by, as Kafka does by transactional.id — the channel is the only boundary: a stalled consumer \
             keeps its input until its channel closes, which takes its open transaction with it.",
            transacted_in.as_secs_f64() / confirmed_in.as_secs_f64().max(1e-6)
        );
        println!(
            "   Neither rolls back what the transform did elsewhere (an e-mail, an HTTP call): lesson 07's idempotency \
             does that, on both."
        );
        Ok(())
    }

    /// A durable classic queue that deletes itself if the story is killed before it cleans up.
    async fn declare(channel: &Channel, queue: &str) -> anyhow::Result<()> {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(SCRATCH_QUEUE_TTL.as_millis() as i64));
        channel
            .queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
            .await?;
        Ok(())
    }

    /// A stock request for `order_id` with `lines` lines.
    fn request(order_id: &str, lines: u32) -> ReserveStock {
        ReserveStock {
            request: "RESERVE".into(),
            order_id: order_id.into(),
            items: (0..lines).map(|n| solution_10::Item { product_id: format!("SKU-{n}"), quantity: 1 }).collect(),
        }
    }

    /// Publishes `outputs` on `channel` as they come (inside its transaction, if it has one).
    async fn publish_all(
        channel: &Channel,
        outputs: impl Iterator<Item = anyhow::Result<Outgoing>>,
    ) -> anyhow::Result<()> {
        for output in outputs {
            let output = output?;
            channel
                .basic_publish(
                    output.exchange.as_str().into(),
                    output.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &output.payload,
                    persistent_json(),
                )
                .await?;
        }
        Ok(())
    }

    /// How many messages `queue` holds, ready for a consumer.
    async fn ready(channel: &Channel, queue: &str) -> anyhow::Result<u32> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(channel.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count())
    }

    /// Takes every `LineReserved` in `queue`, as a consumer would: how often each (order, product) came.
    async fn drain_lines(channel: &Channel, queue: &str) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut seen = BTreeMap::new();
        while let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await? {
            let line: LineReserved = serde_json::from_slice(&message.delivery.data)?;
            *seen.entry(format!("{}/{}", line.order_id, line.product_id)).or_default() += 1;
        }
        Ok(seen)
    }
}
