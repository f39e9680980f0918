"""Prequential replay of real interactions: Pulse (the real parser and per-user step) and baselines, side by side.

Every interaction becomes a clickstream event (`purchase` for a positive, `page_view` otherwise) that goes
through `evaluation.replay.Replay`; the decision it yields is what the user is shown until their next event.
Each baseline learns the same event and ranks for the same user at the same moment, excluding what the
user already consumed (Pulse excludes it through its business rule `[exclude] consumed = true`).

For every positive interaction of a user who was shown something before, each method is scored on the list
it showed that user on their previous event: hit@k (the item is in the list), NDCG@k (1 / log2(position + 1))
and MRR@k (1 / position, 0 beyond k). Also kept per method: the items shown (catalog coverage) and how many
shown slots held items the user had already consumed.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.progress import progress_bar
from evaluation.reco_baselines import StreamRecommender
from evaluation.replay import Replay
from operators.engine import EngineConfig, PersonalizationEngine

__all__ = ["Interaction", "MethodRecords", "ReplayResult", "replay_interactions"]

PULSE = "Pulse"
RULES = "[exclude]\nconsumed = true\n"  # Pulse's exclusion of what the user consumed (operators.rules)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One recorded interaction: dense user and item indices, whether it is positive, and when (epoch s)."""

    user: int
    item: int
    positive: bool
    ts_s: int


@dataclass
class MethodRecords:
    """What one method showed and how it scored, over the replay."""

    hit: list[float] = field(default_factory=list)  # one per scored positive
    ndcg: list[float] = field(default_factory=list)
    mrr: list[float] = field(default_factory=list)
    shown: set[int] = field(default_factory=set)  # items ever shown
    shown_second_half: set[int] = field(default_factory=set)
    slots: list[int] = field(default_factory=lambda: [0, 0])  # shown slots: all, second half
    consumed_slots: list[int] = field(default_factory=lambda: [0, 0])  # of which already consumed

    def score(self, shown: np.ndarray | None, item: int, k: int) -> None:
        """Score the list `shown` (None: nothing shown) against the positive `item`."""
        where = np.flatnonzero(shown[:k] == item) if shown is not None else ()
        if len(where):
            rank = int(where[0]) + 1
            self.hit.append(1.0), self.ndcg.append(1.0 / math.log2(rank + 1)), self.mrr.append(1.0 / rank)
        else:
            self.hit.append(0.0), self.ndcg.append(0.0), self.mrr.append(0.0)

    def served(self, shown: np.ndarray, consumed: set[int], second_half: bool) -> None:
        """Count a list served to a user who consumed `consumed`."""
        items = shown.tolist()
        self.shown.update(items)
        stale = sum(item in consumed for item in items)
        self.slots[0] += len(items)
        self.consumed_slots[0] += stale
        if second_half:
            self.shown_second_half.update(items)
            self.slots[1] += len(items)
            self.consumed_slots[1] += stale


@dataclass
class ReplayResult:
    """Records of every method on the same scored positives (same order), and what the replay saw."""

    methods: dict[str, MethodRecords]
    users: list[int]  # the user of each scored positive
    steps: list[int]  # the event index of each scored positive
    n_events: int
    n_items: int
    n_users: int
    elapsed_s: float
    pulse_weights: dict[str, float]  # the recommender's learned blend weights at the end
    pulse_weights_trace: list[tuple[int, dict[str, float]]]  # (event index, weights) along the stream
    pulse_version: str


