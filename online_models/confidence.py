"""Per-decision confidence: how far the decision is from flipping, discounted by how little we know of the user."""

from __future__ import annotations

import math

__all__ = ["decision_confidence"]


def decision_confidence(churn_probability: float, threshold: float, n_events: int,
                        evidence_scale: float = 20.0) -> float:
    """Confidence in [0, 1] of a churn-driven decision.

    `margin = (p - threshold) / (1 - threshold)` above the threshold, `(threshold - p) / threshold` below
    (0 on the threshold, 1 at 0 or 1), times
    `evidence = 1 - exp(-n_events / evidence_scale)` (a user seen once gives little evidence).

    >>> round(decision_confidence(0.95, 0.6, n_events=100), 3)
    0.869
    >>> decision_confidence(0.6, 0.6, n_events=100)
    0.0
    >>> decision_confidence(0.0, 0.6, n_events=0)
    0.0
    """
    if not 0.0 <= churn_probability <= 1.0:
        raise ValueError(f"churn_probability must be in [0, 1], got {churn_probability}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if churn_probability >= threshold:
        margin = (churn_probability - threshold) / (1.0 - threshold)
    else:
        margin = (threshold - churn_probability) / threshold
    evidence = 1.0 - math.exp(-max(n_events, 0) / evidence_scale)
    return float(min(1.0, margin * evidence))
