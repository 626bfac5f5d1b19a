//! A Kafka-protocol-aware TCP proxy that injects faults in front of *any* broker, real Kafka included.
//!
//! The embedded broker can fail requests from the inside, but real Kafka cannot be told to lose an ack. Yet the
//! behaviour lesson 09 teaches, "a batch whose ack was lost is retried and written once", is exactly the one the
//! embedded broker gets wrong, so it must be shown on real Kafka, and that needs a fault between the client and
//! the broker. This proxy is that fault: clients bootstrap at [`FaultProxy::bootstrap_servers`], and
//!
//! - every Metadata response is rewritten so each broker's address points at a proxy listener of its own (a Kafka
//!   client connects to the addresses the cluster advertises, not to the bootstrap address, so without the
//!   rewrite only the first request would pass through here);
//! - [`FaultProxy::lose_produce_acks`] forwards the next Produce requests to the broker, which writes them, then
//!   throws their responses away and drops the connection: the producer never learns that the write succeeded;
//! - [`FaultProxy::delay_produce_acks`] holds Produce responses back, so the producer's request timeout fires
//!   while the broker has already written the batch;
//! - [`FaultProxy::fail_produce_requests`] answers the next Produce requests itself with a retriable error (not
//!   leader, timed out, not enough replicas) without forwarding them, while the requests behind them go on to
//!   the broker: the situation in which a producer without idempotence reorders, and the broker must reject the
//!   batch that skips ahead for an idempotent one to lose nothing;
//! - [`FaultProxy::transaction_log`] lists the transactional requests it forwarded, decoded (InitProducerId and
//!   the id it was given, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn): what a transaction did,
//!   as the broker was told. Lesson 10 grades transactions with it on the embedded broker, whose consumers see
//!   aborted records and which does not store transactional offset commits, so reading back shows little;
//! - [`FaultProxy::crash_before_next_end_txn`] keeps the next EndTxn from the broker and cuts every connection
//!   instead, for good: the client's process "died" after its transaction's sends and before its commit;
//! - [`FaultProxy::fail_end_txn_requests`] answers the next EndTxn requests itself with an error (a producer fenced
//!   while it commits or aborts) without forwarding them.
//!
//! Without faults it is also the way to give a broker a fixed address: [`FaultProxy::start_on`] binds its
//! listeners on chosen ports, which is how `cargo xtask broker` publishes the embedded broker (whose own ports are
//! random) on 127.0.0.1:9092.
//!
//! The protocol is the `kafka-protocol` crate's (see [`crate::wire`]). Metadata and FindCoordinator responses are
//! decoded, their broker addresses rewritten (a transactional producer or a group member learns its
//! coordinator's address from FindCoordinator, and would otherwise go around the proxy from then on) and
//! encoded again at the version the client asked for. Produce requests are decoded (acks, topics, partitions) to
//! answer them with an error, and the transactional requests to log them (their InitProducerId answers too, for
//! the producer id). ApiVersions answers are decoded to cap all those APIs at the newest version the crate knows,
//! so a client never picks one the proxy cannot read. Everything else, and every request, goes
//! through byte for byte; a frame the proxy must read and cannot ends its connection, with a warning. Responses
//! go back in the order the requests came, the synthetic ones included, as a broker would send them. Blocking
//! sockets on plain threads keep it independent of whichever async runtime the test uses.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey,
    ApiVersionsResponse, EndTxnRequest, EndTxnResponse, FindCoordinatorResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};
use rdkafka::types::RDKafkaRespErr;

use crate::wire::{self, malformed, read_frame, write_frame};

/// What the proxy has seen and done, for tests to check that traffic went through it and faults happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub metadata_rewritten: u64,
    pub coordinators_rewritten: u64,
    pub produce_requests: u64,
    pub acks_lost: u64,
    pub acks_delayed: u64,
    pub requests_failed: u64,
    /// EndTxn requests kept from the broker by [`FaultProxy::crash_before_next_end_txn`] (0 or 1).
    pub end_txn_cut: u64,
}

