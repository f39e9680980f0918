"""Tests for pacing and sinks of the simulator's producer."""

from __future__ import annotations

import io
import sys
import time
import uuid
import weakref

import orjson
import pytest
from confluent_kafka import KafkaError

from pulse.localservers import free_port
from simulator import EventGenerator, JsonLinesSink, KafkaEventSink, SimulationConfig, World, send_events

START_MS = 1_700_000_000_000


def generator(**overrides) -> EventGenerator:
    return EventGenerator(World(SimulationConfig(users=100, items=100, start_ms=START_MS, **overrides)))


def test_pacing_2000_events_at_2000_per_second() -> None:
    out = io.StringIO()
    report = send_events(generator().events(2000), JsonLinesSink(out), rate=2000)
    assert report.sent == report.valid == 2000
    assert 0.7 < report.elapsed_s < 2.5
    assert 800 < report.rate < 2900
    assert len(out.getvalue().splitlines()) == 2000


def test_duration_stops_an_endless_stream() -> None:
    report = send_events(generator().events(), JsonLinesSink(io.StringIO()), rate=5000, duration_s=0.5)
    assert 0.4 < report.elapsed_s < 1.5
    assert 1500 < report.sent <= 2600


def test_unpaced_send_is_fast_and_restamps_with_wall_clock() -> None:
    out = io.StringIO()
    before = time.time_ns() // 1_000_000
    report = send_events(generator().events(5000), JsonLinesSink(out))
    after = time.time_ns() // 1_000_000
    assert report.sent == 5000 and report.rate > 3000
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert all(before <= ev["ts"] <= after for ev in lines)
    assert [ev["event_id"] for ev in lines] == report.valid_event_ids
    assert sum(report.by_type.values()) == 5000 and report.by_type["page_view"] > 0


def test_report_and_jsonl_output_with_malformed_events() -> None:
    out = io.StringIO()
    events = list(generator(malformed_ratio=0.2).events(3000))
    report = send_events(events, JsonLinesSink(out), rate=None)
    lines = out.getvalue().splitlines()
    assert len(lines) == report.sent == 3000
    assert report.malformed == len(report.malformed_events) == sum(not e.valid for e in events)
    assert report.valid == len(report.valid_event_ids) == 3000 - report.malformed
    assert report.malformed_events == [(e.topic, e.reason) for e in events if not e.valid]
    for event, line in zip(events, lines):
        if event.valid:
            assert orjson.loads(line)["event_id"] == event.event["event_id"]
        elif event.reason != "non_utf8":
            assert line == event.value.decode()
        else:
            assert "\\xff" in line


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        send_events([], JsonLinesSink(io.StringIO()), rate=0)


def test_kafka_sink_delivers_keyed_events(kafka_server) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = f"127.0.0.1:{kafka_server.port}"
    topics = ("clickstream", "chat", "control")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    missing = [t for t in topics if t not in admin.list_topics(timeout=10).topics]
    if missing:
        created = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in missing])
        for future in created.values():
            future.result(timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sim-test-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    partitions = []
    for topic in topics:
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            partitions.append(TopicPartition(topic, p, high))
    consumer.assign(partitions)

    sink = KafkaEventSink(bootstrap)
    world = World(SimulationConfig(users=100, items=100, malformed_ratio=0.05))  # start_ms=now: fresh event ids
    report = send_events(EventGenerator(world).events(2000), sink, rate=None)
    sink.close()
    assert sink.delivery_errors == 0 and report.malformed > 0

    expected, deadline = set(report.valid_event_ids), time.monotonic() + 30
    while expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        try:
            event = orjson.loads(msg.value())
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event_id") in expected:
            assert msg.key() == event["user_id"].encode()
            expected.remove(event["event_id"])
    consumer.close()
    assert not expected, f"{len(expected)} events not delivered"


def test_kafka_sink_counts_undeliverable_events() -> None:
    # no broker
    sink = KafkaEventSink(f"127.0.0.1:{free_port()}", config={"message.timeout.ms": 500}, flush_timeout_s=10)
    sink.send(next(iter(generator().events(1))))
    sink.close()  # returns once the event has timed out
    assert sink.delivery_errors == 1
    assert sink.last_error is not None and sink.last_error.code() == KafkaError._MSG_TIMED_OUT


def test_a_dropped_kafka_sink_is_freed_at_once() -> None:
    """No reference cycle keeps a dropped sink (and its producer, reconnecting to a broker maybe gone) alive."""
    sink = KafkaEventSink(f"127.0.0.1:{free_port()}")
    dropped = weakref.ref(sink)
    del sink
    assert dropped() is None


def test_closing_a_kafka_sink_releases_its_producer() -> None:
    """A closed sink still referenced (by a finished sender thread, a caller's local) holds no producer."""
    sink = KafkaEventSink(f"127.0.0.1:{free_port()}")
    producer = sink._producer
    held = sys.getrefcount(producer)
    sink.close()
    assert sys.getrefcount(producer) == held - 1
