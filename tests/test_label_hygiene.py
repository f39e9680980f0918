"""Label hygiene: a churn label is learned on the features served before it, and control events are not behaviour."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from operators.engine import PersonalizationEngine
from operators.features import CHURN_FEATURES, UserFeatures
from operators.metrics import EngineMetrics

DAY = 86_400_000
T0 = 1_700_000_000_000


def purchase(event_id: str, ts: int, price: float = 20.0) -> dict:
    return {"event_id": event_id, "user_id": "u", "type": "purchase", "ts": ts, "item_id": "i1", "category": "c",
            "price": price}


def learned_examples(engine: PersonalizationEngine) -> list[tuple[dict, bool]]:
    """What the churn model learned, in order (the examples its drift guard keeps to retrain from)."""
    return list(engine.churn_adaptive._buffer)


def test_control_events_change_no_behavioural_feature() -> None:
    profile = UserFeatures(first_ts=T0, user_id="u")
    profile.update(purchase("p1", T0))
    profile.update(purchase("p2", T0 + 3 * DAY))
    before = (profile.churn_features(), profile.n_events, profile.last_ts, profile.previous_ts)
    for control in ({"type": "churn_outcome", "churned": True}, {"type": "consent", "personalization": True},
                    {"type": "forget_user"}):
        profile.update({**control, "event_id": "c", "user_id": "u", "ts": T0 + 200 * DAY})
    assert (profile.churn_features(), profile.n_events, profile.last_ts, profile.previous_ts) == before


def test_a_label_180_days_after_the_last_purchase_is_learned_on_the_features_served_at_it() -> None:
    """Leakage test: the label's arrival time must not reach the features it is learned on."""
    engine = PersonalizationEngine()
    profile, _ = engine.handle(None, purchase("p1", T0), T0)
    profile, served = engine.handle(profile, purchase("p2", T0 + 30 * DAY), T0)
    label = {"event_id": "l2", "user_id": "u", "type": "churn_outcome", "churned": True, "ts": T0 + 210 * DAY}
    profile, at_label = engine.handle(profile, label, T0)

    served_features = {name: served["features"][name] for name in CHURN_FEATURES}
    (x, churned), = learned_examples(engine)
    assert churned is True
    assert x == served_features, "the label was learned on features that saw its arrival"
    assert x["recency_hours_log"] == pytest.approx(math.log1p(30 * 24))  # the gap before the served purchase
    assert {name: at_label["features"][name] for name in CHURN_FEATURES} == served_features
    assert profile.n_events == 2 and profile.last_ts == T0 + 30 * DAY


def test_a_label_for_a_user_never_seen_teaches_nothing() -> None:
    engine = PersonalizationEngine()
    engine.handle(None, {"event_id": "l", "user_id": "new", "type": "churn_outcome", "churned": True, "ts": T0}, T0)
    assert learned_examples(engine) == [] and engine.churn.n_learned == 0


def test_the_quality_metric_records_the_probability_that_was_served() -> None:
    """pulse_model_quality{model="churn"} scores the decision served at the last purchase, not a later prediction."""
    engine, metrics = PersonalizationEngine(), EngineMetrics(CollectorRegistry())
    profile, served = engine.handle(None, purchase("p1", T0), T0)
    for n in range(50):  # the model changes after the decision was served (other users' labels)
        other = UserFeatures(first_ts=T0, user_id=f"o{n}")
        other.update(purchase(f"o{n}", T0))
        engine.handle(other, {"event_id": f"lo{n}", "user_id": f"o{n}", "type": "churn_outcome", "churned": True,
                              "ts": T0 + DAY}, T0)
    label = {"event_id": "l1", "user_id": "u", "type": "churn_outcome", "churned": False, "ts": T0 + 100 * DAY}
    now = engine.churn.predict_proba_one(profile.churn_features())[True]
    assert now != pytest.approx(served["churn"]["probability"])
    metrics.before_event(label, engine, profile)
    assert metrics.churn.records() == [(served["churn"]["probability"], False)]
