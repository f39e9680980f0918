"""The learned blend: a softmax choice model over component scores, and the recommender that it weighs.

River has no estimator type for choice models (check_estimator covers classifiers, regressors, ...), so the
River conventions are checked here by hand: learning returns None, is deterministic, leaves the model
picklable, and ignores what does not change a choice (a value shared by every alternative).
"""

from __future__ import annotations

import math
import pickle
import random
import time

import numpy as np
import pytest

from online_models.blend import SoftmaxBlend
from online_models.recommender import COMPONENTS, HybridRecommender
from operators.engine import EngineConfig, PersonalizationEngine
from operators.item_memory import ItemMemory

NAMES = ("a", "b", "c")


def _blend(rate: float = 0.1) -> SoftmaxBlend:
    return SoftmaxBlend(NAMES, {"a": 1.0, "b": 1.0, "c": 1.0}, learning_rate=rate, negatives=3)


def _choices(n: int, seed: int = 0) -> list[np.ndarray]:
    """Choice sets where the item taken is the one with the largest 'a' (c is noise, b is anti-correlated)."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        values = rng.random((4, 3))
        values[:, 1] = 1.0 - values[:, 0] + 0.1 * rng.random(4)
        sets.append(values[np.argsort(-values[:, 0])])
    return sets


def test_learns_which_component_predicts_the_choice() -> None:
    blend = _blend()
    for values in _choices(2_000):
        assert blend.learn_one(values[0], values[1:]) is None
    weights = blend.weights()
    assert weights["a"] > 3.0 and weights["b"] < 0.0 and abs(weights["c"]) < 1.0
    assert blend.n_updates == 2_000


def test_a_value_shared_by_every_alternative_changes_nothing() -> None:
    one, other = _blend(), _blend()
    for values in _choices(200, seed=3):
        one.learn_one(values[0], values[1:])
        shifted = values + np.array([0.0, 0.0, 5.0])  # component c the same for all: no information
        other.learn_one(shifted[0], shifted[1:])
    np.testing.assert_allclose(one.vector, other.vector, atol=1e-12)


def test_a_batch_step_is_the_sum_of_its_choice_sets_steps() -> None:
    sets = _choices(8, seed=5)
    batch, single = _blend(), _blend()
    batch.learn_many(np.stack(sets))
    gradients = []
    for values in sets:
        probe = _blend()
        probe.learn_one(values[0], values[1:])
        gradients.append(probe.vector - _blend().vector)
    np.testing.assert_allclose(batch.vector, single.vector + np.sum(gradients, axis=0), atol=1e-12)
    assert batch.n_updates == 8


def test_deterministic_picklable_and_frozen_at_rate_zero() -> None:
    sets = _choices(100, seed=7)
    runs = []
    for _ in range(2):
        blend = _blend()
        for values in sets:
            blend.learn_one(values[0], values[1:])
        runs.append(pickle.loads(pickle.dumps(blend)).weights())
    assert runs[0] == runs[1]
    frozen = _blend(rate=0.0)
    frozen.learn_one(sets[0][0], sets[0][1:])
    assert frozen.weights() == {"a": 1.0, "b": 1.0, "c": 1.0} and frozen.n_updates == 0


def test_extreme_values_keep_the_weights_finite() -> None:
    blend = _blend(rate=1.0)
    blend.learn_one(np.array([1e300, 0.0, 0.0]), np.array([[0.0, 1e300, 0.0]]))
    assert np.isfinite(blend.vector).all()


@pytest.mark.parametrize("kwargs", [{"learning_rate": -1.0}, {"learning_rate": math.nan}, {"negatives": 0}])
def test_bad_parameters_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        SoftmaxBlend(NAMES, {"a": 0.0, "b": 0.0, "c": 0.0}, **kwargs)


def _sequence_world(rec: HybridRecommender, n_items: int = 120, n_users: int = 150, steps: int = 25, seed: int = 3):
    """Users walk item chains i -> i+1 (80%) or jump; every third step is a click (an outcome). Returns each
    user's item memory."""
    rng = random.Random(seed)
    for i in range(n_items):
        rec.add_item(f"i{i}", f"c{i % 6}")
    memories = {f"u{u}": ItemMemory() for u in range(n_users)}
    positions = {user: rng.randrange(n_items) for user in memories}
    for t in range(steps):
        for user, memory in memories.items():
            item = positions[user]
            kind = "click" if t % 3 == 0 else "page_view"
            rec.learn_one(user, f"i{item}", None, 2.0 if kind == "click" else 1.0, t * 1000, memory.recent, {})
            memory.record(kind, f"i{item}", t * 1000)
            positions[user] = (item + 1) % n_items if rng.random() < 0.8 else rng.randrange(n_items)
    rec.flush()
    return memories, positions


