"""The event contract and the parser: valid events pass, every kind of bad input gets a clear reason."""

from __future__ import annotations

import orjson
import pytest

from operators.contracts import InvalidEvent, validate_event
from operators.parse import Accepted, EventParser, Rejected

TS = 1_700_000_000_000
KINDS = {"clickstream": "clickstream", "chat": "chat", "control": "control"}


def event(**fields) -> dict:
    return {"event_id": "e1", "user_id": "u1", "ts": TS, **fields}


VALID = [
    ("clickstream", event(type="session_start", session_id="s1")),
    ("clickstream", event(type="page_view", session_id="s1", item_id="i1", category="c", price=9.5, dwell_ms=1200)),
    ("clickstream", event(type="click", item_id="i1")),
    ("clickstream", event(type="add_to_cart", item_id="i1", price=3)),
    ("clickstream", event(type="purchase", item_id="i1", price=0, decision_id="d-e0")),
    ("clickstream", event(type="search", query="red shoes")),
    ("clickstream", event(type="session_end", session_id="s1")),
    ("chat", event(type="chat_message", text="great service", label="positive", rating=5)),
    ("chat", event(type="chat_message", text="ok")),
    ("control", event(type="consent", personalization=False)),
    ("control", event(type="forget_user")),
    ("control", event(type="churn_outcome", churned=True)),
    ("clickstream", event(type="page_view", extra_field={"forward": "compatible"})),
]

INVALID = [
    ("clickstream", [1, 2], "must be a JSON object"),
    ("clickstream", {"user_id": "u1", "type": "page_view", "ts": TS}, "missing field 'event_id'"),
    ("clickstream", event(type="page_view", user_id=""), "'user_id' must have 1..128"),
    ("clickstream", event(type="page_view", user_id=7), "'user_id' must be a string"),
    ("clickstream", event(type="page_view", user_id="u" * 129), "'user_id' must have 1..128"),
    ("clickstream", event(type="teleport"), "unknown event type"),
    ("clickstream", {"event_id": "e", "user_id": "u", "ts": TS}, "field 'type'"),
    ("clickstream", event(type="page_view", ts="yesterday"), "'ts' must be an integer"),
    ("clickstream", event(type="page_view", ts=True), "'ts' must be an integer"),
    ("clickstream", event(type="page_view", ts=1_700_000_000), "'ts' is outside"),
    ("clickstream", event(type="click"), "missing field 'item_id'"),
    ("clickstream", event(type="purchase", item_id="i1"), "missing field 'price'"),
    ("clickstream", event(type="purchase", item_id="i1", price=-1), "finite number >= 0"),
    ("clickstream", event(type="page_view", dwell_ms=1.5), "'dwell_ms' must be an integer"),
    ("clickstream", event(type="chat_message", text="hi"), "belongs on the chat topic"),
    ("chat", event(type="chat_message"), "missing field 'text'"),
    ("chat", event(type="chat_message", text=""), "'text' must have 1..4000"),
    ("chat", event(type="chat_message", text="x", label="meh"), "'label' must be one of"),
    ("chat", event(type="chat_message", text="x", rating=6), "'rating' must be an integer 1..5"),
    ("control", event(type="consent"), "'personalization' must be true or false"),
    ("control", event(type="churn_outcome", churned="yes"), "'churned' must be true or false"),
]


@pytest.mark.parametrize(("kind", "payload"), VALID)
def test_valid_events_pass(kind: str, payload: dict) -> None:
    assert validate_event(payload, kind) is payload


@pytest.mark.parametrize(("kind", "payload", "reason"), INVALID)
def test_invalid_events_name_their_fault(kind: str, payload: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(").replace(".", r"\.")):
        validate_event(payload, kind)


def test_parser_accepts_and_stamps_ingest_time() -> None:
    parser = EventParser(KINDS, max_bytes=1024)
    result = parser.parse(orjson.dumps(VALID[1][1]), b"u1", "clickstream", 0, 5)
    assert isinstance(result, Accepted)
    assert result.event["item_id"] == "i1" and result.ingest_ms > TS


@pytest.mark.parametrize(
    ("raw", "topic", "reason"),
    [
        (b"{not json", "clickstream", "invalid JSON"),
        (b"\xff\xfe{}", "clickstream", "invalid JSON"),
        (None, "clickstream", "empty record"),
        (b"{}" + b" " * 2000, "clickstream", "oversize event: 2002 bytes > limit 1024"),
        (orjson.dumps(event(type="page_view")), "elsewhere", "unexpected topic"),
        (orjson.dumps(event(type="forget_user")), "clickstream", "belongs on the control topic"),
    ],
)
def test_parser_rejects_with_reason_and_keeps_raw(raw: bytes | None, topic: str, reason: str) -> None:
    result = EventParser(KINDS, max_bytes=1024).parse(raw, b"key", topic, 1, 42)
    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert (result.raw, result.key, result.topic, result.partition, result.offset) == (raw, b"key", topic, 1, 42)


def test_replays_of_recorded_history_are_accepted_only_when_asked_for() -> None:
    """A 1997 rating replayed (PULSE_REPLAY=1) is valid; the same record as a live event is not."""
    raw = orjson.dumps(event(type="page_view", item_id="i1", ts=874_965_758_000))  # 1997-09-22
    live = EventParser(KINDS, max_bytes=1024).parse(raw, None, "clickstream", 0, 1)
    assert isinstance(live, Rejected) and "'ts' is outside 2000-01-01..2100-01-01" in live.reason
    replayed = EventParser(KINDS, max_bytes=1024, replay=True).parse(raw, None, "clickstream", 0, 1)
    assert isinstance(replayed, Accepted) and replayed.event["ts"] == 874_965_758_000
    negative = EventParser(KINDS, max_bytes=1024, replay=True).parse(
        orjson.dumps(event(type="page_view", ts=-1)), None, "clickstream", 0, 2)
    assert isinstance(negative, Rejected), "replays still need an epoch timestamp from 1970 on"