/// One transactional request the proxy forwarded to the broker, decoded: together they say what each transaction
/// did, in the order the broker was told. Producer ids and epochs come from the requests (and, for
/// `InitProducerId`, from the broker's answer): a second producer with the same transactional id gets a higher
/// epoch, which is how entries of a fenced producer and of its successor are told apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum TxnRequest {
    /// A producer asked for its id; `transactional_id` is `None` for an idempotent, non-transactional producer.
    /// The id and epoch are the broker's answer (-1 with an `error_code` when it refused).
    InitProducerId { transactional_id: Option<String>, producer_id: i64, producer_epoch: i16, error_code: i16 },
    /// Partitions joining the transaction before the producer writes to them (topic, partition).
    AddPartitionsToTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    /// The consumer group whose offsets the transaction will commit.
    AddOffsetsToTxn { transactional_id: String, producer_id: i64, producer_epoch: i16, group: String },
    /// The offsets committed with the transaction (topic, partition, offset: the next record to read).
    TxnOffsetCommit {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        group: String,
        offsets: Vec<(String, i32, i64)>,
    },
    /// The end of a transaction: `committed` true for a commit, false for an abort.
    EndTxn { transactional_id: String, producer_id: i64, producer_epoch: i16, committed: bool },
    /// A transactional request the proxy could not decode; it was forwarded as it came.
    Unreadable { api: String, version: i16, error: String },
}

impl TxnRequest {
    /// The producer epoch the entry carries (-1 for an unreadable one).
    pub fn producer_epoch(&self) -> i16 {
        match self {
            TxnRequest::InitProducerId { producer_epoch, .. }
            | TxnRequest::AddPartitionsToTxn { producer_epoch, .. }
            | TxnRequest::AddOffsetsToTxn { producer_epoch, .. }
            | TxnRequest::TxnOffsetCommit { producer_epoch, .. }
            | TxnRequest::EndTxn { producer_epoch, .. } => *producer_epoch,
            TxnRequest::Unreadable { .. } => -1,
        }
    }
}

/// A running proxy. Dropping it closes its listeners and every connection through it.
pub struct FaultProxy {
    shared: Arc<Shared>,
    bootstrap: String,
}

/// Where the listeners bind, which is also the address Metadata advertises for them.
struct Listen {
    host: String,
    /// `None`: any free port. `Some(first)`: the n-th listener (counting from 0, the bootstrap's) binds
    /// `first + n`, so a published address stays the same from run to run.
    first_port: Option<u16>,
}

struct Shared {
    listen: Listen,
    /// Upstream `host:port` → the address of the listener that relays to it.
    listeners: Mutex<HashMap<String, SocketAddr>>,
    /// Open sockets (both sides of each connection), so dropping the proxy can close them.
    sockets: Mutex<Vec<TcpStream>>,
    acks_to_lose: AtomicUsize,
    ack_delay_ms: AtomicU64,
    /// Error codes to answer the next Produce requests with, one per request.
    produce_errors: Mutex<VecDeque<i16>>,
    closed: AtomicBool,
    connections: AtomicU64,
    metadata_rewritten: AtomicU64,
    coordinators_rewritten: AtomicU64,
    produce_requests: AtomicU64,
    acks_lost: AtomicU64,
    acks_delayed: AtomicU64,
    requests_failed: AtomicU64,
    /// The transactional requests forwarded, in order.
    transactions: Mutex<Vec<TxnRequest>>,
    crash_at_end_txn: AtomicBool,
    end_txn_cut: AtomicU64,
    /// Error codes to answer the next EndTxn requests with, one per request.
    end_txn_errors: Mutex<VecDeque<i16>>,
    /// The `client.id` of every request's header, as clients name themselves to the broker.
    client_ids: Mutex<std::collections::BTreeSet<String>>,
}

impl FaultProxy {
    /// Starts a proxy in front of the first broker of `upstream_bootstrap` (`host:port[,host:port…]`), listening
    /// on free loopback ports.
    pub fn start(upstream_bootstrap: &str) -> io::Result<FaultProxy> {
        FaultProxy::listen(upstream_bootstrap, Listen { host: Ipv4Addr::LOCALHOST.to_string(), first_port: None })
    }

    /// Starts a proxy in front of `upstream_bootstrap` whose listeners bind `host`, on fixed ports: clients
    /// bootstrap at `host:first_port`, and the n-th other broker address the proxy learns of gets
    /// `host:first_port + n`. Brokers are numbered in the order the proxy meets their addresses, which is the
    /// order of the first Metadata answer (Kafka and the mock list brokers by node id); their node ids are not
    /// used, since a real cluster's need not start at 0 or 1, nor follow each other. One broker, as
    /// `cargo xtask broker` runs, is reached at `host:first_port` alone.
    pub fn start_on(upstream_bootstrap: &str, host: &str, first_port: u16) -> io::Result<FaultProxy> {
        FaultProxy::listen(upstream_bootstrap, Listen { host: host.to_string(), first_port: Some(first_port) })
    }

