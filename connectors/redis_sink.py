"""Batched Redis sink: what Redis holds about each user, bounded per user, and erased in one step.

Per user Redis holds (PREFIX = PULSE_REDIS_PREFIX, U = the stored user id, pseudonymized when configured):
- ``PREFIX:decision:U``: the latest decision (a string);
- ``PREFIX:explanations:U``: the user's last PULSE_EXPLANATIONS_PER_USER decisions with their explanations
  (a hash, decision id -> decision), and ``PREFIX:explanation-ids:U`` their ids, newest first (a list);
- ``PREFIX:explanation:D`` for each of those decisions D: the stored user id, so that
  ``GET /v1/explanations/D`` finds the user's hash (the index is as bounded as the hash: an entry
  leaves it when its decision leaves the user's last N).
Every key expires PULSE_DECISION_TTL_S after the user's latest decision. So Redis holds at most N + 1
decisions per user active within the TTL, whatever the traffic.

A decision is written by one script call (``STORE``: set latest, add to the hash, trim it to N, refresh
the TTLs, publish). A `forget_user` decision, and any decision made without consent (``personalized``
false), erase instead (``ERASE``: delete the user's keys and index entries, then publish): one bounded
step (at most N + 3 keys), atomic in Redis, so nothing about the user is left whatever the traffic.
Decisions without consent are published to subscribers, never stored.

A batch is encoded once as raw RESP commands and sent in one write on one connection: redis-py's
pipeline builds each command through several Python layers, which cost more than Redis itself
needs for these writes. Its replies are read when the next batch is sent (or at `flush` and `close`),
so Redis runs one batch while the engine decides the next instead of the engine waiting for it; an
error Redis reports is therefore raised one batch later. A batch whose replies were not read is sent
again on a new connection when the old one fails (the scripts are idempotent per decision). Bytewax may commit an
epoch whose last batch is sent but not yet confirmed: if the engine dies then and Redis fails before running it,
those decisions reach Redis only with each user's next one (they are in the decision log either way).
"""

from __future__ import annotations

import logging
import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.backoff import Backoff
from operators.user_state import DecisionOut
from pulse.config import Settings

log = logging.getLogger("pulse.redis")

MAX_BACKOFF_S = 5.0

# KEYS: latest, hash, ids. ARGV: payload, ttl, keep, decision id, index prefix, stored user id, channel.
STORE = b"""local latest, hash, ids = KEYS[1], KEYS[2], KEYS[3]
local payload, ttl, keep, decision, index = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
redis.call('SET', latest, payload, 'EX', ttl)
redis.call('HSET', hash, decision, payload)
redis.call('LREM', ids, 0, decision)
redis.call('LPUSH', ids, decision)
redis.call('SET', index .. decision, ARGV[6], 'EX', ttl)
while redis.call('LLEN', ids) > keep do
  local old = redis.call('RPOP', ids)
  redis.call('HDEL', hash, old)
  redis.call('DEL', index .. old)
end
redis.call('EXPIRE', hash, ttl)
redis.call('EXPIRE', ids, ttl)
return redis.call('PUBLISH', ARGV[7], payload)"""

# KEYS: latest, hash, ids. ARGV: payload, index prefix, channel.
ERASE = b"""for _, old in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  redis.call('DEL', ARGV[2] .. old)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return redis.call('PUBLISH', ARGV[3], ARGV[1])"""


def resp_command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join([_bulk(arg) for arg in args])


def _bulk(arg: bytes) -> bytes:
    """One bulk string of the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


_STORE_HEAD = b"*13\r\n" + _bulk(b"EVAL") + _bulk(STORE) + _bulk(b"3")  # then 3 keys and 7 arguments
_ERASE_HEAD = b"*9\r\n" + _bulk(b"EVAL") + _bulk(ERASE) + _bulk(b"3")  # then 3 keys and 3 arguments


def _key_prefixes(settings: Settings) -> tuple[bytes, bytes, bytes, bytes]:
    """The user's latest-decision, explanations and explanation-ids keys and decision channel are these + the id."""
    prefixes = (settings.decision_key(""), settings.explanations_key(""), settings.explanation_ids_key(""),
                settings.decision_channel(""))
    assert (settings.decision_key("u"), settings.explanations_key("u"), settings.explanation_ids_key("u"),
            settings.decision_channel("u")) == tuple(prefix + "u" for prefix in prefixes), "keys end with the user id"
    return tuple(prefix.encode() for prefix in prefixes)  # type: ignore[return-value]


