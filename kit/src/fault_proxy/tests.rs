//! The proxy's protocol code on frames the `kafka-protocol` crate encodes, for every version the crate knows of
//! each API: what comes out is decoded with the crate again and compared with what went in, so the tests do not
//! lean on helpers of the code they test. The crate stands in for the broker and the client here; kit's
//! integration tests (kit/tests/fault_proxy.rs) put librdkafka, the mock and Apache Kafka on either side.

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, ApiVersionsResponse, BrokerId, EndTxnRequest,
    FindCoordinatorResponse, GroupId, InitProducerIdRequest, InitProducerIdResponse, MetadataResponse, ProduceRequest,
    ProduceResponse, ProducerId, RequestHeader, ResponseHeader, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Encodable, Message, StrBytes};
use uuid::Uuid;

use super::{
    Logged, TxnRequest, cap_api_versions, decode_produce_request, init_producer_id_entry, produce_error_response,
    read_transactional_request, rewrite_find_coordinator, rewrite_metadata, transactional_max_version,
};
use crate::wire;

/// A tag no message here defines: an unknown tagged field, which must be carried through.
const UNKNOWN_TAG: i32 = 99;

fn text(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

/// The response header a broker sends for `api` at `version`, with an unknown tagged field where the header
/// version has room for one.
fn response_header(api: ApiKey, version: i16) -> ResponseHeader {
    let header = ResponseHeader::default().with_correlation_id(42);
    if api.response_header_version(version) >= 1 {
        header.with_unknown_tagged_field(UNKNOWN_TAG, Bytes::from_static(b"header"))
    } else {
        header
    }
}

/// A response frame (header and body) as a broker would send it.
fn response_frame<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
    wire::encode_response(api, version, &response_header(api, version), body, &[]).expect("the crate encodes its own")
}

fn versions<M: Message>() -> std::ops::RangeInclusive<i16> {
    M::VERSIONS.min..=M::VERSIONS.max
}

/// A Metadata response for `version` with two brokers and a topic, every field the version has set to something
/// other than its default, so that a field lost or changed on the way shows.
fn metadata(version: i16) -> MetadataResponse {
    let flexible = version >= 9;
    let broker = |id: i32, host: &'static str, port: i32, rack: Option<&'static str>| {
        let mut broker =
            MetadataResponseBroker::default().with_node_id(BrokerId(id)).with_host(text(host)).with_port(port);
        if version >= 1 {
            broker.rack = rack.map(text);
        }
        if flexible {
            broker.unknown_tagged_fields.insert(UNKNOWN_TAG, Bytes::from_static(b"broker"));
        }
        broker
    };
    let mut partition = MetadataResponsePartition::default()
        .with_partition_index(2)
        .with_leader_id(BrokerId(1))
        .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
        .with_isr_nodes(vec![BrokerId(1)]);
    if version >= 7 {
        partition.leader_epoch = 4;
    }
    if version >= 5 {
        partition.offline_replicas = vec![BrokerId(2)];
    }
    let mut topic = MetadataResponseTopic::default()
        .with_name(Some(TopicName(text("clicks"))))
        .with_partitions(vec![partition, MetadataResponsePartition::default().with_error_code(9)]);
    if version >= 1 {
        topic.is_internal = true;
    }
    if version >= 8 {
        topic.topic_authorized_operations = 0b1000;
    }
    if version >= 10 {
        topic.topic_id = Uuid::from_u128(7);
    }
    let mut response = MetadataResponse::default()
        .with_brokers(vec![broker(1, "kafka-a.internal", 9092, Some("r1")), broker(2, "10.0.0.7", 9093, None)])
        .with_topics(vec![topic]);
    if version >= 1 {
        response.controller_id = BrokerId(2);
    }
    if version >= 2 {
        response.cluster_id = Some(text("cluster-x"));
    }
    if version >= 3 {
        response.throttle_time_ms = 25;
    }
    if (8..=10).contains(&version) {
        response.cluster_authorized_operations = 0b110;
    }
    if flexible {
        response.unknown_tagged_fields.insert(UNKNOWN_TAG, Bytes::from_static(b"response"));
    }
    response
}

