import collections
import copy
import math
import pickle
import random

import numpy as np
import pytest

from online_models import HybridRecommender, Recommendation
from online_models.recommender import CategoryFilter

HOUR_MS = 3_600_000


def _world(seed: int = 0, n_categories: int = 10, per_category: int = 20, n_users: int = 150, rounds: int = 60):
    """Users with a favourite category and, inside it, a taste group of 5 favourite items.

    Each interaction is one of the user's favourites (70%), another item of the category (10%)
    or one of 10 site-wide blockbusters (20%).
    """
    rng = random.Random(seed)
    catalog = {f"i{c}_{j}": f"c{c}" for c in range(n_categories) for j in range(per_category)}
    blockbusters = rng.sample(sorted(catalog), 10)
    tastes = {}
    for u in range(n_users):
        c, group = rng.randrange(n_categories), rng.randrange(3)
        favourites = [f"i{c}_{group * 5 + j}" for j in range(5)]
        tastes[f"u{u}"] = favourites, [f"i{c}_{j}" for j in range(per_category)]
    events = []
    for _ in range(rounds):
        for user, (favourites, category_items) in tastes.items():
            r = rng.random()
            pool = favourites if r < 0.7 else category_items if r < 0.8 else blockbusters
            events.append((user, rng.choice(pool)))
    rng.shuffle(events)
    return catalog, events


def _hit_rates(**params) -> tuple[float, float]:
    """Hit-rate@10 of `rank` and of `rank_popular` on the last 10% of the stream."""
    catalog, events = _world()
    split = int(len(events) * 0.9)
    rec = HybridRecommender(seed=0, **params)
    counts = collections.defaultdict(collections.Counter)
    for t, (user, item) in enumerate(events[:split]):
        rec.learn_one(user, item, catalog[item], 1.0, t * 1000)
        counts[user][catalog[item]] += 1
    now = split * 1000
    popular = {r.item_id for r in rec.rank_popular(10, now)}
    hits = popular_hits = 0
    for user, item in events[split:]:
        top = max(counts[user].values())
        affinity = {c: n / top for c, n in counts[user].items()}
        hits += item in {r.item_id for r in rec.rank(user, 10, affinity, now)}
        popular_hits += item in popular
    n = len(events) - split
    return hits / n, popular_hits / n


def test_hybrid_beats_popularity():
    hybrid, popular = _hit_rates()
    assert hybrid > popular + 0.3
    content_only, _ = _hit_rates(cf_weight=0.0)
    assert hybrid > content_only + 0.05  # the collaborative part adds item-level taste


def test_collaborative_part_alone_learns():
    cf_only, popular = _hit_rates(content_weight=0.0, popularity_weight=0.0)
    assert cf_only > popular + 0.15


def _trained(n_items: int = 100, seed: int = 3) -> HybridRecommender:
    rng = random.Random(seed)
    rec = HybridRecommender(n_factors=4, seed=seed, negative_samples=2)
    for t in range(2000):
        item = rng.randrange(n_items)
        rec.learn_one(f"u{rng.randrange(20)}", f"i{item}", f"c{item % 7}", rng.choice([1.0, 2.0, 5.0]), t * 5_000)
    return rec


def _brute_force(rec: HybridRecommender, user, affinity, now, exclude=()):
    """The documented score computed per item straight from River's MF state."""
    mf = rec._mf
    items = [i for i in rec._item_ids if i not in exclude]
    decayed = {i: rec.popularity(i, now) for i in rec._item_ids}
    top = max(decayed.values())
    max_strength = 5.0
    rows = []
    for item in items:
        cf = 0.0
        if user in mf.u_latents:
            latent = mf.i_latents.get(item)
            dot = float(np.dot(mf.u_latents[user], latent)) if latent is not None else 0.0
            cf = (mf.global_mean.get() + mf.u_biases[user] + mf.i_biases.get(item, 0.0) + dot) / max_strength
        content = affinity.get(rec.category_of(item), 0.0)
        pop = math.log1p(decayed[item]) / math.log1p(top)
        score = rec.cf_weight * cf + rec.content_weight * content + rec.popularity_weight * pop
        rows.append((-score, rec._item_index[item], item, score))
    return [(item, score) for _, _, item, score in sorted(rows)]