    fn listen(upstream_bootstrap: &str, listen: Listen) -> io::Result<FaultProxy> {
        let first = upstream_bootstrap.split(',').next().unwrap_or_default().trim();
        let Some((host, port)) = first.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<i32>().ok()?))) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy needs host:port, got {upstream_bootstrap:?}"),
            ));
        };
        let shared = Arc::new(Shared {
            listen,
            listeners: Mutex::new(HashMap::new()),
            sockets: Mutex::new(Vec::new()),
            acks_to_lose: AtomicUsize::new(0),
            ack_delay_ms: AtomicU64::new(0),
            produce_errors: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            metadata_rewritten: AtomicU64::new(0),
            coordinators_rewritten: AtomicU64::new(0),
            produce_requests: AtomicU64::new(0),
            acks_lost: AtomicU64::new(0),
            acks_delayed: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            transactions: Mutex::new(Vec::new()),
            crash_at_end_txn: AtomicBool::new(false),
            end_txn_cut: AtomicU64::new(0),
            end_txn_errors: Mutex::new(VecDeque::new()),
            client_ids: Mutex::new(std::collections::BTreeSet::new()),
        });
        let port = listener_for(&shared, host, port)?;
        let bootstrap = format!("{}:{port}", shared.listen.host);
        Ok(FaultProxy { shared, bootstrap })
    }

    /// The address clients bootstrap at instead of the broker's.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The next `count` Produce requests reach the broker (and are written), but their responses are thrown
    /// away and the connection is dropped: lost acks.
    pub fn lose_produce_acks(&self, count: usize) {
        self.shared.acks_to_lose.fetch_add(count, Ordering::SeqCst);
    }

    /// Holds back every Produce response by `delay` until called again with [`Duration::ZERO`].
    pub fn delay_produce_acks(&self, delay: Duration) {
        self.shared.ack_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers the next Produce requests, one per error in `errors`, with that error for every partition they
    /// carry, without forwarding them: the broker never sees those batches. `NO_ERROR` in the list lets one
    /// request through, so `[NOT_LEADER, NO_ERROR, …]` fails every other request.
    pub fn fail_produce_requests(&self, errors: &[RDKafkaRespErr]) {
        self.shared.produce_errors.lock().unwrap().extend(errors.iter().map(|e| *e as i16));
    }

    /// The refusals a cluster answers during a leader election or with a slow replica: `count` retriable errors
    /// (not leader, timed out, not enough replicas, in turn), each followed by a request let through, so a failed
    /// batch is retried while the next one, already in flight, succeeds.
    pub fn fail_every_other_produce_request(&self, count: usize) {
        let retriable = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ];
        let errors: Vec<_> = retriable
            .iter()
            .cycle()
            .take(count)
            .flat_map(|e| [*e, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR])
            .collect();
        self.fail_produce_requests(&errors);
    }

    /// The transactional requests forwarded to the broker so far, decoded, in the order they came (over every
    /// connection). An EndTxn kept back by [`FaultProxy::crash_before_next_end_txn`] is not in it.
    pub fn transaction_log(&self) -> Vec<TxnRequest> {
        self.shared.transactions.lock().unwrap().clone()
    }

    /// When the next EndTxn request (a commit or an abort) arrives, the proxy does not forward it: it closes every
    /// connection through it and accepts no new one, for good. To the broker, the client died between the last
    /// request of its transaction and its commit; the client, cut off, can reach nothing any more. Whatever the
    /// transaction wrote stays open until a producer with the same transactional id starts (or the transaction
    /// times out) and the broker aborts it.
    pub fn crash_before_next_end_txn(&self) {
        self.shared.crash_at_end_txn.store(true, Ordering::SeqCst);
    }

    /// Answers the next EndTxn requests (commits or aborts), one per error, with these errors instead of
    /// forwarding them: `INVALID_PRODUCER_EPOCH` is a producer fenced while it ends its transaction. Answered
    /// requests count in [`ProxyStats::requests_failed`] and are not in the [`FaultProxy::transaction_log`].
    pub fn fail_end_txn_requests(&self, errors: &[RDKafkaRespErr]) {
        self.shared.end_txn_errors.lock().unwrap().extend(errors.iter().map(|e| *e as i16));
    }

    /// The client ids the requests through the proxy carried in their headers (a client's `client.id`, the name
    /// the broker knows it by in its logs, quotas and group descriptions).
    pub fn client_ids(&self) -> std::collections::BTreeSet<String> {
        self.shared.client_ids.lock().unwrap().clone()
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::SeqCst),
            metadata_rewritten: s.metadata_rewritten.load(Ordering::SeqCst),
            coordinators_rewritten: s.coordinators_rewritten.load(Ordering::SeqCst),
            produce_requests: s.produce_requests.load(Ordering::SeqCst),
            acks_lost: s.acks_lost.load(Ordering::SeqCst),
            acks_delayed: s.acks_delayed.load(Ordering::SeqCst),
            requests_failed: s.requests_failed.load(Ordering::SeqCst),
            end_txn_cut: s.end_txn_cut.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.close_connections();
        // Each accept loop is blocked in `accept`: one connection wakes it to see `closed`. A listener on every
        // interface (0.0.0.0) is reached on loopback.
        for address in self.shared.listeners.lock().unwrap().values() {
            let mut wake = *address;
            if wake.ip().is_unspecified() {
                wake.set_ip(Ipv4Addr::LOCALHOST.into());
            }
            let _ = TcpStream::connect(wake);
        }
    }
}

