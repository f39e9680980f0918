"""Bounded standard scores, and what they keep the churn model from doing on rare extreme values."""

from __future__ import annotations

import random

import pytest
from river import preprocessing

from online_models.churn import ChurnClassifier
from online_models.scaling import BoundedStandardScaler


def test_standardized_values_are_clipped_to_the_bound() -> None:
    scaler = BoundedStandardScaler(bound=2.0)
    for x in [0.0] * 999 + [1.0]:
        scaler.learn_one({"x": x, "y": x * 10})
    assert scaler.transform_one({"x": 1.0, "y": -10.0}) == {"x": 2.0, "y": -2.0}
    assert scaler.transform_one({"x": 0.0, "y": 0.0})["x"] == pytest.approx(-0.0316, abs=1e-3)
    with pytest.raises(ValueError):
        BoundedStandardScaler(bound=0.0)


def test_within_the_bound_the_scores_are_rivers() -> None:
    rng = random.Random(2)
    bounded, river = BoundedStandardScaler(bound=2.5), preprocessing.StandardScaler()
    for _ in range(500):
        x = {"a": rng.gauss(3.0, 2.0), "b": rng.expovariate(1.0), "c": 1.0}
        bounded.learn_one(x)
        river.learn_one(x)
        expected = {i: min(max(z, -2.5), 2.5) for i, z in river.transform_one(x).items()}
        assert bounded.transform_one(x) == pytest.approx(expected)
    assert bounded.transform_one({"c": 1.0, "unseen": 4.0}) == {"c": 0.0, "unseen": 0.0}


def test_a_rare_extreme_value_does_not_dominate_the_churn_explanation() -> None:
    """Hours since the previous event: almost always 0, now and then 0.5, and unrelated to churn."""
    rng = random.Random(5)
    model = ChurnClassifier(learning_rate=0.05)
    for _ in range(20000):
        engaged = rng.random()
        x = {"recency_hours_log": 0.5 if rng.random() < 0.001 else 0.0, "engagement": engaged}
        model.learn_one(x, rng.random() < 0.8 - 0.6 * engaged)
    explanation = model.explain_one({"recency_hours_log": 0.5, "engagement": 0.5})
    assert abs(explanation.contributions["recency_hours_log"]) < 3.0
    assert model.explain_one({"recency_hours_log": 0.0, "engagement": 0.0}).contributions["engagement"] > 0
