"""An SGD step that rises when a learner's own progressive log-loss jumps, then decays back to its base.

A constant step trades tracking for variance: large steps follow a change of the label relationship
quickly and scatter otherwise. `StepBooster` watches the log-loss of each label, computed before the
learner steps on it, with a Page-Hinkley test (River `drift.PageHinkley`, increases only): it fires when
the losses since their lowest cumulative point exceed their running mean plus `allowance` per label by
more than `threshold` nats in total. From then on the step is multiplied by
`1 + (boost - 1) * exp(-labels since the change / decay_labels)`. The test restarts after each change,
so the losses of the model while it recovers become its new reference.

`BoostedRate` is the River scheduler an optimizer (or a linear model's `intercept_lr`) reads: its base
schedule times the booster's current multiplier. Several schedulers may share one booster.
"""

from __future__ import annotations

import math

from river import drift, optim

__all__ = ["BoostedRate", "StepBooster", "log_loss_of_logit"]


def log_loss_of_logit(logit: float, y: bool) -> float:
    """`-log P(y)` for P(True) = sigmoid(logit), without overflow.

    >>> round(log_loss_of_logit(0.0, True), 4), round(log_loss_of_logit(800.0, False), 1)
    (0.6931, 800.0)
    """
    z = -logit if y else logit
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


class StepBooster:
    """Multiplier of a learner's step: `boost` right after its log-loss jumps, decaying to 1 over labels.

    >>> booster = StepBooster(boost=5.0, decay_labels=50.0, threshold=7.0, allowance=0.1)
    >>> for _ in range(200):
    ...     _ = booster.observe(0.4)  # a steady loss: no change
    >>> booster.multiplier, booster.n_changes
    (1.0, 0)
    >>> fired = [i for i in range(40) if booster.observe(1.2)]  # the loss triples
    >>> fired, round(booster.multiplier, 2)
    ([10], 3.24)
    """

    def __init__(self, boost: float = 5.0, decay_labels: float = 50.0, threshold: float = 7.0,
                 allowance: float = 0.1, min_labels: int = 30) -> None:
        if not (boost >= 1.0 and math.isfinite(boost)):
            raise ValueError(f"boost must be a finite number >= 1, got {boost}")
        if not decay_labels > 0:
            raise ValueError(f"decay_labels must be > 0, got {decay_labels}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if not allowance >= 0:
            raise ValueError(f"allowance must be >= 0, got {allowance}")
        self.boost = boost
        self.decay_labels = decay_labels
        self.threshold = threshold
        self.allowance = allowance
        self._test = drift.PageHinkley(min_instances=min_labels, delta=allowance, threshold=threshold, mode="up")
        self.multiplier = 1.0
        self.n_labels = 0
        self.changes: list[int] = []  # label index (0-based) of each detected change
        self._since: int | None = None  # labels since the last change

    @property
    def n_changes(self) -> int:
        """Changes detected so far."""
        return len(self.changes)

    def observe(self, loss: float) -> bool:
        """Add the log-loss of one label (before the learner steps on it); True when a change is detected at it.

        The multiplier is updated for the step on this label.
        """
        self._test.update(float(loss))
        changed = self._test.drift_detected
        if changed:
            self._since = 0
            self.changes.append(self.n_labels)
        elif self._since is not None:
            self._since += 1
        self.n_labels += 1
        if self._since is not None:
            self.multiplier = 1.0 + (self.boost - 1.0) * math.exp(-self._since / self.decay_labels)
        return changed


class BoostedRate(optim.base.Scheduler):
    """A River scheduler: `base.get(t) * booster.multiplier`.

    >>> booster = StepBooster(boost=4.0)
    >>> rate = BoostedRate(optim.schedulers.Constant(0.02), booster)
    >>> rate.get(0)
    0.02
    >>> booster.multiplier = 4.0
    >>> rate.get(1)
    0.08
    """

    def __init__(self, base: optim.base.Scheduler, booster: StepBooster) -> None:
        self.base = base
        self.booster = booster

    def get(self, t: int) -> float:
        return self.base.get(t) * self.booster.multiplier
