"""Item-to-item neighbours: bounded memory, admission of frequent pairs, scores equal to their definition."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from online_models.item_neighbours import ItemNeighbours


def _sequences(n_items: int = 300, n_users: int = 200, length: int = 30, seed: int = 1) -> list[list[int]]:
    """Users walk through item 'chains' (i -> i+1 -> i+2 ...) with random jumps: strong sequential neighbours."""
    rng = random.Random(seed)
    users = []
    for _ in range(n_users):
        item, walk = rng.randrange(n_items), []
        for _ in range(length):
            walk.append(item)
            item = (item + 1) % n_items if rng.random() < 0.7 else rng.randrange(n_items)
        users.append(list(dict.fromkeys(walk)))
    return users


def _learned(slots: int = 8, batch: int = 16, context: int = 10) -> ItemNeighbours:
    nb = ItemNeighbours(slots=slots)
    events = [(u, t) for u, walk in enumerate(_sequences()) for t in range(len(walk))]
    random.Random(2).shuffle(events)
    events.sort(key=lambda e: e[1])  # users interleaved, each user's items in order
    walks = _sequences()
    for start in range(0, len(events), batch):
        items, pair_items, others, distances = [], [], [], []
        for user, t in events[start:start + batch]:
            walk = walks[user]
            items.append(walk[t])
            before = walk[max(0, t - context):t][::-1]
            pair_items += [walk[t]] * len(before)
            others += before
            distances += list(range(len(before)))
        nb.learn_many(np.array(items), np.array(pair_items, dtype=np.intp), np.array(others, dtype=np.intp),
                      np.array(distances, dtype=np.intp))
    return nb


def test_memory_per_item_is_bounded_by_the_slots() -> None:
    nb = _learned(slots=8)
    assert nb._neighbour.shape[1] == nb._weight.shape[1] == 8
    for item in range(300):
        neighbours = nb.neighbours_of(item)
        assert len(neighbours) <= 8 and len({n for n, _ in neighbours}) == len(neighbours)
        assert all(n != item for n, _ in neighbours)


def test_admission_keeps_the_frequent_sequential_neighbours() -> None:
    nb = _learned(slots=8)
    found = sum(any(n == (item + 1) % 300 for n, _ in nb.neighbours_of(item)) for item in range(300))
    assert found >= 0.95 * 300, "the item that usually follows is among the 8 kept neighbours"
    strongest = [nb.neighbours_of(item)[0][0] for item in range(300)]
    assert np.mean([s == (i + 1) % 300 for i, s in enumerate(strongest)]) > 0.9, "and the strongest: it follows"


def test_one_off_pairs_do_not_push_out_strong_neighbours() -> None:
    nb = ItemNeighbours(slots=2)
    for _ in range(20):
        nb.learn(1, np.array([0]))
        nb.learn(2, np.array([0]))
    for stranger in range(3, 60):  # many single co-occurrences with item 0
        nb.learn(stranger, np.array([0]))
    assert {n for n, _ in nb.neighbours_of(0)} == {1, 2}


def test_scores_are_the_documented_similarities() -> None:
    nb = _learned(slots=8)
    context, weights = np.array([5, 17, 230]), np.array([1.0, 0.5, 0.25])
    expected = np.zeros(300)
    for j, w in zip(context, weights):
        for x, weight in nb.neighbours_of(j):
            expected[x] += w * weight / np.sqrt(nb._learned[j + 1] * nb._learned[x + 1])
    np.testing.assert_allclose(nb.scores(context, weights, n=300), expected, rtol=1e-5)


def test_a_pair_weighs_its_co_occurrence_both_ways_and_its_transition_forwards() -> None:
    nb = ItemNeighbours(slots=4, co_decay=0.5, transition_weight=2.0, transition_span=1)
    nb.learn(1, np.array([], dtype=np.intp))
    nb.learn(3, np.array([1]))
    nb.learn(7, np.array([3, 1]))  # 1, 3, then 7
    assert nb.neighbours_of(7) == [(3, 1.0), (1, 0.5)]
    assert nb.neighbours_of(3) == [(7, 3.0), (1, 1.0)]  # 7 followed 3: co-occurrence 1 + transition 2
    assert nb.neighbours_of(1) == [(3, 3.0), (7, 0.5)]  # 7 came two steps after 1: co-occurrence 0.5 only


def test_batch_scores_are_the_scores_at_the_candidates_scaled_by_their_largest() -> None:
    nb = _learned(slots=8)
    contexts = [np.array([5, 17]), np.array([100]), np.array([], dtype=np.intp)]
    weights = [np.array([1.0, 0.3]), np.array([2.0]), np.array([])]
    candidates = np.array([[6, 18, 7], [101, 5, 0], [1, 2, 3]])
    owners = np.concatenate([np.full(len(c), o) for o, c in enumerate(contexts)])
    got = nb.batch_scores(np.concatenate(contexts), np.concatenate(weights), owners, candidates, 300)
    for o, (context, w) in enumerate(zip(contexts, weights)):
        full = nb.scores(context, w, n=300)
        expected = full[candidates[o]] / full.max() if full.max() > 0 else np.zeros(3)
        np.testing.assert_allclose(got[o], expected, rtol=1e-6)


def test_capacity_grows_and_pickles() -> None:
    nb = ItemNeighbours(slots=4)
    nb.learn(1000, np.array([3, 2, 1]))
    assert nb.capacity >= 1001
    restored = pickle.loads(pickle.dumps(nb))
    np.testing.assert_array_equal(restored.scores(np.array([1000]), np.ones(1), 1001),
                                  nb.scores(np.array([1000]), np.ones(1), 1001))


@pytest.mark.parametrize("kwargs", [{"slots": 0}, {"sketch_width": 1000}, {"co_decay": 0.0}, {"transition_span": -1}])
def test_bad_parameters_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        ItemNeighbours(**kwargs)
