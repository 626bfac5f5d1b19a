//! Kafka's wire format for the code that speaks it without librdkafka: frames (a 4-byte size, then a header and a
//! body) encoded and decoded with the `kafka-protocol` crate, and [`metadata_brokers`], a blocking probe that asks
//! a broker which brokers its cluster has.
//!
//! [`crate::jvm_kafka`] waits for its nodes with that probe and [`crate::fault_proxy`] reads and rewrites frames
//! with the helpers here. Neither needs librdkafka for it, so this module must not use rdkafka: a start-up check
//! then costs a socket, not a client with its threads, and it compiles where rdkafka is left out.
//!
//! Everything read here comes from a peer and may be cut short or be no Kafka at all: every decoding error is an
//! `io::Error` of kind `InvalidData`, never a panic. One limit is the crate's: an array length is taken at its
//! word and its capacity allocated before the elements are read, so a frame claiming billions of elements makes
//! the allocator abort the process (kafka-protocol-rs pull requests 152, 161 and 200 bound it; 0.18 does not).
//! The frames decoded here come from the workbook's own clients and brokers on loopback, which send none, and
//! the proxy decodes an answer only when its correlation id is that of a request it waits on, so bytes from a
//! peer that is no Kafka at all are relayed, not decoded.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A frame larger than this is not Kafka talking (the broker's own default limit is 100 MiB).
pub(crate) const MAX_FRAME: usize = 128 * 1024 * 1024;

/// The Metadata version the probe asks with. It sends no ApiVersions request first, so the version must be one
/// every broker the workbook runs serves: Apache Kafka 4.x serves 4 to 13 (4.0 dropped 0 to 3, KIP-896) and
/// librdkafka 2.12's mock cluster 0 to 12.
pub const PROBE_METADATA_VERSION: i16 = 12;

/// An error for a frame that is not what Kafka's protocol says it should be.
pub(crate) fn malformed(what: impl Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed Kafka frame: {what}"))
}

/// Reads one frame, without its size prefix.
pub(crate) fn read_frame(stream: &mut impl Read) -> io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| *size <= MAX_FRAME)
        .ok_or_else(|| malformed(format!("a frame of {size} bytes")))?;
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// Writes `frame` behind its size prefix, in one write so that a frame is never split by another writer's.
pub(crate) fn write_frame(stream: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    let size = i32::try_from(frame.len()).map_err(|_| malformed(format!("a frame of {} bytes", frame.len())))?;
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)
}

/// Decodes a request's header and leaves `frame` at the body. The API key and version open every header
/// version, and they say which header version follows ([`ApiKey::request_header_version`]). An API key this
/// crate does not know (one newer than it) is read as header version 1, whose fields (key, version, correlation
/// id, client id) open every later version too: enough to relay the request and match its answer. Returns the
/// API, if known, and the header.
#[cfg(feature = "clients")] // the proxy's half (kit::fault_proxy)
pub(crate) fn decode_request_header(frame: &mut Bytes) -> io::Result<(Option<ApiKey>, RequestHeader)> {
    let [key_high, key_low, version_high, version_low, ..] = frame[..] else {
        return Err(malformed(format!("a request of {} bytes has no header", frame.len())));
    };
    let api_key = ApiKey::try_from(i16::from_be_bytes([key_high, key_low])).ok();
    let version = i16::from_be_bytes([version_high, version_low]);
    let header_version = api_key.map_or(1, |key| key.request_header_version(version));
    let header = RequestHeader::decode(frame, header_version).map_err(|e| malformed(format!("request header: {e}")))?;
    Ok((api_key, header))
}

/// The correlation id that opens every response, whatever its API: response header version 0 is that id alone,
/// and later versions only add to it.
#[cfg(feature = "clients")] // the proxy's half (kit::fault_proxy)
pub(crate) fn response_correlation_id(frame: &Bytes) -> io::Result<i32> {
    let header =
        ResponseHeader::decode(&mut frame.clone(), 0).map_err(|e| malformed(format!("response header: {e}")))?;
    Ok(header.correlation_id)
}

/// Decodes a response to `api` at `version`: its header, its body, and whatever bytes follow the body, which
/// the schema of that version does not have. Clients ignore such bytes, and there are some: librdkafka's mock
/// cluster ends each flexible Metadata answer with one more (empty) tagged-field section than the schema has.
pub(crate) fn decode_response<M: Decodable>(
    mut frame: Bytes,
    api: ApiKey,
    version: i16,
) -> io::Result<(ResponseHeader, M, Bytes)> {
    let context = |e: anyhow::Error| malformed(format!("{api:?} response v{version}: {e}"));
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).map_err(context)?;
    let body = M::decode(&mut frame, version).map_err(context)?;
    Ok((header, body, frame))
}

