"""Online model selection: a champion and challengers scored by progressive validation on the same stream."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ModelSelector", "Switch"]


@dataclass(frozen=True, slots=True)
class Switch:
    """A promotion and its evidence: windowed scores of the old champion and the new one."""

    step: int
    old: str
    new: str
    old_score: float
    new_score: float
    window: int

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"step": self.step, "from": self.old, "to": self.new, "from_score": self.old_score,
                "to_score": self.new_score, "window": self.window}


class ModelSelector:
    """Champion/challenger bookkeeping over per-example scores computed *before* each candidate learns.

    The caller scores every candidate on each example (a loss if `bigger_is_better` is False, e.g.
    log loss; a gain otherwise, e.g. hit@10), then lets them all learn. Scores are averaged over the
    last `window` examples; a challenger is promoted when, with at least `min_samples` examples since
    the last switch, it beats the champion by more than `margin` (relative). Every switch is logged.

    >>> selector = ModelSelector(["slow", "fast"], bigger_is_better=False, window=50, min_samples=50, margin=0.05)
    >>> for step in range(200):
    ...     _ = selector.observe(step, {"slow": 0.7, "fast": 0.3})
    >>> selector.champion, selector.switches[0].step, round(selector.switches[0].new_score, 9)
    ('fast', 49, 0.3)
    """

    def __init__(
        self,
        names: Sequence[str],
        bigger_is_better: bool,
        window: int = 500,
        min_samples: int = 200,
        margin: float = 0.02,
    ) -> None:
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError("names must be non-empty and distinct")
        if window < 1 or min_samples < 1 or margin < 0:
            raise ValueError("window and min_samples must be >= 1 and margin >= 0")
        self.names = tuple(names)
        self.bigger_is_better = bigger_is_better
        self.window = window
        self.min_samples = min_samples
        self.margin = margin
        self.champion = self.names[0]
        self.switches: list[Switch] = []
        self._scores = {name: deque(maxlen=window) for name in self.names}
        self._sums = {name: 0.0 for name in self.names}
        self._since_switch = 0

    def score(self, name: str) -> float:
        """Mean score of `name` over the window (nan before any example)."""
        n = len(self._scores[name])
        return self._sums[name] / n if n else float("nan")

    def observe(self, step: int, scores: Mapping[str, float]) -> Switch | None:
        """Record each candidate's score on one example; return the switch if the champion changed."""
        for name in self.names:
            values = self._scores[name]
            if len(values) == values.maxlen:
                self._sums[name] -= values[0]
            value = float(scores[name])
            values.append(value)
            self._sums[name] += value
        self._since_switch += 1
        if self._since_switch < self.min_samples:
            return None
        sign = 1.0 if self.bigger_is_better else -1.0
        best = max(self.names, key=lambda n: (sign * self.score(n), n == self.champion))
        champion_score, best_score = self.score(self.champion), self.score(best)
        if best == self.champion or sign * (best_score - champion_score) <= self.margin * abs(champion_score):
            return None
        switch = Switch(step, self.champion, best, champion_score, best_score, len(self._scores[best]))
        self.switches.append(switch)
        self.champion = best
        self._since_switch = 0
        return switch
