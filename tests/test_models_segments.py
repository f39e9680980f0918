"""Online behaviour segmentation and per-decision confidence."""

from __future__ import annotations

import random

from online_models.confidence import decision_confidence
from online_models.segments import BehaviourSegmenter


def test_separates_two_behaviour_groups() -> None:
    rng = random.Random(0)
    seg = BehaviourSegmenter(n_segments=2, features=("purchases_per_session", "events_per_session"))
    buyers = lambda: {"purchases_per_session": rng.gauss(2.0, 0.2), "events_per_session": rng.gauss(20, 2)}  # noqa: E731
    browsers = lambda: {"purchases_per_session": rng.gauss(0.1, 0.05), "events_per_session": rng.gauss(5, 1)}  # noqa: E731
    for _ in range(500):
        seg.learn_one(buyers())
        seg.learn_one(browsers())
    labels_b = {seg.predict_one(buyers()) for _ in range(50)}
    labels_r = {seg.predict_one(browsers()) for _ in range(50)}
    assert len(labels_b) == 1 and len(labels_r) == 1 and labels_b != labels_r


def test_confidence_by_hand() -> None:
    assert decision_confidence(1.0, 0.6, n_events=10_000) > 0.999
    assert decision_confidence(0.6, 0.6, n_events=10_000) == 0.0
    assert decision_confidence(0.3, 0.6, n_events=10_000) > 0.49  # (0.6 - 0.3) / 0.6 = 0.5
    assert decision_confidence(0.3, 0.6, n_events=5) < decision_confidence(0.3, 0.6, n_events=50)

