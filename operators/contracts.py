"""The event contract (version 1): which event types exist, on which topic, with which fields.

`validate_event` is the single gate every event passes before it may touch state; it raises
`InvalidEvent` with a human-readable reason that ends up in the dead-letter topic.
Catalog events (`item_upsert`, `item_delete` on the items topic) carry `item_id` instead of `user_id`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CONTRACT_VERSION = 1

CLICKSTREAM_TYPES = frozenset(
    {"session_start", "page_view", "click", "add_to_cart", "purchase", "search", "session_end"}
)
CHAT_TYPES = frozenset({"chat_message"})
CONTROL_TYPES = frozenset({"consent", "forget_user", "churn_outcome"})
ITEM_TYPES = frozenset({"item_upsert", "item_delete"})
EVENT_TYPES = CLICKSTREAM_TYPES | CHAT_TYPES | CONTROL_TYPES | ITEM_TYPES

# Kind of topic an event type must arrive on (the real topic names are configurable).
TOPIC_KIND_OF_TYPE: dict[str, str] = {
    **{t: "clickstream" for t in CLICKSTREAM_TYPES},
    **{t: "chat" for t in CHAT_TYPES},
    **{t: "control" for t in CONTROL_TYPES},
    **{t: "items" for t in ITEM_TYPES},
}

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 4000
MAX_QUERY_CHARS = 512
MIN_TS_MS = 946_684_800_000  # 2000-01-01: live events
REPLAY_MIN_TS_MS = 0  # 1970-01-01: replays of recorded history (PULSE_REPLAY=1)
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_PRICE = 1e9  # larger prices are input errors and would overflow the spend features
MAX_DWELL_MS = 86_400_000  # one day
SENTIMENT_LABELS = ("positive", "negative")
MAX_TAGS = 32


class InvalidEvent(ValueError):
    """The event breaks the contract; the message is the dead-letter reason."""


def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise InvalidEvent(reason)


# The checks below build their reasons only on failure: this gate runs for every event.
def _check_number(event: dict, name: str, required: bool, integer: bool = False, maximum: float = float("inf")) -> None:
    value = event.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field {name!r}")
        return
    if not isinstance(value, int if integer else (int, float)) or isinstance(value, bool):
        raise InvalidEvent(f"field {name!r} must be {'an integer' if integer else 'a number'}, got "
                           f"{type(value).__name__}")
    if not (value >= 0 and value == value and value != float("inf")):
        raise InvalidEvent(f"field {name!r} must be a finite number >= 0")
    if value > maximum:
        raise InvalidEvent(f"field {name!r} must be at most {maximum:g}")


def _check_text(event: dict, name: str, required: bool, max_chars: int = MAX_ID_CHARS) -> None:
    """A string of 1..`max_chars` characters (an id by default)."""
    value = event.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field {name!r}")
        return
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= max_chars:
        raise InvalidEvent(f"field {name!r} must have 1..{max_chars} characters")


def _check_item_event(event: dict, item_required: bool, price_required: bool) -> None:
    _check_text(event, "session_id", False)
    _check_text(event, "item_id", item_required)
    _check_text(event, "category", False)
    _check_number(event, "price", price_required, maximum=MAX_PRICE)
    _check_number(event, "dwell_ms", False, integer=True, maximum=MAX_DWELL_MS)
    _check_text(event, "decision_id", False)


def _check_chat(event: dict) -> None:
    _check_text(event, "text", True, MAX_TEXT_CHARS)
    label = event.get("label")
    _require(label is None or label in SENTIMENT_LABELS, f"field 'label' must be one of {SENTIMENT_LABELS}")
    rating = event.get("rating")
    _require(
        rating is None or (isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5),
        "field 'rating' must be an integer 1..5",
    )


def _check_bool(name: str) -> Callable[[dict], None]:
    def check(event: dict) -> None:
        _require(isinstance(event.get(name), bool), f"field {name!r} must be true or false")

    return check


def _check_item_upsert(event: dict) -> None:
    _check_text(event, "item_id", True)
    _check_text(event, "category", True)
    _check_number(event, "price", False)
    tags = event.get("tags")
    _require(
        tags is None or (isinstance(tags, list) and len(tags) <= MAX_TAGS
                         and all(isinstance(t, str) and 0 < len(t) <= MAX_ID_CHARS for t in tags)),
        f"field 'tags' must be a list of at most {MAX_TAGS} non-empty strings",
    )
    in_stock = event.get("in_stock")
    _require(in_stock is None or isinstance(in_stock, bool), "field 'in_stock' must be true or false")
    for name in ("available_from", "available_until"):
        _check_number(event, name, False, integer=True)
    start, end = event.get("available_from"), event.get("available_until")
    _require(start is None or end is None or start <= end, "'available_from' is after 'available_until'")


_TYPE_CHECKS: dict[str, Callable[[dict], None]] = {
    "session_start": lambda e: _check_item_event(e, False, False),
    "session_end": lambda e: _check_item_event(e, False, False),
    "page_view": lambda e: _check_item_event(e, False, False),
    "search": lambda e: (_check_item_event(e, False, False), _check_text(e, "query", False, MAX_QUERY_CHARS)),
    "click": lambda e: _check_item_event(e, True, False),
    "add_to_cart": lambda e: _check_item_event(e, True, False),
    "purchase": lambda e: _check_item_event(e, True, True),
    "chat_message": _check_chat,
    "consent": _check_bool("personalization"),
    "churn_outcome": _check_bool("churned"),
    "forget_user": lambda e: None,
    "item_upsert": _check_item_upsert,
    "item_delete": lambda e: _check_text(e, "item_id", True),
}


def validate_event(event: Any, topic_kind: str, min_ts_ms: int = MIN_TS_MS) -> dict[str, Any]:
    """Return `event` if it satisfies the contract for a topic of kind `topic_kind`, else raise InvalidEvent.

    Timestamps must lie in `min_ts_ms`..2100-01-01: from 2000 on for live events, from 1970 on for replays
    of recorded history (`REPLAY_MIN_TS_MS`).

    >>> event = {"event_id": "e1", "user_id": "u1", "type": "page_view", "ts": 1700000000000}
    >>> validate_event(event, "clickstream")["type"]
    'page_view'
    """
    if not isinstance(event, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(event).__name__}")
    _check_text(event, "event_id", True)
    event_type = event.get("type")
    is_catalog_event = isinstance(event_type, str) and event_type in ITEM_TYPES
    _check_text(event, "user_id", not is_catalog_event)  # catalog events concern items, not users
    _require(isinstance(event_type, str), "missing or non-string field 'type'")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {event_type[:40]!r}")
    expected_kind = TOPIC_KIND_OF_TYPE[event_type]
    if expected_kind != topic_kind:
        raise InvalidEvent(f"type {event_type!r} belongs on the {expected_kind} topic, not {topic_kind}")
    ts = event.get("ts")
    _require(isinstance(ts, int) and not isinstance(ts, bool), "field 'ts' must be an integer epoch in milliseconds")
    if not min_ts_ms <= ts <= MAX_TS_MS:
        since = "2000-01-01" if min_ts_ms == MIN_TS_MS else f"{min_ts_ms} ms"
        raise InvalidEvent(f"field 'ts' is outside {since}..2100-01-01 (epoch milliseconds expected)")
    _TYPE_CHECKS[event_type](event)
    return event


def utf8_error(raw: bytes) -> str | None:
    """Where `raw` stops being UTF-8 (None when it is UTF-8): JSON must be UTF-8 (RFC 8259).

    >>> utf8_error(b'{"text": "caf\\xe9"}'), utf8_error("café".encode())
    ('invalid UTF-8: byte 0xe9 at position 13', None)
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8: byte 0x{raw[exc.start]:02x} at position {exc.start}"
    return None
