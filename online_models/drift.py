"""Drift detection on a model's error stream (River `drift.ADWIN`) and adaptation by retraining on recent data."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from river import drift

__all__ = ["DriftAdaptive", "DriftDetector"]

M = TypeVar("M")


class DriftDetector:
    """ADWIN over a stream of errors in [0, 1]; remembers at which observation each drift was detected.

    With `only_increase` (default) a change counts as a drift only when the error went *up*
    (ADWIN also fires when a model improves, e.g. while it warms up); `improvements` logs the others.

    >>> detector = DriftDetector(delta=0.002)
    >>> for i in range(2000):
    ...     _ = detector.update(0.0 if i < 1000 else 1.0)
    >>> detector.n_drifts >= 1 and 1000 <= detector.drifts[0] < 1200
    True
    """

    def __init__(self, delta: float = 0.002, grace_period: int = 30, only_increase: bool = True) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = delta
        self.only_increase = only_increase
        self.improvements: list[int] = []
        self._adwin = drift.ADWIN(delta=delta, grace_period=grace_period)
        self.n_observed = 0
        self.drifts: list[int] = []

    @property
    def n_drifts(self) -> int:
        """Number of drifts detected so far."""
        return len(self.drifts)

    @property
    def width(self) -> int:
        """Observations in ADWIN's current window (after a drift: those since the change)."""
        return int(self._adwin.width)

    @property
    def estimation(self) -> float:
        """Mean error over the current window."""
        return float(self._adwin.estimation)

    def update(self, error: float) -> bool:
        """Add one error observation (clipped to [0, 1]); True when a drift (error increase) is detected at it."""
        before = float(self._adwin.estimation)
        self._adwin.update(min(max(float(error), 0.0), 1.0))
        self.n_observed += 1
        if not self._adwin.drift_detected:
            return False
        if self.only_increase and self._adwin.estimation <= before:
            self.improvements.append(self.n_observed - 1)
            return False
        self.drifts.append(self.n_observed - 1)
        return True


class DriftAdaptive(Generic[M]):
    """A model whose error is watched by ADWIN; on drift it is replaced by a fresh model retrained on recent examples.

    `factory()` builds a fresh model, `learn(model, example)` teaches it one example (a tuple of
    learn arguments). The last `buffer_size` examples are kept; on a drift the fresh model replays
    the examples seen since the start of ADWIN's post-change window (at least `min_replay`), so it
    forgets the old concept instead of slowly unlearning it. `adaptations` logs each swap.

    >>> from online_models.churn import ChurnClassifier
    >>> adaptive = DriftAdaptive(ChurnClassifier, lambda m, ex: m.learn_one(*ex), min_replay=50)
    >>> for i in range(3000):
    ...     x, y = {"f": float(i % 2)}, bool(i % 2) if i < 1500 else not bool(i % 2)
    ...     p = adaptive.model.predict_proba_one(x)[True]
    ...     _ = adaptive.learn_one((x, y), error=abs(float(y) - p))
    >>> adaptive.detector.n_drifts >= 1 and adaptive.model.predict_proba_one({"f": 1.0})[True] < 0.5
    True
    """

    def __init__(
        self,
        factory: Callable[[], M],
        learn: Callable[[M, tuple[Any, ...]], None],
        delta: float = 0.002,
        buffer_size: int = 20_000,
        min_replay: int = 200,
        retrain: bool = True,
    ) -> None:
        self.factory = factory
        self._learn = learn
        self.detector = DriftDetector(delta=delta)
        self.model: M = factory()
        self.min_replay = min_replay
        self.retrain = retrain  # False: drifts are only counted (an alarm), the model is kept
        self._buffer: deque[tuple[Any, ...]] = deque(maxlen=buffer_size)
        self._examples_seen = 0
        self._marks: deque[int] = deque(maxlen=buffer_size)  # examples seen at each error observation
        self.adaptations: list[dict[str, int]] = []

    def observe_error(self, error: float) -> bool:
        """Feed one progressive-validation error of the current model; on drift, retrain; True if it drifted."""
        self._marks.append(self._examples_seen)
        if not self.detector.update(error):
            return False
        if not self.retrain:
            return True
        width = min(self.detector.width, len(self._marks))
        since = self._examples_seen - self._marks[-width] if width else 0
        replay = min(len(self._buffer), max(since, self.min_replay))
        fresh = self.factory()
        for example in list(self._buffer)[len(self._buffer) - replay:]:
            self._learn(fresh, example)
        self.model = fresh
        self.adaptations.append({"observation": self.detector.n_observed - 1, "example": self._examples_seen,
                                 "replayed": replay})
        return True

    def learn_one(self, example: tuple[Any, ...], error: float | None = None) -> bool:
        """Optionally observe the model's error on `example` (made before learning), then learn it."""
        drifted = self.observe_error(error) if error is not None else False
        self._buffer.append(example)
        self._examples_seen += 1
        self._learn(self.model, example)
        return drifted
