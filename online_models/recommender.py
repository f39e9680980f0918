"""Hybrid recommender: collaborative (BiasedMF on implicit feedback) + content (category affinity) + popularity.

Components, each scaled to roughly [0, 1] before weighting:

- collaborative: the MF-predicted interaction strength for (user, item) divided by the largest
  strength learned so far (a predicted "strongest interaction" scores about 1). It is 0 for every
  item when the MF has never learned about the user.
- content: the caller's affinity of the user for the item's category (a weight in [0, 1]).
- popularity: `log1p(decayed count) / log1p(max decayed count)` over the catalog, where each
  interaction counts 1 and halves in weight every `popularity_half_life_s`.

`score = cf_weight * collaborative + content_weight * content + popularity_weight * popularity`;
a `Recommendation` reports the weighted components, which sum to its score.
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from river import optim, reco

__all__ = ["CategoryFilter", "HybridRecommender", "RankedItems", "Recommendation"]

_INITIAL_CAPACITY = 64
# Popularity counts are stored multiplied by 2**((t - reference) / half-life); once that growing
# scale factor exceeds 2**_MAX_SCALE_EXPONENT, counts are renormalized and the reference moved.
_MAX_SCALE_EXPONENT = 512.0
# Reading popularity more than this many half-lives before the reference is read as at that bound
# (keeps scaled counts times the decay factor finite).
_MAX_UNDECAY_EXPONENT = 64.0


class Recommendation(NamedTuple):
    """One ranked item with its score and the weighted components that add up to it (plain Python floats).

    A named tuple: a decision builds about ten per event, and a tuple is several times cheaper to create
    than a frozen dataclass.
    """

    item_id: str
    category: str
    score: float
    components: dict[str, float]

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"item_id": self.item_id, "category": self.category, "score": self.score,
                "components": self.components.copy()}


class RankedItems(Sequence[Recommendation]):
    """Ranked items, best first; each `Recommendation` is built when it is first read.

    Business rules (exclusions, diversity caps, pins) need spare candidates but keep only k of them:
    item ids and categories are at hand for choosing, and the rest is built only for the kept items.
    """

    __slots__ = ("item_ids", "categories", "_scores", "_names", "_components")

    def __init__(self, item_ids: list[str], categories: list[str], scores: list[float],
                 components: dict[str, list[float]]) -> None:
        self.item_ids = item_ids
        self.categories = categories
        self._scores = scores
        self._names = tuple(components)
        self._components = tuple(components.values())

    @classmethod
    def of(cls, recommendations: Sequence[Recommendation]) -> "RankedItems":
        """The given recommendations, in order (they must share the same component names)."""
        names = tuple(recommendations[0].components) if recommendations else ()
        return cls([r.item_id for r in recommendations], [r.category for r in recommendations],
                   [r.score for r in recommendations],
                   {name: [r.components[name] for r in recommendations] for name in names})

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Recommendation]:
        for position in range(len(self.item_ids)):
            yield self[position]

    def __getitem__(self, position: int) -> Recommendation:  # type: ignore[override]  # no slices: never needed
        return Recommendation(self.item_ids[position], self.categories[position], self._scores[position],
                              {name: values[position] for name, values in zip(self._names, self._components)})


class HybridRecommender:
    """Top-k items for a user from collaborative, content and popularity signals, scored with numpy.

    Item latents and biases of River's `BiasedMF` are mirrored into numpy arrays for the items each
    update touches, so ranking the whole catalog is a handful of vector operations.

    >>> rec = HybridRecommender(seed=42)
    >>> rec.learn_one("ann", "tent", "outdoor", strength=1.0, ts_ms=0)
    >>> rec.learn_one("bob", "novel", "books", strength=1.0, ts_ms=0)
    >>> rec.add_item("kayak", "outdoor")
    >>> [r.item_id for r in rec.rank("carl", k=2, category_affinity={"outdoor": 1.0}, now_ms=0)]
    ['tent', 'kayak']
    >>> rec.rank_popular(k=1, now_ms=0, exclude={"tent"})[0].item_id
    'novel'
    """

    def __init__(
        self,
        n_factors: int = 16,
        cf_weight: float = 1.0,
        content_weight: float = 1.0,
        popularity_weight: float = 0.5,
        popularity_half_life_s: float = 3600.0,
        negative_samples: int = 1,
        learning_rate: float = 0.05,
        seed: int = 0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        for name, weight in (("cf_weight", cf_weight), ("content_weight", content_weight),
                             ("popularity_weight", popularity_weight)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {weight}")
        if not (math.isfinite(popularity_half_life_s) and popularity_half_life_s > 0):
            raise ValueError(f"popularity_half_life_s must be finite and > 0, got {popularity_half_life_s}")
        if negative_samples < 0:
            raise ValueError(f"negative_samples must be >= 0, got {negative_samples}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.cf_weight = cf_weight
        self.content_weight = content_weight
        self.popularity_weight = popularity_weight
        self.negative_samples = negative_samples
        self._half_life_ms = popularity_half_life_s * 1000.0
        self._mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            seed=seed,
        )
        self._rng = random.Random(seed)
        self._n_learned = 0
        self._max_strength = 0.0
        self._item_ids: list[str] = []
        self._item_index: dict[str, int] = {}
        self._categories: list[str] = []
        self._category_index: dict[str, int] = {}
        self._latents = np.zeros((_INITIAL_CAPACITY, n_factors))
        self._biases = np.zeros(_INITIAL_CAPACITY)
        self._item_category = np.zeros(_INITIAL_CAPACITY, dtype=np.intp)
        self._scaled_counts = np.zeros(_INITIAL_CAPACITY)
        self._listed = np.ones(_INITIAL_CAPACITY, dtype=bool)  # False: deleted or out of stock
        self._available_from = np.full(_INITIAL_CAPACITY, -np.inf)
        self._available_until = np.full(_INITIAL_CAPACITY, np.inf)
        self._reference_ms = 0.0
        self._changed_users: set[str] = set()  # users whose MF factors changed since take_changed_users()
        self._eligible_cache: tuple[np.ndarray, float, float] | None = None  # see _eligible()

    @property
    def n_items(self) -> int:
        """Number of items in the catalog."""
        return len(self._item_ids)

    @property
    def n_learned(self) -> int:
        """Number of interactions learned so far."""
        return self._n_learned

    @property
    def version(self) -> str:
        """Model version, changing with every learned interaction."""
        return f"reco-hybrid@{self._n_learned}"

    def category_of(self, item_id: str) -> str | None:
        """The item's category, or None for an item not in the catalog."""
        index = self._item_index.get(item_id)
        return None if index is None else self._categories[self._item_category[index]]

    def add_item(self, item_id: str, category: str) -> None:
        """Add an item to the catalog (idempotent); an existing item takes the given category."""
        category_index = self._category_index.get(category)
        if category_index is None:
            category_index = self._category_index[category] = len(self._categories)
            self._categories.append(category)
        index = self._item_index.get(item_id)
        if index is None:
            index = self._item_index[item_id] = len(self._item_ids)
            self._item_ids.append(item_id)
            self._ensure_capacity(len(self._item_ids))
            self._eligible_cache = None
        self._item_category[index] = category_index

    def set_availability(
        self, item_id: str, listed: bool, available_from_ms: float | None = None, available_until_ms: float | None = None
    ) -> None:
        """Let the item into ranking (`listed`, within the optional time window) or keep it out (deleted, out of stock)."""
        index = self._item_index[item_id]
        self._listed[index] = listed
        self._available_from[index] = -np.inf if available_from_ms is None else available_from_ms
        self._available_until[index] = np.inf if available_until_ms is None else available_until_ms
        self._eligible_cache = None

    def is_rankable(self, item_id: str, now_ms: int) -> bool:
        """Whether the item may be recommended at `now_ms` (in the catalog, listed, within its window)."""
        index = self._item_index.get(item_id)
        return index is not None and bool(self._eligible(now_ms)[index])

    def learn_one(self, user_id: str, item_id: str, category: str, strength: float, ts_ms: int) -> None:
        """Learn that `user_id` interacted with `item_id` at `ts_ms` with a positive `strength`.

        Adds the item if new, counts the interaction towards its popularity, and trains the MF on
        (user, item, strength) plus `negative_samples` other random catalog items with strength 0.
        """
        if not (math.isfinite(strength) and strength > 0):
            raise ValueError(f"strength must be finite and > 0, got {strength}")
        self.add_item(item_id, category)
        index = self._item_index[item_id]
        self._count_interaction(index, ts_ms)
        self._max_strength = max(self._max_strength, strength)
        self._changed_users.add(user_id)
        self._train(user_id, index, strength)
        n_others = self.n_items - 1
        if n_others > 0:
            for _ in range(self.negative_samples):
                other = self._rng.randrange(n_others)
                self._train(user_id, other + (other >= index), 0.0)
        self._n_learned += 1

    def forget_user(self, user_id: str) -> None:
        """Erase the user's collaborative state (latent vector and bias); item statistics stay."""
        self._mf.u_latents.pop(user_id, None)
        self._mf.u_biases.pop(user_id, None)
        self._changed_users.add(user_id)

    def take_changed_users(self) -> dict[str, tuple[np.ndarray, float] | None]:
        """Per user changed since the last call: the MF (latent, bias), or None once erased; then start afresh."""
        latents, biases = self._mf.u_latents, self._mf.u_biases
        changes = {user: (latents[user], biases.get(user, 0.0)) if user in latents else None
                   for user in self._changed_users}
        self._changed_users = set()
        return changes

    def user_factors(self) -> Iterator[tuple[str, np.ndarray, float]]:
        """Every user's MF (user_id, latent, bias)."""
        biases = self._mf.u_biases
        for user, latent in self._mf.u_latents.items():
            yield user, latent, biases.get(user, 0.0)

    def load_user_factors(self, rows: Iterable[tuple[str, np.ndarray, float]]) -> None:
        """Set users' MF latents and biases (restoring a checkpoint); they do not count as changed."""
        latents, biases = self._mf.u_latents, self._mf.u_biases
        for user, latent, bias in rows:
            latents[user] = latent
            biases[user] = bias

    @contextlib.contextmanager
    def without_user_factors(self) -> Iterator[None]:
        """Within the block the MF holds no user factors (to pickle the model without its per-user part)."""
        mf = self._mf
        latents, biases = mf.u_latents, mf.u_biases
        mf.u_latents = collections.defaultdict(latents.default_factory)
        mf.u_biases = collections.defaultdict(biases.default_factory)
        try:
            yield
        finally:
            mf.u_latents, mf.u_biases = latents, biases

    def popularity(self, item_id: str, now_ms: int) -> float:
        """The item's time-decayed interaction count at `now_ms` (0 for an unknown item)."""
        index = self._item_index.get(item_id)
        if index is None:
            return 0.0
        return float(self._scaled_counts[index] * self._decay_factor(now_ms))

    def rank(
        self,
        user_id: str,
        k: int,
        category_affinity: Mapping[str, float],
        now_ms: int,
        exclude: Collection[str] = (),
        category_filter: "CategoryFilter | None" = None,
    ) -> list[Recommendation]:
        """The `k` best rankable items for the user, best first, skipping `exclude`.

        `category_affinity` maps category -> weight in [0, 1]; missing categories weigh 0.
        `category_filter` drops denied / not-allowed categories and adds per-category boosts
        (reported as a "boost" component). Never creates state for an unknown user.
        """
        return list(self.ranked(user_id, k, category_affinity, now_ms, exclude, category_filter))

    def ranked(
        self,
        user_id: str,
        k: int,
        category_affinity: Mapping[str, float],
        now_ms: int,
        exclude: Collection[str] = (),
        category_filter: "CategoryFilter | None" = None,
    ) -> RankedItems:
        """Like `rank`, as a `RankedItems` sequence that builds each Recommendation only when read."""
        collaborative, content, popularity = self._components(user_id, category_affinity, now_ms)
        return self._top_k(k, now_ms, collaborative, content, popularity, exclude, category_filter)

    def score_items(
        self,
        user_id: str,
        item_ids: Collection[str],
        category_affinity: Mapping[str, float],
        now_ms: int,
        category_filter: "CategoryFilter | None" = None,
    ) -> list[Recommendation]:
        """The given items, in the given order, scored like `rank` does (unrankable items are left out)."""
        collaborative, content, popularity = self._components(user_id, category_affinity, now_ms)
        scores, boost, eligible = self._scores(now_ms, collaborative, content, popularity, category_filter)
        indices = [self._item_index[item] for item in item_ids if item in self._item_index]
        return [self._recommendation(i, scores, collaborative, content, popularity, boost)
                for i in indices if eligible[i]]

    def _components(
        self, user_id: str, category_affinity: Mapping[str, float], now_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        collaborative = self.cf_weight * self._collaborative(user_id)
        content = self.content_weight * self._per_category(category_affinity, 0.0)
        popularity = self.popularity_weight * self._popularity_component(now_ms)
        return collaborative, content, popularity

    def rank_popular(
        self, k: int, now_ms: int, exclude: Collection[str] = (), category_filter: "CategoryFilter | None" = None
    ) -> list[Recommendation]:
        """Non-personalized top-k: the unweighted popularity component only (the others are 0)."""
        zeros = np.zeros(self.n_items)
        return list(self._top_k(k, now_ms, zeros, zeros, self._popularity_component(now_ms), exclude, category_filter))

    def _per_category(self, values: Mapping[str, float], default: float) -> np.ndarray:
        """Spread a category -> value mapping over the catalog's items."""
        by_category = np.array([values.get(c, default) for c in self._categories], dtype=float)
        return by_category[self._item_category[: self.n_items]]

    def _eligible(self, now_ms: int) -> np.ndarray:
        """A fresh mask of the items rankable at `now_ms` (listed and within their availability window).

        The mask is cached with the span of time over which it cannot change (no window opens or
        closes within it) until the catalog changes: most calls only copy it.
        """
        cached = self._eligible_cache
        if cached is None or not cached[1] <= now_ms < cached[2]:
            n = self.n_items
            starts, ends = self._available_from[:n], self._available_until[:n]
            opened, not_closed = starts <= now_ms, now_ms <= ends
            # The mask holds from the latest start or end already passed to the next one to come.
            since = max(starts[opened].max(initial=-np.inf), (ends[~not_closed] + 1).max(initial=-np.inf))
            until = min(starts[~opened].min(initial=np.inf), (ends[not_closed] + 1).min(initial=np.inf))
            cached = self._eligible_cache = (self._listed[:n] & opened & not_closed, since, until)
        return cached[0].copy()

    def _ensure_capacity(self, size: int) -> None:
        capacity = len(self._biases)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        self._latents = _grown(self._latents, capacity)
        self._biases = _grown(self._biases, capacity)
        self._item_category = _grown(self._item_category, capacity)
        self._scaled_counts = _grown(self._scaled_counts, capacity)
        self._listed = _grown(self._listed, capacity, fill=True)
        self._available_from = _grown(self._available_from, capacity, fill=-np.inf)
        self._available_until = _grown(self._available_until, capacity, fill=np.inf)

    def _train(self, user_id: str, index: int, y: float) -> None:
        item_id = self._item_ids[index]
        self._mf.learn_one(user_id, item_id, y)
        self._latents[index] = self._mf.i_latents[item_id]
        self._biases[index] = self._mf.i_biases[item_id]

    def _count_interaction(self, index: int, ts_ms: int) -> None:
        exponent = (ts_ms - self._reference_ms) / self._half_life_ms
        if exponent > _MAX_SCALE_EXPONENT:
            self._scaled_counts[: self.n_items] *= 2.0**-exponent
            self._reference_ms = float(ts_ms)
            exponent = 0.0
        self._scaled_counts[index] += 2.0**exponent

    def _decay_factor(self, now_ms: int) -> float:
        exponent = -(now_ms - self._reference_ms) / self._half_life_ms
        return 2.0 ** min(exponent, _MAX_UNDECAY_EXPONENT)

    def _popularity_component(self, now_ms: int) -> np.ndarray:
        decayed = self._scaled_counts[: self.n_items] * self._decay_factor(now_ms)
        top = decayed.max(initial=0.0)
        if top <= 0.0:
            return np.zeros(self.n_items)
        return np.log1p(decayed) / math.log1p(top)

    def _collaborative(self, user_id: str) -> np.ndarray:
        n = self.n_items
        user_latent = self._mf.u_latents.get(user_id)
        if user_latent is None:
            return np.zeros(n)
        offset = self._mf.global_mean.get() + self._mf.u_biases.get(user_id, 0.0)
        predicted = offset + self._biases[:n] + self._latents[:n] @ user_latent
        return predicted / self._max_strength

    def _top_k(
        self,
        k: int,
        now_ms: int,
        collaborative: np.ndarray,
        content: np.ndarray,
        popularity: np.ndarray,
        exclude: Collection[str],
        category_filter: "CategoryFilter | None",
    ) -> RankedItems:
        scores, boost, eligible = self._scores(now_ms, collaborative, content, popularity, category_filter)
        excluded = [self._item_index[item] for item in exclude if item in self._item_index]
        eligible[excluded] = False
        k = min(k, int(np.count_nonzero(eligible)))
        if k <= 0:
            return RankedItems([], [], [], {})
        masked = np.where(eligible, scores, -np.inf)
        candidates = _top_candidates(masked, k) if k < len(masked) else np.flatnonzero(eligible)
        best = candidates[np.lexsort((candidates, -masked[candidates]))]
        return self._recommendations(best, scores, collaborative, content, popularity, boost)

    def _scores(
        self,
        now_ms: int,
        collaborative: np.ndarray,
        content: np.ndarray,
        popularity: np.ndarray,
        category_filter: "CategoryFilter | None",
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Scores (with boosts), the boost component (None without boosts) and the eligibility mask."""
        scores = collaborative + content + popularity
        eligible = self._eligible(now_ms)
        boost = None
        if category_filter is not None:
            eligible &= self._per_category(category_filter.allowed, category_filter.default_allowed) > 0
            if category_filter.boosts:
                boost = self._per_category(category_filter.boosts, 0.0)
                scores = scores + boost
        return scores, boost, eligible

    def _recommendations(
        self,
        best: np.ndarray,
        scores: np.ndarray,
        collaborative: np.ndarray,
        content: np.ndarray,
        popularity: np.ndarray,
        boost: np.ndarray | None,
    ) -> RankedItems:
        """The items at `best`, gathering each component once for all of them."""
        components = {"collaborative": collaborative[best].tolist(), "content": content[best].tolist(),
                      "popularity": popularity[best].tolist()}
        if boost is not None:
            components["boost"] = boost[best].tolist()
        item_ids, categories = self._item_ids, self._categories
        return RankedItems([item_ids[i] for i in best.tolist()], [categories[c] for c in self._item_category[best].tolist()],
                           scores[best].tolist(), components)

    def _recommendation(
        self,
        i: int,
        scores: np.ndarray,
        collaborative: np.ndarray,
        content: np.ndarray,
        popularity: np.ndarray,
        boost: np.ndarray | None,
    ) -> Recommendation:
        components = {
            "collaborative": float(collaborative[i]),
            "content": float(content[i]),
            "popularity": float(popularity[i]),
        }
        if boost is not None:
            components["boost"] = float(boost[i])
        return Recommendation(self._item_ids[i], self._categories[self._item_category[i]], float(scores[i]), components)


@dataclass(frozen=True, slots=True)
class CategoryFilter:
    """Category rules applied inside ranking: `allowed` maps category -> 1/0 (others: `default_allowed`);
    `boosts` adds a per-category amount to the score."""

    allowed: Mapping[str, float]
    default_allowed: float
    boosts: Mapping[str, float]


_BLOCK = 256  # block size of the two-level top-k selection on large catalogs


def _top_candidates(masked: np.ndarray, k: int) -> np.ndarray:
    """Indices of `k` largest values of `masked` (any order; ties at the k-th value broken arbitrarily).

    On large arrays, first keeps the `k` blocks with the largest maxima: every block holding one of the
    k largest values has a maximum at least the k-th largest value, so those blocks are among them;
    then selects within those blocks only (a full `argpartition` of the catalog costs about 10x more).
    """
    n = len(masked)
    if n < 16 * _BLOCK or k * _BLOCK * 4 > n:
        return np.argpartition(-masked, k - 1)[:k]
    n_blocks = n // _BLOCK
    maxima = masked[: n_blocks * _BLOCK].reshape(n_blocks, _BLOCK).max(axis=1)
    top_blocks = np.argpartition(maxima, n_blocks - k)[n_blocks - k:]
    candidates = (top_blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
    if n_blocks * _BLOCK < n:  # the tail that does not fill a block is always a candidate
        candidates = np.concatenate((candidates, np.arange(n_blocks * _BLOCK, n)))
    values = masked[candidates]
    return candidates[np.argpartition(values, len(values) - k)[len(values) - k:]]


def _grown(array: np.ndarray, capacity: int, fill: float | bool = 0) -> np.ndarray:
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
