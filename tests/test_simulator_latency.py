"""DecisionLatencyMonitor against the session's real redis-server."""

from __future__ import annotations

import math
import time

import orjson
import pytest
import redis

from pulse.localservers import LocalServer
from simulator import DecisionLatencyMonitor


@pytest.fixture
def redis_url(redis_server: LocalServer) -> str:
    """The session's redis-server (tests/conftest.py)."""
    return f"redis://127.0.0.1:{redis_server.port}/0"


def _wait_for(monitor: DecisionLatencyMonitor, count: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while monitor.snapshot().count + monitor.snapshot().errors < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_monitor_measures_decision_latency(redis_url: str) -> None:
    publisher = redis.Redis.from_url(redis_url)
    with DecisionLatencyMonitor(redis_url, capacity=500) as monitor:
        empty = monitor.snapshot()
        assert empty.count == 0 and math.isnan(empty.p50_ms)
        for i in range(1000):
            now = time.time_ns() // 1_000_000
            delay = 200 if i % 100 == 0 else 50  # 1% slow decisions
            payload = {"decision_id": f"d{i}", "event_ts": now - delay, "decided_ts": now}
            publisher.publish(f"pulse:decisions:user-{i % 7}", orjson.dumps(payload))
        publisher.publish("pulse:decisions:user-1", b"not json")
        publisher.publish("pulse:decisions:user-1", orjson.dumps({"decided_ts": 1}))
        publisher.publish("other:channel", orjson.dumps({"event_ts": 0}))
        _wait_for(monitor, 1002)
        stats = monitor.snapshot()
    publisher.close()
    assert stats.count == 1000 and stats.errors == 2
    assert 50 <= stats.p50_ms < 150
    assert stats.p50_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.max_ms >= 200
    assert stats.rate > 100


def test_monitor_counts_only_decisions_of_its_events(redis_url: str) -> None:
    publisher = redis.Redis.from_url(redis_url)
    with DecisionLatencyMonitor(redis_url, capacity=500, event_id_prefix="ev-7-123-") as monitor:
        now = time.time_ns() // 1_000_000
        for i in range(30):
            event_id = f"ev-7-123-{i}" if i % 3 else f"kcat-{i}"  # a third come from another producer
            publisher.publish("pulse:decisions:u", orjson.dumps({"event_id": event_id, "event_ts": now}))
        _wait_for(monitor, 20)
        deadline = time.monotonic() + 5
        while monitor.snapshot().others < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = monitor.snapshot()
    publisher.close()
    assert (stats.count, stats.others, stats.errors) == (20, 10, 0)
