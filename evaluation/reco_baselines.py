"""Strong simple streaming recommenders that Pulse's recommendations are judged against.

Each learns from the same stream of (user, item, positive, time) events as Pulse and scores the whole
catalog for a user; the replay (evaluation.reco_replay) ranks those scores with the same exclusions as
Pulse (items the user already consumed). Users and items are dense indices 0..n-1.

- `MostPopular`: interaction counts (all interactions, or positives only).
- `DecayedPopularity`: counts that halve every `half_life_s`.
- `FactorizationMF`: River's `BiasedMF` (online_models.biased_mf, identical to `river.reco.BiasedMF`)
  trained on implicit feedback: 1 for a positive, 0 for `negatives` random items per positive (and for a
  non-positive interaction when `low_as_negative`).
- `CoOccurrence`: item-to-item cosine of co-occurrence counts over users' histories; a user's score of an
  item is the sum of its cosines with the user's last `window` items.
- `RandomItems`: uniform random scores.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from online_models.biased_mf import InPlaceBiasedMF

__all__ = ["CoOccurrence", "DecayedPopularity", "FactorizationMF", "MostPopular", "RandomItems", "StreamRecommender"]


class StreamRecommender(Protocol):
    """What the replay asks of a baseline."""

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """Learn one interaction."""

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """A score per catalog item (higher is better; a new array or one the caller may not keep)."""


class MostPopular:
    """Items by how often they were interacted with.

    >>> pop = MostPopular(n_items=3, positives_only=True)
    >>> pop.learn(0, 2, True, 0.0); pop.learn(1, 1, False, 0.0)
    >>> pop.scores(0, 0.0).tolist()
    [0.0, 0.0, 1.0]
    """

    def __init__(self, n_items: int, positives_only: bool = False) -> None:
        self.positives_only = positives_only
        self._counts = np.zeros(n_items)

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """Count the interaction (a positive one only, with `positives_only`)."""
        if positive or not self.positives_only:
            self._counts[item] += 1.0

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """The counts."""
        return self._counts


class DecayedPopularity:
    """Interaction counts that halve every `half_life_s` (stored scaled, renormalized when the scale grows).

    >>> pop = DecayedPopularity(n_items=2, half_life_s=10.0)
    >>> pop.learn(0, 0, True, 0.0); pop.learn(0, 1, True, 10.0)  # the older interaction weighs half
    >>> pop.scores(0, 10.0).round(3).tolist()
    [1.0, 2.0]
    """

    def __init__(self, n_items: int, half_life_s: float, positives_only: bool = False) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_s = half_life_s
        self.positives_only = positives_only
        self._scaled = np.zeros(n_items)
        self._reference_s: float | None = None

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """Count the interaction with weight 2**(t / half-life) relative to the reference time."""
        if not (positive or not self.positives_only):
            return
        if self._reference_s is None:
            self._reference_s = ts_s
        exponent = (ts_s - self._reference_s) / self.half_life_s
        if exponent > 500.0:
            self._scaled *= 2.0**-exponent
            self._reference_s, exponent = ts_s, 0.0
        self._scaled[item] += 2.0**exponent

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """The decayed counts at `ts_s` (up to a common factor: the order is what counts)."""
        return self._scaled


class FactorizationMF:
    """River's BiasedMF on implicit feedback with negative sampling, its item factors mirrored for ranking.

    >>> mf = FactorizationMF(n_users=2, n_items=5, n_factors=4, seed=1)
    >>> for _ in range(50):
    ...     mf.learn(0, 3, True, 0.0)
    >>> int(mf.scores(0, 0.0).argmax())
    3
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int = 16, learning_rate: float = 0.05,
                 negatives: int = 1, low_as_negative: bool = False, seed: int = 0) -> None:
        self.negatives = negatives
        self.low_as_negative = low_as_negative
        self._mf = InPlaceBiasedMF(n_factors=n_factors, learning_rate=learning_rate, seed=seed)
        self._rng = np.random.default_rng(seed)
        self._n_items = n_items
        self._latents = np.zeros((n_items, n_factors))
        self._biases = np.zeros(n_items)
        self._zero = np.zeros(n_factors)

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """A positive: (user, item, 1) and `negatives` random other items at 0; otherwise (user, item, 0) or nothing."""
        if positive:
            self._train(user, item, 1.0)
            for other in self._rng.integers(0, self._n_items - 1, size=self.negatives).tolist():
                self._train(user, other + (other >= item), 0.0)
        elif self.low_as_negative:
            self._train(user, item, 0.0)

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """Predicted strengths (the user's bias and the global mean left out: they do not change the order)."""
        latent = self._mf.u_latents.get(user)
        return self._latents @ (self._zero if latent is None else latent) + self._biases

    def _train(self, user: int, item: int, y: float) -> None:
        self._mf.learn_one(user, item, y)
        self._latents[item] = self._mf.i_latents[item]
        self._biases[item] = self._mf.i_biases[item]


class CoOccurrence:
    """Item-to-item cosine over users' histories, scored from the user's last `window` items.

    `count_positives_only`: only positive interactions count as co-occurring (else every interaction);
    `context_positives_only`: the user's last `window` positive items form the context (else any items).
    Co-occurrence counts are a dense item x item matrix (fine for an evaluation catalog).

    >>> cooc = CoOccurrence(n_users=2, n_items=3)
    >>> cooc.learn(0, 0, True, 0.0); cooc.learn(0, 1, True, 1.0); cooc.learn(1, 0, True, 2.0)
    >>> cooc.scores(1, 3.0).round(3).tolist()
    [0.0, 0.707, 0.0]
    """

    def __init__(self, n_users: int, n_items: int, window: int = 20, count_positives_only: bool = True,
                 context_positives_only: bool = True) -> None:
        self.window = window
        self.count_positives_only = count_positives_only
        self.context_positives_only = context_positives_only
        self._counts = np.zeros((n_items, n_items))
        self._occurrences = np.zeros(n_items)
        self._counted: list[list[int]] = [[] for _ in range(n_users)]  # the items each user's counts paired
        self._context: list[list[int]] = [[] for _ in range(n_users)]

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """Pair the item with every item the user interacted with before (that counts), and extend the context."""
        if positive or not self.count_positives_only:
            before = self._counted[user]
            if before:
                self._counts[item, before] += 1.0
                self._counts[before, item] += 1.0
            self._occurrences[item] += 1.0
            before.append(item)
        if positive or not self.context_positives_only:
            context = self._context[user]
            context.append(item)
            if len(context) > self.window:
                del context[0]

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """Sum over the context items j of cos(j, x) = count(j, x) / sqrt(n_j n_x)."""
        context = self._context[user]
        if not context:
            return np.zeros(len(self._occurrences))
        roots = np.sqrt(np.maximum(self._occurrences, 1.0))
        return (self._counts[context] / roots[context, None]).sum(axis=0) / roots


class RandomItems:
    """Uniform random scores (the floor every method must clear)."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._n_items = n_items

    def learn(self, user: int, item: int, positive: bool, ts_s: float) -> None:
        """Nothing to learn."""

    def scores(self, user: int, ts_s: float) -> np.ndarray:
        """Fresh random scores."""
        return self._rng.random(self._n_items)