impl Shared {
    /// Stops accepting (each accept loop returns at its next connection) and closes every open connection.
    fn close_connections(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// The local port relaying to the broker at `host:port`, binding a new listener the first time it is seen.
fn listener_for(shared: &Arc<Shared>, host: &str, port: i32) -> io::Result<u16> {
    let upstream = format!("{host}:{port}");
    let mut listeners = shared.listeners.lock().unwrap();
    if let Some(address) = listeners.get(&upstream) {
        return Ok(address.port());
    }
    let listen = &shared.listen;
    let port = match listen.first_port {
        None => 0,
        Some(first) => u16::try_from(listeners.len()).ok().and_then(|n| first.checked_add(n)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, format!("no port left above {first} for {upstream}"))
        })?,
    };
    let listener = TcpListener::bind((listen.host.as_str(), port))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}:{port} ({e})", listen.host)))?;
    let address = listener.local_addr()?;
    listeners.insert(upstream.clone(), address);
    tracing::debug!("fault proxy: {address} relays to {upstream}");
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name(format!("fault-proxy-{}", address.port()))
        .spawn(move || accept_all(listener, upstream, shared))?;
    Ok(address.port())
}

fn accept_all(listener: TcpListener, upstream: String, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(&upstream) else {
            // The broker is unreachable: the client sees a closed connection, as it would without the proxy.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = relay(client, server, &shared) {
            tracing::debug!("fault proxy: could not relay a connection to {upstream}: {e}");
        }
    }
}

/// One connection: requests flow to the broker on one thread, responses back on another. The two share the
/// queue of requests still waiting for an answer: a response does not say what it answers (only its
/// correlation id), and a synthetic error answer must wait its turn behind the forwarded requests before it.
fn relay(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    {
        let mut sockets = shared.sockets.lock().unwrap();
        sockets.push(client.try_clone()?);
        sockets.push(server.try_clone()?);
    }
    let connection =
        Arc::new(Connection { answers: Mutex::new(Answers { waiting: VecDeque::new(), client: client.try_clone()? }) });
    let (client_in, server_out) = (client.try_clone()?, server.try_clone()?);
    let (c, s) = (Arc::clone(&connection), Arc::clone(shared));
    thread::spawn(move || report_end("request", relay_requests(client_in, server_out, &c, &s)));
    let s = Arc::clone(shared);
    thread::spawn(move || report_end("response", relay_responses(server, client, &connection, &s)));
    Ok(())
}

/// A connection ends when either side closes it, which is normal; a frame the proxy could not read is not, and
/// is worth a warning, since the client then sees its connection drop for no reason of its own.
fn report_end(side: &str, result: io::Result<()>) {
    match result {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => tracing::warn!("fault proxy: {side} side closed: {e}"),
        Err(e) => tracing::debug!("fault proxy: {side} side closed: {e}"),
        Ok(()) => {}
    }
}

struct Connection {
    answers: Mutex<Answers>,
}

/// The requests of one connection still owed an answer, oldest first, and the client's socket to answer on.
/// Whoever holds the lock writes to the client, so answers never interleave.
struct Answers {
    waiting: VecDeque<Waiting>,
    client: TcpStream,
}

