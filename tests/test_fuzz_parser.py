"""Property-based tests and a fuzz run of the event parser/validator and the engine behind it.

Whatever arrives (random bytes, arbitrary JSON, mutated events, huge or deeply nested payloads, unicode
edge cases, timestamps far in the past or future) the parser returns Accepted or Rejected with a reason;
it never raises. Accepted events never raise in the engine and never put a non-finite number into a
decision or the shared models.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import orjson
import pytest
from badinput import NOW_MS, VALID, corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.contracts import MAX_DWELL_MS, MAX_ID_CHARS, MAX_PRICE, MAX_TS_MS, MIN_TS_MS
from operators.engine import PersonalizationEngine
from operators.features import UserFeatures
from operators.parse import Accepted, EventParser, Rejected

MAX_BYTES = 4096
KINDS = sorted(VALID)
PARSER = EventParser({kind: kind for kind in KINDS}, MAX_BYTES)
FIELDS = sorted({name for events in VALID.values() for event in events for name in event}
                | {"event_id", "user_id", "ts"})
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
ids = st.text(min_size=0, max_size=MAX_ID_CHARS + 2) | st.sampled_from(["\u0000", "\ufeff", "\u202e", "\U0001f600"])
timestamps = (st.integers(-(2**63), 2**63 - 1) | st.integers(MIN_TS_MS - 2, MIN_TS_MS + 2)
              | st.integers(MAX_TS_MS - 2, MAX_TS_MS + 2))


def _check_outcome(result: Accepted | Rejected, raw: bytes) -> None:
    if isinstance(result, Rejected):
        assert isinstance(result.reason, str) and result.reason, "a rejection without a reason"
        assert result.raw == raw, "the dead letter must carry the raw record unchanged"
        return
    event = result.event
    assert isinstance(event["event_id"], str) and 0 < len(event["event_id"]) <= MAX_ID_CHARS
    assert isinstance(event["user_id"], str) and 0 < len(event["user_id"]) <= MAX_ID_CHARS
    assert isinstance(event["ts"], int) and MIN_TS_MS <= event["ts"] <= MAX_TS_MS


def _assert_finite(value: Any, path: str = "decision") -> None:
    if isinstance(value, float):
        assert math.isfinite(value), f"{path} is {value}"
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _assert_finite(item, f"{path}[{index}]")


class EngineProbe:
    """One engine fed every accepted event; checks decisions and that a reference user's scores stay finite."""

    def __init__(self) -> None:
        self.engine = PersonalizationEngine()
        self.profiles: dict[str, UserFeatures | None] = {}

    def feed(self, accepted: Accepted) -> None:
        user = accepted.event["user_id"]
        profile, decision = self.engine.handle(self.profiles.get(user), accepted.event, accepted.ingest_ms)
        self.profiles[user] = profile
        _assert_finite(decision)
        orjson.dumps(decision)
        reference = UserFeatures(first_ts=NOW_MS)
        reference.update({"type": "purchase", "ts": NOW_MS, "item_id": "i1", "category": "c1", "price": 10.0})
        churn = self.engine.churn.predict_proba_one(reference.churn_features())[True]
        assert math.isfinite(churn), "churn model corrupted"


PROBE = EngineProbe()


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(raw=st.binary(max_size=MAX_BYTES + 100))
def test_random_bytes_never_raise(kind: str, raw: bytes, cases_tried: Counter) -> None:
    cases_tried["parser: random bytes"] += 1
    _check_outcome(PARSER.parse(raw, None, kind, 0, 0), raw)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(value=json_values)
def test_arbitrary_json_never_raises(kind: str, value: Any, cases_tried: Counter) -> None:
    cases_tried["parser: arbitrary JSON"] += 1
    raw = orjson.dumps(value)
    _check_outcome(PARSER.parse(raw, None, kind, 0, 0), raw)