/// Encodes a response to `api` at `version` (header and body, without the size prefix), followed by `trailer`
/// (bytes after the body, as [`decode_response`] returns them; empty for a response of one's own).
#[cfg(feature = "clients")] // the proxy's half (kit::fault_proxy)
pub(crate) fn encode_response<M: Encodable>(
    api: ApiKey,
    version: i16,
    header: &ResponseHeader,
    body: &M,
    trailer: &[u8],
) -> io::Result<Bytes> {
    let context = |e: anyhow::Error| malformed(format!("encoding a {api:?} response v{version}: {e}"));
    let mut out = Vec::new();
    header.encode(&mut out, api.response_header_version(version)).map_err(context)?;
    body.encode(&mut out, version).map_err(context)?;
    out.extend_from_slice(trailer);
    Ok(Bytes::from(out))
}

/// Encodes a request (header and body, without the size prefix); the header names its API and version.
pub(crate) fn encode_request<M: Encodable>(api: ApiKey, header: &RequestHeader, body: &M) -> io::Result<Vec<u8>> {
    let version = header.request_api_version;
    let context = |e: anyhow::Error| malformed(format!("encoding a {api:?} request v{version}: {e}"));
    let mut out = Vec::new();
    header.encode(&mut out, api.request_header_version(version)).map_err(context)?;
    body.encode(&mut out, version).map_err(context)?;
    Ok(out)
}

/// A broker as its cluster advertises it in Metadata: where clients connect to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// Asks the brokers of `bootstrap_servers` (`host:port[,host:port…]`), in turn until one answers, which brokers
/// their cluster has, with a Metadata request for no topic at [`PROBE_METADATA_VERSION`]. Blocking; connecting,
/// sending and each read wait at most what is left of `timeout`. The error names every address that failed.
pub fn metadata_brokers(bootstrap_servers: &str, timeout: Duration) -> io::Result<Vec<AdvertisedBroker>> {
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    for address in bootstrap_servers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match probe(address, deadline) {
            Ok(brokers) => return Ok(brokers),
            Err(e) => failures.push((address, e)),
        }
    }
    let kind = failures.last().map_or(io::ErrorKind::InvalidInput, |(_, e)| e.kind());
    let reasons: Vec<String> = failures.iter().map(|(address, e)| format!("{address}: {e}")).collect();
    Err(io::Error::new(
        kind,
        if reasons.is_empty() {
            format!("no broker address in {bootstrap_servers:?}")
        } else {
            format!("no Metadata answer ({})", reasons.join("; "))
        },
    ))
}

/// One Metadata round trip with one broker.
fn probe(address: &str, deadline: Instant) -> io::Result<Vec<AdvertisedBroker>> {
    let mut stream = connect(address, deadline)?;
    stream.set_nodelay(true)?;
    const CORRELATION_ID: i32 = 1;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(PROBE_METADATA_VERSION)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("kit-wire-probe")));
    // An empty topic list asks for no topic (a null one would ask for all): the brokers are the whole answer.
    let request = MetadataRequest::default().with_topics(Some(Vec::new()));
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    write_frame(&mut stream, &encode_request(ApiKey::Metadata, &header, &request)?)?;
    stream.set_read_timeout(Some(time_left(deadline)?))?;
    let frame = read_frame(&mut stream)?;
    let (header, response, _) = decode_response::<MetadataResponse>(frame, ApiKey::Metadata, PROBE_METADATA_VERSION)?;
    if header.correlation_id != CORRELATION_ID {
        return Err(malformed(format!("the answer carries correlation id {}", header.correlation_id)));
    }
    Ok(response
        .brokers
        .into_iter()
        .map(|broker| AdvertisedBroker { node_id: broker.node_id.0, host: broker.host.to_string(), port: broker.port })
        .collect())
}

/// Connects to the first of `address`'s socket addresses that accepts before `deadline`.
fn connect(address: &str, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{address:?} resolves to no address"));
    for socket in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket, time_left(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What is left until `deadline`; a socket timeout of zero would mean none, so a passed deadline is an error.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    Some(deadline.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the deadline passed"))
}