struct Waiting {
    correlation_id: i32,
    /// `None` for an API newer than the crate: its answer is relayed untouched.
    api_key: Option<ApiKey>,
    api_version: i16,
    /// The proxy's own answer (an injected error), sent when every answer before it has gone.
    synthetic: Option<Bytes>,
    /// For an InitProducerId request: its transactional id, logged with the broker's answer.
    init_producer_id: Option<Option<String>>,
}

impl Answers {
    /// Sends the synthetic answers at the head of the queue: nothing forwarded is waiting before them.
    fn send_ready_synthetic(&mut self) -> io::Result<()> {
        while self.waiting.front().is_some_and(|w| w.synthetic.is_some()) {
            let frame = self.waiting.pop_front().and_then(|w| w.synthetic).expect("checked above");
            write_frame(&mut self.client, &frame)?;
        }
        Ok(())
    }
}

fn relay_requests(
    mut client: TcpStream,
    mut server: TcpStream,
    connection: &Connection,
    shared: &Shared,
) -> io::Result<()> {
    let result = (|| loop {
        let frame = read_frame(&mut client)?;
        let mut body = frame.clone();
        let (api_key, header) = wire::decode_request_header(&mut body)?;
        if let Some(client_id) = &header.client_id {
            shared.client_ids.lock().unwrap().insert(client_id.to_string());
        }
        let mut waiting = Waiting {
            correlation_id: header.correlation_id,
            api_key,
            api_version: header.request_api_version,
            synthetic: None,
            init_producer_id: None,
        };
        if api_key == Some(ApiKey::EndTxn) && shared.crash_at_end_txn.swap(false, Ordering::SeqCst) {
            shared.end_txn_cut.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(
                "fault proxy: kept EndTxn {} from the broker and cut every connection",
                header.correlation_id
            );
            shared.close_connections();
            return Ok(());
        }
        if api_key == Some(ApiKey::EndTxn)
            && let Some(code) = shared.end_txn_errors.lock().unwrap().pop_front()
        {
            shared.requests_failed.fetch_add(1, Ordering::SeqCst);
            tracing::debug!("fault proxy: answered EndTxn {} with error {code}", header.correlation_id);
            waiting.synthetic = Some(end_txn_error_response(&header, code)?);
            let mut answers = connection.answers.lock().unwrap();
            answers.waiting.push_back(waiting);
            answers.send_ready_synthetic()?;
            continue;
        }
        if let Some(api) = api_key.filter(|api| TRANSACTIONAL_APIS.contains(api)) {
            match read_transactional_request(api, body.clone(), header.request_api_version) {
                Ok(Logged::Now(entry)) => shared.transactions.lock().unwrap().push(entry),
                Ok(Logged::WithAnswer(transactional_id)) => waiting.init_producer_id = Some(transactional_id),
                Err(e) => {
                    tracing::warn!("fault proxy: relaying a {api:?} request it could not read: {e}");
                    shared.transactions.lock().unwrap().push(TxnRequest::Unreadable {
                        api: format!("{api:?}"),
                        version: header.request_api_version,
                        error: e.to_string(),
                    });
                }
            }
        }
        if api_key == Some(ApiKey::Produce) {
            shared.produce_requests.fetch_add(1, Ordering::SeqCst);
            let request = decode_produce_request(body, header.request_api_version)?;
            let error = shared.produce_errors.lock().unwrap().pop_front().filter(|code| *code != 0);
            if let Some(code) = error {
                shared.requests_failed.fetch_add(1, Ordering::SeqCst);
                tracing::debug!("fault proxy: answered produce request {} with error {code}", header.correlation_id);
                waiting.synthetic = Some(produce_error_response(&header, &request, code)?);
                let mut answers = connection.answers.lock().unwrap();
                answers.waiting.push_back(waiting);
                answers.send_ready_synthetic()?;
                continue;
            }
            if request.acks == 0 {
                // acks=0: the broker sends no answer, so none is waited for.
                write_frame(&mut server, &frame)?;
                continue;
            }
        }
        connection.answers.lock().unwrap().waiting.push_back(waiting);
        write_frame(&mut server, &frame)?;
    })();
    let _ = server.shutdown(Shutdown::Write);
    result
}