@PROPERTY
@given(
    kind=st.sampled_from(KINDS), template=st.integers(0, 10), event_id=ids, user_id=ids, ts=timestamps,
    overrides=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values | ids, max_size=3),
    drop=st.sets(st.sampled_from(FIELDS), max_size=2),
)
def test_mutated_events_are_rejected_with_a_reason_or_handled_safely(
    kind: str, template: int, event_id: str, user_id: str, ts: int, overrides: dict, drop: set, cases_tried: Counter
) -> None:
    cases_tried["parser+engine: mutated events"] += 1
    templates = VALID[kind]
    event = {"event_id": event_id, "user_id": user_id, "ts": ts, **templates[template % len(templates)], **overrides}
    for name in drop:
        event.pop(name, None)
    raw = orjson.dumps(event)
    result = PARSER.parse(raw, None, kind, 0, 0)
    _check_outcome(result, raw)
    if isinstance(result, Accepted):
        cases_tried["parser+engine: mutated events accepted"] += 1
        PROBE.feed(result)


def test_bad_input_corpus_is_rejected_with_reasons(cases_tried: Counter) -> None:
    cases = corpus(seed=20261123, n=3000, max_bytes=MAX_BYTES, user_of=lambda i: f"user-{i % 50}")
    reasons: Counter[str] = Counter()
    for case in cases:
        result = PARSER.parse(case.raw, None, case.kind, 0, 0)
        _check_outcome(result, case.raw)
        if case.must_reject:
            assert isinstance(result, Rejected), f"{case.name} was accepted: {case.raw[:200]!r}"
            reasons[result.reason.split(":")[0][:40]] += 1
        elif isinstance(result, Accepted):
            PROBE.feed(result)
    cases_tried["parser+engine: bad-input corpus"] += len(cases)
    assert len(reasons) >= 8, f"expected many distinct rejection reasons, got {reasons}"


def _valid_events(user_ids: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, dict]]:
    """(topic kind, event) pairs that satisfy the contract, with extreme but allowed values."""
    names = st.text(min_size=1, max_size=MAX_ID_CHARS)
    base = st.fixed_dictionaries({"event_id": names, "user_id": user_ids, "ts": st.integers(MIN_TS_MS, MAX_TS_MS)})
    item = st.fixed_dictionaries(
        {"item_id": names, "category": names},
        optional={"price": st.floats(0, MAX_PRICE) | st.integers(0, int(MAX_PRICE)),
                  "dwell_ms": st.integers(0, MAX_DWELL_MS),
                  "session_id": names, "decision_id": names},
    )
    clicks = st.tuples(st.just("clickstream"),
                       st.sampled_from(["page_view", "click", "add_to_cart", "session_start", "search"]), item)
    purchases = st.tuples(st.just("clickstream"), st.just("purchase"), item.map(lambda e: {"price": 1.0, **e}))
    chats = st.tuples(st.just("chat"), st.just("chat_message"), st.fixed_dictionaries(
        {"text": st.text(min_size=1, max_size=300)},
        optional={"label": st.sampled_from(["positive", "negative"]), "rating": st.integers(1, 5)}))
    controls = st.tuples(st.just("control"), st.just("churn_outcome"),
                         st.fixed_dictionaries({"churned": st.booleans()})) | st.tuples(
        st.just("control"), st.just("consent"), st.fixed_dictionaries({"personalization": st.booleans()}))
    return st.tuples(base, clicks | purchases | chats | controls).map(
        lambda pair: (pair[1][0], {**pair[0], "type": pair[1][1], **pair[1][2]}))


@PROPERTY
@given(stream=st.lists(_valid_events(st.sampled_from(["a", "b", "victim"])) | st.binary(max_size=300), min_size=1,
                       max_size=40))
def test_event_sequences_never_crash_the_engine_or_corrupt_state(stream: list, cases_tried: Counter) -> None:
    cases_tried["engine: event sequences"] += 1
    cases_tried["engine: events in sequences"] += len(stream)
    probe = EngineProbe()
    victim_accepted, victim_on = 0, True
    for item in stream:
        kind, raw = ("clickstream", item) if isinstance(item, bytes) else (item[0], orjson.dumps(item[1]))
        result = PARSER.parse(raw, None, kind, 0, 0)
        _check_outcome(result, raw)
        if isinstance(result, Accepted):
            probe.feed(result)
            event = result.event
            if event["user_id"] == "victim":
                if event["type"] == "consent":
                    victim_on = event["personalization"]
                    victim_accepted *= victim_on  # withdrawing consent erases the profile
                elif event["type"] != "churn_outcome":  # control events are not behaviour: they count no event
                    victim_accepted += victim_on
    victim = probe.profiles.get("victim")
    if victim is not None and victim.personalization:
        assert victim.n_events == victim_accepted, "rejected input or other users changed the victim's profile"
