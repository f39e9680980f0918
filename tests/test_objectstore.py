"""The bundled broker on pulse.objectstore: records flow as before, and what was read or is over the cap goes."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pulse.localservers import LocalServer, Retention, start_tansu

CAP = 512 * 1024  # above what `events` and `items` hold per partition (about 200 KB), below `log` (about 1.5 MB)
N = 3000


@pytest.fixture
def trimmed_broker() -> Iterator[LocalServer]:
    server = start_tansu(retention=Retention(keep_topics=("items",), read_window_s=0.5, max_partition_bytes=CAP))
    try:
        yield server
    finally:
        server.stop()


def store_stats(server: LocalServer) -> dict:
    port = int(next(arg for arg in server.helpers[0].args if arg.isdigit()))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_pulse/stats", timeout=5) as response:
        return orjson.loads(response.read())


def partitions(stats: dict, topic: str) -> list[dict]:
    return [p for directory, p in stats["partitions"].items() if f"/topics/{topic}/" in directory]


def reader(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    return consumer


def read(consumer: Consumer, expected: int, timeout_s: float = 60) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += [(m.partition(), m.offset(), m.value()) for m in consumer.consume(500, 0.2) if m.error() is None]
    return out


def test_read_batches_and_bytes_over_the_cap_are_deleted(trimmed_broker: LocalServer) -> None:
    bootstrap = f"127.0.0.1:{trimmed_broker.port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in ("events", "log", "items")]).values():
        future.result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 10})
    for i in range(N):
        for topic, pad in (("events", 100), ("log", 1000), ("items", 100)):
            producer.produce(topic, key=str(i % 13).encode(), value=b'{"i":%d,"pad":"%s"}' % (i, b"x" * pad))
        if i % 100 == 0:
            producer.flush(10)
    assert producer.flush(10) == 0
    before = store_stats(trimmed_broker)
    assert sum(p["batches"] for p in partitions(before, "events")) > 100  # many batches until someone reads

    consumer = reader(bootstrap, "events")
    records = read(consumer, N)
    assert sorted(orjson.loads(v)["i"] for _, _, v in records) == list(range(N))  # nothing lost to the trimming
    for partition in range(2):
        offsets = [o for p, o, _ in records if p == partition]
        assert offsets == list(range(len(offsets)))  # in order, without gaps
    time.sleep(0.6)  # past the read window, the consumer reads what comes next: all before it goes
    for key in (b"a", b"b", b"c", b"d"):
        producer.produce("events", key=key, value=b"{}")
    producer.flush(10)
    assert len(read(consumer, 4)) == 4
    consumer.close()
    after = store_stats(trimmed_broker)
    assert sum(p["batches"] for p in partitions(after, "events")) <= 4  # read: deleted
    assert after["deleted_batches"]["read"] > 100
    assert all(p["bytes"] <= CAP for p in partitions(after, "log"))  # nobody reads it: capped
    assert after["deleted_batches"]["size"] > 0
    for _ in range(2):  # kept whole, and read whole again
        consumer = reader(bootstrap, "items")
        assert len(read(consumer, N)) == N
        consumer.close()


def test_a_consumer_far_behind_catches_up(trimmed_broker: LocalServer) -> None:
    """Tansu returns no records to a fetch with too many batches ahead (1,500 on this store): the store's
    listings keep every fetch small (LISTED_BATCHES), so a consumer 3,000 batches behind reads them all."""
    bootstrap = f"127.0.0.1:{trimmed_broker.port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("backlog", 1, 1)])["backlog"].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(3000):  # one batch per record
        producer.produce("backlog", value=b'{"i":%d}' % i)
        if i % 500 == 0:
            producer.flush(10)
    assert producer.flush(10) == 0
    assert sum(p["batches"] for p in partitions(store_stats(trimmed_broker), "backlog")) == 3000
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition("backlog", 0, 0)])
    records = read(consumer, 3000, timeout_s=30)
    consumer.close()
    assert [orjson.loads(v)["i"] for _, _, v in records] == list(range(3000))