class RedisDecisionWriter(StatelessSinkPartition[DecisionOut]):
    """Writes batches of decisions to Redis: one script call per decision, storing or erasing (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=30)
        self._key_prefixes = _key_prefixes(settings)
        self._ttl_arg = _bulk(str(settings.decision_ttl_s).encode())
        self._keep_arg = _bulk(str(settings.explanations_per_user).encode())
        self._index_arg = _bulk(settings.explanation_key("").encode())
        self._connection: redis.connection.Connection | None = None
        self._in_flight: list[tuple[bytes, int]] = []  # sent batches (RESP, replies) not confirmed yet, oldest first

    def write_batch(self, items: list[DecisionOut]) -> None:
        """Send the batch and read the replies of the one before it; retried with backoff until Redis has
        both (nothing is dropped).

        Raises redis.ResponseError if Redis rejected a command of the earlier batch (after reading all its replies).
        """
        if items:
            self._exchange(self.encode(items))

    def flush(self) -> None:
        """Read the replies of the batch still in flight: after it Redis has run every batch written."""
        if self._in_flight:
            self._exchange(None)

    def encode(self, items: list[DecisionOut]) -> tuple[bytes, int]:
        """The batch's commands as one RESP buffer, and how many replies they produce (one per decision).

        The same bytes as `resp_command(b"EVAL", STORE or ERASE, b"3", *keys, ...)` per decision, gathered as
        parts and joined once: each payload (kilobytes) is copied once, the script and its header never.
        """
        parts: list[bytes] = []
        add = parts.append
        prefixes, ttl, keep, index = self._key_prefixes, self._ttl_arg, self._keep_arg, self._index_arg
        for item in items:
            user = item.user_id.encode()
            erase = item.forget or not item.personal
            add(_ERASE_HEAD if erase else _STORE_HEAD)
            for prefix in prefixes[:3]:
                add(b"$%d\r\n%s%s\r\n" % (len(prefix) + len(user), prefix, user))
            payload = item.payload
            add(b"$%d\r\n" % len(payload))
            add(payload)
            if erase:
                add(b"\r\n" + index)
            else:
                decision = item.decision_id.encode()
                add(b"\r\n%s%s$%d\r\n%s\r\n%s$%d\r\n%s\r\n" % (ttl, keep, len(decision), decision, index, len(user),
                                                                   user))
            add(b"$%d\r\n%s%s\r\n" % (len(prefixes[3]) + len(user), prefixes[3], user))
        return b"".join(parts), len(items)

    def _exchange(self, batch: tuple[bytes, int] | None) -> None:
        """Send `batch` (if any), then read the replies of every batch sent before it."""
        unsent = [batch] if batch is not None else []
        backoff = Backoff(0.1, cap=MAX_BACKOFF_S)
        while True:
            try:
                if self._connection is None:  # a new socket: the batches never confirmed go first, in order
                    self._connection = self._client.connection_pool.get_connection()
                    unsent, self._in_flight = self._in_flight + unsent, []
                while unsent:
                    self._connection.send_packed_command([unsent[0][0]], check_health=False)
                    self._in_flight.append(unsent.pop(0))
                while len(self._in_flight) > (batch is not None):
                    self._confirm_oldest()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._disconnect()
                delay = backoff.next()
                log.warning("redis write of %d batches failed (%s); retrying in %.1fs",
                            len(self._in_flight) + len(unsent), exc, delay)
                time.sleep(delay)

    def _confirm_oldest(self) -> None:
        """Read every reply of the oldest batch in flight; then raise the first command Redis rejected, if any."""
        assert self._connection is not None
        rejected: redis.ResponseError | None = None
        for _ in range(self._in_flight[0][1]):
            try:
                self._connection.read_response()
            except redis.ResponseError as exc:
                rejected = rejected or exc
        self._in_flight.pop(0)
        if rejected is not None:
            raise rejected

    def _disconnect(self) -> None:
        """Drop the socket (replies may be left unread on it: never reuse it)."""
        if self._connection is not None:
            self._connection.disconnect()
            self._client.connection_pool.release(self._connection)
            self._connection = None

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._disconnect()
            self._client.close()


class RedisDecisionSink(DynamicSink[DecisionOut]):
    """Writes each worker's decisions to Redis; writes are idempotent per user (last decision wins)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> RedisDecisionWriter:
        """One Redis connection per worker."""
        return RedisDecisionWriter(self._settings)