#[test]
fn metadata_of_every_version_points_every_broker_at_the_proxy_and_keeps_the_rest() {
    for version in versions::<MetadataResponse>() {
        let original = metadata(version);
        let mut asked = Vec::new();
        let out = rewrite_metadata(response_frame(ApiKey::Metadata, version, &original), version, |host, port| {
            asked.push((host.to_string(), port));
            Ok(("proxy.test".to_string(), 40_000 + asked.len() as u16))
        })
        .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(asked, [("kafka-a.internal".into(), 9092), ("10.0.0.7".into(), 9093)], "v{version}");

        let (header, rewritten, _) = wire::decode_response::<MetadataResponse>(out, ApiKey::Metadata, version).unwrap();
        assert_eq!(header, response_header(ApiKey::Metadata, version), "v{version}: the header is kept");
        let addresses: Vec<_> = rewritten.brokers.iter().map(|b| (b.host.to_string(), b.port)).collect();
        assert_eq!(addresses, [("proxy.test".into(), 40_001), ("proxy.test".into(), 40_002)], "v{version}");
        // Put the brokers' own addresses back: what remains must be the response as the broker sent it.
        let mut restored = rewritten;
        for (broker, sent) in restored.brokers.iter_mut().zip(&original.brokers) {
            (broker.host, broker.port) = (sent.host.clone(), sent.port);
        }
        assert_eq!(restored, original, "v{version}: nothing but the addresses changed");
    }
}

/// A FindCoordinator response for `version`: up to version 3 the one coordinator `host:port` (an error answer when
/// the host is empty); from version 4 one coordinator per key, here that one and a key without a coordinator yet.
fn find_coordinator(version: i16, host: &'static str, port: i32) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    if version >= 1 {
        response.throttle_time_ms = 25;
    }
    if version >= 4 {
        response.coordinators = vec![
            Coordinator::default()
                .with_key(text("my-transactional-id"))
                .with_node_id(BrokerId(2))
                .with_host(text(host))
                .with_port(port),
            Coordinator::default()
                .with_key(text("a-group"))
                .with_node_id(BrokerId(-1))
                .with_host(text(""))
                .with_port(-1)
                .with_error_code(15)
                .with_error_message(Some(text("not yet"))),
        ];
    } else {
        response = response.with_node_id(BrokerId(2)).with_host(text(host)).with_port(port);
        if host.is_empty() {
            response.error_code = 15;
        }
        if version >= 1 {
            response.error_message = Some(text("message"));
        }
    }
    if version >= 3 {
        response.unknown_tagged_fields.insert(UNKNOWN_TAG, Bytes::from_static(b"response"));
    }
    response
}

#[test]
fn coordinators_of_every_version_point_at_the_proxy_and_an_error_answer_passes_unchanged() {
    for version in versions::<FindCoordinatorResponse>() {
        let original = find_coordinator(version, "kafka-b", 9093);
        let mut asked = Vec::new();
        let out =
            rewrite_find_coordinator(response_frame(ApiKey::FindCoordinator, version, &original), version, |h, p| {
                asked.push((h.to_string(), p));
                Ok(("proxy.test".to_string(), 40_002))
            })
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(asked, [("kafka-b".into(), 9093)], "v{version}: only the coordinator that exists is relayed");
        let (header, rewritten, _) =
            wire::decode_response::<FindCoordinatorResponse>(out, ApiKey::FindCoordinator, version).unwrap();
        assert_eq!(header, response_header(ApiKey::FindCoordinator, version), "v{version}");
        assert_eq!(rewritten, find_coordinator(version, "proxy.test", 40_002), "v{version}: only the address changed");

        if version < 4 {
            // No coordinator yet: nothing to relay, and the answer is re-encoded as it was.
            let none = response_frame(ApiKey::FindCoordinator, version, &find_coordinator(version, "", -1));
            let out = rewrite_find_coordinator(none.clone(), version, |_, _| panic!("nothing to relay")).unwrap();
            assert_eq!(out, none, "v{version}");
        }
    }
}

