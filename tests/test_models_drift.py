"""ADWIN drift detection and adaptation."""

from __future__ import annotations

from online_models import ChurnClassifier
from online_models.drift import DriftAdaptive, DriftDetector


def test_detects_an_error_increase_not_an_improvement() -> None:
    up, down = DriftDetector(), DriftDetector()
    for i in range(3000):
        up.update(0.1 if i < 1500 else 0.6)
        down.update(0.6 if i < 1500 else 0.1)
    assert up.n_drifts >= 1 and 1500 <= up.drifts[0] < 1700
    assert down.n_drifts == 0 and down.improvements


def test_no_drift_on_a_stationary_stream() -> None:
    detector = DriftDetector()
    for i in range(5000):
        detector.update(float(i % 4 == 0))
    assert detector.n_drifts == 0


def test_adaptive_model_recovers_after_concept_flip_faster_than_plain() -> None:
    adaptive = DriftAdaptive(ChurnClassifier, lambda m, ex: m.learn_one(*ex), min_replay=50)
    plain = ChurnClassifier()
    late_errors_adaptive = late_errors_plain = 0.0
    for i in range(4000):
        x = {"f": float(i % 2)}
        y = bool(i % 2) if i < 2000 else not bool(i % 2)
        p_a, p_p = adaptive.model.predict_proba_one(x)[True], plain.predict_proba_one(x)[True]
        if 2000 <= i < 2400:
            late_errors_adaptive += abs(float(y) - p_a)
            late_errors_plain += abs(float(y) - p_p)
        adaptive.learn_one((x, y), error=abs(float(y) - p_a))
        plain.learn_one(x, y)
    assert adaptive.detector.n_drifts >= 1 and adaptive.adaptations[0]["example"] >= 2000
    assert late_errors_adaptive < late_errors_plain