@pytest.mark.parametrize("user", ["u0", "u7", "stranger"])
def test_vectorized_rank_equals_brute_force(user):
    rec = _trained()
    assert rec.n_items == 100  # grew past the initial capacity
    affinity = {"c1": 1.0, "c3": 0.4, "c6": 0.1}
    now = 2000 * 5_000
    exclude = {"i5", "i17", "unknown"}
    expected = _brute_force(rec, user, affinity, now, exclude)
    ranked = rec.rank(user, 15, affinity, now, exclude=exclude)
    assert [r.item_id for r in ranked] == [item for item, _ in expected[:15]]
    for r, (_, score) in zip(ranked, expected):
        assert r.score == pytest.approx(score, abs=1e-9)
        assert sum(r.components.values()) == pytest.approx(r.score, abs=1e-9)
        assert r.category == rec.category_of(r.item_id)
    full = rec.rank(user, 1000, affinity, now, exclude=exclude)
    assert len(full) == 98 and not exclude & {r.item_id for r in full}


def test_components_and_to_dict():
    rec = _trained()
    r = rec.rank("u1", 1, {"c2": 1.0}, now_ms=10_000_000)[0]
    assert isinstance(r, Recommendation)
    assert set(r.components) == {"collaborative", "content", "popularity", "neighbours"}
    assert r.components["collaborative"] != 0.0
    d = r.to_dict()
    assert d["item_id"] == r.item_id and d["category"] == r.category
    assert math.fsum(d["components"].values()) == pytest.approx(d["score"], abs=1e-9)


def test_unknown_user_gets_no_collaborative_component_and_no_state():
    rec = _trained()
    mf_before = (dict(rec._mf.u_biases), set(rec._mf.u_latents), set(rec._mf.i_latents), dict(rec._mf.i_biases))
    ranked = rec.rank("stranger", 10, {"c1": 1.0}, now_ms=10_000_000)
    assert len(ranked) == 10
    assert all(r.components["collaborative"] == 0.0 for r in ranked)
    assert all(r.category == "c1" for r in ranked)  # content (1.0) outweighs popularity (<= 0.5)
    assert "stranger" not in rec._mf.u_latents and "stranger" not in rec._mf.u_biases
    assert mf_before == (dict(rec._mf.u_biases), set(rec._mf.u_latents), set(rec._mf.i_latents), dict(rec._mf.i_biases))


def test_cold_start_user_is_ranked_by_popularity_then_content():
    rec = HybridRecommender(seed=1)
    for t, item in enumerate(["a", "a", "a", "b", "b", "c"]):
        rec.learn_one("u1", item, "x" if item != "c" else "y", 1.0, t)
    assert [r.item_id for r in rec.rank("new", 3, {}, now_ms=10)] == ["a", "b", "c"]
    assert [r.item_id for r in rec.rank("new", 3, {"y": 1.0}, now_ms=10)] == ["c", "a", "b"]


def test_new_item_is_ranked_at_once_via_content():
    rec = _trained()
    rec.add_item("fresh", "brand-new-category")
    assert rec.n_items == 101 and rec.category_of("fresh") == "brand-new-category"
    top = rec.rank("u0", 1, {"brand-new-category": 1.0}, now_ms=10_000_000)[0]
    assert top.item_id == "fresh"
    assert top.components["popularity"] == 0.0
    assert "fresh" not in rec._mf.i_latents


def test_add_item_is_idempotent_and_updates_category():
    rec = HybridRecommender()
    rec.add_item("a", "x")
    rec.add_item("a", "x")
    assert rec.n_items == 1
    rec.add_item("a", "y")
    assert rec.n_items == 1 and rec.category_of("a") == "y"
    assert rec.category_of("missing") is None


