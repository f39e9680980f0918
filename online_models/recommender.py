"""Hybrid recommender: collaborative factors, content, popularity and transition-aware neighbours of the user's
recent items, blended with weights learned online.

Components of an item's score for a user, each scaled to about [0, 1]:

- collaborative: the MF-predicted interaction strength for (user, item) (River `BiasedMF` on implicit
  feedback: the interactions at least `collaborative_min_strength` strong, each with `negative_samples`
  random items as 0) divided by the largest strength learned so far. It is 0 for every item when the MF
  has never learned about the user.
- content: the caller's affinity of the user for the item's category (a weight in [0, 1]).
- popularity: `log1p(decayed count) / log1p(max decayed count)` over the catalog, where each
  interaction counts 1 and halves in weight every `popularity_half_life_s`.
- neighbours: the item's similarity to the user's recent items (the context, below) through item-to-item
  neighbours learned from users' sequences (online_models.item_neighbours: co-occurrence within the
  recent items plus transitions to the items that came next; bounded memory per item), summed with the
  context weights and divided by the largest such sum over the catalog.

The context is the user's recent distinct items (operators.item_memory), newest first. Item k (k = 0 the
newest) weighs `CONTEXT_POSITION_DECAY**k * sqrt(strength) * (CONTEXT_FLOOR + (1 - CONTEXT_FLOOR) *
2**(-age / context_half_life_s))`: recent, strong (a purchase about twice a view) and fresh items count most.

`score = sum(weight[c] * component[c])`, and a `Recommendation` reports the weighted components, which sum
to its score. The weights start at the constructor's values and are learned online (online_models.blend)
from every interaction at least as strong as a click: the item the user took against `blend_negatives`
random catalog items, each valued under the context the user had just before (a random `blend_sample` of
those interactions: a few weights need few examples). Neighbour pairs and blend steps are learned in
batches of `learn_batch` interactions (numpy's cost per call is paid once per batch): until its batch is
learned, an interaction counts in popularity and the MF only.
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from online_models.biased_mf import InPlaceBiasedMF
from online_models.blend import SoftmaxBlend
from online_models.item_keys import CONTEXT_RECORD, context_records, item_key
from online_models.item_neighbours import ItemNeighbours

__all__ = [
    "COMPONENTS", "UNKNOWN_CATEGORY", "CategoryFilter", "HybridRecommender", "RankedItems", "Recommendation",
    "RecommenderConfig",
]

COMPONENTS = ("collaborative", "content", "popularity", "neighbours")  # the blended components
UNKNOWN_CATEGORY = "unknown"  # of an item learned from an event without a category and not in the catalog
CONTEXT_POSITION_DECAY = 0.9
CONTEXT_FLOOR = 0.2  # share of a context item's weight that never fades with its age
OUTCOME_STRENGTH = 2.0  # interactions at least this strong (click, cart, purchase) teach the blend
_MAX_CONTEXT = 256
_INITIAL_CAPACITY = 64
# Popularity counts are stored multiplied by 2**((t - reference) / half-life); once that growing
# scale factor exceeds 2**_MAX_SCALE_EXPONENT, counts are renormalized and the reference moved.
_MAX_SCALE_EXPONENT = 512.0
# Reading popularity more than this many half-lives before the reference is read as at that bound
# (keeps scaled counts times the decay factor finite).
_MAX_UNDECAY_EXPONENT = 64.0
# A context record's weight is `(_LASTING + _FADING * 2**(-age / half-life)) * _STRENGTH_ROOTS[strength]`,
# the first two by position from the newest (see the module doc).
_FADING = (1.0 - CONTEXT_FLOOR) * CONTEXT_POSITION_DECAY ** np.arange(_MAX_CONTEXT)
_LASTING = CONTEXT_FLOOR * CONTEXT_POSITION_DECAY ** np.arange(_MAX_CONTEXT)
_STRENGTH_ROOTS = np.sqrt(np.arange(256.0))
_FADING_LIST, _LASTING_LIST, _STRENGTH_ROOTS_LIST = _FADING.tolist(), _LASTING.tolist(), _STRENGTH_ROOTS.tolist()
_CONTEXT_RECORDS = struct.Struct("<QqB").iter_unpack  # (key, ts, strength) of each CONTEXT_RECORD


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
    Components are held as columns: collaborative, content, popularity, neighbours and, with category
    boosts, boost.
    """

    __slots__ = ("_boost", "_collaborative", "_content", "_neighbours", "_popularity", "_scores", "categories",
                 "item_ids")

    def __init__(self, item_ids: list[str], categories: list[str], scores: list[float], collaborative: list[float],
                 content: list[float], popularity: list[float], neighbours: list[float],
                 boost: list[float] | None = None) -> None:
        self.item_ids = item_ids
        self.categories = categories
        self._scores = scores
        self._collaborative = collaborative
        self._content = content
        self._popularity = popularity
        self._neighbours = neighbours
        self._boost = boost

    @classmethod
    def of(cls, recommendations: Sequence[Recommendation]) -> RankedItems:
        """The given recommendations, in order (all with a boost component or all without)."""
        def column(name: str) -> list[float]:
            return [r.components[name] for r in recommendations]

        boosted = bool(recommendations) and "boost" in recommendations[0].components
        return cls([r.item_id for r in recommendations], [r.category for r in recommendations],
                   [r.score for r in recommendations], column("collaborative"), column("content"),
                   column("popularity"), column("neighbours"), column("boost") if boosted else None)

    @classmethod
    def empty(cls) -> RankedItems:
        """No items."""
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Recommendation]:
        for position in range(len(self.item_ids)):
            yield self[position]

    def __getitem__(self, position: int) -> Recommendation:  # type: ignore[override]  # no slices: never needed
        return Recommendation(self.item_ids[position], self.categories[position], self._scores[position],
                              self._components(position))

    def records(self, positions: Iterable[int]) -> list[dict]:
        """The JSON-able form (`Recommendation.to_dict`) of the items at `positions`, built from the columns."""
        columns = [self.item_ids, self.categories, self._scores, self._collaborative, self._content, self._popularity,
                   self._neighbours]
        at = positions if isinstance(positions, range) and positions.step == 1 else list(positions)
        if isinstance(at, range):  # the first k (no rule moved an item): slices of the columns
            rows = zip(*(column[at.start:at.stop] for column in columns))
        else:
            rows = zip(*([column[p] for p in at] for column in columns))
        records = [{"item_id": item_id, "category": category, "score": score,
                    "components": {"collaborative": collaborative, "content": content, "popularity": popularity,
                                   "neighbours": neighbours}}
                   for item_id, category, score, collaborative, content, popularity, neighbours in rows]
        if self._boost is not None:
            boost = self._boost
            for record, p in zip(records, at):
                record["components"]["boost"] = boost[p]
        return records

    def _components(self, position: int) -> dict[str, float]:
        components = {"collaborative": self._collaborative[position], "content": self._content[position],
                      "popularity": self._popularity[position], "neighbours": self._neighbours[position]}
        if self._boost is not None:
            components["boost"] = self._boost[position]
        return components


