"""Batched Redis sink: latest decision per user (SET with TTL) and PUBLISH on the user's channel."""

from __future__ import annotations

import logging
import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.user_state import DecisionOut
from pulse.config import Settings

log = logging.getLogger("pulse.redis")

MAX_BACKOFF_S = 5.0


class _RedisPartition(StatelessSinkPartition[DecisionOut]):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=30)

    def write_batch(self, items: list[DecisionOut]) -> None:
        """One pipeline round trip per batch; retried with backoff until Redis accepts it (nothing is dropped)."""
        backoff = 0.1
        while True:
            try:
                self._pipeline(items).execute()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis write of %d decisions failed (%s); retrying in %.1fs", len(items), exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _pipeline(self, items: list[DecisionOut]) -> redis.client.Pipeline:
        settings = self._settings
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            key = settings.decision_key(item.user_id)
            if item.forget:
                pipe.delete(key)
            else:
                pipe.set(key, item.payload, ex=settings.decision_ttl_s)
                pipe.set(settings.explanation_key(item.decision_id), item.payload, ex=settings.decision_ttl_s)
            pipe.publish(settings.decision_channel(item.user_id), item.payload)
        return pipe

    def close(self) -> None:
        self._client.close()


class RedisDecisionSink(DynamicSink[DecisionOut]):
    """Writes each worker's decisions to Redis; writes are idempotent per user (last decision wins)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        """One Redis connection per worker."""
        return _RedisPartition(self._settings)