def test_learned_events_never_overwrite_a_known_category():
    rec = HybridRecommender()
    rec.add_item("a", "shoes")  # the catalog's category
    rec.learn_one("u", "a", None, 1.0, 0)
    rec.learn_one("u", "a", "hats", 1.0, 1)
    assert rec.category_of("a") == "shoes"
    rec.learn_one("u", "new", None, 1.0, 2)  # not in the catalog, no category: unknown until one is known
    assert rec.category_of("new") == "unknown"
    rec.learn_one("u", "new", "bags", 1.0, 3)
    assert rec.category_of("new") == "bags"
    rec.add_item("new", "shoes")  # the catalog always has the last word
    assert rec.category_of("new") == "shoes"


def test_popularity_halves_after_one_half_life():
    rec = HybridRecommender(popularity_half_life_s=3600.0)
    t0 = 1_700_000_000_000
    for _ in range(4):
        rec.learn_one("u", "a", "x", 1.0, t0)
    assert rec.popularity("a", t0) == pytest.approx(4.0)
    assert rec.popularity("a", t0 + HOUR_MS) == pytest.approx(2.0)
    assert rec.popularity("a", t0 + 3 * HOUR_MS) == pytest.approx(0.5)
    rec.learn_one("u", "a", "x", 1.0, t0 + HOUR_MS)
    assert rec.popularity("a", t0 + 2 * HOUR_MS) == pytest.approx(1.5)
    assert rec.popularity("unknown", t0) == 0.0


def test_popularity_survives_huge_time_spans():
    rec = HybridRecommender(popularity_half_life_s=1.0)
    t = 0
    for step in range(3000):  # 3000 half-lives per step: forces renormalization
        t = step * 3_000_000
        rec.learn_one("u", "old" if step < 2999 else "new", "x", 1.0, t)
    assert rec.popularity("new", t) == pytest.approx(1.0)
    assert rec.popularity("old", t) == 0.0
    assert rec.popularity("new", t + 1000) == pytest.approx(0.5)
    assert rec.popularity("new", t - 1000) == pytest.approx(2.0)
    ranked = rec.rank_popular(2, t)
    assert [r.item_id for r in ranked] == ["new", "old"]
    assert all(np.isfinite(r.score) for r in ranked)


def test_rank_popular_is_popularity_only():
    rec = _trained()
    now = 2000 * 5_000
    ranked = rec.rank_popular(5, now, exclude={"i0"})
    decayed = sorted(((rec.popularity(i, now), i) for i in rec._item_ids if i != "i0"), reverse=True)
    assert [r.item_id for r in ranked] == [i for _, i in decayed[:5]]
    assert ranked[0].score == pytest.approx(1.0)
    for r in ranked:
        assert r.components["collaborative"] == r.components["content"] == 0.0
        assert r.components["popularity"] == r.score


def test_empty_catalog_and_degenerate_k():
    rec = HybridRecommender()
    assert rec.rank("u", 10, {"x": 1.0}, now_ms=0) == []
    assert rec.rank_popular(10, now_ms=0) == []
    rec.learn_one("u", "a", "x", 1.0, 0)
    assert rec.rank("u", 0, {}, now_ms=0) == []
    assert rec.rank("u", 5, {}, now_ms=0, exclude=["a"]) == []


def test_learning_touches_mf_and_mirrors_it():
    rec = HybridRecommender(negative_samples=3, seed=5, blend_sample=1.0)
    for j in range(10):
        rec.add_item(f"i{j}", "x")
    rec.learn_one("u", "i0", "x", 2.0, 0)
    assert rec.n_learned == 1 and rec.version == "reco-hybrid@1/blend@0"
    rec.flush()  # a click teaches the blend, with the next batch
    assert rec.version == "reco-hybrid@1/blend@1"
    assert 2 <= len(rec._mf.i_latents) <= 4  # the item plus up to 3 distinct negatives
    for item in rec._mf.i_latents:
        index = rec._item_index[item]
        np.testing.assert_array_equal(rec._latents[index], rec._mf.i_latents[item])
        assert rec._biases[index] == rec._mf.i_biases[item]


