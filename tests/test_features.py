"""Per-user features: each event type moves the right counters; copies are independent."""

from __future__ import annotations

import math
import pickle

import pytest

from operators.features import CHURN_FEATURES, MAX_CATEGORIES, UserFeatures

HOUR = 3_600_000


def feed(profile: UserFeatures, *events: dict) -> UserFeatures:
    for e in events:
        profile.update(e)
    return profile


def test_session_ratios_and_spend() -> None:
    p = feed(
        UserFeatures(first_ts=0),
        {"type": "session_start", "ts": 0},
        {"type": "page_view", "ts": 10, "item_id": "a", "category": "shoes", "dwell_ms": 10_000},
        {"type": "click", "ts": 20, "item_id": "a", "category": "shoes"},
        {"type": "add_to_cart", "ts": 30, "item_id": "a", "category": "shoes"},
        {"type": "add_to_cart", "ts": 40, "item_id": "b", "category": "hats"},
        {"type": "purchase", "ts": 50, "item_id": "a", "category": "shoes", "price": 99.0},
        {"type": "session_end", "ts": 60},
    )
    f = p.churn_features()
    assert list(f) == list(CHURN_FEATURES)
    assert f["events_per_session"] == 7
    assert f["click_through"] == 1.0
    assert f["purchases_per_session"] == 1.0
    assert f["cart_abandonment"] == 0.5
    assert f["monetary_log"] == pytest.approx(math.log1p(99.0))
    assert f["dwell_seconds"] == pytest.approx(3.0)  # EWMA from 0 with alpha 0.3
    assert p.normalized_affinity()["shoes"] == 1.0
    assert 0 < p.normalized_affinity()["hats"] < 1


def test_without_session_events_visits_are_the_sessions() -> None:
    """Purchases on three days and no session events: per-session ratios count visits, not copies of the counts."""
    day = 86_400_000
    purchases = [{"type": "purchase", "ts": d * day, "item_id": "a", "category": "c", "price": 5.0} for d in (0, 3, 9)]
    p = feed(UserFeatures(first_ts=0), *purchases)
    f = p.churn_features()
    assert f["events_per_session"] == 1.0 and f["purchases_per_session"] == 1.0


def test_marked_sessions_are_visits_however_close() -> None:
    """Sessions five minutes apart are three visits, as the stream says; the 30-minute timeout would count one."""
    minute = 60_000
    events = []
    for start in (0, 5 * minute, 10 * minute):
        events += [{"type": "session_start", "ts": start},
                   {"type": "page_view", "ts": start + 1_000, "item_id": "a", "category": "c", "dwell_ms": 1_000},
                   {"type": "session_end", "ts": start + 2_000}]
    p = feed(UserFeatures(first_ts=0), *events)
    assert p.memory.n_visits == 3 and p.n_sessions == 3
    f = p.churn_features()
    assert f["visits_log"] == pytest.approx(math.log(3))
    assert f["visit_gap_hours_log"] == pytest.approx(math.log1p((5 * minute - 2_000) / HOUR)), "gap before the visit"
    assert f["events_per_session"] == 3.0
    assert f["visits_log"] == pytest.approx(math.log(3))


def test_recency_is_gap_before_latest_event() -> None:
    p = feed(UserFeatures(first_ts=0), {"type": "session_start", "ts": 0}, {"type": "session_start", "ts": 3 * HOUR})
    assert p.churn_features()["recency_hours_log"] == pytest.approx(math.log1p(3.0))


def test_sentiment_average_starts_at_first_message() -> None:
    p = UserFeatures(first_ts=0)
    assert p.recent_sentiment is None
    p.update({"type": "chat_message", "ts": 1, "text": "x"})
    p.observe_sentiment(-0.8)
    assert p.recent_sentiment == pytest.approx(-0.8)
    p.update({"type": "chat_message", "ts": 2, "text": "y"})
    p.observe_sentiment(0.2)
    assert p.recent_sentiment == pytest.approx(-0.8 + 0.3 * 1.0)


def test_affinities_stay_bounded() -> None:
    p = UserFeatures(first_ts=0)
    for i in range(MAX_CATEGORIES * 3):
        p.update({"type": "page_view", "ts": i, "item_id": f"i{i}", "category": f"c{i}"})
    assert len(p.category_affinity) == MAX_CATEGORIES
    assert f"c{MAX_CATEGORIES * 3 - 1}" in p.category_affinity  # the newest survive


def test_snapshot_round_trip_keeps_every_field() -> None:
    from operators.attribution import PendingDecision
    from operators.user_state import profile_snapshot

    p = feed(UserFeatures(first_ts=0, user_id="ann"), {"type": "purchase", "ts": 1, "item_id": "a", "category": "shoes",
                                                         "price": 20.0})
    p.segment = 3
    p.history.last_offer_ms = 7
    p.history.escalated_at_chat = 0
    p.pending.add(PendingDecision("d-1", 1, "recommend", 0.9, ("a", "b"), {"x": 1.0}, 0.3, ("e-2",), "window"), "ann")
    blob = profile_snapshot(p)
    p.update({"type": "page_view", "ts": 2, "item_id": "b", "category": "hats"})  # later changes do not leak in
    restored = pickle.loads(blob)
    assert restored.n_events == 1 and "hats" not in restored.category_affinity
    assert (restored.user_id, restored.segment, restored.history.last_offer_ms) == ("ann", 3, 7)
    assert restored.history.escalated_at_chat == 0
    assert restored.items.has_purchased("a") and restored.items.recent == p.items.recent[:17]
    assert restored.pending.entries == [PendingDecision("d-1", 1, "recommend", 0.9, ("a", "b"), {"x": 1.0}, 0.3,
                                                        ("e-2",), "window")]
    assert restored.churn_features() == pickle.loads(profile_snapshot(restored)).churn_features()


def test_a_history_snapshot_from_before_hand_overs_were_remembered_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from operators.history import InteractionHistory

    monkeypatch.setattr(InteractionHistory, "__reduce__",
                        lambda self: (InteractionHistory, (self.viewed, self.purchased, self.last_offer_ms)))
    blob = pickle.dumps(InteractionHistory({"a": 1}, {}, 7))
    monkeypatch.undo()
    restored = pickle.loads(blob)
    assert (restored.viewed, restored.last_offer_ms, restored.escalated_at_chat) == ({"a": 1}, 7, None)
