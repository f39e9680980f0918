"""Turn raw Kafka records into accepted events or dead letters; never raises on input."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Message

from operators.contracts import MIN_TS_MS, REPLAY_MIN_TS_MS, InvalidEvent, utf8_error, validate_event


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event and the wall-clock time (epoch ms) the engine read it."""

    event: dict[str, Any]
    ingest_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid record kept verbatim, with why it was rejected and where it came from."""

    raw: bytes | None
    key: bytes | None
    reason: str
    topic: str | None
    partition: int | None
    offset: int | None


class EventParser:
    """Decode (orjson) and validate records; map each topic name to its contract kind.

    `replay` accepts timestamps from 1970 on (recorded history replayed), live events only from 2000 on.

    >>> parser = EventParser({"clickstream": "clickstream"}, max_bytes=1024)
    >>> parser.parse(b"{", None, "clickstream", 0, 7).reason[:12]
    'invalid JSON'
    >>> parser.parse(b'{"text": "\\xff"}', None, "clickstream", 0, 8).reason
    'invalid JSON: invalid UTF-8: byte 0xff at position 10'
    """

    def __init__(self, topic_kinds: Mapping[str, str], max_bytes: int, replay: bool = False) -> None:
        self._topic_kinds = dict(topic_kinds)
        self._max_bytes = max_bytes
        self._min_ts_ms = REPLAY_MIN_TS_MS if replay else MIN_TS_MS  # replay: recorded history, from 1970

    def parse(
        self, raw: bytes | None, key: bytes | None, topic: str | None, partition: int | None, offset: int | None
    ) -> Accepted | Rejected:
        """Accept the record's event or explain in a Rejected why not."""

        def reject(reason: str) -> Rejected:
            return Rejected(raw, key, reason, topic, partition, offset)

        kind = self._topic_kinds.get(topic or "")
        if kind is None:
            return reject(f"record from unexpected topic {topic!r}")
        if raw is None:
            return reject("empty record (null value)")
        if len(raw) > self._max_bytes:
            return reject(f"oversize event: {len(raw)} bytes > limit {self._max_bytes}")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return reject(f"invalid JSON: {utf8_error(raw) or exc}")
        try:
            validate_event(event, kind, self._min_ts_ms)
        except InvalidEvent as exc:
            return reject(str(exc))
        return Accepted(event, int(time.time() * 1000))

    def parse_message(self, message: Message) -> Accepted | Rejected:
        """Parse a consumed Kafka message; a consumer error (`message.error()`) becomes a Rejected."""
        error = message.error()
        if error is not None:
            return Rejected(message.value(), message.key(), f"kafka error: {error}", message.topic(),
                            message.partition(), message.offset())
        return self.parse(message.value(), message.key(), message.topic(), message.partition(), message.offset())
