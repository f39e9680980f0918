"""Model commands over Redis: the CLI asks running engine processes to snapshot or roll back their models.

The same poller keeps a heartbeat per dataflow worker (`{prefix}:engine:alive:<worker>`, 5 s TTL), which the
demo waits for before it sends load.

Protocol: the CLI INCRs `{prefix}:models:seq` and writes the command `{seq, op, name}` to
`{prefix}:models:command`; every engine process polls that key (each second), runs a command newer
than the last it ran, and RPUSHes its result to `{prefix}:models:ack:<seq>` (kept 10 minutes).
Commands issued while no engine runs are not replayed later: an engine starts from the current seq.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import redis
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pulse.config import Settings

log = logging.getLogger("pulse.models")

POLL_S = 1.0
HEARTBEAT_TTL_S = 5
ACK_TTL_S = 600
OPS = ("snapshot", "rollback")


@dataclass(frozen=True, slots=True)
class ModelCommand:
    """Snapshot the models under `name`, or roll back to snapshot `name`; `seq` None: a periodic snapshot."""

    op: str
    name: str
    seq: int | None


class ModelCommandChannel:
    """The Redis keys of the protocol, for both sides."""

    def __init__(self, settings: Settings) -> None:
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        prefix = settings.redis_prefix
        self._seq_key, self._command_key = f"{prefix}:models:seq", f"{prefix}:models:command"
        self._ack_prefix = f"{prefix}:models:ack:"
        self._alive_prefix = f"{prefix}:engine:alive:"

    def heartbeat(self, worker: int) -> None:
        """Mark a dataflow worker alive for the next few seconds."""
        self._client.set(f"{self._alive_prefix}{worker}", int(time.time() * 1000), ex=HEARTBEAT_TTL_S)

    def alive_workers(self) -> int:
        """Dataflow workers that sent a heartbeat recently."""
        return sum(1 for _ in self._client.scan_iter(f"{self._alive_prefix}*"))

    def submit(self, op: str, name: str) -> int:
        """Publish a command; returns its sequence number."""
        if op not in OPS:
            raise ValueError(f"unknown model command {op!r}")
        seq = int(self._client.incr(self._seq_key))
        self._client.set(self._command_key, orjson.dumps({"seq": seq, "op": op, "name": name}))
        return seq

    def wait_acks(self, seq: int, timeout_s: float, settle_s: float = 1.5) -> list[dict]:
        """Results of every process that ran command `seq`: waits for the first, then `settle_s` for others."""
        key = f"{self._ack_prefix}{seq}"
        deadline = time.monotonic() + timeout_s
        first_seen = None
        while time.monotonic() < deadline:
            if self._client.llen(key) and first_seen is None:
                first_seen = time.monotonic()
            if first_seen is not None and time.monotonic() - first_seen >= settle_s:
                break
            time.sleep(0.1)
        return [orjson.loads(raw) for raw in self._client.lrange(key, 0, -1)]

    def current_seq(self) -> int:
        """The newest sequence number issued."""
        return int(self._client.get(self._seq_key) or 0)

    def latest(self) -> ModelCommand | None:
        """The newest command, if any."""
        raw = self._client.get(self._command_key)
        if raw is None:
            return None
        command = orjson.loads(raw)
        return ModelCommand(command["op"], command["name"], command["seq"])

    def ack(self, seq: int, result: dict) -> None:
        """Record one process's result of command `seq`."""
        key = f"{self._ack_prefix}{seq}"
        self._client.pipeline(transaction=False).rpush(key, orjson.dumps(result)).expire(key, ACK_TTL_S).execute()

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


class _CommandPartition(StatelessSourcePartition[ModelCommand]):
    def __init__(self, settings: Settings, periodic_s: float, worker: int) -> None:
        self._worker = worker
        self._channel = ModelCommandChannel(settings)
        self._last_seq = self._safe(self._channel.current_seq, 0)
        self._periodic_s = periodic_s
        self._next_periodic = time.monotonic() + periodic_s if periodic_s > 0 else None

    @staticmethod
    def _safe(call, default):
        try:
            return call()
        except redis.RedisError as exc:
            log.warning("model command channel unavailable: %s", exc)
            return default

    def next_batch(self) -> list[ModelCommand]:
        """New CLI commands, plus a periodic snapshot when one is due; also the worker's heartbeat."""
        self._safe(lambda: self._channel.heartbeat(self._worker), None)
        commands = []
        command = self._safe(self._channel.latest, None)
        if command is not None and command.seq > self._last_seq:
            self._last_seq = command.seq
            commands.append(command)
        if self._next_periodic is not None and time.monotonic() >= self._next_periodic:
            self._next_periodic = time.monotonic() + self._periodic_s
            commands.append(ModelCommand("snapshot", f"auto-{int(time.time())}", None))
        return commands

    def next_awake(self) -> datetime:
        """Poll once a second."""
        return datetime.now(UTC) + timedelta(seconds=POLL_S)

    def close(self) -> None:
        self._channel.close()


class ModelCommandSource(DynamicSource[ModelCommand]):
    """Every worker polls for model commands (the engine runs each once per process)."""

    def __init__(self, settings: Settings, periodic_s: float) -> None:
        self._settings = settings
        self._periodic_s = periodic_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CommandPartition:
        """Worker 0 also issues the periodic snapshots."""
        return _CommandPartition(self._settings, self._periodic_s if worker_index == 0 else 0.0, worker_index)


class _AckPartition(StatelessSinkPartition[dict]):
    def __init__(self, settings: Settings) -> None:
        self._channel = ModelCommandChannel(settings)

    def write_batch(self, items: list[dict]) -> None:
        for result in items:
            if result.get("seq") is not None:
                self._channel.ack(result["seq"], result)

    def close(self) -> None:
        self._channel.close()


class ModelAckSink(DynamicSink[dict]):
    """Writes the results of CLI commands back for the CLI to read."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckPartition:
        """One connection per worker."""
        return _AckPartition(self._settings)
