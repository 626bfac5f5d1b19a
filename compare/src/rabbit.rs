//! RabbitMQ's side of the comparison, through lapin: every scenario on a fresh queue (or stream) of its own, sent
//! through the default exchange straight to it, and deleted afterwards. Publisher and consumer each get a
//! connection of their own, as Kafka's producer and consumer are separate clients.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use kit::rabbitmq::RabbitMq;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPClass, connection::AMQPMethod};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, PublisherConfirm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::report::{Broker, CrashRun, Durability, LatencyRun, LatencySummary, ReplayRun, ThroughputRun};
use crate::workload::{self, CrashPlan, Workload};

/// Unconfirmed messages a persistent publisher may have in flight before it waits for the oldest confirm: the
/// confirms are pipelined (RabbitMQ confirms in batches, once they are on disk), never awaited one at a time.
pub const CONFIRM_WINDOW: usize = 5_000;
/// The throughput consumer's prefetch, and how often it acknowledges (`multiple`: everything up to this one).
pub const DRAIN_PREFETCH: u16 = 1_000;
pub const DRAIN_ACK_EVERY: u64 = 100;
/// The latency consumer's prefetch; it acknowledges each message as it arrives.
pub const LATENCY_PREFETCH: u16 = 100;

/// What a queue is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueKind {
    /// A durable classic queue (survives a restart, with its persistent messages).
    Durable,
    /// A classic queue that is not durable, for transient messages.
    Transient,
    /// A stream (`x-queue-type=stream`): an append-only log read from any offset, like a Kafka partition.
    Stream,
}

/// RabbitMQ, and the queues this run declared on it (deleted by [`RabbitSide::cleanup`]).
pub struct RabbitSide {
    rabbit: RabbitMq,
    uri: AMQPUri,
    /// Declares and deletes the run's queues.
    admin: Connection,
    admin_channel: Channel,
    queues: Mutex<Vec<String>>,
}

impl RabbitSide {
    pub async fn connect(rabbit: RabbitMq) -> anyhow::Result<RabbitSide> {
        let uri: AMQPUri = rabbit.url().parse().map_err(|e| anyhow::anyhow!("RabbitMQ URL {}: {e}", rabbit.url()))?;
        let admin = rabbit.connect().await?;
        let admin_channel = admin.create_channel().await?;
        Ok(RabbitSide { rabbit, uri, admin, admin_channel, queues: Mutex::new(Vec::new()) })
    }

    /// "RabbitMQ 3.10.8 on Erlang/OTP 25.2.3 at amqp://127.0.0.1:5672", from the server properties RabbitMQ
    /// sends as a connection opens (lapin does not keep them, so a bare handshake asks).
    pub async fn describe(&self) -> String {
        let (host, port) = (self.uri.authority.host.clone(), self.uri.authority.port);
        let at = format!("amqp://{host}:{port}");
        match tokio::time::timeout(Duration::from_secs(5), server_properties(&host, port)).await {
            Ok(Ok(properties)) => {
                let get = |key: &str| properties.inner().get(key).and_then(value_text);
                let product = get("product").unwrap_or_else(|| "RabbitMQ".into());
                let version = get("version").unwrap_or_else(|| "(version not sent)".into());
                let platform = get("platform").map(|p| format!(" on {p}")).unwrap_or_default();
                format!("{product} {version}{platform} at {at}")
            }
            Ok(Err(e)) => format!("RabbitMQ at {at} (version unknown: {e:#})"),
            Err(_) => format!("RabbitMQ at {at} (version unknown: no answer within 5 s)"),
        }
    }