def test_the_recommender_learns_sequences_and_its_blend_from_clicks() -> None:
    rec = HybridRecommender(seed=1, learn_batch=16, blend_learning_rate=0.2, blend_sample=1.0)
    initial = rec.weights()
    memories, positions = _sequence_world(rec)
    weights = rec.weights()
    assert rec.blend.n_updates > 1_000 and weights != initial
    assert weights["neighbours"] > initial["neighbours"], "the item taken follows the context"
    hits = 0
    for user, memory in memories.items():
        ranked = rec.rank(user, 10, {}, now_ms=25_000, context=memory.recent)
        hits += f"i{positions[user]}" in {r.item_id for r in ranked}
        for r in ranked:  # every score is exactly the sum of its weighted components
            assert math.fsum(r.components.values()) == pytest.approx(r.score, abs=1e-12)
            assert set(r.components) == set(COMPONENTS)
            for name in ("neighbours", "popularity"):
                assert -1e-12 <= r.components[name] / weights[name] <= 1.0 + 1e-12
    assert hits / len(memories) > 0.6, "the next item of the chain is in the top 10"


def test_decisions_show_the_learned_weights_and_their_version() -> None:
    engine = PersonalizationEngine(EngineConfig(top_k=5))
    rng = random.Random(0)
    profiles: dict = {}
    decision: dict = {}
    for n in range(3_000):
        user = f"u{rng.randrange(40)}"
        kind = rng.choice(["page_view", "page_view", "click", "add_to_cart"])
        event = {"event_id": f"e{n}", "user_id": user, "type": kind, "item_id": f"i{rng.randrange(60)}",
                 "category": f"c{rng.randrange(5)}", "ts": 1_700_000_000_000 + n * 1000}
        profiles[user], decision = engine.handle(profiles.get(user), event, ingest_ms=int(time.time() * 1000))
    weights = decision["recommendation_weights"]
    assert weights == engine.recommender.weights() and set(weights) == set(COMPONENTS)
    assert weights != HybridRecommender().weights(), "the weights moved from their start"
    version = decision["model_versions"]["recommender"]
    assert version.startswith("reco-hybrid@3000/blend@") and int(version.rsplit("@", 1)[1]) > 100
    for r in decision["recommendations"]:
        assert math.fsum(r["components"].values()) == pytest.approx(r["score"], abs=1e-12)
        for name, value in r["components"].items():
            assert value == 0.0 or np.sign(value) == np.sign(weights[name]) or name == "collaborative"


def test_context_items_unknown_to_the_catalog_are_ignored() -> None:
    rec = HybridRecommender(seed=2, learn_batch=1)
    memories, _ = _sequence_world(rec, n_users=20, steps=10)
    memory = next(iter(memories.values()))
    known = rec.rank("u0", 10, {}, now_ms=10_000, context=memory.recent)
    memory.record("page_view", "never-in-the-catalog", 10_000)
    with_stranger = rec.rank("u0", 10, {}, now_ms=10_000, context=memory.recent)
    assert [r.item_id for r in with_stranger] and "never-in-the-catalog" not in {r.item_id for r in with_stranger}
    assert {r.item_id for r in known} & {r.item_id for r in with_stranger}


def test_pending_interactions_survive_pickling_and_leave_with_their_user() -> None:
    rec = HybridRecommender(seed=4, learn_batch=1_000, blend_sample=1.0)
    memories, _ = _sequence_world(rec, n_users=10, steps=6)  # (flushed once at the end)
    memory = memories["u3"]
    for user in ("u3", "u4"):
        rec.learn_one(user, "i7", None, 2.0, 7_000, memory.recent, {"c1": 1.0})
    assert len(rec._pending) == 2
    restored = pickle.loads(pickle.dumps(rec))
    assert len(restored._pending) == 2
    restored.forget_user("u3")
    assert [entry.user_id for entry in restored._pending] == ["u4"]
    restored.flush()
    assert restored._pending == [] and restored.blend.n_updates == rec.blend.n_updates + 1
