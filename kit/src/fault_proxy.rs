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
//!   batch that skips ahead for an idempotent one to lose nothing.
//!
//! Metadata and FindCoordinator responses are parsed and their broker addresses rewritten the same way (a
//! transactional producer or a group member learns its coordinator's address from FindCoordinator, and would
//! otherwise go around the proxy from then on); the rest of each is copied byte for byte. Produce requests are
//! parsed too (topics and partitions, to answer them with an error). Responses go back in the order the
//! requests came, the synthetic ones included, as a broker would send them. Blocking sockets on plain threads
//! keep it independent of whichever async runtime the test uses.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rdkafka::types::RDKafkaRespErr;

/// Kafka API keys the proxy looks at (the protocol's numbering).
const API_PRODUCE: i16 = 0;
const API_METADATA: i16 = 3;
const API_FIND_COORDINATOR: i16 = 10;
/// Metadata responses switch to the compact ("flexible") encoding at version 9, Produce at version 9 too.
const METADATA_FIRST_FLEXIBLE: i16 = 9;
const PRODUCE_FIRST_FLEXIBLE: i16 = 9;
/// FindCoordinator goes flexible at version 3 and answers for a list of keys from version 4.
const FIND_COORDINATOR_FIRST_FLEXIBLE: i16 = 3;
const FIND_COORDINATOR_FIRST_BATCHED: i16 = 4;
/// A frame larger than this is not Kafka talking (the broker's own default limit is 100 MiB).
const MAX_FRAME: usize = 128 * 1024 * 1024;

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
}

/// A running proxy. Dropping it closes its listeners and every connection through it.
pub struct FaultProxy {
    shared: Arc<Shared>,
    bootstrap: String,
}

struct Shared {
    /// Upstream `host:port` → the local port of the listener that relays to it.
    listeners: Mutex<HashMap<String, u16>>,
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
}

impl FaultProxy {
    /// Starts a proxy in front of the first broker of `upstream_bootstrap` (`host:port[,host:port…]`).
    pub fn start(upstream_bootstrap: &str) -> io::Result<FaultProxy> {
        let first = upstream_bootstrap.split(',').next().unwrap_or_default().trim();
        if first.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy needs host:port, got {upstream_bootstrap:?}"),
            ));
        }
        let shared = Arc::new(Shared {
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
        });
        let port = listener_for(&shared, first)?;
        Ok(FaultProxy { shared, bootstrap: format!("127.0.0.1:{port}") })
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
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Each accept loop is blocked in `accept`: one connection wakes it to see `closed`.
        for port in self.shared.listeners.lock().unwrap().values() {
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
    }
}

