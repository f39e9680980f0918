"""Bad-input generators shared by the fuzz tests: mutations of valid events that break the contract."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from operators.contracts import MAX_ID_CHARS, MAX_TS_MS, MIN_TS_MS

NOW_MS = 1_763_900_000_000
VALID: dict[str, list[dict[str, Any]]] = {
    "clickstream": [
        {"type": "page_view", "item_id": "i1", "category": "c1", "dwell_ms": 1200, "session_id": "s1"},
        {"type": "click", "item_id": "i2", "category": "c2"},
        {"type": "add_to_cart", "item_id": "i3", "category": "c1", "price": 9.5},
        {"type": "purchase", "item_id": "i3", "category": "c1", "price": 9.5},
        {"type": "search", "query": "tent"},
        {"type": "session_start", "session_id": "s1"},
    ],
    "chat": [{"type": "chat_message", "text": "the delivery was late", "label": "negative", "rating": 2}],
    "control": [{"type": "consent", "personalization": True}, {"type": "churn_outcome", "churned": False}],
}
# Field values of the wrong type or out of range, and unicode edge cases.
WRONG_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, float("1e308"), -1e308, 2**63, "", "x" * (MAX_ID_CHARS + 1), [], {}, [1, 2], {"a": 1},
    "\u0000", "\u202e\u202d", "\U0001f600" * 200, "\ud7ff\ue000", " ",
]
UNICODE_IDS = ["\u0000", "\u202etxt", "\U0001f600", "e\u0301", "\ufeff", "ß" * MAX_ID_CHARS, "\u2028\u2029", " "]


@dataclass(frozen=True, slots=True)
class Case:
    """One bad-input case: the raw record, the topic kind it is sent to, and whether it must be rejected."""

    name: str
    kind: str
    raw: bytes
    must_reject: bool


def valid_event(rng: random.Random, kind: str, user_id: str, event_id: str) -> dict[str, Any]:
    """A random valid event of `kind`."""
    return {"event_id": event_id, "user_id": user_id, "ts": NOW_MS + rng.randrange(10**6), **rng.choice(VALID[kind])}


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _without(event: dict, name: str) -> dict:
    return {k: v for k, v in event.items() if k != name}


def _mutations(rng: random.Random, event: dict, kind: str, max_bytes: int) -> list[tuple[str, bytes, bool]]:
    other_kind = rng.choice([k for k in VALID if k != kind])
    field = rng.choice(sorted(event))
    raw = _dump(event)
    cut = rng.randrange(1, len(raw))
    return [
        ("truncated JSON", raw[:cut], True),
        ("garbage bytes", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), True),
        ("invalid UTF-8", raw[:cut] + b"\xff\xfe" + raw[cut:], True),
        ("lone surrogate escape", raw.replace(b'"type"', b'"\\ud800":1,"type"', 1), True),
        ("not an object", _dump(rng.choice([[event], "event", 42, None, True])), True),
        ("huge payload", _dump({**event, "pad": "x" * (max_bytes + rng.randrange(1000))}), True),
        ("deeply nested", b"[" * 5000 + b"]" * 5000, True),
        ("missing event_id", _dump(_without(event, "event_id")), True),
        ("missing user_id", _dump(_without(event, "user_id")), True),
        ("missing type", _dump(_without(event, "type")), True),
        ("unknown type", _dump({**event, "type": rng.choice(["PAGE_VIEW", "drop_table", "", "\u0000"])}), True),
        ("wrong topic", _dump({**event, **rng.choice(VALID[other_kind])}), True),
        ("id of wrong type",
         _dump({**event, rng.choice(["event_id", "user_id"]): rng.choice([1, None, [], {}, True, ""])}), True),
        ("ts far in the past", _dump({**event, "ts": rng.choice([0, -1, MIN_TS_MS - 1, 1_700_000_000])}), True),
        ("ts far in the future", _dump({**event, "ts": rng.choice([MAX_TS_MS + 1, 2**62, 10**15])}), True),
        ("ts of wrong type", _dump({**event, "ts": rng.choice([str(NOW_MS), float(NOW_MS), None, True])}), True),
        ("overlong id", _dump({**event, "user_id": "u" * (MAX_ID_CHARS + rng.randrange(1, 1000))}), True),
        ("wrong field value", _dump({**event, field: rng.choice(WRONG_VALUES)}), False),
        ("unicode ids", _dump({**event, "user_id": rng.choice(UNICODE_IDS)}), False),
    ]


def corpus(seed: int, n: int, max_bytes: int, user_of: Callable[[int], str]) -> list[Case]:
    """`n` bad-input cases cycling through every mutation kind, deterministically from `seed`."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        kind = rng.choice(sorted(VALID))
        index = len(cases)
        event = valid_event(rng, kind, user_of(index), f"fuzz-{index}")
        mutations = _mutations(rng, event, kind, max_bytes)
        name, raw, must_reject = mutations[index % len(mutations)]
        cases.append(Case(name, kind, raw, must_reject))
    return cases
