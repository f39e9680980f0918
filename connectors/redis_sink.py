"""Batched Redis sink: latest decision per user (SET with TTL) and PUBLISH on the user's channel.

A batch is encoded once as raw RESP commands and sent in one write on one connection: redis-py's
pipeline builds each command through several Python layers, which cost about three times the time
Redis itself needs for these writes (bench/throughput.py, "redis pipelined writes").
"""

from __future__ import annotations

import logging
import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.user_state import DecisionOut
from pulse.config import Settings

log = logging.getLogger("pulse.redis")

MAX_BACKOFF_S = 5.0
# SET key payload EX ttl, SET explanation-key payload EX ttl, PUBLISH channel payload (see resp_command).
_DECISION_COMMANDS = (b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nEX\r\n$%d\r\n%b\r\n"
                      b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nEX\r\n$%d\r\n%b\r\n"
                      b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n")


def resp_command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RedisDecisionWriter(StatelessSinkPartition[DecisionOut]):
    """Writes batches of decisions to Redis: SET latest + SET by decision id (both with TTL) + PUBLISH; DEL on forget."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=30)
        self._ttl = str(settings.decision_ttl_s).encode()

    def write_batch(self, items: list[DecisionOut]) -> None:
        """One round trip per batch; retried with backoff until Redis accepts it (nothing is dropped).

        Raises redis.ResponseError if Redis rejects a command (after reading every reply of the batch).
        """
        if not items:
            return
        packed, n_replies = self.encode(items)
        backoff = 0.1
        while True:
            try:
                self._send(packed, n_replies)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis write of %d decisions failed (%s); retrying in %.1fs", len(items), exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def encode(self, items: list[DecisionOut]) -> tuple[bytes, int]:
        """The batch's commands as one RESP buffer, and how many replies they produce."""
        settings, ttl = self._settings, self._ttl
        commands = []
        n_replies = 0
        for item in items:
            key = settings.decision_key(item.user_id).encode()
            channel = settings.decision_channel(item.user_id).encode()
            if item.forget:
                commands.append(resp_command(b"DEL", key))
                commands.append(resp_command(b"PUBLISH", channel, item.payload))
                n_replies += 2
            else:  # the three commands of a decision in one formatting step (this loop runs for every decision)
                explanation = settings.explanation_key(item.decision_id).encode()
                payload = item.payload
                commands.append(_DECISION_COMMANDS % (len(key), key, len(payload), payload, len(ttl), ttl,
                                                      len(explanation), explanation, len(payload), payload, len(ttl),
                                                      ttl, len(channel), channel, len(payload), payload))
                n_replies += 3
        return b"".join(commands), n_replies

    def _send(self, packed: bytes, n_replies: int) -> None:
        pool = self._client.connection_pool
        connection = pool.get_connection()
        rejected: redis.ResponseError | None = None
        try:
            connection.send_packed_command([packed])
            for _ in range(n_replies):
                try:
                    connection.read_response()
                except redis.ResponseError as exc:
                    rejected = rejected or exc
        except BaseException:
            connection.disconnect()  # replies may be left unread: never reuse this socket
            raise
        finally:
            pool.release(connection)
        if rejected is not None:
            raise rejected

    def close(self) -> None:
        self._client.close()


class RedisDecisionSink(DynamicSink[DecisionOut]):
    """Writes each worker's decisions to Redis; writes are idempotent per user (last decision wins)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> RedisDecisionWriter:
        """One Redis connection per worker."""
        return RedisDecisionWriter(self._settings)