/// The local port relaying to `upstream`, binding a new listener the first time an address is seen.
fn listener_for(shared: &Arc<Shared>, upstream: &str) -> io::Result<u16> {
    let mut listeners = shared.listeners.lock().unwrap();
    if let Some(port) = listeners.get(upstream) {
        return Ok(*port);
    }
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    listeners.insert(upstream.to_string(), port);
    let (shared, upstream) = (Arc::clone(shared), upstream.to_string());
    thread::Builder::new().name(format!("fault-proxy-{port}")).spawn(move || accept_all(listener, upstream, shared))?;
    Ok(port)
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
    api_key: i16,
    api_version: i16,
    /// The proxy's own answer (an injected error), sent when every answer before it has gone.
    synthetic: Option<Vec<u8>>,
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
        let header = RequestHeader::parse(&frame)?;
        let mut waiting = Waiting {
            correlation_id: header.correlation_id,
            api_key: header.api_key,
            api_version: header.api_version,
            synthetic: None,
        };
        if header.api_key == API_PRODUCE {
            shared.produce_requests.fetch_add(1, Ordering::SeqCst);
            // A request the proxy cannot read is still forwarded: only the faults need its contents.
            let request = ProduceRequest::parse(&frame)
                .inspect_err(|e| tracing::warn!("fault proxy: produce request v{}: {e}", header.api_version))
                .ok();
            if let Some(request) = &request {
                let error = shared.produce_errors.lock().unwrap().pop_front().filter(|code| *code != 0);
                if let Some(code) = error {
                    shared.requests_failed.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(
                        "fault proxy: answered produce request {} with error {code}",
                        request.correlation_id
                    );
                    waiting.synthetic = Some(request.error_response(code));
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
        let correlation_id = Cursor::new(&frame).i32()?;
        let request = {
            let answers = connection.answers.lock().unwrap();
            answers
                .waiting
                .iter()
                .find(|w| w.correlation_id == correlation_id && w.synthetic.is_none())
                .map(|w| (w.api_key, w.api_version))
        };
        match request {
            Some((API_PRODUCE, _)) => {
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
            Some((API_METADATA, version)) => {
                frame =
                    rewrite_metadata(&frame, version, |host, port| listener_for(shared, &format!("{host}:{port}")))?;
                shared.metadata_rewritten.fetch_add(1, Ordering::SeqCst);
            }
            Some((API_FIND_COORDINATOR, version)) => {
                frame = rewrite_find_coordinator(&frame, version, |host, port| {
                    listener_for(shared, &format!("{host}:{port}"))
                })?;
                shared.coordinators_rewritten.fetch_add(1, Ordering::SeqCst);
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

/// What the proxy needs of a Produce request to answer it itself: its version, acks, and the partitions of
/// each topic it writes to.
struct ProduceRequest {
    correlation_id: i32,
    version: i16,
    acks: i16,
    topics: Vec<(String, Vec<i32>)>,
}

impl ProduceRequest {
    fn parse(frame: &[u8]) -> io::Result<ProduceRequest> {
        let mut cursor = Cursor::new(frame);
        let (_api_key, version, correlation_id) = (cursor.i16()?, cursor.i16()?, cursor.i32()?);
        let flexible = version >= PRODUCE_FIRST_FLEXIBLE;
        cursor.string(false)?; // client_id: a classic string in every request header version
        if flexible {
            cursor.skip_tagged_fields()?;
        }
        if version >= 3 {
            cursor.string(flexible)?; // transactional_id
        }
        let acks = cursor.i16()?;
        cursor.i32()?; // timeout_ms
        let mut topics = Vec::new();
        for _ in 0..cursor.len(flexible)?.unwrap_or(0) {
            let name = cursor.string(flexible)?.ok_or_else(|| invalid("null topic name"))?;
            let mut partitions = Vec::new();
            for _ in 0..cursor.len(flexible)?.unwrap_or(0) {
                partitions.push(cursor.i32()?);
                let records = if flexible { cursor.compact_len()? } else { cursor.array_len()? };
                cursor.take(records.unwrap_or(0))?;
                if flexible {
                    cursor.skip_tagged_fields()?;
                }
            }
            if flexible {
                cursor.skip_tagged_fields()?;
            }
            topics.push((name, partitions));
        }
        Ok(ProduceRequest { correlation_id, version, acks, topics })
    }

    /// The answer a broker gives when it refuses the whole request with `error_code`.
    fn error_response(&self, error_code: i16) -> Vec<u8> {
        let (version, flexible) = (self.version, self.version >= PRODUCE_FIRST_FLEXIBLE);
        let mut out = self.correlation_id.to_be_bytes().to_vec();
        if flexible {
            put_uvarint(&mut out, 0); // response header v1: no tagged fields
        }
        put_len(&mut out, Some(self.topics.len()), flexible);
        for (name, partitions) in &self.topics {
            put_string(&mut out, Some(name), flexible);
            put_len(&mut out, Some(partitions.len()), flexible);
            for partition in partitions {
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&error_code.to_be_bytes());
                out.extend_from_slice(&(-1i64).to_be_bytes()); // base_offset
                if version >= 2 {
                    out.extend_from_slice(&(-1i64).to_be_bytes()); // log_append_time_ms
                }
                if version >= 5 {
                    out.extend_from_slice(&(-1i64).to_be_bytes()); // log_start_offset
                }
                if version >= 8 {
                    put_len(&mut out, Some(0), flexible); // record_errors
                    put_string(&mut out, None, flexible); // error_message
                }
                if flexible {
                    put_uvarint(&mut out, 0);
                }
            }
            if flexible {
                put_uvarint(&mut out, 0);
            }
        }
        if version >= 1 {
            out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        }
        if flexible {
            put_uvarint(&mut out, 0);
        }
        out
    }
}

struct RequestHeader {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
}

impl RequestHeader {
    fn parse(frame: &[u8]) -> io::Result<RequestHeader> {
        let mut cursor = Cursor::new(frame);
        Ok(RequestHeader { api_key: cursor.i16()?, api_version: cursor.i16()?, correlation_id: cursor.i32()? })
    }
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FRAME).ok_or_else(|| invalid("frame size"))?;
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)
}

/// Rewrites the broker list of a Metadata response (`frame` starts at the correlation id) so each broker's
/// address is `127.0.0.1:<port>`, the port coming from `relay_port(host, port)`. Everything after the broker
/// list is copied unchanged.
pub(crate) fn rewrite_metadata(
    frame: &[u8],
    version: i16,
    mut relay_port: impl FnMut(&str, i32) -> io::Result<u16>,
) -> io::Result<Vec<u8>> {
    let flexible = version >= METADATA_FIRST_FLEXIBLE;
    let mut cursor = Cursor::new(frame);
    let mut out = Vec::with_capacity(frame.len() + 64);
    out.extend_from_slice(cursor.take(4)?); // correlation id
    if flexible {
        cursor.copy_tagged_fields(&mut out)?; // response header v1
    }
    if version >= 3 {
        out.extend_from_slice(cursor.take(4)?); // throttle_time_ms
    }
    let brokers = if flexible { cursor.compact_len()? } else { cursor.array_len()? };
    put_len(&mut out, brokers, flexible);
    for _ in 0..brokers.unwrap_or(0) {
        out.extend_from_slice(cursor.take(4)?); // node_id
        let host = cursor.string(flexible)?.ok_or_else(|| invalid("null broker host"))?;
        let port = cursor.i32()?;
        let local = relay_port(&host, port)?;
        put_string(&mut out, Some("127.0.0.1"), flexible);
        out.extend_from_slice(&i32::from(local).to_be_bytes());
        if version >= 1 {
            let rack = cursor.string(flexible)?;
            put_string(&mut out, rack.as_deref(), flexible);
        }
        if flexible {
            cursor.copy_tagged_fields(&mut out)?;
        }
    }
    out.extend_from_slice(cursor.rest());
    Ok(out)
}

/// Rewrites the coordinator address(es) of a FindCoordinator response the way [`rewrite_metadata`] rewrites
/// brokers. An error answer (no coordinator yet: empty host, port -1) is left as it is.
pub(crate) fn rewrite_find_coordinator(
    frame: &[u8],
    version: i16,
    mut relay_port: impl FnMut(&str, i32) -> io::Result<u16>,
) -> io::Result<Vec<u8>> {
    let flexible = version >= FIND_COORDINATOR_FIRST_FLEXIBLE;
    let mut cursor = Cursor::new(frame);
    let mut out = Vec::with_capacity(frame.len() + 32);
    out.extend_from_slice(cursor.take(4)?); // correlation id
    if flexible {
        cursor.copy_tagged_fields(&mut out)?;
    }
    if version >= 1 {
        out.extend_from_slice(cursor.take(4)?); // throttle_time_ms
    }
    // node_id, host and port, rewritten unless the answer carries no coordinator.
    let mut address = |cursor: &mut Cursor, out: &mut Vec<u8>| -> io::Result<()> {
        out.extend_from_slice(cursor.take(4)?); // node_id
        let host = cursor.string(flexible)?;
        let port = cursor.i32()?;
        match host {
            Some(host) if !host.is_empty() && port >= 0 => {
                let local = relay_port(&host, port)?;
                put_string(out, Some("127.0.0.1"), flexible);
                out.extend_from_slice(&i32::from(local).to_be_bytes());
            }
            host => {
                put_string(out, host.as_deref(), flexible);
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        Ok(())
    };
    if version >= FIND_COORDINATOR_FIRST_BATCHED {
        let coordinators = cursor.compact_len()?;
        put_len(&mut out, coordinators, true);
        for _ in 0..coordinators.unwrap_or(0) {
            let key = cursor.string(true)?;
            put_string(&mut out, key.as_deref(), true);
            address(&mut cursor, &mut out)?;
            out.extend_from_slice(cursor.take(2)?); // error_code
            let message = cursor.string(true)?;
            put_string(&mut out, message.as_deref(), true);
            cursor.copy_tagged_fields(&mut out)?;
        }
    } else {
        out.extend_from_slice(cursor.take(2)?); // error_code
        if version >= 1 {
            let message = cursor.string(flexible)?;
            put_string(&mut out, message.as_deref(), flexible);
        }
        address(&mut cursor, &mut out)?;
    }
    out.extend_from_slice(cursor.rest());
    Ok(out)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("fault proxy: malformed Kafka frame ({what})"))
}

/// Reads the protocol's big-endian integers, strings and varints from a frame.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| invalid("too short"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn uvarint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("varint too long"))
    }

    /// A classic array length: int32, -1 for null.
    fn array_len(&mut self) -> io::Result<Option<usize>> {
        let n = self.i32()?;
        Ok(usize::try_from(n).ok())
    }

    /// A compact length: unsigned varint of length + 1, 0 for null.
    fn compact_len(&mut self) -> io::Result<Option<usize>> {
        let n = self.uvarint()?;
        Ok(n.checked_sub(1).map(|n| n as usize))
    }

    fn string(&mut self, compact: bool) -> io::Result<Option<String>> {
        let len = if compact { self.compact_len()? } else { usize::try_from(self.i16()?).ok() };
        match len {
            None => Ok(None),
            Some(len) => {
                let bytes = self.take(len)?;
                String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| invalid("string is not UTF-8"))
            }
        }
    }

    fn len(&mut self, compact: bool) -> io::Result<Option<usize>> {
        if compact { self.compact_len() } else { self.array_len() }
    }

    fn skip_tagged_fields(&mut self) -> io::Result<()> {
        self.copy_tagged_fields(&mut Vec::new())
    }

    /// Copies a tagged-field section (count, then tag + size + bytes each) as it is.
    fn copy_tagged_fields(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let start = self.at;
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        out.extend_from_slice(&self.bytes[start..self.at]);
        Ok(())
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len(out: &mut Vec<u8>, len: Option<usize>, compact: bool) {
    match (len, compact) {
        (None, true) => put_uvarint(out, 0),
        (Some(n), true) => put_uvarint(out, n as u64 + 1),
        (None, false) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        (Some(n), false) => out.extend_from_slice(&(n as i32).to_be_bytes()),
    }
}

fn put_string(out: &mut Vec<u8>, value: Option<&str>, compact: bool) {
    match (value, compact) {
        (None, true) => put_uvarint(out, 0),
        (Some(s), true) => {
            put_uvarint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
        (None, false) => out.extend_from_slice(&(-1i16).to_be_bytes()),
        (Some(s), false) => {
            out.extend_from_slice(&(s.len() as i16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata response with two brokers, encoded by hand for `version`, followed by a stand-in tail.
    fn metadata_frame(version: i16, brokers: &[(i32, &str, i32, Option<&str>)]) -> Vec<u8> {
        let flexible = version >= METADATA_FIRST_FLEXIBLE;
        let mut out = 42i32.to_be_bytes().to_vec();
        if flexible {
            put_uvarint(&mut out, 0);
        }
        if version >= 3 {
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        put_len(&mut out, Some(brokers.len()), flexible);
        for (id, host, port, rack) in brokers {
            out.extend_from_slice(&id.to_be_bytes());
            put_string(&mut out, Some(host), flexible);
            out.extend_from_slice(&port.to_be_bytes());
            if version >= 1 {
                put_string(&mut out, *rack, flexible);
            }
            if flexible {
                // One tagged field, to prove they are carried over.
                put_uvarint(&mut out, 1);
                put_uvarint(&mut out, 7);
                put_uvarint(&mut out, 2);
                out.extend_from_slice(b"ok");
            }
        }
        out.extend_from_slice(b"TAIL");
        out
    }

    fn rewritten(version: i16) -> (Vec<u8>, Vec<(String, i32)>) {
        let original =
            metadata_frame(version, &[(1, "kafka-a.internal", 9092, Some("r1")), (2, "10.0.0.7", 9093, None)]);
        let mut seen = Vec::new();
        let out = rewrite_metadata(&original, version, |host, port| {
            seen.push((host.to_string(), port));
            Ok(40000 + seen.len() as u16)
        })
        .unwrap();
        (out, seen)
    }

    #[test]
    fn classic_and_flexible_metadata_point_every_broker_at_the_proxy() {
        for version in [0, 1, 3, 8, 9, 12] {
            let (out, seen) = rewritten(version);
            assert_eq!(seen, [("kafka-a.internal".to_string(), 9092), ("10.0.0.7".to_string(), 9093)], "v{version}");
            let rack = if version >= 1 { [Some("r1"), None] } else { [None, None] };
            let expected =
                metadata_frame(version, &[(1, "127.0.0.1", 40001, rack[0]), (2, "127.0.0.1", 40002, rack[1])]);
            assert_eq!(out, expected, "metadata v{version} rewritten, the rest copied unchanged");
        }
    }

    /// A FindCoordinator response for `version` naming `host:port`, encoded by hand.
    fn coordinator_frame(version: i16, host: &str, port: i32) -> Vec<u8> {
        let flexible = version >= FIND_COORDINATOR_FIRST_FLEXIBLE;
        let mut out = 9i32.to_be_bytes().to_vec();
        if flexible {
            put_uvarint(&mut out, 0);
        }
        if version >= 1 {
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        let address = |out: &mut Vec<u8>| {
            out.extend_from_slice(&2i32.to_be_bytes());
            put_string(out, Some(host), flexible);
            out.extend_from_slice(&port.to_be_bytes());
        };
        if version >= FIND_COORDINATOR_FIRST_BATCHED {
            put_len(&mut out, Some(1), true);
            put_string(&mut out, Some("my-transactional-id"), true);
            address(&mut out);
            out.extend_from_slice(&0i16.to_be_bytes());
            put_string(&mut out, None, true);
            put_uvarint(&mut out, 0);
        } else {
            out.extend_from_slice(&0i16.to_be_bytes());
            if version >= 1 {
                put_string(&mut out, Some("ok"), flexible);
            }
            address(&mut out);
        }
        if flexible {
            put_uvarint(&mut out, 0);
        }
        out
    }

    #[test]
    fn coordinators_point_at_the_proxy_in_every_version() {
        for version in [0, 1, 2, 3, 4, 6] {
            let mut seen = Vec::new();
            let out = rewrite_find_coordinator(&coordinator_frame(version, "kafka-b", 9093), version, |host, port| {
                seen.push((host.to_string(), port));
                Ok(40_002)
            })
            .unwrap();
            assert_eq!(seen, [("kafka-b".to_string(), 9093)], "v{version}");
            assert_eq!(out, coordinator_frame(version, "127.0.0.1", 40_002), "v{version}");
            // No coordinator yet (an error answer): nothing to relay, the answer passes unchanged.
            let none = coordinator_frame(version, "", -1);
            assert_eq!(rewrite_find_coordinator(&none, version, |_, _| panic!("no relay")).unwrap(), none);
        }
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_panic() {
        let frame = metadata_frame(12, &[(1, "kafka", 9092, None)]);
        let cut = &frame[..frame.len() - 20];
        assert!(rewrite_metadata(cut, 12, |_, _| Ok(1)).is_err());
    }

    /// A Produce request for `version` writing to partitions 0 and 2 of `clicks`, encoded by hand.
    fn produce_request(version: i16, acks: i16) -> Vec<u8> {
        let flexible = version >= PRODUCE_FIRST_FLEXIBLE;
        let mut out = Vec::new();
        out.extend_from_slice(&API_PRODUCE.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7i32.to_be_bytes());
        put_string(&mut out, Some("rdkafka"), false);
        if flexible {
            put_uvarint(&mut out, 0);
        }
        if version >= 3 {
            put_string(&mut out, None, flexible);
        }
        out.extend_from_slice(&acks.to_be_bytes());
        out.extend_from_slice(&30_000i32.to_be_bytes());
        put_len(&mut out, Some(1), flexible);
        put_string(&mut out, Some("clicks"), flexible);
        put_len(&mut out, Some(2), flexible);
        for partition in [0i32, 2] {
            out.extend_from_slice(&partition.to_be_bytes());
            let records = b"batch-bytes";
            put_len(&mut out, Some(records.len()), flexible);
            out.extend_from_slice(records);
            if flexible {
                put_uvarint(&mut out, 0);
            }
        }
        if flexible {
            put_uvarint(&mut out, 0);
            put_uvarint(&mut out, 0);
        }
        out
    }

    #[test]
    fn a_produce_request_is_answered_with_the_error_for_each_partition() {
        for version in [3, 7, 8, 9, 10] {
            let request = ProduceRequest::parse(&produce_request(version, -1)).unwrap();
            assert_eq!((request.correlation_id, request.acks), (7, -1), "v{version}");
            assert_eq!(request.topics, [("clicks".to_string(), vec![0, 2])], "v{version}");

            let flexible = version >= PRODUCE_FIRST_FLEXIBLE;
            let response = request.error_response(6);
            let mut cursor = Cursor::new(&response);
            assert_eq!(cursor.i32().unwrap(), 7, "the correlation id comes first");
            if flexible {
                cursor.skip_tagged_fields().unwrap();
            }
            assert_eq!(cursor.len(flexible).unwrap(), Some(1));
            assert_eq!(cursor.string(flexible).unwrap().as_deref(), Some("clicks"));
            assert_eq!(cursor.len(flexible).unwrap(), Some(2));
            for expected in [0, 2] {
                assert_eq!(cursor.i32().unwrap(), expected, "partition index");
                assert_eq!(cursor.i16().unwrap(), 6, "error code");
                let offsets = if version >= 5 { 3 } else { 2 };
                for _ in 0..offsets {
                    assert_eq!(cursor.take(8).unwrap(), (-1i64).to_be_bytes());
                }
                if version >= 8 {
                    assert_eq!(cursor.len(flexible).unwrap(), Some(0), "no record errors");
                    assert_eq!(cursor.string(flexible).unwrap(), None, "no error message");
                }
                if flexible {
                    cursor.skip_tagged_fields().unwrap();
                }
            }
            if flexible {
                cursor.skip_tagged_fields().unwrap();
            }
            assert_eq!(cursor.i32().unwrap(), 0, "throttle time");
            if flexible {
                cursor.skip_tagged_fields().unwrap();
            }
            assert!(cursor.rest().is_empty(), "v{version}: nothing after the response");
        }
        assert_eq!(ProduceRequest::parse(&produce_request(7, 0)).unwrap().acks, 0);
    }

    #[test]
    fn varints_round_trip() {
        for value in [0u64, 1, 127, 128, 300, 16_384, u32::MAX as u64] {
            let mut out = Vec::new();
            put_uvarint(&mut out, value);
            assert_eq!(Cursor::new(&out).uvarint().unwrap(), value);
        }
    }
}