def replay_interactions(
    interactions: list[Interaction],
    item_ids: list[str],
    item_categories: list[str],
    baselines: Mapping[str, Callable[[], StreamRecommender]],
    engine_config: EngineConfig,
    k: int = 10,
    price: float = 1.0,
    progress: bool = True,
    user_prefix: str = "u",
) -> ReplayResult:
    """Replay `interactions` (time order) through Pulse and the `baselines` (name -> factory); score every positive.

    Items are first registered as `item_upsert` catalog events with their category, at the first event's
    time. A positive becomes a `purchase` at `price`, any other interaction a `page_view`.
    """
    with tempfile.TemporaryDirectory() as scratch:  # the rules file is watched while the engine runs
        rules = Path(scratch) / "rules.toml"
        rules.write_text(RULES)
        config = EngineConfig(**{**_fields(engine_config), "rules_file": str(rules), "top_k": k})
        return _replay(PersonalizationEngine(config), interactions, item_ids, item_categories, baselines, k, price,
                       progress, user_prefix)


def _replay(engine: PersonalizationEngine, interactions: list[Interaction], item_ids: list[str],
            item_categories: list[str], baselines: Mapping[str, Callable[[], StreamRecommender]], k: int,
            price: float, progress: bool, user_prefix: str) -> ReplayResult:
    started = time.perf_counter()
    n = len(interactions)
    half = n // 2
    replay = Replay(engine)
    index_of_item = {item: position for position, item in enumerate(item_ids)}
    first_ms = interactions[0].ts_s * 1000 if interactions else 0
    for item, category in zip(item_ids, item_categories):
        replay.item({"event_id": f"item-{item}", "type": "item_upsert", "item_id": item, "category": category,
                     "ts": first_ms})
    models = {name: factory() for name, factory in baselines.items()}
    records = {name: MethodRecords() for name in (PULSE, *models)}
    shown: dict[str, dict[int, np.ndarray]] = {name: {} for name in records}
    consumed: dict[int, set[int]] = {}
    consumed_lists: dict[int, list[int]] = {}
    users: list[int] = []
    steps: list[int] = []
    trace: list[tuple[int, dict[str, float]]] = []
    trace_every = max(n // 200, 1)
    for step, event in enumerate(progress_bar(interactions, progress, "replay")):
        user, item = event.user, event.item
        if event.positive and user in shown[PULSE]:
            users.append(user)
            steps.append(step)
            for name, method in records.items():
                method.score(shown[name].get(user), item, k)
        user_consumed = consumed.setdefault(user, set())
        if item not in user_consumed:
            user_consumed.add(item)
            consumed_lists.setdefault(user, []).append(item)
        decision = replay.event(_clickstream_event(step, event, item_ids[item], item_categories[item], price,
                                                   user_prefix))
        if decision is None:
            raise RuntimeError(f"event {step} was rejected: {replay.rejected[-1].reason}")
        pulse_list = np.array([index_of_item[r["item_id"]] for r in decision["recommendations"]], dtype=np.intp)
        second_half = step >= half
        shown[PULSE][user] = pulse_list
        records[PULSE].served(pulse_list, user_consumed, second_half)
        excluded = np.array(consumed_lists[user], dtype=np.intp)
        for name, model in models.items():
            model.learn(user, item, event.positive, event.ts_s)
            top = _top_k(model.scores(user, event.ts_s), excluded, k)
            shown[name][user] = top
            records[name].served(top, user_consumed, second_half)
        if step % trace_every == 0:
            trace.append((step, engine.recommender.weights()))
    return ReplayResult(records, users, steps, n, len(item_ids), len(consumed), time.perf_counter() - started,
                        engine.recommender.weights(), trace, engine.recommender.version)


def _clickstream_event(step: int, event: Interaction, item_id: str, category: str, price: float,
                       user_prefix: str) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": f"e{step}", "user_id": f"{user_prefix}{event.user}", "item_id": item_id,
                              "category": category, "ts": event.ts_s * 1000}
    if event.positive:
        record.update(type="purchase", price=price)
    else:
        record["type"] = "page_view"
    return record


def _top_k(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k best scores outside `excluded`, best first (ties: lower index first)."""
    scores = scores.astype(float, copy=True)
    scores[excluded] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top[np.isfinite(scores[top])]


def _fields(config: EngineConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
