"""Blend weights of a recommender's component scores, learned online from which item the user took.

A recommendation's score is `sum(weight[c] * value[c])` over the components c (collaborative, content,
popularity, neighbours, ...), so each weighted value is an exact part of the score. The weights are a
conditional-logit (softmax) choice model: when a user takes an item, the component values of that item
and of `negatives` items drawn at random from the catalog (all under the context the user had just
before) form one choice set, and one gradient step raises the log-probability of the item taken:

    p = softmax(F @ w)        w += learning_rate * (F[taken] - p @ F)

Random rather than shown items are the alternatives: the items shown were chosen by the current weights,
and learning against them alone pushes the weights away from whatever ranked them (a feedback loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["SoftmaxBlend"]


class SoftmaxBlend:
    """Online softmax-choice weights over named components.

    >>> blend = SoftmaxBlend(["near", "popular"], {"near": 1.0, "popular": 1.0}, learning_rate=0.5)
    >>> for _ in range(20):   # the item taken is always the near one, never the most popular
    ...     blend.learn_one(np.array([1.0, 0.2]), np.array([[0.1, 1.0], [0.0, 0.5]]))
    >>> weights = blend.weights()
    >>> weights["near"] > 1.0 > weights["popular"], blend.n_updates
    (True, 20)
    """

    def __init__(self, names: Sequence[str], initial: Mapping[str, float], learning_rate: float = 0.05,
                 negatives: int = 20) -> None:
        if not (np.isfinite(learning_rate) and learning_rate >= 0):
            raise ValueError(f"learning_rate must be finite and >= 0, got {learning_rate}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        self.names = tuple(names)
        self.vector = np.array([float(initial[name]) for name in self.names])
        if not np.isfinite(self.vector).all():
            raise ValueError(f"initial weights must be finite, got {dict(initial)}")
        self.learning_rate = learning_rate
        self.negatives = negatives
        self.n_updates = 0

    def weights(self) -> dict[str, float]:
        """The current weights by component name (plain floats)."""
        return dict(zip(self.names, self.vector.tolist()))

    def learn_one(self, taken: np.ndarray, others: np.ndarray) -> None:
        """One step on a choice set: the component values of the item taken (one value per component, in
        `names` order) and of the alternatives (one row per item)."""
        self.learn_many(np.vstack((taken, others))[None])

    def learn_many(self, values: np.ndarray) -> None:
        """One step on a batch of choice sets, shaped (sets, items, components), the item taken first in each:
        the sum of their gradients (a mini-batch: each set moves the weights as much as alone)."""
        if self.learning_rate == 0.0 or len(values) == 0:
            return
        scores = values @ self.vector
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        gradient = (values[:, 0, :] - np.einsum("si,sic->sc", probabilities, values)).sum(axis=0)
        if np.isfinite(gradient).all():
            self.vector += self.learning_rate * gradient
            self.n_updates += len(values)
