"""Malformed messages for exercising the engine's validation and dead-letter routing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from simulator.contract import CHAT_TOPIC, CLICKSTREAM_TOPIC, MAX_PAYLOAD_BYTES, TOPIC_BY_TYPE
from simulator.events import SimEvent
from simulator.world import Item

Template = dict[str, Any]


def _invalid_json(t: Template, item: Item) -> tuple[str, bytes]:
    raw = orjson.dumps(t)
    return TOPIC_BY_TYPE[t["type"]], raw[: len(raw) // 2]


def _not_an_object(t: Template, item: Item) -> tuple[str, bytes]:
    return TOPIC_BY_TYPE[t["type"]], orjson.dumps([t])


def _missing_user_id(t: Template, item: Item) -> tuple[str, bytes]:
    return TOPIC_BY_TYPE[t["type"]], orjson.dumps({k: v for k, v in t.items() if k != "user_id"})


def _ts_as_string(t: Template, item: Item) -> tuple[str, bytes]:
    return TOPIC_BY_TYPE[t["type"]], orjson.dumps({**t, "ts": str(t["ts"])})


def _unknown_type(t: Template, item: Item) -> tuple[str, bytes]:
    return TOPIC_BY_TYPE[t["type"]], orjson.dumps({**t, "type": "teleport"})


def _chat_without_text(t: Template, item: Item) -> tuple[str, bytes]:
    event = {"event_id": t["event_id"], "user_id": t["user_id"], "type": "chat_message", "ts": t["ts"]}
    return CHAT_TOPIC, orjson.dumps(event)


def _negative_price(t: Template, item: Item) -> tuple[str, bytes]:
    event = {
        "event_id": t["event_id"],
        "user_id": t["user_id"],
        "type": "purchase",
        "ts": t["ts"],
        "session_id": t.get("session_id", f"{t['user_id']}-s0"),
        "item_id": item.item_id,
        "category": item.category,
        "price": -max(item.price, 1.0),
    }
    return CLICKSTREAM_TOPIC, orjson.dumps(event)


def _oversize_payload(t: Template, item: Item) -> tuple[str, bytes]:
    return TOPIC_BY_TYPE[t["type"]], orjson.dumps({**t, "padding": "x" * (MAX_PAYLOAD_BYTES + 1)})


def _non_utf8(t: Template, item: Item) -> tuple[str, bytes]:
    raw = orjson.dumps(t)
    user = t["user_id"].encode()
    return TOPIC_BY_TYPE[t["type"]], raw.replace(user, user + b"\xff\xfe", 1)


MALFORMED_KINDS: dict[str, Callable[[Template, Item], tuple[str, bytes]]] = {
    "invalid_json": _invalid_json,
    "not_an_object": _not_an_object,
    "missing_user_id": _missing_user_id,
    "ts_as_string": _ts_as_string,
    "unknown_type": _unknown_type,
    "chat_without_text": _chat_without_text,
    "negative_price": _negative_price,
    "oversize_payload": _oversize_payload,
    "non_utf8": _non_utf8,
}
"""Kind name -> builder of (topic, value) from a template event; cycled through in this order."""


def malformed_event(kind: str, template: Template, item: Item) -> SimEvent:
    """Corrupt a valid `template` event (already carrying a fresh event_id) in the way `kind` names.

    The topic is the one the event would have gone to; the key is the template's user_id
    (empty when the user_id is what is missing).
    """
    topic, value = MALFORMED_KINDS[kind](template, item)
    key = b"" if kind == "missing_user_id" else template["user_id"].encode()
    return SimEvent(topic=topic, key=key, value=value, valid=False, event=None, reason=kind)
