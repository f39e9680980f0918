"""Micro-segmentation: online k-means over a few standardized behaviour features of a user."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from river import base, preprocessing

__all__ = ["SEGMENT_FEATURES", "BehaviourSegmenter"]

SEGMENT_FEATURES = (
    "events_per_session",
    "dwell_seconds",
    "purchases_per_session",
    "cart_abandonment",
    "monetary_log",
    "sentiment",
)


class BehaviourSegmenter(base.Clusterer):
    """Online k-means (MacQueen updates, floor on the step size) on River-standardized features: a River clusterer.

    The first `n_segments` distinct points seed the centres; each `learn_one` moves the nearest
    centre towards the point by `max(1 / count, min_rate)`, so segments keep tracking behaviour.
    `predict_one` returns the nearest centre's index (0 before any learning).

    >>> seg = BehaviourSegmenter(n_segments=2, features=("spend",))
    >>> for v in [0.0, 10.0, 0.5, 9.5, 0.2, 9.9]:
    ...     seg.learn_one({"spend": v})
    >>> seg.predict_one({"spend": 0.1}) != seg.predict_one({"spend": 9.0})
    True
    """

    def __init__(self, n_segments: int = 5, features: Sequence[str] = SEGMENT_FEATURES, min_rate: float = 0.01) -> None:
        if n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {n_segments}")
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate}")
        self.n_segments = n_segments
        self.features = tuple(features)
        self.min_rate = min_rate
        self._scaler = preprocessing.StandardScaler()
        self.centres: list[list[float]] = []
        self.counts: list[int] = []

    def _vector(self, x: Mapping[str, float]) -> list[float]:
        scaled = self._scaler.transform_one({f: float(x.get(f, 0.0)) for f in self.features})
        return [scaled[f] for f in self.features]

    def _nearest(self, v: list[float]) -> int:
        return min(range(len(self.centres)), key=lambda i: math.fsum((a - b) ** 2 for a, b in zip(v, self.centres[i])))

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the feature statistics and move the nearest centre towards `x`."""
        self._scaler.learn_one({f: float(x.get(f, 0.0)) for f in self.features})
        v = self._vector(x)
        if len(self.centres) < self.n_segments:
            if all(v != c for c in self.centres):
                self.centres.append(v)
                self.counts.append(1)
            return
        i = self._nearest(v)
        self.counts[i] += 1
        rate = max(1.0 / self.counts[i], self.min_rate)
        self.centres[i] = [c + rate * (a - c) for a, c in zip(v, self.centres[i])]

    def predict_one(self, x: Mapping[str, float]) -> int:
        """Index of the segment `x` belongs to."""
        if not self.centres:
            return 0
        return self._nearest(self._vector(x))