fn relay_responses(
    mut server: TcpStream,
    client: TcpStream,
    connection: &Connection,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let result = (|| loop {
        let mut frame = read_frame(&mut server)?;
        let correlation_id = wire::response_correlation_id(&frame)?;
        let (request, init_producer_id) = {
            let answers = connection.answers.lock().unwrap();
            let waiting = answers.waiting.iter().find(|w| w.correlation_id == correlation_id && w.synthetic.is_none());
            (waiting.map(|w| (w.api_key, w.api_version)), waiting.and_then(|w| w.init_producer_id.clone()))
        };
        // Clients learn of brokers at the address the proxy advertises for them.
        let advertise = |host: &str, port: i32| -> io::Result<(String, u16)> {
            Ok((shared.listen.host.clone(), listener_for(shared, host, port)?))
        };
        match request {
            Some((Some(ApiKey::Produce), _)) => {
                let lose = shared.acks_to_lose.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if lose.is_ok() {
                    shared.acks_lost.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!("fault proxy: lost the ack of produce request {correlation_id}");
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    return Ok(());
                }
                let delay = shared.ack_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    shared.acks_delayed.fetch_add(1, Ordering::SeqCst);
                    // This is the fault itself (a slow broker), not a wait for something to happen.
                    thread::sleep(Duration::from_millis(delay));
                }
            }
            Some((Some(ApiKey::Metadata), version)) => {
                frame = rewrite_metadata(frame, version, advertise)?;
                shared.metadata_rewritten.fetch_add(1, Ordering::SeqCst);
            }
            Some((Some(ApiKey::FindCoordinator), version)) => {
                frame = rewrite_find_coordinator(frame, version, advertise)?;
                shared.coordinators_rewritten.fetch_add(1, Ordering::SeqCst);
            }
            Some((Some(ApiKey::ApiVersions), version)) => frame = cap_api_versions(frame, version)?,
            Some((Some(ApiKey::InitProducerId), version)) => {
                let entry = init_producer_id_entry(frame.clone(), version, init_producer_id.unwrap_or_default())
                    .unwrap_or_else(|e| TxnRequest::Unreadable {
                        api: "InitProducerId".into(),
                        version,
                        error: e.to_string(),
                    });
                shared.transactions.lock().unwrap().push(entry);
            }
            _ => {}
        }
        let mut answers = connection.answers.lock().unwrap();
        answers.send_ready_synthetic()?;
        if let Some(at) = answers.waiting.iter().position(|w| w.correlation_id == correlation_id) {
            answers.waiting.remove(at);
        }
        write_frame(&mut answers.client, &frame)?;
        answers.send_ready_synthetic()?;
    })();
    let _ = client.shutdown(Shutdown::Write);
    result
}

/// Decodes the body of a Produce request (`body` starts after the header). Its record batches stay opaque bytes;
/// bytes after the body, if any, are the broker's business (the request goes to it unchanged).
fn decode_produce_request(mut body: Bytes, version: i16) -> io::Result<ProduceRequest> {
    ProduceRequest::decode(&mut body, version).map_err(|e| malformed(format!("Produce request v{version}: {e}")))
}

/// The answer a broker gives when it refuses every partition of `request` with `error_code`, at the version the
/// client asked for (with no offset: -1, as Kafka answers an error).
fn produce_error_response(header: &RequestHeader, request: &ProduceRequest, error_code: i16) -> io::Result<Bytes> {
    let mut response = ProduceResponse::default();
    for topic in &request.topic_data {
        // A topic is named up to version 12 and identified by id from 13: echo both, the version keeps its own.
        let mut answer = TopicProduceResponse::default().with_name(topic.name.clone()).with_topic_id(topic.topic_id);
        for partition in &topic.partition_data {
            answer.partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(partition.index)
                    .with_error_code(error_code)
                    .with_base_offset(-1),
            );
        }
        response.responses.push(answer);
    }
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    wire::encode_response(ApiKey::Produce, header.request_api_version, &response_header, &response, &[])
}

/// The proxy's own answer to an EndTxn request: `error_code`, at the request's version.
fn end_txn_error_response(header: &RequestHeader, error_code: i16) -> io::Result<Bytes> {
    let response = EndTxnResponse::default().with_error_code(error_code);
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    wire::encode_response(ApiKey::EndTxn, header.request_api_version, &response_header, &response, &[])
}

