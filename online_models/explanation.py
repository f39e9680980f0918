"""Additive explanations: per-feature contributions that sum, with an intercept, to a raw score."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Explanation", "linear_explanation"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Signed per-feature contributions to a model's raw score (a logit for classifiers).

    `intercept + sum(contributions.values())` is the score, so the explanation is exact, not an
    approximation.

    >>> e = Explanation(intercept=0.5, contributions={"a": 1.0, "b": -2.0})
    >>> e.score
    -0.5
    >>> e.top(1)
    [('b', -2.0)]
    """

    intercept: float
    contributions: dict[str, float]

    @property
    def score(self) -> float:
        """The model's raw score: intercept plus every contribution."""
        return math.fsum([self.intercept, *self.contributions.values()])

    def top(self, n: int) -> list[tuple[str, float]]:
        """The `n` largest contributions by absolute value (ties broken by feature name)."""
        ranked = sorted(self.contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        return ranked[: max(n, 0)]

    def to_dict(self) -> dict:
        """JSON-able form: `{"intercept": .., "contributions": {..}, "score": ..}` with plain floats."""
        return {
            "intercept": float(self.intercept),
            "contributions": {str(name): float(value) for name, value in self.contributions.items()},
            "score": float(self.score),
        }


def linear_explanation(weights: Mapping[str, float], x: Mapping[str, float], intercept: float) -> Explanation:
    """Explain a linear score `intercept + Σ weights[f] * x[f]`: one contribution per feature of `x`.

    Features without a weight contribute 0.

    >>> linear_explanation({"a": 2.0}, {"a": 3.0, "b": 1.0}, intercept=-1.0).to_dict()
    {'intercept': -1.0, 'contributions': {'a': 6.0, 'b': 0.0}, 'score': 5.0}
    """
    contributions = {name: float(weights.get(name, 0.0) * value) for name, value in x.items()}
    return Explanation(intercept=float(intercept), contributions=contributions)
