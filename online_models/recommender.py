"""Hybrid recommender: collaborative (River BiasedMF on implicit feedback) + content (category affinity) + popularity.

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

from online_models.biased_mf import InPlaceBiasedMF

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
    """Ranked items, best first; each `Recommendation` (or its JSON record) is built when it is first read.

    Business rules (exclusions, diversity caps, pins) need spare candidates but keep only k of them:
    item ids and categories are at hand for choosing, and the rest is built only for the kept items.
    Components are held as columns: collaborative, content, popularity and, with category boosts, boost.
    """

    __slots__ = ("item_ids", "categories", "_scores", "_collaborative", "_content", "_popularity", "_boost")

    def __init__(self, item_ids: list[str], categories: list[str], scores: list[float], collaborative: list[float],
                 content: list[float], popularity: list[float], boost: list[float] | None = None) -> None:
        self.item_ids = item_ids
        self.categories = categories
        self._scores = scores
        self._collaborative = collaborative
        self._content = content
        self._popularity = popularity
        self._boost = boost

    @classmethod
    def of(cls, recommendations: Sequence[Recommendation]) -> "RankedItems":
        """The given recommendations, in order (all with a boost component or all without)."""
        def column(name: str) -> list[float]:
            return [r.components[name] for r in recommendations]

        boosted = bool(recommendations) and "boost" in recommendations[0].components
        return cls([r.item_id for r in recommendations], [r.category for r in recommendations],
                   [r.score for r in recommendations], column("collaborative"), column("content"),
                   column("popularity"), column("boost") if boosted else None)

    @classmethod
    def empty(cls) -> "RankedItems":
        """No items."""
        return cls([], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Recommendation]:
        for position in range(len(self.item_ids)):
            yield self[position]

    def __getitem__(self, position: int) -> Recommendation:  # type: ignore[override]  # no slices: never needed
        return Recommendation(self.item_ids[position], self.categories[position], self._scores[position],
                              self._components(position))

    def records(self, positions: Iterable[int]) -> list[dict]:
        """The JSON-able form (`Recommendation.to_dict`) of the items at `positions`, built straight from the columns."""
        item_ids, categories, scores = self.item_ids, self.categories, self._scores
        return [{"item_id": item_ids[p], "category": categories[p], "score": scores[p],
                 "components": self._components(p)} for p in positions]

    def _components(self, position: int) -> dict[str, float]:
        components = {"collaborative": self._collaborative[position], "content": self._content[position],
                      "popularity": self._popularity[position]}
        if self._boost is not None:
            components["boost"] = self._boost[position]
        return components


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
        self._mf = InPlaceBiasedMF(n_factors=n_factors, learning_rate=learning_rate, seed=seed)
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
        self._eligible_cache: tuple[np.ndarray, np.ndarray, float, float] | None = None  # see _eligibility()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_eligible_cache": None}  # derived: rebuilt on first use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._eligible_cache = None  # (snapshots of older versions hold a cache of another layout)

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
        return index is not None and bool(self._eligibility(now_ms)[0][index])

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
        return self._top_k(k, self._scoring(user_id, category_affinity, now_ms, category_filter), exclude)

    def score_items(
        self,
        user_id: str,
        item_ids: Collection[str],
        category_affinity: Mapping[str, float],
        now_ms: int,
        category_filter: "CategoryFilter | None" = None,
    ) -> list[Recommendation]:
        """The given items, in the given order, scored like `rank` does (unrankable items are left out)."""
        scoring = self._scoring(user_id, category_affinity, now_ms, category_filter)
        indices = [self._item_index[item] for item in item_ids if item in self._item_index]
        return list(self._recommendations([i for i in indices if scoring.scores[i] > -np.inf], scoring))

    def rank_popular(
        self, k: int, now_ms: int, exclude: Collection[str] = (), category_filter: "CategoryFilter | None" = None
    ) -> list[Recommendation]:
        """Non-personalized top-k: the unweighted popularity component only (the others are 0)."""
        return list(self._top_k(k, self._scoring(None, {}, now_ms, category_filter, popularity_weight=1.0), exclude))

    def _scoring(
        self,
        user_id: str | None,
        category_affinity: Mapping[str, float],
        now_ms: int,
        category_filter: "CategoryFilter | None",
        popularity_weight: float | None = None,
    ) -> "_Scoring":
        """Every item's score in a few whole-catalog vector operations (unrankable items score -inf).

        Content (and boost) values are per category and spread over the items in one gather; denied
        categories carry -inf into it. The collaborative term shared by every item (global mean plus
        user bias) is left out of the per-item scores: it does not change the order and is added back
        to the chosen items only.
        """
        n = self.n_items
        categories = self._categories
        content = np.array([category_affinity.get(c, 0.0) for c in categories], dtype=float) * self.content_weight
        per_category = content
        boost = None
        if category_filter is not None:
            if category_filter.boosts:
                boost = np.array([category_filter.boosts.get(c, 0.0) for c in categories], dtype=float)
                per_category = content + boost
            denied = [i for i, c in enumerate(categories)
                      if category_filter.allowed.get(c, category_filter.default_allowed) <= 0]
            if denied:
                per_category = per_category.copy() if per_category is content else per_category
                per_category[denied] = -np.inf
        scores = per_category[self._item_category[:n]]
        weight = self.popularity_weight if popularity_weight is None else popularity_weight
        popularity = self._popularity_component(now_ms, weight)
        scores += popularity
        user_latent = None if user_id is None or self.cf_weight == 0.0 else self._mf.u_latents.get(user_id)
        collaborative, cf_offset = None, 0.0
        if user_latent is not None:
            cf_scale = self.cf_weight / self._max_strength
            collaborative = self._latents[:n] @ user_latent
            collaborative += self._biases[:n]
            collaborative *= cf_scale
            scores += collaborative
            cf_offset = cf_scale * (self._mf.global_mean.get() + self._mf.u_biases.get(user_id, 0.0))
        unrankable = self._eligibility(now_ms)[1]
        if len(unrankable):
            scores[unrankable] = -np.inf
        return _Scoring(scores, collaborative, cf_offset, content, boost, popularity)

    def _eligibility(self, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the items rankable at `now_ms`, indices of the others); read only.

        Rankable: listed and within the availability window.
        Both are cached with the span of time over which they cannot change (no window opens or
        closes within it) until the catalog changes: most calls only read the cache.
        """
        cached = self._eligible_cache
        if cached is None or not cached[2] <= now_ms < cached[3]:
            n = self.n_items
            starts, ends = self._available_from[:n], self._available_until[:n]
            opened, not_closed = starts <= now_ms, now_ms <= ends
            # The mask holds from the latest start or end already passed to the next one to come.
            since = max(starts[opened].max(initial=-np.inf), (ends[~not_closed] + 1).max(initial=-np.inf))
            until = min(starts[~opened].min(initial=np.inf), (ends[not_closed] + 1).min(initial=np.inf))
            mask = self._listed[:n] & opened & not_closed
            cached = self._eligible_cache = (mask, np.flatnonzero(~mask), since, until)
        return cached[0], cached[1]

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

    def _popularity_component(self, now_ms: int, weight: float) -> np.ndarray:
        """`weight * log1p(decayed count) / log1p(max decayed count)` per item (a new array)."""
        scaled = self._scaled_counts[: self.n_items]
        factor = self._decay_factor(now_ms)
        top = scaled.max(initial=0.0) * factor
        if top <= 0.0:
            return np.zeros(self.n_items)
        popularity = np.log1p(scaled * factor)
        popularity *= weight / math.log1p(top)
        return popularity

    def _top_k(self, k: int, scoring: "_Scoring", exclude: Collection[str]) -> RankedItems:
        scores = scoring.scores
        excluded = [self._item_index[item] for item in exclude if item in self._item_index]
        if excluded:
            scores[excluded] = -np.inf
        k = min(k, len(scores))
        if k <= 0:
            return RankedItems.empty()
        candidates = _top_candidates(scores, k) if k < len(scores) else np.arange(len(scores))
        # Best first, ties by catalog position; -inf marks the unrankable items picked when fewer than k are rankable.
        ordered = sorted(zip((-scores[candidates]).tolist(), candidates.tolist()))
        return self._recommendations([i for negated, i in ordered if negated != np.inf], scoring)

    def _recommendations(self, best: list[int], scoring: "_Scoring") -> RankedItems:
        """The items at `best`, gathering each component once for all of them."""
        if not best:
            return RankedItems.empty()
        at = np.array(best, dtype=np.intp)
        categories = self._item_category[at].tolist()
        offset = scoring.cf_offset
        if scoring.collaborative is None:
            collaborative = [0.0] * len(best)
        else:
            collaborative = [value + offset for value in scoring.collaborative[at].tolist()]
        content = scoring.content.tolist()
        boost = None if scoring.boost is None else scoring.boost.tolist()
        item_ids, names = self._item_ids, self._categories
        return RankedItems([item_ids[i] for i in best], [names[c] for c in categories],
                           [score + offset for score in scoring.scores[at].tolist()], collaborative,
                           [content[c] for c in categories], scoring.popularity[at].tolist(),
                           None if boost is None else [boost[c] for c in categories])


class _Scoring(NamedTuple):
    """One ranking's terms: per-item scores less `cf_offset` (-inf: not rankable), and what the components of
    the chosen items are gathered from."""

    scores: np.ndarray
    collaborative: np.ndarray | None  # weighted collaborative term per item less `cf_offset` (None: 0 everywhere)
    cf_offset: float  # weighted collaborative term shared by every item: global mean + user bias
    content: np.ndarray  # weighted content value per category
    boost: np.ndarray | None  # boost per category (None: no boosts)
    popularity: np.ndarray  # weighted popularity per item


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
        return np.argpartition(masked, n - k)[n - k:]
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