/// Rewrites the broker list of a Metadata response (`frame` is header and body) so each broker's address is the
/// one `advertise(host, port)` gives for it; every other field, and the response's version, stay as they were,
/// and bytes after the body are copied as they came.
pub(crate) fn rewrite_metadata(
    frame: Bytes,
    version: i16,
    mut advertise: impl FnMut(&str, i32) -> io::Result<(String, u16)>,
) -> io::Result<Bytes> {
    let (header, mut response, trailer) = wire::decode_response::<MetadataResponse>(frame, ApiKey::Metadata, version)?;
    for broker in &mut response.brokers {
        (broker.host, broker.port) = advertised(&mut advertise, &broker.host, broker.port)?;
    }
    wire::encode_response(ApiKey::Metadata, version, &header, &response, &trailer)
}

/// Rewrites the coordinator address(es) of a FindCoordinator response the way [`rewrite_metadata`] rewrites
/// brokers: the one coordinator up to version 3, each key's from version 4 (several keys in one request). An
/// answer without a coordinator (an error: empty host, port -1) is left as it is.
pub(crate) fn rewrite_find_coordinator(
    frame: Bytes,
    version: i16,
    mut advertise: impl FnMut(&str, i32) -> io::Result<(String, u16)>,
) -> io::Result<Bytes> {
    let (header, mut response, trailer) =
        wire::decode_response::<FindCoordinatorResponse>(frame, ApiKey::FindCoordinator, version)?;
    let has_coordinator = |host: &StrBytes, port: i32| !host.is_empty() && port >= 0;
    if has_coordinator(&response.host, response.port) {
        (response.host, response.port) = advertised(&mut advertise, &response.host, response.port)?;
    }
    for coordinator in &mut response.coordinators {
        if has_coordinator(&coordinator.host, coordinator.port) {
            (coordinator.host, coordinator.port) = advertised(&mut advertise, &coordinator.host, coordinator.port)?;
        }
    }
    wire::encode_response(ApiKey::FindCoordinator, version, &header, &response, &trailer)
}

fn advertised(
    advertise: &mut impl FnMut(&str, i32) -> io::Result<(String, u16)>,
    host: &StrBytes,
    port: i32,
) -> io::Result<(StrBytes, i32)> {
    let (host, port) = advertise(host.as_str(), port)?;
    Ok((StrBytes::from_string(host), i32::from(port)))
}

/// Lowers the newest version a broker offers for the APIs the proxy decodes (Produce, Metadata, FindCoordinator
/// and the transactional ones) to the newest the crate knows: a client uses the newest version both sides offer, and one the proxy could not
/// read would cost the client its connection (a broker newer than the crate). Other APIs are relayed as they
/// are, so their versions stay the broker's.
pub(crate) fn cap_api_versions(frame: Bytes, version: i16) -> io::Result<Bytes> {
    // A broker answers an ApiVersions version it does not know with UNSUPPORTED_VERSION, encoded at version 0
    // whatever was asked, and the client retries with an older one: an error answer (the error code follows the
    // 4-byte correlation id, ApiVersions answers always having response header version 0), or one newer than the
    // crate, is relayed as it is.
    let error_code = frame.get(4..6).map(|code| i16::from_be_bytes([code[0], code[1]]));
    if version > ApiVersionsResponse::VERSIONS.max || error_code != Some(0) {
        return Ok(frame);
    }
    let (header, mut response, trailer) =
        wire::decode_response::<ApiVersionsResponse>(frame, ApiKey::ApiVersions, version)?;
    for api in &mut response.api_keys {
        if let Ok(key @ (ApiKey::Produce | ApiKey::Metadata | ApiKey::FindCoordinator)) = ApiKey::try_from(api.api_key)
        {
            api.max_version = api.max_version.min(key.valid_versions().max);
        } else if let Some(max) = ApiKey::try_from(api.api_key).ok().and_then(transactional_max_version) {
            api.max_version = api.max_version.min(max);
        }
    }
    wire::encode_response(ApiKey::ApiVersions, version, &header, &response, &trailer)
}

/// The transactional APIs the proxy reads and logs.
const TRANSACTIONAL_APIS: [ApiKey; 5] = [
    ApiKey::InitProducerId,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::EndTxn,
];

/// The newest version of a transactional API whose request *and* answer the crate decodes. The two can differ
/// (kafka-protocol 0.18 knows InitProducerId answers up to v6 and requests up to v5), and the proxy reads both.
pub(crate) fn transactional_max_version(api: ApiKey) -> Option<i16> {
    let max = match api {
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS.max.min(InitProducerIdResponse::VERSIONS.max),
        ApiKey::AddPartitionsToTxn => {
            AddPartitionsToTxnRequest::VERSIONS.max.min(AddPartitionsToTxnResponse::VERSIONS.max)
        }
        ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::VERSIONS.max.min(AddOffsetsToTxnResponse::VERSIONS.max),
        ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::VERSIONS.max.min(TxnOffsetCommitResponse::VERSIONS.max),
        ApiKey::EndTxn => EndTxnRequest::VERSIONS.max.min(EndTxnResponse::VERSIONS.max),
        _ => return None,
    };
    Some(max)
}

