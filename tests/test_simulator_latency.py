"""DecisionLatencyMonitor against a real redis-server on a free loopback port."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from typing import Iterator

import orjson
import pytest
import redis

from simulator import DecisionLatencyMonitor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not installed")
    port = _free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


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
