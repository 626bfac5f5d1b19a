#!/usr/bin/env python3
"""A round trip through a Kafka broker with a client that shares no code with the workbook's (aiokafka, pure
Python, not librdkafka): create a topic, produce keyed records with acks=all, consume them back in a group and
commit. It proves `cargo xtask kafka` runs a broker any Kafka client can use, not one only librdkafka accepts.

    python3 -m venv target/py && target/py/bin/pip install aiokafka
    target/py/bin/python scripts/kafka-roundtrip.py 127.0.0.1:9092

Exits 0 and prints what it read, or exits 1 saying what went wrong.
"""

import asyncio
import logging
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

RECORDS = 20
DEADLINE_S = 60


async def round_trip(bootstrap: str) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = {}
        for i in range(RECORDS):
            key, value = f"user-{i % 4}".encode(), f"event-{i}".encode()
            meta = await producer.send_and_wait(topic, value, key=key)
            sent[value] = (key, meta.partition)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"roundtrip-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received = {}
    try:
        while len(received) < RECORDS:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    received[record.value] = (record.key, record.partition)
        await consumer.commit()
    finally:
        await consumer.stop()

    if received != sent:
        raise SystemExit(f"read back {len(received)} records that differ from the {len(sent)} sent")
    keys_by_partition = {}
    for key, partition in received.values():
        keys_by_partition.setdefault(key, set()).add(partition)
    if any(len(p) != 1 for p in keys_by_partition.values()):
        raise SystemExit(f"a key's records landed on several partitions: {keys_by_partition}")
    print(f"aiokafka round trip through {bootstrap}: {RECORDS} records on topic {topic}, "
          f"{len(keys_by_partition)} keys each on one partition, read back in a group and committed")


def main() -> None:
    # aiokafka warns while a fresh broker creates __consumer_offsets for the first group; that is expected.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    try:
        asyncio.run(asyncio.wait_for(round_trip(bootstrap), DEADLINE_S))
    except asyncio.TimeoutError:
        sys.exit(f"no round trip through {bootstrap} within {DEADLINE_S} s: is Kafka running there?")


if __name__ == "__main__":
    main()
