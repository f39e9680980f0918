"""Drift handling in the live engine: an upward error drift retrains churn from recent data and is reported."""

from __future__ import annotations

import random

from operators.engine import PersonalizationEngine
from operators.features import UserFeatures

T0 = 1_700_000_000_000


def profile(buyer: bool) -> UserFeatures:
    p = UserFeatures(first_ts=T0, user_id="buyer" if buyer else "browser")
    p.update({"type": "session_start", "ts": T0})
    for i in range(3):
        p.update({"type": "page_view", "ts": T0 + i, "item_id": f"i{i}", "category": "c",
                  "dwell_ms": 30_000 if buyer else 2_000})
    if buyer:
        p.update({"type": "purchase", "ts": T0 + 9, "item_id": "i1", "category": "c", "price": 50.0})
    return p


def test_churn_concept_flip_is_detected_and_the_model_adapts() -> None:
    engine = PersonalizationEngine()
    rng = random.Random(0)
    for n in range(3000):
        buyer = rng.random() < 0.5
        churned = (not buyer) if n < 1500 else buyer  # the drivers of churn reverse halfway
        event = {"event_id": f"o{n}", "user_id": "u", "type": "churn_outcome", "churned": churned, "ts": T0 + 10 + n}
        engine.handle(profile(buyer), event, ingest_ms=T0)
    assert engine.drift_counts()["churn"] >= 1
    assert engine.churn_adaptive.adaptations[0]["example"] >= 1500
    buyer_risk = engine.churn.predict_proba_one(profile(True).churn_features())[True]
    browser_risk = engine.churn.predict_proba_one(profile(False).churn_features())[True]
    assert buyer_risk > 0.8 and browser_risk < 0.2, "after adapting, the new concept is learned"
    decision = engine.handle(profile(True),
                             {"event_id": "x", "user_id": "u", "type": "session_start", "ts": T0 + 5000}, T0)[1]
    assert "/gen" in decision["model_versions"]["churn"] and not decision["model_versions"]["churn"].endswith("/gen0")