def test_forget_user_erases_collaborative_state():
    rec = _trained()
    assert "u3" in rec._mf.u_latents
    rec.forget_user("u3")
    assert "u3" not in rec._mf.u_latents and "u3" not in rec._mf.u_biases
    assert all(r.components["collaborative"] == 0.0 for r in rec.rank("u3", 5, {}, now_ms=0))
    rec.forget_user("never-seen")


def test_deterministic_given_seed():
    a, b = _trained(seed=11), _trained(seed=11)
    ra = [r.to_dict() for r in a.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)]
    assert ra == [r.to_dict() for r in b.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)]
    clone = copy.deepcopy(a)
    assert ra == [r.to_dict() for r in clone.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)]


def test_pickle_leaves_out_the_eligibility_cache_and_ranks_the_same():
    rec = _trained(seed=11)
    before = [r.to_dict() for r in rec.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)]
    assert rec._eligible_cache is not None and rec.__getstate__()["_eligible_cache"] is None
    clone = pickle.loads(pickle.dumps(rec))
    assert [r.to_dict() for r in clone.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)] == before
    older = rec.__getstate__() | {"_eligible_cache": (np.ones(rec.n_items, dtype=bool), 0.0, 1e18)}  # an older layout
    restored = HybridRecommender.__new__(HybridRecommender)
    restored.__setstate__(older)
    assert [r.to_dict() for r in restored.rank("u2", 10, {"c1": 0.5}, now_ms=10_000_000)] == before


@pytest.mark.parametrize("strength", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_strength_is_rejected(strength):
    rec = HybridRecommender()
    with pytest.raises(ValueError):
        rec.learn_one("u", "a", "x", strength, 0)
    assert rec.n_learned == 0 and rec.n_items == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"n_factors": 0}, {"cf_weight": -1.0}, {"popularity_half_life_s": 0.0}, {"negative_samples": -1},
     {"learning_rate": 0.0}],
)
def test_bad_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        HybridRecommender(**kwargs)


def test_cached_eligibility_matches_the_windows_at_any_time() -> None:
    rng = random.Random(5)
    rec = HybridRecommender(seed=3)
    windows = {}
    for i in range(60):
        item = f"w{i}"
        rec.add_item(item, "c")
        start = rng.choice([None, rng.randrange(0, 1000)])
        end = rng.choice([None, rng.randrange(0, 1000)])
        if start is not None and end is not None and start > end:
            start, end = end, start
        listed = rng.random() > 0.1
        rec.set_availability(item, listed, start, end)
        windows[item] = (listed, start, end)
    for now in [rng.randrange(-50, 1050) for _ in range(400)] + list(range(0, 1000, 7)):
        for item, (listed, start, end) in windows.items():
            expected = listed and (start is None or start <= now) and (end is None or now <= end)
            assert rec.is_rankable(item, now) == expected, (item, now)



@pytest.mark.parametrize("boosts", [{}, {"outdoor": 0.5}])
def test_ranked_records_are_the_recommendations_dicts(boosts: dict[str, float]) -> None:
    """`RankedItems.records` builds the decision records from the columns: the same as `Recommendation.to_dict`."""
    rec = HybridRecommender(seed=3)
    for i in range(40):
        rec.learn_one(f"u{i % 7}", f"item-{i % 13}", "outdoor" if i % 2 else "books", strength=2.0, ts_ms=i * 1000)
    category_filter = CategoryFilter({}, 1.0, boosts) if boosts else None
    ranked = rec.ranked("u1", 8, {"outdoor": 1.0, "books": 0.3}, 40_000, category_filter=category_filter)
    expected = [r.to_dict() for r in ranked]
    assert ranked.records(range(len(ranked))) == expected
    assert ranked.records(range(2, 5)) == expected[2:5]
    assert ranked.records([5, 0, 3]) == [expected[5], expected[0], expected[3]]
    assert ranked.records(iter([1, 4])) == [expected[1], expected[4]]
    assert all(("boost" in r["components"]) == bool(boosts) for r in ranked.records(range(len(ranked))))