/// A Produce request for `version`, header and body, writing to partitions 0 and 2 of one topic and 1 of another.
fn produce_request(version: i16, acks: i16) -> (RequestHeader, ProduceRequest) {
    let topic = |name: &'static str, id: u128, partitions: &[i32]| {
        let mut topic = TopicProduceData::default().with_partition_data(
            partitions
                .iter()
                .map(|index| {
                    PartitionProduceData::default().with_index(*index).with_records(Some(Bytes::from_static(b"batch")))
                })
                .collect(),
        );
        // Named up to version 12, identified by id from 13 (KIP-516).
        if version <= 12 {
            topic.name = TopicName(text(name));
        } else {
            topic.topic_id = Uuid::from_u128(id);
        }
        topic
    };
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(text("rdkafka")));
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(text("txn"))))
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic("clicks", 1, &[0, 2]), topic("views", 2, &[1])]);
    (header, request)
}

#[test]
fn a_produce_request_of_every_version_is_read_and_answered_with_the_error_for_each_partition() {
    for version in versions::<ProduceRequest>() {
        let (header, request) = produce_request(version, -1);
        let mut frame = Bytes::from(wire::encode_request(ApiKey::Produce, &header, &request).unwrap());
        let (api, read_header) = wire::decode_request_header(&mut frame).unwrap();
        assert_eq!((api, &read_header), (Some(ApiKey::Produce), &header), "v{version}");
        let read = decode_produce_request(frame, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(read, request, "v{version}");

        let answer = produce_error_response(&read_header, &read, 6).unwrap();
        let (answer_header, response, _) =
            wire::decode_response::<ProduceResponse>(answer, ApiKey::Produce, version).unwrap();
        assert_eq!(answer_header.correlation_id, 7, "v{version}: the answer carries the request's id");
        let answered: Vec<_> = response
            .responses
            .iter()
            .map(|topic| {
                let partitions: Vec<_> = topic
                    .partition_responses
                    .iter()
                    .map(|p| (p.index, p.error_code, p.base_offset, p.record_errors.len(), p.error_message.clone()))
                    .collect();
                (topic.name.0.to_string(), topic.topic_id, partitions)
            })
            .collect();
        let sent: Vec<_> = request
            .topic_data
            .iter()
            .map(|topic| {
                let partitions: Vec<_> = topic.partition_data.iter().map(|p| (p.index, 6, -1, 0, None)).collect();
                (topic.name.0.to_string(), topic.topic_id, partitions)
            })
            .collect();
        assert_eq!(answered, sent, "v{version}: every partition refused with the error, no offset");
    }
    let (header, request) = produce_request(9, 0);
    let mut frame = Bytes::from(wire::encode_request(ApiKey::Produce, &header, &request).unwrap());
    wire::decode_request_header(&mut frame).unwrap();
    assert_eq!(decode_produce_request(frame, 9).unwrap().acks, 0, "acks=0 is seen: no answer will come");
}

#[test]
fn api_versions_are_capped_at_what_the_proxy_reads_and_left_alone_otherwise() {
    let offered = |api: ApiKey, min: i16| {
        ApiVersion::default().with_api_key(api as i16).with_min_version(min).with_max_version(99)
    };
    for version in versions::<ApiVersionsResponse>() {
        let mut original = ApiVersionsResponse::default().with_api_keys(vec![
            offered(ApiKey::Produce, 3),
            offered(ApiKey::Metadata, 0),
            offered(ApiKey::FindCoordinator, 0),
            offered(ApiKey::Fetch, 4),
            offered(ApiKey::InitProducerId, 0),
            offered(ApiKey::AddPartitionsToTxn, 0),
            offered(ApiKey::AddOffsetsToTxn, 0),
            offered(ApiKey::TxnOffsetCommit, 0),
            offered(ApiKey::EndTxn, 0),
        ]);
        if version >= 1 {
            original.throttle_time_ms = 25;
        }
        if version >= 3 {
            original.finalized_features_epoch = 3;
            original.unknown_tagged_fields.insert(UNKNOWN_TAG, Bytes::from_static(b"response"));
        }
        let out = cap_api_versions(response_frame(ApiKey::ApiVersions, version, &original), version)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        let (header, capped, _) =
            wire::decode_response::<ApiVersionsResponse>(out, ApiKey::ApiVersions, version).unwrap();
        assert_eq!(header, response_header(ApiKey::ApiVersions, version));
        let mut expected = original;
        expected.api_keys[0].max_version = ProduceRequest::VERSIONS.max;
        expected.api_keys[1].max_version = MetadataResponse::VERSIONS.max;
        expected.api_keys[2].max_version = FindCoordinatorResponse::VERSIONS.max;
        // The transactional APIs: the newest version whose request and answer the crate both decode.
        expected.api_keys[4].max_version =
            InitProducerIdRequest::VERSIONS.max.min(InitProducerIdResponse::VERSIONS.max);
        expected.api_keys[5].max_version = AddPartitionsToTxnRequest::VERSIONS.max;
        expected.api_keys[6].max_version = AddOffsetsToTxnRequest::VERSIONS.max;
        expected.api_keys[7].max_version = TxnOffsetCommitRequest::VERSIONS.max;
        expected.api_keys[8].max_version = EndTxnRequest::VERSIONS.max;
        assert_eq!(capped, expected, "v{version}: the decoded APIs capped, Fetch and the rest unchanged");
    }
    // A broker that does not know the version asked answers with an error at version 0: relayed untouched.
    let refusal = response_frame(ApiKey::ApiVersions, 0, &ApiVersionsResponse::default().with_error_code(35));
    assert_eq!(cap_api_versions(refusal.clone(), 3).unwrap(), refusal);
    let newer = ApiVersionsResponse::VERSIONS.max + 1;
    let frame = Bytes::from_static(b"\0\0\0\x2a\0\0 any bytes of a version the crate does not know");
    assert_eq!(cap_api_versions(frame.clone(), newer).unwrap(), frame);
}

#[test]
fn a_request_header_is_read_for_known_and_newer_apis() {
    for (api, version) in [(ApiKey::Produce, 3), (ApiKey::Produce, 9), (ApiKey::Fetch, 17), (ApiKey::ApiVersions, 3)] {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(11)
            .with_client_id(Some(text("client")));
        let mut frame = Vec::new();
        header.encode(&mut frame, api.request_header_version(version)).unwrap();
        frame.extend_from_slice(b"body");
        let mut frame = Bytes::from(frame);
        assert_eq!(wire::decode_request_header(&mut frame).unwrap(), (Some(api), header), "{api:?} v{version}");
        assert_eq!(&frame[..], b"body", "{api:?} v{version}: left at the body");
    }
    // An API key newer than the crate: its header is read as version 1, enough to match the answer.
    let mut frame = Bytes::from_static(b"\x7f\x00\x00\x01\x00\x00\x00\x0b\x00\x01xbody");
    let (api, header) = wire::decode_request_header(&mut frame).unwrap();
    assert_eq!((api, header.correlation_id, &frame[..]), (None, 11, &b"body"[..]));
}

#[test]
fn a_cut_or_garbled_frame_is_an_error_not_a_panic() {
    // Every frame cut anywhere before its end.
    for version in [0, 9, MetadataResponse::VERSIONS.max] {
        let frame = response_frame(ApiKey::Metadata, version, &metadata(version));
        for cut in 0..frame.len() {
            assert!(rewrite_metadata(frame.slice(..cut), version, |_, _| Ok((String::new(), 1))).is_err());
        }
    }
    for version in [0, 3, FindCoordinatorResponse::VERSIONS.max] {
        let frame = response_frame(ApiKey::FindCoordinator, version, &find_coordinator(version, "kafka-b", 9093));
        for cut in 0..frame.len() {
            assert!(rewrite_find_coordinator(frame.slice(..cut), version, |_, _| Ok((String::new(), 1))).is_err());
        }
    }
    for version in [3, 9, ProduceRequest::VERSIONS.max] {
        let (header, request) = produce_request(version, -1);
        let frame = Bytes::from(wire::encode_request(ApiKey::Produce, &header, &request).unwrap());
        for cut in 0..frame.len() {
            let mut cut_frame = frame.slice(..cut);
            let read =
                wire::decode_request_header(&mut cut_frame).and_then(|_| decode_produce_request(cut_frame, version));
            assert!(read.is_err(), "Produce v{version} cut at {cut}");
        }
    }
    // Bytes that are no answer at all.
    let garbage = Bytes::from_static(&[0xff; 24]);
    for version in versions::<MetadataResponse>() {
        assert!(rewrite_metadata(garbage.clone(), version, |_, _| Ok((String::new(), 1))).is_err(), "v{version}");
    }
}

#[test]
fn bytes_after_a_response_body_are_carried_over() {
    // As librdkafka's mock cluster sends Metadata: one more empty tagged-field section than the schema has.
    let mut frame = response_frame(ApiKey::Metadata, 12, &metadata(12)).to_vec();
    frame.push(0);
    let out = rewrite_metadata(Bytes::from(frame), 12, |_, _| Ok(("proxy.test".to_string(), 1))).unwrap();
    assert_eq!(out.last(), Some(&0));
    let (_, rewritten, trailer) = wire::decode_response::<MetadataResponse>(out, ApiKey::Metadata, 12).unwrap();
    assert_eq!((rewritten.brokers[1].host.as_str(), &trailer[..]), ("proxy.test", &[0u8][..]));
}

/// A request frame's body, as the proxy gets it: encoded by the crate with a header, the header read off.
fn request_body<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(5)
        .with_client_id(Some(text("rdkafka")));
    let mut frame = Bytes::from(wire::encode_request(api, &header, body).unwrap_or_else(|e| panic!("{api:?}: {e}")));
    let (read, _) = wire::decode_request_header(&mut frame).unwrap();
    assert_eq!(read, Some(api));
    frame
}

