"""The dataflow's Kafka source against a real broker (Tansu): partition groups, offsets, resuming."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka_source import PartitionGroupSource


@pytest.fixture()
def topics(kafka_server) -> tuple[str, list[str]]:
    """Two fresh topics of two partitions each; record `t/p/n` sits in partition p of topic t."""
    bootstrap = f"127.0.0.1:{kafka_server.port}"
    names = [f"src-{uuid.uuid4().hex[:8]}-{n}" for n in range(2)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 2, 1) for name in names]).values():
        future.result(15)
    produce(bootstrap, names, range(5))
    return bootstrap, names


def produce(bootstrap: str, names: list[str], numbers: range) -> None:
    """One record per produce request: Tansu reports the end of a partition as the last batch's first offset + 1."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for name in names:
        for p in range(2):
            for n in numbers:
                producer.produce(name, f"{name}/{p}/{n}".encode(), partition=p)
                assert producer.flush(15) == 0


def read_all(part, expected: int, timeout_s: float = 20.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected and time.monotonic() < deadline:
        batch = part.next_batch()
        assert all(message.error() is None for message in batch)
        values += [message.value() for message in batch]
        if not batch:
            time.sleep(0.01)
    return values


def test_one_bytewax_partition_per_partition_index_reading_every_topic(topics) -> None:
    bootstrap, names = topics
    source = PartitionGroupSource(bootstrap, names, OFFSET_BEGINNING)
    assert source.list_parts() == ["partition-0", "partition-1"]
    part = source.build_part("kafka_in", "partition-1", None)
    try:
        values = read_all(part, 10)
        assert sorted(values) == sorted(f"{name}/1/{n}".encode() for name in names for n in range(5))
        assert part.snapshot() == {(names[0], 1): 5, (names[1], 1): 5}
    finally:
        part.close()


def test_resumes_at_the_snapshot_offsets(topics) -> None:
    bootstrap, names = topics
    source = PartitionGroupSource(bootstrap, names, OFFSET_BEGINNING)
    part = source.build_part("kafka_in", "partition-0", {(names[0], 0): 3})  # the other topic: no state yet
    try:
        values = read_all(part, 7)
        assert sorted(values) == sorted([f"{names[0]}/0/{n}".encode() for n in (3, 4)]
                                        + [f"{names[1]}/0/{n}".encode() for n in range(5)])
        assert read_all(part, 1, timeout_s=1.0) == [], "nothing before the resume offset is re-read"
    finally:
        part.close()


def test_starting_at_the_end_reads_only_new_records(topics) -> None:
    bootstrap, names = topics
    part = PartitionGroupSource(bootstrap, names, OFFSET_END).build_part("kafka_in", "partition-0", None)
    try:
        assert read_all(part, 1, timeout_s=2.0) == []
        produce(bootstrap, names, range(5, 7))
        values = read_all(part, 4)
        assert sorted(values) == sorted(f"{name}/0/{n}".encode() for name in names for n in (5, 6))
        assert part.snapshot() == {(names[0], 0): 7, (names[1], 0): 7}
    finally:
        part.close()


def test_a_workers_groups_share_one_consumer_and_each_reads_only_its_own_partitions(topics) -> None:
    bootstrap, names = topics
    source = PartitionGroupSource(bootstrap, names, OFFSET_BEGINNING, batch_size=3)  # small batches: many deals
    parts = [source.build_part("kafka_in", f"partition-{p}", None) for p in (0, 1)]
    closed: list[int] = []
    try:
        assert parts[0]._worker is parts[1]._worker, "one fetch loop per worker, not one per partition group"
        for p, part in enumerate(parts):
            values = read_all(part, 10)
            assert sorted(values) == sorted(f"{name}/{p}/{n}".encode() for name in names for n in range(5))
            assert part.snapshot() == {(names[0], p): 5, (names[1], p): 5}
        parts[0].close()
        closed.append(0)
        produce(bootstrap, names, range(5, 6))
        assert sorted(read_all(parts[1], 2)) == sorted(f"{name}/1/5".encode() for name in names), \
            "the other group reads on after one closes"
        assert read_all(parts[1], 1, timeout_s=1.0) == [], "nothing of the closed group's partitions is dealt to it"
    finally:
        for p, part in enumerate(parts):
            if p not in closed:
                part.close()
    assert source._worker_consumers == {}, "the last group to close releases the worker's consumer"


def test_groups_built_on_different_workers_have_their_own_consumers(topics) -> None:
    bootstrap, names = topics
    source = PartitionGroupSource(bootstrap, names, OFFSET_BEGINNING)
    parts: dict[int, object] = {}

    def build(p: int) -> None:
        parts[p] = source.build_part("kafka_in", f"partition-{p}", None)

    threads = [threading.Thread(target=build, args=(p,)) for p in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert parts[0]._worker is not parts[1]._worker
        assert sorted(read_all(parts[0], 10)) == sorted(f"{name}/0/{n}".encode() for name in names for n in range(5))
    finally:
        for part in parts.values():
            part.close()
