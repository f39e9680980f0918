"""The `SimEvent` record sent to Kafka and helpers to encode and re-timestamp events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from simulator.contract import TOPIC_BY_TYPE


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One message ready to send: Kafka topic, key and value plus what it encodes.

    `event` is the decoded event for valid messages and None for malformed ones,
    whose `reason` names what is wrong with them.
    """

    topic: str
    key: bytes
    value: bytes
    valid: bool
    event: dict[str, Any] | None
    reason: str | None = None


def encode_event(event: dict[str, Any]) -> SimEvent:
    """Wrap a valid event dict: topic from its type, key = user_id, value = orjson bytes."""
    return SimEvent(
        topic=TOPIC_BY_TYPE[event["type"]],
        key=event["user_id"].encode(),
        value=orjson.dumps(event),
        valid=True,
        event=event,
    )


def restamp(sim_event: SimEvent, ts_ms: int) -> SimEvent:
    """Return `sim_event` with its `ts` rewritten to `ts_ms`; malformed events are returned unchanged."""
    if sim_event.event is None:
        return sim_event
    event = {**sim_event.event, "ts": ts_ms}
    return SimEvent(sim_event.topic, sim_event.key, orjson.dumps(event), sim_event.valid, event, sim_event.reason)
