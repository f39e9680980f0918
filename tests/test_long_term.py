"""The long-term record: churn aggregates outlive the idle TTL, come back with the user, teach late labels, and go
with erasure; held labels wait for their horizon. Replayed through the dataflow's step in event time."""

from __future__ import annotations

import math
import pickle

import pytest

from evaluation.replay import Replay
from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import CHURN_FEATURES, UserFeatures
from operators.long_term import LongTermRecord
from operators.user_state import user_logic_builder

DAY_S, DAY = 86_400, 86_400_000
T0 = 1_700_000_000_000
RETENTION_S = 365 * DAY_S


def purchase(event_id: str, ts: int, user: str = "u", price: float = 20.0) -> dict:
    return {"event_id": event_id, "user_id": user, "type": "purchase", "ts": ts, "item_id": "i1", "category": "c",
            "price": price}


def label(event_id: str, ts: int, churned: bool, user: str = "u") -> dict:
    return {"event_id": event_id, "user_id": user, "type": "churn_outcome", "ts": ts, "churned": churned}


def replay(**config: object) -> Replay:
    engine = PersonalizationEngine(EngineConfig(winback_min_idle_ms=0, **config))  # type: ignore[arg-type]
    return Replay(engine, idle_ttl_s=DAY_S, retention_s=RETENTION_S)


def churn_part(decision: dict) -> dict[str, float]:
    return {name: decision["features"][name] for name in CHURN_FEATURES}


def test_a_user_idle_past_the_ttl_comes_back_with_their_aggregates_and_a_late_label_is_learned_on_them() -> None:
    r = replay()
    r.event(purchase("p1", T0, price=30.0))
    served = r.event(purchase("p2", T0 + 10 * DAY, price=12.5))
    r.advance(T0 + 12 * DAY)
    assert r.logics["u"].long_term, "idle past the TTL: only the long-term record is kept"

    at_label = r.event(label("l2", T0 + 191 * DAY, churned=True))  # a label months after the TTL
    assert churn_part(at_label) == churn_part(served)
    (learned, churned), = list(r.engine.churn_adaptive._buffer)
    assert learned == churn_part(served) and churned is True

    r.advance(T0 + 240 * DAY)
    back = r.event(purchase("p3", T0 + 250 * DAY, price=7.5))
    assert back["features"]["purchases"] == 3
    profile = r.logics["u"]._profile
    assert (profile.n_purchases, profile.monetary, profile.first_ts, profile.memory.n_visits) == (3, 50.0, T0, 3)
    assert back["features"]["recency_hours_log"] == pytest.approx(math.log1p(240 * 24))
    assert back["features"]["tenure_days_log"] == pytest.approx(math.log1p(250))
    assert profile.category_affinity == {"c": 5.0}, "affinities restart after the TTL; churn aggregates do not"


def test_the_record_is_small_and_survives_a_restart() -> None:
    r = replay()
    r.event(purchase("p1", T0))
    r.event({"event_id": "m1", "user_id": "u", "type": "chat_message", "ts": T0 + 1000, "text": "thanks, great"})
    r.advance(T0 + 3 * DAY)
    logic = r.logics["u"]
    assert logic.long_term
    snapshot = logic.snapshot()
    assert len(snapshot) <= 300, f"{len(snapshot)} bytes per idle user"
    resumed = user_logic_builder(r.engine, idle_ttl_s=DAY_S, retention_s=RETENTION_S)(snapshot)
    assert resumed.long_term
    before, after = logic._record.restore(), resumed._record.restore()
    assert after.churn_features(T0 + 3 * DAY) == before.churn_features(T0 + 3 * DAY)
    assert (after.n_chats, after.sentiment_ewma, after.user_id) == (1, before.sentiment_ewma, "u")


def test_a_profile_snapshot_from_before_the_long_term_memory_loads() -> None:
    profile = UserFeatures(first_ts=T0, user_id="old")
    profile.update(purchase("p1", T0, user="old"))
    slots = UserFeatures.__slots__
    values = tuple(getattr(profile, name) for name in slots[:slots.index("memory")])  # the slots before it
    from operators.features import _restore_features

    old = _restore_features(values)  # what unpickling a snapshot written before the memory slot existed does
    assert old.memory.n_visits == 0 and old.churn_features()["purchases_per_session"] == 1.0
    assert pickle.loads(pickle.dumps(profile)).churn_features() == profile.churn_features()


def test_erasure_removes_the_long_term_record() -> None:
    r = replay()
    r.event(purchase("p1", T0))
    r.advance(T0 + 3 * DAY)
    assert r.logics["u"].long_term
    decision = r.event({"event_id": "f", "user_id": "u", "type": "forget_user", "ts": T0 + 4 * DAY})
    assert decision["forgotten"] and "u" not in r.logics, "forget_user drops the record with the state"

    r.event(purchase("q1", T0, user="w"))
    r.advance(T0 + 3 * DAY)
    r.event({"event_id": "c", "user_id": "w", "type": "consent", "personalization": False, "ts": T0 + 4 * DAY})
    r.advance(T0 + 6 * DAY)
    record: LongTermRecord = r.logics["w"]._record
    withdrawn = record.restore()
    assert not withdrawn.personalization and withdrawn.n_events == 0 and withdrawn.monetary == 0.0


def test_the_record_ends_after_the_retention_period() -> None:
    r = replay()
    r.event(purchase("p1", T0))
    r.advance(T0 + 364 * DAY)
    assert "u" in r.logics
    r.advance(T0 + 366 * DAY)
    assert "u" not in r.logics


def test_an_early_not_churned_label_waits_for_its_horizon() -> None:
    r = replay(churn_horizon_ms=90 * DAY)
    r.event(purchase("p1", T0))
    r.event(label("l1", T0 + 20 * DAY, churned=False))  # the user came back before the horizon
    r.event(purchase("p2", T0 + 20 * DAY))
    assert r.engine.churn.n_learned == 0
    r.event(label("l0", T0 + 25 * DAY, churned=True, user="v"))  # another user's: no profile, nothing learned
    r.advance(T0 + 89 * DAY)
    assert r.engine.churn.n_learned == 0
    r.advance(T0 + 91 * DAY)
    assert r.engine.churn.n_learned == 1
    (x, churned), = list(r.engine.churn_adaptive._buffer)
    assert churned is False and x["visits_log"] == 0.0, "learned on the features served at the first purchase"