/// What reading a transactional request gives: an entry for the log now, or (InitProducerId) the transactional
/// id, logged once the broker's answer says which producer id and epoch it gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Logged {
    Now(TxnRequest),
    WithAnswer(Option<String>),
}

/// Decodes the body of a transactional request (`body` starts after the header) into what the log keeps.
pub(crate) fn read_transactional_request(api: ApiKey, mut body: Bytes, version: i16) -> io::Result<Logged> {
    fn decode<M: Decodable>(body: &mut Bytes, api: ApiKey, version: i16) -> io::Result<M> {
        M::decode(body, version).map_err(|e| malformed(format!("{api:?} request v{version}: {e}")))
    }
    let text = |s: &StrBytes| s.to_string();
    let entry = match api {
        ApiKey::InitProducerId => {
            let request: InitProducerIdRequest = decode(&mut body, api, version)?;
            return Ok(Logged::WithAnswer(request.transactional_id.map(|id| text(&id.0))));
        }
        ApiKey::AddPartitionsToTxn => {
            let request: AddPartitionsToTxnRequest = decode(&mut body, api, version)?;
            // Clients send versions 0 to 3, one transaction per request; from 4 the request batches
            // transactions (brokers verifying them for each other). Either shape is read; a batch is logged
            // per transaction.
            if version <= 3 {
                let partitions = request
                    .v3_and_below_topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (text(&t.name.0), *p)))
                    .collect();
                TxnRequest::AddPartitionsToTxn {
                    transactional_id: text(&request.v3_and_below_transactional_id.0),
                    producer_id: request.v3_and_below_producer_id.0,
                    producer_epoch: request.v3_and_below_producer_epoch,
                    partitions,
                }
            } else {
                let mut entries = request.transactions.iter().map(|txn| TxnRequest::AddPartitionsToTxn {
                    transactional_id: text(&txn.transactional_id.0),
                    producer_id: txn.producer_id.0,
                    producer_epoch: txn.producer_epoch,
                    partitions: txn
                        .topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(move |p| (text(&t.name.0), *p)))
                        .collect(),
                });
                // A client's request names one transaction.
                entries.next().ok_or_else(|| malformed(format!("{api:?} request v{version} names no transaction")))?
            }
        }
        ApiKey::AddOffsetsToTxn => {
            let request: AddOffsetsToTxnRequest = decode(&mut body, api, version)?;
            TxnRequest::AddOffsetsToTxn {
                transactional_id: text(&request.transactional_id.0),
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
                group: text(&request.group_id.0),
            }
        }
        ApiKey::TxnOffsetCommit => {
            let request: TxnOffsetCommitRequest = decode(&mut body, api, version)?;
            let offsets = request
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| (text(&t.name.0), p.partition_index, p.committed_offset))
                })
                .collect();
            TxnRequest::TxnOffsetCommit {
                transactional_id: text(&request.transactional_id.0),
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
                group: text(&request.group_id.0),
                offsets,
            }
        }
        ApiKey::EndTxn => {
            let request: EndTxnRequest = decode(&mut body, api, version)?;
            TxnRequest::EndTxn {
                transactional_id: text(&request.transactional_id.0),
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
                committed: request.committed,
            }
        }
        _ => return Err(malformed(format!("{api:?} is not a transactional request"))),
    };
    Ok(Logged::Now(entry))
}

/// The log entry for an InitProducerId answer (`frame` is header and body) to a request for `transactional_id`.
pub(crate) fn init_producer_id_entry(
    frame: Bytes,
    version: i16,
    transactional_id: Option<String>,
) -> io::Result<TxnRequest> {
    let (_, response, _) = wire::decode_response::<InitProducerIdResponse>(frame, ApiKey::InitProducerId, version)?;
    Ok(TxnRequest::InitProducerId {
        transactional_id,
        producer_id: response.producer_id.0,
        producer_epoch: response.producer_epoch,
        error_code: response.error_code,
    })
}

#[cfg(test)]
mod tests;