@dataclass(frozen=True, slots=True)
class RecommenderConfig:
    """The recommender's tunables that deployments set (pulse.config: PULSE_RECO_*)."""

    popularity_half_life_s: float = 604800.0
    neighbour_slots: int = 64
    context_half_life_s: float = 600.0
    blend_learning_rate: float = 0.05
    collaborative_min_strength: float = 2.0

    def parameters(self) -> dict[str, float | int]:
        """Keyword arguments of `HybridRecommender`."""
        return {"popularity_half_life_s": self.popularity_half_life_s, "neighbour_slots": self.neighbour_slots,
                "context_half_life_s": self.context_half_life_s, "blend_learning_rate": self.blend_learning_rate,
                "collaborative_min_strength": self.collaborative_min_strength}


class HybridRecommender:
    """Top-k items for a user from collaborative, content, popularity and neighbour signals, scored with numpy.

    Item latents and biases of River's `BiasedMF` are mirrored into numpy arrays for the items each
    update touches, so ranking the whole catalog is a handful of vector operations; the neighbour terms
    are gathered sparsely from the context items' bounded neighbour lists.

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
        neighbours_weight: float = 1.0,
        popularity_half_life_s: float = 604800.0,
        negative_samples: int = 1,
        learning_rate: float = 0.05,
        seed: int = 0,
        neighbour_slots: int = 64,
        context_half_life_s: float = 600.0,
        blend_learning_rate: float = 0.05,
        blend_negatives: int = 20,
        blend_sample: float = 0.1,
        learn_batch: int = 256,
        collaborative_min_strength: float = 0.0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        initial = {"collaborative": cf_weight, "content": content_weight, "popularity": popularity_weight,
                   "neighbours": neighbours_weight}
        for name, weight in initial.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"the initial {name} weight must be finite and >= 0, got {weight}")
        for name, value in (("popularity_half_life_s", popularity_half_life_s),
                            ("context_half_life_s", context_half_life_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if negative_samples < 0:
            raise ValueError(f"negative_samples must be >= 0, got {negative_samples}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if learn_batch < 1:
            raise ValueError(f"learn_batch must be >= 1, got {learn_batch}")
        if not 0.0 < blend_sample <= 1.0:
            raise ValueError(f"blend_sample must be in (0, 1], got {blend_sample}")
        self.learn_batch = learn_batch
        self.blend_sample = blend_sample
        self.collaborative_min_strength = collaborative_min_strength
        self._pending: list[_Pending] = []  # interactions whose neighbour pairs and blend choice await a batch
        self.blend = SoftmaxBlend(COMPONENTS, initial, blend_learning_rate, blend_negatives)
        self.negative_samples = negative_samples
        self._half_life_ms = popularity_half_life_s * 1000.0
        self._inverse_context_half_life = 1.0 / (context_half_life_s * 1000.0)
        self._mf = InPlaceBiasedMF(n_factors=n_factors, learning_rate=learning_rate, seed=seed)
        self._neighbours = ItemNeighbours(slots=neighbour_slots)
        self._rng = random.Random(seed)
        self._blend_rng = np.random.default_rng(seed)
        self._n_learned = 0
        self._max_strength = 0.0
        self._item_ids: list[str] = []
        self._item_index: dict[str, int] = {}
        self._index_of_key: dict[int, int] = {}  # online_models.item_keys key -> catalog index
        self._categories: list[str] = []
        self._category_index: dict[str, int] = {}
        self._latents = np.zeros((_INITIAL_CAPACITY, n_factors))
        self._biases = np.zeros(_INITIAL_CAPACITY)
        self._item_category = np.zeros(_INITIAL_CAPACITY, dtype=np.intp)
        self._item_keys = np.zeros(_INITIAL_CAPACITY, dtype=np.uint64)
        self._scaled_counts = np.zeros(_INITIAL_CAPACITY)
        self._top_scaled = 0.0  # the largest scaled count (all decay alike, so only an increment can change it)
        self._listed = np.ones(_INITIAL_CAPACITY, dtype=bool)  # False: deleted or out of stock
        self._available_from = np.full(_INITIAL_CAPACITY, -np.inf)
        self._available_until = np.full(_INITIAL_CAPACITY, np.inf)
        self._reference_ms = 0.0
        self._changed_users: set[str] = set()  # users whose MF factors changed since take_changed_users()
        self._eligible_cache: tuple[np.ndarray, np.ndarray, float, float] | None = None  # see _eligibility()
        self._key_order: tuple[np.ndarray, np.ndarray] | None = None  # see _indices_of()
        self._weights_cache: tuple[int, dict[str, float]] | None = None  # see weights()
        self._popularity_cache: tuple[int, int, float, np.ndarray] | None = None  # see _popularity_component()

    def __getstate__(self) -> dict:
        return {**self.__dict__, **_DERIVED}  # derived: rebuilt on first use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.update(_DERIVED)

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
        """Model version, changing with every learned interaction; `blend@N`: the blend weights after N updates."""
        return f"reco-hybrid@{self._n_learned}/blend@{self.blend.n_updates}"

    def weights(self) -> dict[str, float]:
        """The blend's current weight of each component (one dict per blend step: do not modify it)."""
        cached = self._weights_cache
        if cached is None or cached[0] != self.blend.n_updates:
            cached = self._weights_cache = (self.blend.n_updates, self.blend.weights())
        return cached[1]

    @property
    def cf_weight(self) -> float:
        """Current weight of the collaborative component."""
        return float(self.blend.vector[0])

    @property
    def content_weight(self) -> float:
        """Current weight of the content component."""
        return float(self.blend.vector[1])

    @property
    def popularity_weight(self) -> float:
        """Current weight of the popularity component."""
        return float(self.blend.vector[2])

    def category_of(self, item_id: str) -> str | None:
        """The item's category, or None for an item not in the catalog."""
        index = self._item_index.get(item_id)
        return None if index is None else self._categories[self._item_category[index]]

    def add_item(self, item_id: str, category: str) -> None:
        """Add an item to the catalog (idempotent); an existing item takes the given category."""
        index = self._item_index.get(item_id)
        if index is None:
            index = self._new_item(item_id)
        self._item_category[index] = self._category_number(category)

    def set_availability(
        self, item_id: str, listed: bool, available_from_ms: float | None = None,
        available_until_ms: float | None = None
    ) -> None:
        """Let the item into ranking (`listed`, within the optional time window) or keep it out (deleted, no
        stock)."""
        index = self._item_index[item_id]
        self._listed[index] = listed
        self._available_from[index] = -np.inf if available_from_ms is None else available_from_ms
        self._available_until[index] = np.inf if available_until_ms is None else available_until_ms
        self._eligible_cache = None

    def is_rankable(self, item_id: str, now_ms: int) -> bool:
        """Whether the item may be recommended at `now_ms` (in the catalog, listed, within its window)."""
        index = self._item_index.get(item_id)
        return index is not None and bool(self._eligibility(now_ms)[0][index])

    def item_ids_of(self, keys: np.ndarray, limit: int | None = None) -> list[str]:
        """The ids of the catalog items with the given `online_models.item_keys` keys (at most `limit`)."""
        indices = self._indices_of(np.asarray(keys, dtype=np.uint64)[:limit])[0]
        return [self._item_ids[i] for i in indices.tolist()]

    def learn_one(self, user_id: str, item_id: str, category: str | None, strength: float, ts_ms: int,
                  context: bytes = b"", category_affinity: Mapping[str, float] | None = None) -> None:
        """Learn that `user_id` interacted with `item_id` at `ts_ms` with a positive `strength`.

        `context` (the user's recent items, operators.item_memory) and `category_affinity` are the user's
        as they were just before this interaction. Adds the item if new (with `category`, or
        `UNKNOWN_CATEGORY` when None; an item already known keeps its category), counts the interaction
        towards the item's popularity, and (when `strength` >= `collaborative_min_strength`) trains the MF on
        (user, item, strength) plus `negative_samples` other random catalog items with strength 0. The item's pairs with
        the context items (neighbours) and, when `strength` >= `OUTCOME_STRENGTH`, the blend's choice (this item against
        random ones) are learned with the next batch of `learn_batch` interactions (`flush`).
        """
        if not (math.isfinite(strength) and strength > 0):
            raise ValueError(f"strength must be finite and > 0, got {strength}")
        index = self._item_index.get(item_id)
        if index is None:
            index = self._new_item(item_id)
            self._item_category[index] = self._category_number(category or UNKNOWN_CATEGORY)
        elif category is not None and self._categories[self._item_category[index]] == UNKNOWN_CATEGORY:
            self._item_category[index] = self._category_number(category)
        choice = None
        if (strength >= OUTCOME_STRENGTH and self.blend.learning_rate > 0 and self.n_items > 1
                and (self.blend_sample >= 1.0 or self._rng.random() < self.blend_sample)):
            choice = self._choice(user_id, index, ts_ms, category_affinity or {})
        self._pending.append(_Pending(user_id, index, ts_ms, context, choice))
        self._count_interaction(index, ts_ms)
        self._max_strength = max(self._max_strength, strength)
        if strength >= self.collaborative_min_strength:
            self._changed_users.add(user_id)
            self._train(user_id, index, strength)
            n_others = self.n_items - 1
            if n_others > 0:
                for _ in range(self.negative_samples):
                    other = self._rng.randrange(n_others)
                    self._train(user_id, other + (other >= index), 0.0)
        self._n_learned += 1
        if len(self._pending) >= self.learn_batch:
            self.flush()

    def flush(self) -> None:
        """Learn the pending interactions' neighbour pairs and blend choices now (one batch)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        n_events = len(pending)
        items = np.array([entry.index for entry in pending], dtype=np.intp)
        event_ts = np.array([entry.ts_ms for entry in pending], dtype=np.int64)
        lengths = np.array([len(entry.context) for entry in pending]) // CONTEXT_RECORD.itemsize
        records = context_records(b"".join(entry.context for entry in pending))
        owners = np.repeat(np.arange(n_events), lengths)
        distances = np.cumsum(lengths)[owners] - 1 - np.arange(len(records))  # 0: the newest of its context
        np.minimum(distances, _MAX_CONTEXT - 1, out=distances)
        indices, found = self._indices_of(records["key"])
        owners, distances, records = owners[found], distances[found], records[found]
        choices = [(event, entry.choice) for event, entry in enumerate(pending) if entry.choice is not None]
        if choices:
            self._learn_choices(choices, event_ts, owners, indices, distances, records)
        own = indices == items[owners]  # an item met again is not its own neighbour
        self._neighbours.learn_many(items, items[owners[~own]], indices[~own], distances[~own])

    def forget_user(self, user_id: str) -> None:
        """Erase the user's collaborative state (latent vector and bias) and their interactions not yet
        learned in a batch; item statistics stay."""
        self._pending = [entry for entry in self._pending if entry.user_id != user_id]
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

    def rank(self, *args: Any, **kwargs: Any) -> list[Recommendation]:
        """`ranked` (same parameters) as a list of `Recommendation`."""
        return list(self.ranked(*args, **kwargs))

    def ranked(
        self,
        user_id: str,
        k: int,
        category_affinity: Mapping[str, float],
        now_ms: int,
        exclude: Collection[str] = (),
        category_filter: CategoryFilter | None = None,
        context: bytes = b"",
        exclude_keys: np.ndarray | None = None,
    ) -> RankedItems:
        """The `k` best rankable items for the user, best first, skipping `exclude` (ids) and `exclude_keys`, as a
        `RankedItems` sequence that builds each `Recommendation` only when read.

        `category_affinity` maps category -> weight in [0, 1]; missing categories weigh 0.
        `category_filter` drops denied / not-allowed categories and adds per-category boosts
        (reported as a "boost" component). `context`: the user's recent items (operators.item_memory).
        Never creates state for an unknown user.
        """
        scoring = self._scoring(user_id, category_affinity, now_ms, category_filter, context)
        return self._top_k(k, scoring, exclude, exclude_keys)

    def score_items(
        self,
        user_id: str,
        item_ids: Collection[str],
        category_affinity: Mapping[str, float],
        now_ms: int,
        category_filter: CategoryFilter | None = None,
        context: bytes = b"",
    ) -> list[Recommendation]:
        """The given items, in the given order, scored like `rank` does (unrankable items are left out)."""
        scoring = self._scoring(user_id, category_affinity, now_ms, category_filter, context)
        indices = [self._item_index[item] for item in item_ids if item in self._item_index]
        return list(self._recommendations([i for i in indices if scoring.scores[i] > -np.inf], scoring))

    def rank_popular(
        self, k: int, now_ms: int, exclude: Collection[str] = (), category_filter: CategoryFilter | None = None
    ) -> list[Recommendation]:
        """Non-personalized top-k: the unweighted popularity component only (the others are 0)."""
        scoring = self._scoring(None, {}, now_ms, category_filter, b"", popularity_only=True)
        return list(self._top_k(k, scoring, exclude, None))

    def _new_item(self, item_id: str) -> int:
        index = self._item_index[item_id] = len(self._item_ids)
        self._item_ids.append(item_id)
        self._ensure_capacity(len(self._item_ids))
        key = self._item_keys[index] = item_key(item_id)
        self._index_of_key[key] = index
        self._neighbours.ensure_capacity(len(self._item_ids))
        self._eligible_cache = None
        self._key_order = None
        return index

    def _category_number(self, category: str) -> int:
        number = self._category_index.get(category)
        if number is None:
            number = self._category_index[category] = len(self._categories)
            self._categories.append(category)
        return number

    def _indices_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalog indices of the items with these keys, mask of the keys found), in the keys' order."""
        order = self._key_order
        if order is None:
            n = self.n_items
            by_key = np.argsort(self._item_keys[:n], kind="stable")
            order = self._key_order = (self._item_keys[:n][by_key], by_key)
        sorted_keys, by_key = order
        if len(sorted_keys) == 0 or len(keys) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(len(keys), dtype=bool)
        at = np.searchsorted(sorted_keys, keys)
        at[at == len(sorted_keys)] = 0
        found = sorted_keys[at] == keys
        return by_key[at[found]], found

    def _context(self, context: bytes, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """The context items in the catalog (indices) and their weights (see the module doc).

        A context holds a few records: they are read in plain Python with one vector call (`np.exp2`, as
        `_context_weights` does for a batch), which costs less than numpy's per-call overhead on each field.
        """
        records = _CONTEXT_RECORDS(context)
        if len(context) > _MAX_CONTEXT * CONTEXT_RECORD.itemsize:
            records = list(records)[-_MAX_CONTEXT:]
        index_of, inverse = self._index_of_key.get, self._inverse_context_half_life
        indices, exponents, strengths, distances = [], [], [], []
        newest = min(len(context) // CONTEXT_RECORD.itemsize, _MAX_CONTEXT) - 1
        for position, (key, ts, strength) in enumerate(records):
            index = index_of(key)
            if index is not None:
                indices.append(index)
                exponents.append(min(ts - now_ms, 0) * inverse)
                strengths.append(strength)
                distances.append(newest - position)
        fading, lasting, roots = _FADING_LIST, _LASTING_LIST, _STRENGTH_ROOTS_LIST
        weights = [(decay * fading[distance] + lasting[distance]) * roots[strength]
                   for decay, distance, strength in zip(np.exp2(exponents).tolist(), distances, strengths)]
        return np.array(indices, dtype=np.intp), np.array(weights)

    def _context_weights(self, now_ms: int | np.ndarray, records: np.ndarray, fading: np.ndarray,
                         lasting: np.ndarray) -> np.ndarray:
        """The weight of each context record at `now_ms`, given the parts of it that depend on its position."""
        age = records["ts"] - now_ms
        np.minimum(age, 0, out=age)
        weights = np.exp2(age * self._inverse_context_half_life)
        weights *= fading
        weights += lasting
        weights *= _STRENGTH_ROOTS[records["strength"]]
        return weights

    def _scoring(
        self,
        user_id: str | None,
        category_affinity: Mapping[str, float],
        now_ms: int,
        category_filter: CategoryFilter | None,
        context: bytes,
        popularity_only: bool = False,
    ) -> _Scoring:
        """Every item's score in a few whole-catalog vector operations (unrankable items score -inf).

        Each weighted component fills one row of a matrix (collaborative, content, popularity, neighbours
        and, with category boosts, boost), so the chosen items' components are one gather. Content and boost
        are per category, spread over the items in one gather each. The collaborative term shared by every
        item (global mean plus user bias) is left out of the per-item values: it does not change the order
        and is added back to the chosen items only.
        """
        if popularity_only:
            w_collaborative = w_content = w_neighbours = 0.0
            w_popularity = 1.0
        else:
            w_collaborative, w_content, w_popularity, w_neighbours = self.blend.vector.tolist()
        n = self.n_items
        categories = self._categories
        item_category = self._item_category[:n]
        boosts = category_filter.boosts if category_filter is not None else None
        terms = np.zeros((5 if boosts else 4, n))
        if w_content != 0.0 and category_affinity:
            content = np.array([category_affinity.get(c, 0.0) for c in categories], dtype=float)
            content *= w_content
            content.take(item_category, out=terms[1])
        self._popularity_component(now_ms, w_popularity, out=terms[2])
        cf_offset = 0.0
        user_latent = None if user_id is None or w_collaborative == 0.0 else self._mf.u_latents.get(user_id)
        if user_latent is not None:
            scale = w_collaborative / self._max_strength
            collaborative = np.matmul(self._latents[:n], user_latent, out=terms[0])
            collaborative += self._biases[:n]
            collaborative *= scale
            cf_offset = scale * (self._mf.global_mean.get() + self._mf.u_biases.get(user_id, 0.0))
        if context and w_neighbours != 0.0:
            indices, weights = self._context(context, now_ms)
            if len(indices):
                neighbours = self._neighbours.scores(indices, weights, n)
                top = neighbours.max()
                if top > 0.0:
                    np.multiply(neighbours, w_neighbours / top, out=terms[3])
        if boosts:
            np.take(np.array([boosts.get(c, 0.0) for c in categories], dtype=float), item_category, out=terms[4])
        scores = terms.sum(axis=0)
        if category_filter is not None:
            denied = [i for i, c in enumerate(categories)
                      if category_filter.allowed.get(c, category_filter.default_allowed) <= 0]
            if denied:
                scores[np.isin(item_category, denied)] = -np.inf
        unrankable = self._eligibility(now_ms)[1]
        if len(unrankable):
            scores[unrankable] = -np.inf
        return _Scoring(scores, terms, cf_offset)

    def _choice(self, user_id: str, index: int, now_ms: int, category_affinity: Mapping[str, float]) -> _Choice:
        """What the blend's choice for the item taken needs of this moment, before the MF and popularity learn
        the interaction (the random alternatives are drawn and valued with the batch)."""
        factor = self._decay_factor(now_ms)
        latent = self._mf.u_latents.get(user_id)
        if latent is None or self._max_strength <= 0:
            return _Choice(index, factor, float(self._scaled_counts[index]) * factor, None, 0.0, category_affinity)
        latent = latent / self._max_strength
        taken = float(self._latents[index] @ latent) + float(self._biases[index]) / self._max_strength
        return _Choice(index, factor, float(self._scaled_counts[index]) * factor, latent, taken, category_affinity)

    def _learn_choices(self, choices: list[tuple[int, _Choice]], event_ts: np.ndarray, owners: np.ndarray,
                       indices: np.ndarray, distances: np.ndarray, records: np.ndarray) -> None:
        """One blend step on the choices of a batch: each item taken against `blend.negatives` random items,
        valued under the context its user had then (the alternatives' popularity and collaborative values
        with the counts and item factors of the batch: close enough, and never informed by the choice)."""
        taken = np.array([choice.index for _, choice in choices])
        others = self._blend_rng.integers(0, self.n_items - 1, size=(len(choices), self.blend.negatives))
        others += others >= taken[:, None]
        candidates = np.concatenate((taken[:, None], others), axis=1)
        values = np.zeros((*candidates.shape, len(COMPONENTS)))
        known = [row for row, (_, choice) in enumerate(choices) if choice.latent is not None]
        if known:  # collaborative values, less the term shared by every item
            latents = np.stack([choices[row][1].latent for row in known])
            values[known, 1:, 0] = (np.einsum("rkf,rf->rk", self._latents[others[known]], latents)
                                    + self._biases[others[known]] / self._max_strength)
            values[known, 0, 0] = [choices[row][1].collaborative for row in known]
        names = self._categories
        affinity = np.zeros((len(choices), len(names)))
        for row, (_, choice) in enumerate(choices):
            top = max(choice.category_affinity.values(), default=0.0)
            if top > 0:
                affinity[row] = [choice.category_affinity.get(name, 0.0) / top for name in names]
        values[..., 1] = np.take_along_axis(affinity, self._item_category[candidates], axis=1)
        factor = np.array([choice.factor for _, choice in choices])
        counts = self._scaled_counts[candidates] * factor[:, None]
        counts[:, 0] = [choice.count for _, choice in choices]
        top_count = np.maximum(self._top_scaled * factor, counts.max(axis=1))
        scale = np.divide(1.0, np.log1p(top_count), out=np.zeros(len(choices)), where=top_count > 0)
        values[..., 2] = np.log1p(counts) * scale[:, None]
        events = np.array([event for event, _ in choices])
        slot_of_event = np.full(len(event_ts), -1)
        slot_of_event[events] = np.arange(len(events))
        mine = slot_of_event[owners] >= 0
        owner, near = slot_of_event[owners[mine]], distances[mine]
        weights = self._context_weights(event_ts[events][owner], records[mine], _FADING[near], _LASTING[near])
        values[..., 3] = self._neighbours.batch_scores(indices[mine], weights, owner, candidates, self.n_items)
        self.blend.learn_many(values)

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
        self._item_keys = _grown(self._item_keys, capacity)
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
            self._top_scaled *= 2.0**-exponent
            self._reference_ms = float(ts_ms)
            exponent = 0.0
        self._scaled_counts[index] += 2.0**exponent
        self._top_scaled = max(self._top_scaled, float(self._scaled_counts[index]))

    def _decay_factor(self, now_ms: int) -> float:
        exponent = -(now_ms - self._reference_ms) / self._half_life_ms
        return 2.0 ** min(exponent, _MAX_UNDECAY_EXPONENT)

    def _popularity_component(self, now_ms: int, weight: float, out: np.ndarray | None = None) -> np.ndarray:
        """`weight * log1p(decayed count) / log1p(max decayed count)` per item (into `out`, or a new array).

        The unweighted values are kept and recomputed after each batch of `learn_batch` interactions or when
        time moved on by 1/1024 of the half-life (a change below 0.1%), as the neighbours are.
        """
        n = self.n_items
        if out is None:
            out = np.zeros(n)
        cached = self._popularity_cache
        if (cached is None or len(cached[3]) != n or self._n_learned - cached[0] >= self.learn_batch
                or self._n_learned < cached[0] or abs(now_ms - cached[1]) * 1024 > self._half_life_ms):
            factor = self._decay_factor(now_ms)
            top = self._top_scaled * factor
            values = np.zeros(n)
            if top > 0.0:
                np.multiply(self._scaled_counts[:n], factor, out=values)
                np.log1p(values, out=values)
                values /= math.log1p(top)
            cached = self._popularity_cache = (self._n_learned, now_ms, 0.0, values)
        if weight != 0.0:
            np.multiply(cached[3], weight, out=out)
        return out

    def _top_k(self, k: int, scoring: _Scoring, exclude: Collection[str],
               exclude_keys: np.ndarray | None) -> RankedItems:
        scores = scoring.scores
        excluded = [self._item_index[item] for item in exclude if item in self._item_index]
        if excluded:
            scores[excluded] = -np.inf
        if exclude_keys is not None and len(exclude_keys):
            scores[self._indices_of(exclude_keys)[0]] = -np.inf
        k = min(k, len(scores))
        if k <= 0:
            return RankedItems.empty()
        candidates = _top_candidates(scores, k) if k < len(scores) else np.arange(len(scores))
        # Best first, ties by catalog position; -inf marks the unrankable items picked when fewer than k are rankable.
        ordered = [(i, -negated) for negated, i in sorted(zip((-scores[candidates]).tolist(), candidates.tolist()))
                   if negated != np.inf]
        return self._recommendations([i for i, _ in ordered], scoring, [score for _, score in ordered])

    def _recommendations(self, best: list[int], scoring: _Scoring, scores: list[float] | None = None) -> RankedItems:
        """The items at `best` (their `scores` when already read), gathering their components in one go."""
        if not best:
            return RankedItems.empty()
        at = np.array(best, dtype=np.intp)
        categories = self._item_category[at].tolist()
        columns = scoring.terms.take(at, axis=1).tolist()
        if scores is None:
            scores = scoring.scores[at].tolist()
        offset = scoring.cf_offset
        if offset:
            columns[0] = [value + offset for value in columns[0]]
        item_ids, names = self._item_ids, self._categories
        return RankedItems([item_ids[i] for i in best], [names[c] for c in categories],
                           [score + offset for score in scores], *columns)


_DERIVED = {"_eligible_cache": None, "_key_order": None, "_weights_cache": None, "_popularity_cache": None}


class _Choice(NamedTuple):
    """What a blend choice (the item taken against random alternatives) needs of the moment it was taken."""

    index: int  # the item taken
    factor: float  # the popularity decay factor then
    count: float  # the item's decayed interaction count then (before this interaction)
    latent: np.ndarray | None  # the user's MF latent then, divided by the largest strength (None: unknown user)
    collaborative: float  # the item's collaborative value then, less the term shared by every item
    category_affinity: Mapping[str, float]  # the user's category affinities then


class _Pending(NamedTuple):
    """An interaction learned at once (popularity, MF) whose neighbour pairs and blend choice await a batch."""

    user_id: str
    index: int
    ts_ms: int
    context: bytes  # the user's recent items just before it
    choice: _Choice | None


class _Scoring(NamedTuple):
    """One ranking: per-item scores less `cf_offset` (-inf: not rankable), and the weighted components they sum."""

    scores: np.ndarray
    terms: np.ndarray  # one row per component (collaborative less cf_offset, content, popularity, neighbours[, boost])
    cf_offset: float  # weighted collaborative term shared by every item: global mean + user bias


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
        return masked.argpartition(n - k)[n - k:]
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