fn versions_of(api: ApiKey) -> std::ops::RangeInclusive<i16> {
    0..=transactional_max_version(api).expect("a transactional API")
}

fn logged(api: ApiKey, body: Bytes, version: i16) -> TxnRequest {
    match read_transactional_request(api, body, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}")) {
        Logged::Now(entry) => entry,
        Logged::WithAnswer(_) => panic!("{api:?} v{version} is logged at once"),
    }
}

#[test]
fn transactional_requests_of_every_version_are_logged_as_sent() {
    let txn = || TransactionalId(text("order-service-1"));
    for version in versions_of(ApiKey::AddPartitionsToTxn) {
        let topics = vec![
            AddPartitionsToTxnTopic::default().with_name(TopicName(text("orders.events"))).with_partitions(vec![0, 2]),
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(text("inventory.requests")))
                .with_partitions(vec![1]),
        ];
        // A client's request up to version 3; from 4, a batch of transactions (one here), as brokers send it.
        let request = if version <= 3 {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn())
                .with_v3_and_below_producer_id(ProducerId(42))
                .with_v3_and_below_producer_epoch(3)
                .with_v3_and_below_topics(topics)
        } else {
            AddPartitionsToTxnRequest::default().with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(txn())
                    .with_producer_id(ProducerId(42))
                    .with_producer_epoch(3)
                    .with_topics(topics),
            ])
        };
        let body = request_body(ApiKey::AddPartitionsToTxn, version, &request);
        assert_eq!(
            logged(ApiKey::AddPartitionsToTxn, body, version),
            TxnRequest::AddPartitionsToTxn {
                transactional_id: "order-service-1".into(),
                producer_id: 42,
                producer_epoch: 3,
                partitions: vec![
                    ("orders.events".into(), 0),
                    ("orders.events".into(), 2),
                    ("inventory.requests".into(), 1)
                ],
            },
            "v{version}"
        );
    }
    for version in versions_of(ApiKey::AddOffsetsToTxn) {
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn())
            .with_producer_id(ProducerId(42))
            .with_producer_epoch(3)
            .with_group_id(GroupId(text("inventory-service")));
        let body = request_body(ApiKey::AddOffsetsToTxn, version, &request);
        assert_eq!(
            logged(ApiKey::AddOffsetsToTxn, body, version),
            TxnRequest::AddOffsetsToTxn {
                transactional_id: "order-service-1".into(),
                producer_id: 42,
                producer_epoch: 3,
                group: "inventory-service".into(),
            },
            "v{version}"
        );
    }
    for version in versions_of(ApiKey::TxnOffsetCommit) {
        let partition = |index: i32, offset: i64| {
            TxnOffsetCommitRequestPartition::default().with_partition_index(index).with_committed_offset(offset)
        };
        let mut request = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn())
            .with_group_id(GroupId(text("inventory-service")))
            .with_producer_id(ProducerId(42))
            .with_producer_epoch(3)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("inventory.requests")))
                    .with_partitions(vec![partition(0, 17), partition(2, 5)]),
            ]);
        if version >= 3 {
            request = request.with_generation_id(7).with_member_id(text("member-1"));
        }
        let body = request_body(ApiKey::TxnOffsetCommit, version, &request);
        assert_eq!(
            logged(ApiKey::TxnOffsetCommit, body, version),
            TxnRequest::TxnOffsetCommit {
                transactional_id: "order-service-1".into(),
                producer_id: 42,
                producer_epoch: 3,
                group: "inventory-service".into(),
                offsets: vec![("inventory.requests".into(), 0, 17), ("inventory.requests".into(), 2, 5)],
            },
            "v{version}"
        );
    }
    for version in versions_of(ApiKey::EndTxn) {
        for committed in [true, false] {
            let request = EndTxnRequest::default()
                .with_transactional_id(txn())
                .with_producer_id(ProducerId(42))
                .with_producer_epoch(3)
                .with_committed(committed);
            let body = request_body(ApiKey::EndTxn, version, &request);
            assert_eq!(
                logged(ApiKey::EndTxn, body, version),
                TxnRequest::EndTxn {
                    transactional_id: "order-service-1".into(),
                    producer_id: 42,
                    producer_epoch: 3,
                    committed
                },
                "v{version}"
            );
        }
    }
}