    async fn fresh_queue(&self, prefix: &str, kind: QueueKind) -> anyhow::Result<String> {
        let name = kit::topics::unique(prefix);
        self.queues.lock().expect("queues").push(name.clone());
        let mut arguments = FieldTable::default();
        match kind {
            QueueKind::Stream => arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into())),
            // A queue a killed run leaves behind deletes itself once unused for this long.
            QueueKind::Durable | QueueKind::Transient => arguments.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(kit::rabbitmq::SCRATCH_QUEUE_TTL.as_millis() as i64),
            ),
        };
        let options = QueueDeclareOptions { durable: kind != QueueKind::Transient, ..QueueDeclareOptions::default() };
        let declaring = self.admin_channel.queue_declare(name.as_str().into(), options, arguments);
        tokio::time::timeout(Duration::from_secs(10), declaring)
            .await
            .with_context(|| format!("declaring queue {name} took over 10 s"))?
            .with_context(|| format!("declaring queue {name}"))?;
        Ok(name)
    }

    /// Deletes every queue this run declared so far.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let queues: Vec<String> = std::mem::take(&mut *self.queues.lock().expect("queues"));
        let names: Vec<&str> = queues.iter().map(String::as_str).collect();
        tokio::time::timeout(Duration::from_secs(20), kit::rabbitmq::delete_queues(&self.admin_channel, &names))
            .await
            .context("deleting the run's queues took over 20 s")?
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin.close(200, "done".into())).await;
    }

    /// A connection of its own with one channel: confirms on when asked.
    async fn channel(&self, confirms: bool) -> anyhow::Result<(Connection, Channel)> {
        let connection = self.rabbit.connect().await?;
        let channel = connection.create_channel().await?;
        if confirms {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        Ok((connection, channel))
    }

    /// Written and read once, not measured: RabbitMQ's queue and message store processes get going first.
    pub async fn warm_up(&self, workload: &Workload) -> anyhow::Result<()> {
        let queue = self.fresh_queue("compare-warmup", QueueKind::Durable).await?;
        let (n, size) = (workload.warmup, workload.size);
        self.publish_all(&queue, n, size, Durability::Persistent).await?;
        self.drain(&queue, n, Durability::Persistent).await.map(|_| ())
    }

    /// N messages published (until the last is confirmed, or has reached RabbitMQ without confirms), then read
    /// back by one consumer from a full queue.
    pub async fn throughput(&self, workload: &Workload, durability: Durability) -> anyhow::Result<ThroughputRun> {
        let kind = match durability {
            Durability::Persistent => QueueKind::Durable,
            Durability::Transient => QueueKind::Transient,
        };
        let queue = self.fresh_queue("compare-throughput", kind).await?;
        let (n, size) = (workload.messages, workload.size);
        let produce = self.publish_all(&queue, n, size, durability).await?;
        let drain = self.drain(&queue, n, durability).await?;
        Ok(ThroughputRun { broker: Broker::RabbitMq, durability, messages: n, message_bytes: size, produce, drain })
    }

    /// Publishes `n` messages on a connection of its own; returns the time from the first publish until RabbitMQ
    /// has them all: every confirm in (persistent), or a synchronous request on the same channel answered, which
    /// RabbitMQ's channel handles after reading and routing every publish before it (not persistent, no confirms;
    /// the queue may still be counting the last of them then, as the debug log shows).
    async fn publish_all(&self, queue: &str, n: u64, size: usize, durability: Durability) -> anyhow::Result<Duration> {
        let persistent = durability == Durability::Persistent;
        let (connection, channel) = self.channel(persistent).await?;
        let within = deadline_for(n);
        let publishing = async {
            let properties = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
            let mut buffer = workload::payload(0, 0, size);
            let mut unconfirmed: VecDeque<PublisherConfirm> = VecDeque::new();
            let started = Instant::now();
            for seq in 0..n {
                buffer[..8].copy_from_slice(&seq.to_le_bytes());
                buffer[8..16].copy_from_slice(&workload::now_nanos().to_le_bytes());
                let confirm = channel
                    .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &buffer, properties.clone())
                    .await?;
                if persistent {
                    unconfirmed.push_back(confirm);
                    if unconfirmed.len() >= CONFIRM_WINDOW {
                        check_confirm(unconfirmed.pop_front().expect("a confirm is pending").await?)?;
                    }
                }
            }
            tracing::debug!("RabbitMQ: {n} messages handed to lapin in {:?}", started.elapsed());
            for confirm in unconfirmed {
                check_confirm(confirm.await?)?;
            }
            if !persistent {
                let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
                let queue = channel.queue_declare(queue.into(), passive, FieldTable::default()).await?;
                tracing::debug!("RabbitMQ: the queue had counted {} when the channel answered", queue.message_count());
            }
            tracing::debug!("RabbitMQ: {n} messages published in {:?}", started.elapsed());
            anyhow::Ok(started.elapsed())
        };
        let took = tokio::time::timeout(within, publishing)
            .await
            .with_context(|| format!("RabbitMQ did not take {n} messages within {within:?}"))??;
        let _ = connection.close(200, "done".into()).await;
        Ok(took)
    }

    /// Reads `n` messages from a full queue; returns the time from the consumer's start until the n-th was in
    /// hand. Persistent: manual acknowledgement, in batches; not persistent: automatic (no_ack).
    async fn drain(&self, queue: &str, n: u64, durability: Durability) -> anyhow::Result<Duration> {
        let (connection, channel) = self.channel(false).await?;
        let manual = durability == Durability::Persistent;
        let within = deadline_for(n);
        let draining = async {
            if manual {
                channel.basic_qos(DRAIN_PREFETCH, BasicQosOptions::default()).await?;
            }
            let started = Instant::now();
            let mut consumer = consume(&channel, queue, !manual, FieldTable::default()).await?;
            for received in 1..=n {
                let delivery = next_delivery(&mut consumer, "the RabbitMQ reader").await?;
                if manual && (received % DRAIN_ACK_EVERY == 0 || received == n) {
                    delivery.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
            anyhow::Ok(started.elapsed())
        };
        let took = tokio::time::timeout(within, draining)
            .await
            .with_context(|| format!("the RabbitMQ reader did not receive {n} messages within {within:?}"))??;
        let _ = connection.close(200, "done".into()).await;
        Ok(took)
    }

    /// Messages published at a fixed rate, each timed from its publish to the moment the consumer holds it.
    pub async fn latency(&self, workload: &Workload, durability: Durability) -> anyhow::Result<LatencyRun> {
        let persistent = durability == Durability::Persistent;
        let kind = if persistent { QueueKind::Durable } else { QueueKind::Transient };
        let queue = self.fresh_queue("compare-latency", kind).await?;
        let n = workload.latency_messages();

        let (consumer_connection, consumer_channel) = self.channel(false).await?;
        if persistent {
            consumer_channel.basic_qos(LATENCY_PREFETCH, BasicQosOptions::default()).await?;
        }
        let mut consumer = consume(&consumer_channel, &queue, !persistent, FieldTable::default()).await?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let reading_time = workload.latency_duration + Duration::from_secs(30);
        let reading: JoinHandle<anyhow::Result<_>> = tokio::spawn(async move {
            let mut histogram = crate::report::latency_histogram();
            let mut ready = Some(ready_tx);
            let mut received = 0;
            let deadline = tokio::time::Instant::now() + reading_time;
            while received < n {
                let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await else { break };
                let delivery = next.context("the RabbitMQ latency consumer was cancelled")??;
                let header = workload::read_header(&delivery.data);
                if persistent {
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                match header {
                    Some((0, _)) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Some((_, sent)) => {
                        histogram.saturating_record(workload::micros_since(sent));
                        received += 1;
                    }
                    None => {}
                }
            }
            Ok(histogram)
        });

        let (publisher_connection, publisher) = self.channel(persistent).await?;
        let properties = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
        let mut buffer = workload::payload(0, workload::now_nanos(), workload.size);
        let probe = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &buffer,
                properties.clone(),
            )
            .await?;
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .context("the RabbitMQ latency consumer did not receive the probe message within 20 s")?
            .context("the RabbitMQ latency consumer stopped before the probe message")?;
        if persistent {
            check_confirm(probe.await?)?;
        }
        // Confirms are awaited off the sending path, as Kafka's delivery reports arrive on their own thread.
        let (confirms_tx, mut confirms_rx) = tokio::sync::mpsc::unbounded_channel::<PublisherConfirm>();
        let confirming: JoinHandle<anyhow::Result<()>> = tokio::spawn(async move {
            while let Some(confirm) = confirms_rx.recv().await {
                check_confirm(confirm.await?)?;
            }
            Ok(())
        });
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / workload.latency_rate as u32);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for seq in 1..=n {
            ticker.tick().await;
            buffer[..8].copy_from_slice(&seq.to_le_bytes());
            buffer[8..16].copy_from_slice(&workload::now_nanos().to_le_bytes());
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &buffer,
                    properties.clone(),
                )
                .await?;
            if persistent {
                let _ = confirms_tx.send(confirm);
            }
        }
        drop(confirms_tx);
        tokio::time::timeout(Duration::from_secs(20), confirming)
            .await
            .context("RabbitMQ did not confirm the latency run's messages within 20 s")???;
        let histogram = reading.await??;
        let _ = publisher_connection.close(200, "done".into()).await;
        let _ = consumer_connection.close(200, "done".into()).await;
        Ok(LatencyRun {
            broker: Broker::RabbitMq,
            durability,
            variant: None,
            sent: n,
            summary: LatencySummary::of(&histogram),
        })
    }

    /// A consumer handles `plan.handled` messages, acknowledging each right after handling it except the last
    /// `plan.unsettled`, and its TCP connection is cut (no AMQP close); a new consumer then reads the queue.
    pub async fn crash(&self, plan: CrashPlan, size: usize) -> anyhow::Result<CrashRun> {
        let queue = self.fresh_queue("compare-crash", QueueKind::Durable).await?;
        self.publish_all(&queue, plan.total, size, Durability::Persistent).await?;

        // The first consumer talks to RabbitMQ through a relay this process can cut, the way a crashed host's
        // connection ends: no Connection.Close, just a closed socket.
        let relay = Relay::start(&self.uri).await?;
        let mut through_relay = self.uri.clone();
        through_relay.authority.host = relay.address.ip().to_string();
        through_relay.authority.port = relay.address.port();
        let first_connection = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect_uri(through_relay, ConnectionProperties::default()),
        )
        .await
        .context("connecting through the relay took over 10 s")??;
        let first_channel = first_connection.create_channel().await?;
        first_channel.basic_qos(plan.prefetch, BasicQosOptions::default()).await?;
        let mut first = consume(&first_channel, &queue, false, FieldTable::default()).await?;
        let handling = async {
            for handled in 1..=plan.handled {
                let delivery = next_delivery(&mut first, "the first RabbitMQ consumer").await?;
                if handled <= plan.settled() {
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                if handled == plan.settled() {
                    // Acks have no reply: a synchronous request on the channel makes sure RabbitMQ has processed
                    // them before the crash (it handles a channel's frames in order).
                    first_channel.basic_qos(plan.prefetch, BasicQosOptions::default()).await?;
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(30), handling)
            .await
            .context("the first RabbitMQ consumer did not handle its messages within 30 s")??;
        relay.cut();
        drop(first);
        drop(first_channel);
        drop(first_connection);

        let (second_connection, second_channel) = self.channel(false).await?;
        second_channel.basic_qos(plan.prefetch, BasicQosOptions::default()).await?;
        let mut second = consume(&second_channel, &queue, false, FieldTable::default()).await?;
        let expected = plan.total - plan.settled();
        let reading = async {
            let mut seqs = Vec::new();
            let mut flagged = 0;
            while (seqs.len() as u64) < expected {
                let delivery = next_delivery(&mut second, "the second RabbitMQ consumer").await?;
                if delivery.redelivered {
                    flagged += 1;
                }
                if let Some((seq, _)) = workload::read_header(&delivery.data) {
                    seqs.push(seq);
                }
                delivery.ack(BasicAckOptions::default()).await?;
            }
            anyhow::Ok((seqs, flagged))
        };
        let (seqs, flagged) = tokio::time::timeout(Duration::from_secs(30), reading).await.with_context(|| {
            format!("the second RabbitMQ consumer did not receive {expected} messages within 30 s")
        })??;
        let _ = second_connection.close(200, "done".into()).await;
        Ok(CrashRun {
            broker: Broker::RabbitMq,
            total: plan.total,
            handled: plan.handled,
            settled: plan.settled(),
            resumed_at: seqs.first().copied().unwrap_or(plan.total),
            handled_twice: seqs.iter().filter(|&&s| s < plan.handled).count() as u64,
            flagged_redelivered: Some(flagged),
            received_after: seqs.len() as u64,
            in_order: workload::ascending(&seqs),
        })
    }

    /// A classic queue: a consumer reads and acknowledges every message; then a fresh reader asks for what is left.
    pub async fn replay_queue(&self, n: u64, size: usize) -> anyhow::Result<ReplayRun> {
        let queue = self.fresh_queue("compare-replay", QueueKind::Durable).await?;
        self.publish_all(&queue, n, size, Durability::Persistent).await?;
        let settled = self.read_and_ack(&queue, n, FieldTable::default()).await?;
        // A fresh reader on a connection of its own takes whatever the queue still holds, one basic.get at a time
        // (an empty queue answers get-empty at once: there is nothing to wait for).
        let (connection, channel) = self.channel(false).await?;
        let mut got = 0;
        while channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await?.is_some() {
            got += 1;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(ReplayRun {
            what: "RabbitMQ classic queue, a new consumer".into(),
            written: n,
            first_reader_settled: settled,
            fresh_reader_got: got,
        })
    }

    /// A stream: a consumer reads and acknowledges every message; then a fresh consumer reads from the first
    /// offset.
    pub async fn replay_stream(&self, n: u64, size: usize) -> anyhow::Result<ReplayRun> {
        let stream = self.fresh_queue("compare-replay-stream", QueueKind::Stream).await?;
        self.publish_all(&stream, n, size, Durability::Persistent).await?;
        let settled = self.read_and_ack(&stream, n, from_first()).await?;
        let fresh = self.read_and_ack(&stream, n, from_first()).await?;
        Ok(ReplayRun {
            what: "RabbitMQ stream, a new consumer from `x-stream-offset=first`".into(),
            written: n,
            first_reader_settled: settled,
            fresh_reader_got: fresh,
        })
    }

    /// A consumer on a connection of its own reads `n` messages, acknowledging each, then closes its channel
    /// (which RabbitMQ answers after handling every ack before it). Returns how many it read.
    async fn read_and_ack(&self, queue: &str, n: u64, arguments: FieldTable) -> anyhow::Result<u64> {
        let (connection, channel) = self.channel(false).await?;
        channel.basic_qos(LATENCY_PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = consume(&channel, queue, false, arguments).await?;
        let within = deadline_for(n);
        let reading = async {
            for _ in 0..n {
                next_delivery(&mut consumer, "a RabbitMQ reader").await?.ack(BasicAckOptions::default()).await?;
            }
            channel.close(200, "done".into()).await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(within, reading).await.with_context(|| {
            format!("a RabbitMQ reader did not receive {n} messages of {queue} within {within:?}")
        })??;
        let _ = connection.close(200, "done".into()).await;
        Ok(n)
    }
}

/// The consumer argument that starts a stream consumer at the stream's first message.
fn from_first() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    arguments
}

fn deadline_for(n: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(n)
}

async fn consume(channel: &Channel, queue: &str, no_ack: bool, arguments: FieldTable) -> anyhow::Result<Consumer> {
    let options = BasicConsumeOptions { no_ack, ..BasicConsumeOptions::default() };
    Ok(channel.basic_consume(queue.into(), "".into(), options, arguments).await?)
}

/// The consumer's next delivery (callers bound the wait with a deadline of their own).
async fn next_delivery(consumer: &mut Consumer, who: &str) -> anyhow::Result<lapin::message::Delivery> {
    match consumer.next().await {
        Some(delivery) => Ok(delivery?),
        None => bail!("{who}'s consumer was cancelled"),
    }
}

fn check_confirm(confirmation: lapin::Confirmation) -> anyhow::Result<()> {
    ensure!(confirmation.is_ack(), "RabbitMQ refused a message: {confirmation:?}");
    Ok(())
}

/// The server properties of RabbitMQ's Connection.Start, the first frame it sends after the protocol header.
async fn server_properties(host: &str, port: u16) -> anyhow::Result<FieldTable> {
    let mut socket = TcpStream::connect((host, port)).await?;
    socket.write_all(b"AMQP\x00\x00\x09\x01").await?;
    // A frame: type (1 = method), channel (u16), payload size (u32), payload, frame-end (0xCE).
    let mut header = [0u8; 7];
    socket.read_exact(&mut header).await?;
    ensure!(header[0] == 1, "the first frame is not a method frame (type {})", header[0]);
    let size = u32::from_be_bytes(header[3..7].try_into().expect("four bytes")) as usize;
    ensure!(size < 1 << 20, "a Connection.Start of {size} bytes");
    let mut payload = vec![0u8; size + 1];
    socket.read_exact(&mut payload).await?;
    let (_, class) = lapin::protocol::parse_class(&payload[..size])
        .map_err(|e| anyhow::anyhow!("unreadable Connection.Start: {e:?}"))?;
    match class {
        AMQPClass::Connection(AMQPMethod::Start(start)) => Ok(start.server_properties),
        other => bail!("expected Connection.Start, got {other:?}"),
    }
}

fn value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A TCP relay on a free loopback port to RabbitMQ, whose connections end together when it is cut.
struct Relay {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(uri: &AMQPUri) -> anyhow::Result<Relay> {
        let target = format!("{}:{}", uri.authority.host, uri.authority.port);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                links.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Relay { address, task })
    }

    /// Ends the relay and every connection through it (dropping the tasks closes both sockets).
    fn cut(self) {
        self.task.abort();
    }
}
