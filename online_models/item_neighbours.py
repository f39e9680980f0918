"""Transition-aware item-to-item neighbours, learned incrementally from users' item sequences in bounded memory.

When a user interacts with item i, i is paired with each of the user's recent items j (the context, newest
first, at distance d = 0, 1, ...): weight `co_decay**d` is added to the pair in both items' neighbour lists
(co-occurrence), and j's list also gets `transition_weight * transition_decay**d` for d < `transition_span`
(i followed j: sequential rules, closer steps counting more). So j's neighbours are the items seen near it,
and most of all the items that came next.

Each item keeps `slots` neighbours: index and weight (12 bytes per slot, 768 bytes per item at 64 slots). A
pair not among an item's neighbours enters only if its similarity beats the weakest neighbour's: its weight
is estimated by a count-min sketch of every pair's co-occurrence weight (2 rows of `sketch_width` float32
counters shared by all items, 2 MB by default), so a pair seen many times enters with what it has gathered
while one-off pairs do not push real neighbours out (TinyLFU-style admission).

The similarity of item x to context item j is `weight(j, x) / sqrt(n_j * n_x)` (n: how often each item
was learned: a cosine). Pairs are learned in batches (`learn_many`: one call for many events, so numpy's
cost per call is paid once per batch); the scores of the whole catalog for a weighted context are a sparse
gather of the context items' lists summed with `np.bincount`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ItemNeighbours"]

_INITIAL_CAPACITY = 64
_MAX_DISTANCE = 256  # largest context distance whose pair weights are precomputed
_ADMITTED_PER_BATCH = 8  # new neighbours a row may take in one batch (the rest are proposed again later)
# A row remembers its weakest neighbour's similarity when it last changed (its floor); candidates below the
# floor, lowered by this factor per batch since (similarities drift as counts grow), are turned away at once.
_FLOOR_DECAY = 0.98
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


class ItemNeighbours:
    """Bounded transition-aware neighbours of every item (items are indices 0..n-1).

    >>> nb = ItemNeighbours(slots=4)
    >>> nb.learn(0, np.array([], dtype=np.intp))
    >>> nb.learn(1, np.array([0]))         # 0 then 1
    >>> nb.learn(2, np.array([1, 0]))      # 0, 1 then 2
    >>> nb.scores(np.array([1]), np.array([1.0]), n=3).round(3).tolist()  # after 1: 0 was near it, 2 followed it
    [1.0, 0.0, 1.5]
    """

    def __init__(self, slots: int = 64, sketch_width: int = 1 << 18, co_decay: float = 0.95,
                 transition_weight: float = 0.5, transition_span: int = 5, transition_decay: float = 0.5) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if sketch_width < 2 or sketch_width & (sketch_width - 1):
            raise ValueError(f"sketch_width must be a power of two >= 2, got {sketch_width}")
        if not (0 < co_decay <= 1 and 0 < transition_decay <= 1):
            raise ValueError("co_decay and transition_decay must be in (0, 1]")
        if transition_span < 0 or not transition_weight >= 0:
            raise ValueError("transition_span and transition_weight must be >= 0")
        self.slots = slots
        distance = np.arange(_MAX_DISTANCE)
        self._co_weight = (co_decay**distance).astype(np.float32)
        self._transition_weight = (transition_weight * np.where(distance < transition_span, transition_decay**distance,
                                                                0.0)).astype(np.float32)
        # Row r lists item r's neighbours as index + 1 (0: an empty slot, whose weight is 0).
        self._neighbour = np.zeros((_INITIAL_CAPACITY, slots), dtype=np.intp)
        self._weight = np.zeros((_INITIAL_CAPACITY, slots), dtype=np.float32)
        # Per item, shifted by one like the stored neighbours (entry 0 is the empty slot's and stays 0):
        # how often it was learned, and 1 / sqrt of that.
        self._learned = np.zeros(_INITIAL_CAPACITY + 1)
        self._root = np.zeros(_INITIAL_CAPACITY + 1, dtype=np.float32)
        self._row_root = np.zeros(_INITIAL_CAPACITY, dtype=np.float32)  # _root of each row's own item (unshifted)
        self._sketch = np.zeros((2, sketch_width), dtype=np.float32)
        self._sketch_bits = sketch_width.bit_length() - 1
        self._floor = np.full(_INITIAL_CAPACITY, -1.0)  # see _FLOOR_DECAY (-1: the row has an empty slot)
        self._floor_batch = np.zeros(_INITIAL_CAPACITY)  # the batch each floor was set in
        self._batches = 0
        self._similarity: np.ndarray | None = None  # see _similarities()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_similarity": None}  # derived: rebuilt on first use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._similarity = None

    @property
    def capacity(self) -> int:
        """Items the arrays hold room for."""
        return len(self._neighbour)

    def ensure_capacity(self, size: int) -> None:
        """Make room for items 0..size-1."""
        capacity = self.capacity
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        self._neighbour, self._weight = _grown(self._neighbour, capacity), _grown(self._weight, capacity)
        self._floor, self._floor_batch = _grown(self._floor, capacity, -1.0), _grown(self._floor_batch, capacity)
        self._learned, self._root = _grown(self._learned, capacity + 1), _grown(self._root, capacity + 1)
        self._row_root = _grown(self._row_root, capacity)
        self._similarity = None

    def neighbours_of(self, item: int) -> list[tuple[int, float]]:
        """The item's neighbours as (index, weight), strongest first."""
        row = self._neighbour[item]
        kept = np.flatnonzero(row)
        order = kept[np.argsort(-self._weight[item, kept], kind="stable")]
        return [(int(row[s]) - 1, float(self._weight[item, s])) for s in order]

    def learn(self, item: int, context: np.ndarray) -> None:
        """Pair `item` with the `context` items (indices, newest first, distinct, without `item`)."""
        size = min(len(context), _MAX_DISTANCE)
        self.learn_many(np.array([item]), np.full(size, item), np.asarray(context[:size], dtype=np.intp),
                        np.arange(size))

    def learn_many(self, items: np.ndarray, pair_items: np.ndarray, pair_others: np.ndarray,
                   distances: np.ndarray) -> None:
        """Learn a batch of events: `items` were interacted with (one per event, repeats allowed), and each
        pair p says that `pair_others[p]` came `distances[p]` steps before `pair_items[p]` in a user's items."""
        self.ensure_capacity(int(items.max(initial=-1)) + 1)
        self._batches += 1
        self._similarity = None
        np.add.at(self._learned, items + 1, 1.0)
        self._root[items + 1] = self._row_root[items] = self._learned[items + 1] ** -0.5
        if len(pair_items) == 0:
            return
        distances = np.minimum(distances, _MAX_DISTANCE - 1)
        co_weight = self._co_weight[distances]
        transition_weight = self._transition_weight[distances]
        estimate = self._sketched(pair_items, pair_others, co_weight)
        # Both rows learn the pair: the new item's (co-occurrence), the earlier item's (and the transition).
        rows = np.concatenate((pair_items, pair_others))
        ids = np.concatenate((pair_others, pair_items)) + 1
        added = np.concatenate((co_weight, co_weight + transition_weight))
        match = self._neighbour[rows] == ids[:, None]
        slot = match.argmax(axis=1)
        known = match[np.arange(len(rows)), slot]
        np.add.at(self._weight, (rows[known], slot[known]), added[known])
        if not known.all():
            unknown = ~known
            # A newcomer enters with its estimated co-occurrence weight (this batch's included) and the
            # batch's transitions to it.
            transition = np.concatenate((np.zeros_like(transition_weight), transition_weight))[unknown]
            self._admit(rows[unknown], ids[unknown], np.concatenate((estimate, estimate))[unknown], transition)

    def scores(self, context: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
        """The similarity of items 0..n-1 to the context items, summed with `weights`."""
        if len(context) == 0:
            return np.zeros(n)
        values = self._similarities()[context]
        values *= (weights * self._row_root[context])[:, None]
        return np.bincount(self._neighbour[context].ravel(), values.ravel(), minlength=n + 1)[1:n + 1]

    def batch_scores(self, contexts: np.ndarray, weights: np.ndarray, owners: np.ndarray,
                     candidates: np.ndarray, n: int) -> np.ndarray:
        """For several contexts at once (`contexts[p]` with `weights[p]` belongs to context `owners[p]`), the
        similarity of `candidates[o]` (one row per context) to context o, divided by the largest similarity
        of any of the items 0..n-1 to that context, as ranking scales it."""
        n_owners = len(candidates)
        if len(contexts) == 0:
            return np.zeros(candidates.shape)
        ids = self._neighbour[contexts]
        values = self._similarities()[contexts]
        values *= (weights * self._row_root[contexts])[:, None]
        ids += (owners * (n + 1))[:, None]
        sums = np.bincount(ids.ravel(), values.ravel(), minlength=n_owners * (n + 1)).reshape(n_owners, n + 1)
        top = sums[:, 1:].max(axis=1)
        found = np.take_along_axis(sums, candidates + 1, axis=1)
        positive = top > 0
        found[positive] /= top[positive, None]
        return found

    def _similarities(self) -> np.ndarray:
        """Each slot's weight times `1 / sqrt(n)` of its neighbour (float32, as scoring multiplies them), kept
        until the next batch is learned."""
        if self._similarity is None:
            self._similarity = self._weight * self._root[self._neighbour]
        return self._similarity

    def _sketched(self, items: np.ndarray, others: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Add the pairs' weights to the sketch; return each pair's estimated total weight."""
        low = np.minimum(items, others).astype(np.uint64)
        high = np.maximum(items, others).astype(np.uint64)
        mixed = (low * _MIX[0]) ^ (high * _MIX[1])
        mixed ^= mixed >> np.uint64(29)
        mixed *= _MIX[2]
        first = (mixed >> np.uint64(64 - self._sketch_bits)).astype(np.intp)
        second = (mixed & np.uint64((1 << self._sketch_bits) - 1)).astype(np.intp)
        np.add.at(self._sketch[0], first, weight)
        np.add.at(self._sketch[1], second, weight)
        return np.minimum(self._sketch[0, first], self._sketch[1, second])

    def _admit(self, rows: np.ndarray, ids: np.ndarray, estimate: np.ndarray, transition: np.ndarray) -> None:
        """Candidates (row, stored id) replace their rows' weakest neighbours when more similar: per row the
        strongest candidates against the weakest slots, at most `_ADMITTED_PER_BATCH` per batch."""
        similarity = estimate * self._root[ids]  # up to the row's own 1/sqrt(n), common to the row
        floor = self._floor[rows] * _FLOOR_DECAY ** (self._batches - self._floor_batch[rows])
        hopeful = similarity + transition * self._root[ids] > floor
        if not hopeful.any():
            return
        rows, ids, estimate, transition = rows[hopeful], ids[hopeful], estimate[hopeful], transition[hopeful]
        keys, first, inverse = np.unique(rows * len(self._learned) + ids, return_index=True, return_inverse=True)
        rows, ids, estimate = rows[first], ids[first], estimate[first]
        weight = (estimate + np.bincount(inverse, transition, minlength=len(keys))).astype(np.float32)
        similarity = weight * self._root[ids]
        order = np.lexsort((-similarity, rows))
        rows, ids, weight, similarity = rows[order], ids[order], weight[order], similarity[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        take = min(_ADMITTED_PER_BATCH, self.slots)
        keep = rank < take
        rows, ids, weight, similarity, rank = rows[keep], ids[keep], weight[keep], similarity[keep], rank[keep]
        affected, row_of = np.unique(rows, return_inverse=True)
        held = self._neighbour[affected]
        current = np.where(held > 0, self._weight[affected] * self._root[held], -1.0)  # empty slots: -1
        if take < self.slots:
            weakest = np.argpartition(current, take - 1, axis=1)[:, :take]
            weakest = np.take_along_axis(weakest, np.argsort(np.take_along_axis(current, weakest, axis=1), axis=1),
                                         axis=1)
        else:
            weakest = np.argsort(current, axis=1)
        slots = weakest[row_of, rank]
        enter = similarity > current[row_of, slots]
        current[row_of[enter], slots[enter]] = similarity[enter]
        rows, slots = rows[enter], slots[enter]
        self._neighbour[rows, slots] = ids[enter]
        self._weight[rows, slots] = weight[enter]
        self._floor[affected] = current.min(axis=1)
        self._floor_batch[affected] = self._batches


def _grown(array: np.ndarray, capacity: int, fill: float = 0.0) -> np.ndarray:
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
