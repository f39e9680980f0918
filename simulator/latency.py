"""End-to-end decision latency, measured by listening to decisions on Redis pub/sub."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import orjson
import redis

STOP_WAIT_S = 2.0  # longest stop() waits for the listener thread


@dataclass(frozen=True)
class LatencyStats:
    """Decisions seen so far and latency (receive time - event_ts) percentiles in ms over the last window.

    `rate` is decisions/s over the last window; percentiles are NaN when the window saw no decision.
    `errors` counts messages without a numeric `event_ts`; `others` decisions left out because their event id
    lacks the monitor's `event_id_prefix` (events from other producers).
    """

    count: int
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    others: int = 0


class DecisionLatencyMonitor:
    """Background thread that psubscribes to decision channels and records each decision's latency.

    Decision messages are JSON objects with `event_ts` and `decided_ts` (epoch ms). The latency of a
    decision is the wall-clock time it is received minus its `event_ts`. The subscription is confirmed
    before the constructor returns, so decisions published afterwards are all seen. With `event_id_prefix`,
    only decisions of events whose id starts with it are measured (those a simulator run sent); the others
    are only counted (`LatencyStats.others`).
    """

    def __init__(
        self,
        redis_url: str,
        channel_pattern: str = "pulse:decisions:*",
        capacity: int = 100_000,
        window_s: float = 5.0,
        event_id_prefix: str | None = None,
    ) -> None:
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(channel_pattern)
        self._await_subscription()
        self._window_s = window_s
        self._latency = np.zeros(capacity)
        self._received_ms = np.zeros(capacity)
        self._count = 0
        self._errors = 0
        self._others = 0
        self._prefix = event_id_prefix
        self._max_ms = -math.inf
        self._started_ms = _now_ms()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-latency-monitor", daemon=True)
        self._thread.start()

    def _await_subscription(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "psubscribe":
                return
        raise TimeoutError("no psubscribe confirmation from Redis")

    def _run(self) -> None:
        while not self._stopping.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "pmessage":
                self._record(message["data"], _now_ms())

    def _record(self, data: bytes, received_ms: float) -> None:
        try:
            decision = orjson.loads(data)
            latency = received_ms - float(decision["event_ts"])
            other = self._prefix is not None and not str(decision.get("event_id", "")).startswith(self._prefix)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            with self._lock:
                self._errors += 1
            return
        if other:
            with self._lock:
                self._others += 1
            return
        with self._lock:
            slot = self._count % len(self._latency)
            self._latency[slot] = latency
            self._received_ms[slot] = received_ms
            self._count += 1
            self._max_ms = max(self._max_ms, latency)

    def snapshot(self) -> LatencyStats:
        """Current counts, recent decision rate and latency percentiles."""
        now = _now_ms()
        with self._lock:
            filled = min(self._count, len(self._latency))
            latency = self._latency[:filled].copy()
            received = self._received_ms[:filled].copy()
            count, errors, others, max_ms = self._count, self._errors, self._others, self._max_ms
        window_ms = min(self._window_s * 1000.0, max(now - self._started_ms, 1.0))
        rate = float(np.count_nonzero(received >= now - window_ms)) / (window_ms / 1000.0)
        recent = latency[received >= now - window_ms]
        if recent.size:
            p50, p95, p99 = (float(x) for x in np.percentile(recent, [50, 95, 99]))
        else:
            p50 = p95 = p99 = math.nan
        if not filled:
            max_ms = math.nan
        return LatencyStats(count, rate, p50, p95, p99, max_ms, errors, others)

    def stop(self) -> None:
        """Stop the listener thread and close the Redis connection."""
        self._stopping.set()
        self._thread.join(STOP_WAIT_S)  # the listener wakes every 0.2 s
        self._pubsub.close()
        self._client.close()

    def __enter__(self) -> DecisionLatencyMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _now_ms() -> float:
    return time.time_ns() / 1_000_000
