"""Tests for the simulated world and event generator against the event contract and ground truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import orjson
import pytest

from simulator import MALFORMED_KINDS, EventGenerator, SimEvent, SimulationConfig, World, restamp
from simulator.phrases import NEGATIVE, NEUTRAL, POSITIVE

START_MS = 1_700_000_000_000

CLICKSTREAM = {"session_start", "page_view", "click", "add_to_cart", "purchase", "search", "session_end"}
TOPICS = {**{t: "clickstream" for t in CLICKSTREAM}, "chat_message": "chat",
          "consent": "control", "forget_user": "control", "churn_outcome": "control"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def contract_error(topic: str, key: bytes, value: bytes) -> str | None:
    """Independent re-statement of the event contract; returns what is wrong, or None if valid."""
    if len(value) > 64 * 1024:
        return "oversize"
    try:
        ev = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not json / not utf-8"
    if not isinstance(ev, dict):
        return "not an object"
    for f in ("event_id", "user_id", "type"):
        if not isinstance(ev.get(f), str) or not ev[f] or len(ev[f]) > 128:
            return f"bad {f}"
    if not _is_int(ev.get("ts")):
        return "bad ts"
    t = ev["type"]
    if TOPICS.get(t) != topic:
        return "unknown type or wrong topic"
    if key != ev["user_id"].encode():
        return "key != user_id"
    if t in CLICKSTREAM and not isinstance(ev.get("session_id"), str):
        return "missing session_id"
    if t in {"click", "add_to_cart", "purchase", "page_view"} or "item_id" in ev:
        if not isinstance(ev.get("item_id"), str) or not isinstance(ev.get("category"), str):
            return "bad item"
    if t == "purchase" or "price" in ev:
        if not _is_num(ev.get("price")) or ev["price"] < 0:
            return "bad price"
    if t == "page_view" and not (_is_int(ev.get("dwell_ms")) and ev["dwell_ms"] >= 0):
        return "bad dwell_ms"
    if t == "search" and not isinstance(ev.get("query"), str):
        return "bad query"
    if t == "chat_message":
        if not isinstance(ev.get("text"), str) or not 1 <= len(ev["text"]) <= 4000:
            return "bad text"
        if "label" in ev and ev["label"] not in ("positive", "negative"):
            return "bad label"
        if "rating" in ev and not (_is_int(ev["rating"]) and 1 <= ev["rating"] <= 5):
            return "bad rating"
    if t == "consent" and not isinstance(ev.get("personalization"), bool):
        return "bad consent"
    if t == "churn_outcome" and not isinstance(ev.get("churned"), bool):
        return "bad churned"
    return None


def generate(n: int, **overrides: Any) -> tuple[World, list[SimEvent]]:
    cfg = SimulationConfig(start_ms=START_MS, **{"users": 200, "items": 200, **overrides})
    world = World(cfg)
    return world, list(EventGenerator(world).events(n))


@pytest.fixture(scope="module")
def stream() -> tuple[World, list[SimEvent]]:
    return generate(60_000, chat_share=0.15)


def test_same_seed_same_stream_and_different_seed_differs() -> None:
    _, a = generate(3000, malformed_ratio=0.05)
    _, b = generate(3000, malformed_ratio=0.05)
    _, c = generate(3000, malformed_ratio=0.05, seed=7)
    assert [(e.topic, e.key, e.value) for e in a] == [(e.topic, e.key, e.value) for e in b]
    assert [e.value for e in a] != [e.value for e in c]


def test_malformed_injection_leaves_valid_stream_unchanged() -> None:
    _, clean = generate(2000)
    _, noisy = generate(2500, malformed_ratio=0.2)
    noisy_valid = [e.value for e in noisy if e.valid]
    assert noisy_valid == [e.value for e in clean][: len(noisy_valid)]


def test_every_valid_event_passes_the_contract(stream: tuple[World, list[SimEvent]]) -> None:
    _, events = stream
    errors = Counter(contract_error(e.topic, e.key, e.value) for e in events)
    assert errors == Counter({None: len(events)})
    assert all(e.valid and e.reason is None and orjson.loads(e.value) == e.event for e in events)
    ids = [e.event["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert {e.event["type"] for e in events} == set(TOPICS) - {"forget_user", "consent"}


def test_stream_is_in_time_order_and_sessions_are_well_formed(stream: tuple[World, list[SimEvent]]) -> None:
    _, events = stream
    ts = [e.event["ts"] for e in events]
    assert ts == sorted(ts) and ts[0] >= START_MS
    open_sessions: dict[str, str] = {}
    concurrent = 0
    for e in events:
        ev = e.event
        if ev["type"] == "session_start":
            assert ev["user_id"] not in open_sessions
            open_sessions[ev["user_id"]] = ev["session_id"]
            concurrent = max(concurrent, len(open_sessions))
        elif ev["type"] == "session_end":
            assert open_sessions.pop(ev["user_id"]) == ev["session_id"]
        elif "session_id" in ev:
            assert open_sessions[ev["user_id"]] == ev["session_id"]
    assert concurrent >= 20


def test_malformed_ratio_and_every_malformed_event_is_invalid() -> None:
    _, events = generate(20_000, malformed_ratio=0.1)
    bad = [e for e in events if not e.valid]
    assert 0.08 < len(bad) / len(events) < 0.12
    assert {e.reason for e in bad} == set(MALFORMED_KINDS)
    for e in bad:
        assert e.event is None
        assert e.topic in {"clickstream", "chat", "control"}
        assert contract_error(e.topic, e.key, e.value) is not None, e.reason
    assert all(contract_error(e.topic, e.key, e.value) is None for e in events if e.valid)
    by_reason = {e.reason: e for e in bad}
    assert by_reason["chat_without_text"].topic == "chat"
    assert len(by_reason["oversize_payload"].value) > 64 * 1024
    with pytest.raises(UnicodeDecodeError):
        by_reason["non_utf8"].value.decode()


def test_chat_labels_match_polarity_of_text_and_mood(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    chats = [e.event for e in events if e.event["type"] == "chat_message"]
    labeled = [c for c in chats if "label" in c]
    assert 0.25 < len(labeled) / len(chats) < 0.35
    for c in labeled:
        phrases = set(c["text"].rstrip(".").split(". "))
        own, other = (POSITIVE, NEGATIVE) if c["label"] == "positive" else (NEGATIVE, POSITIVE)
        assert phrases & set(own) and not phrases & set(other)
        assert phrases <= set(own) | set(NEUTRAL)
        assert (c["rating"] >= 4) == (c["label"] == "positive")
    mood = {c["label"]: np.mean([world.user_by_id[x["user_id"]].mood for x in labeled if x["label"] == c["label"]])
            for c in labeled}
    assert mood["positive"] > mood["negative"] + 0.3


def test_churn_labels_follow_ground_truth_risk(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    outcomes = [e.event for e in events if e.event["type"] == "churn_outcome"]
    assert len(outcomes) > 500
    risk = {flag: [world.user_by_id[o["user_id"]].churn_risk for o in outcomes if o["churned"] == flag]
            for flag in (True, False)}
    assert np.mean(risk[True]) > np.mean(risk[False]) + 0.1


def test_churn_risk_is_visible_in_behaviour(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        per_user[e.event["user_id"]][e.event["type"]] += 1
    users = [u for u, c in per_user.items() if c["session_start"] >= 3]
    views_per_session = [per_user[u]["page_view"] / per_user[u]["session_start"] for u in users]
    risks = [world.user_by_id[u].churn_risk for u in users]
    assert np.corrcoef(views_per_session, risks)[0, 1] < -0.4


def test_churned_users_stop_and_new_users_appear(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    churned_at = {}
    for i, e in enumerate(events):
        if e.event["type"] == "churn_outcome" and e.event["churned"]:
            churned_at[e.event["user_id"]] = i
    assert len(churned_at) > 50
    for i, e in enumerate(events):
        assert i <= churned_at.get(e.event["user_id"], i), "a churned user produced another event"
    initial = {u.user_id for u in world.users[: world.config.users]}
    newcomers = {e.event["user_id"] for e in events} - initial
    assert len(newcomers) > 30
    assert newcomers <= set(world.user_by_id)
    assert all(int(u.split("-")[1]) > world.config.users for u in newcomers)


def page_views(events: list[SimEvent], field: str) -> dict[str, Counter[str]]:
    """Per user, how often each value of `field` (category, item_id) was viewed."""
    views: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if e.event["type"] == "page_view":
            views[e.event["user_id"]][e.event[field]] += 1
    return views


def test_page_views_follow_category_preferences(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    views = page_views(events, "category")
    checked = 0
    for user_id, counts in views.items():
        user = world.user_by_id[user_id]
        top2 = np.sort(user.category_weights)[-2:]
        if sum(counts.values()) >= 40 and top2[1] - top2[0] > 0.15:
            assert counts.most_common(1)[0][0] == user.top_category, user_id
            checked += 1
    assert checked >= 20


def test_consent_off_users_send_consent_first() -> None:
    world, events = generate(5000, consent_off_share=0.5)
    first: dict[str, dict] = {}
    for e in events:
        first.setdefault(e.event["user_id"], e.event)
    for user_id, ev in first.items():
        if world.user_by_id[user_id].consent_personalization:
            assert ev["type"] == "session_start"
        else:
            assert ev["type"] == "consent" and ev["personalization"] is False and ev["ts"] >= START_MS
    assert 0.35 < np.mean([ev["type"] == "consent" for ev in first.values()]) < 0.65


def test_restamp_rewrites_ts_only() -> None:
    _, events = generate(10, malformed_ratio=0.0)
    e = events[3]
    r = restamp(e, 123)
    assert orjson.loads(r.value) == {**e.event, "ts": 123} and r.event["ts"] == 123
    assert (r.topic, r.key, r.valid) == (e.topic, e.key, True) and e.event["ts"] != 123
    bad = SimEvent("chat", b"u", b"[", False, None, "invalid_json")
    assert restamp(bad, 5) is bad


def test_world_ground_truth_is_sane() -> None:
    world = World(SimulationConfig(users=300, items=100, categories=12, seed=3))
    assert [i.item_id for i in world.items[:2]] == ["item-0001", "item-0002"]
    assert {i.category for i in world.items} == set(world.categories)
    for u in world.users:
        assert abs(u.category_weights.sum() - 1) < 1e-9
        assert np.sort(u.category_weights)[-3:].sum() > 0.8
        assert all(world.item_by_id[f].category in world.categories for f in u.favourite_items)
        assert 0 < u.engagement < 1 and -1 <= u.mood <= 1 and 0 < u.churn_risk < 1
    risks = np.array([u.churn_risk for u in world.users])
    assert 0.1 < risks.mean() < 0.5 and risks.std() > 0.1


def test_favourite_items_are_viewed_often(stream: tuple[World, list[SimEvent]]) -> None:
    world, events = stream
    views = page_views(events, "item_id")
    shares = [sum(c[f] for f in world.user_by_id[u].favourite_items) / sum(c.values())
              for u, c in views.items() if sum(c.values()) >= 40]
    assert len(shares) >= 20 and np.mean(shares) > 0.25


def test_config_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(malformed_ratio=1.5)
    with pytest.raises(ValueError):
        SimulationConfig(users=0)