#[test]
fn init_producer_id_is_logged_with_the_id_and_epoch_the_broker_gave() {
    for version in versions_of(ApiKey::InitProducerId) {
        for transactional_id in [Some("order-service-1"), None] {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(transactional_id.map(|id| TransactionalId(text(id))))
                .with_transaction_timeout_ms(30_000);
            let body = request_body(ApiKey::InitProducerId, version, &request);
            let read = read_transactional_request(ApiKey::InitProducerId, body, version).unwrap();
            assert_eq!(read, Logged::WithAnswer(transactional_id.map(String::from)), "v{version}");
        }
        let answer = InitProducerIdResponse::default().with_producer_id(ProducerId(42)).with_producer_epoch(4);
        let entry =
            init_producer_id_entry(response_frame(ApiKey::InitProducerId, version, &answer), version, Some("t".into()))
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(
            entry,
            TxnRequest::InitProducerId {
                transactional_id: Some("t".into()),
                producer_id: 42,
                producer_epoch: 4,
                error_code: 0
            },
            "v{version}"
        );
    }
}

#[test]
fn a_cut_transactional_request_is_an_error_not_a_panic() {
    let request = EndTxnRequest::default().with_transactional_id(TransactionalId(text("t"))).with_committed(true);
    for version in versions_of(ApiKey::EndTxn) {
        let body = request_body(ApiKey::EndTxn, version, &request);
        for cut in 0..body.len() {
            assert!(
                read_transactional_request(ApiKey::EndTxn, body.slice(..cut), version).is_err(),
                "v{version} at {cut}"
            );
        }
    }
    let garbage = Bytes::from_static(&[0xff; 24]);
    assert!(read_transactional_request(ApiKey::TxnOffsetCommit, garbage, 3).is_err());
    assert!(read_transactional_request(ApiKey::Fetch, Bytes::new(), 0).is_err(), "not a transactional API");
}
