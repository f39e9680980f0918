"""Ranking benchmark: top-k over catalogs of growing size, the engine's vectorized scorer vs River's rank().

    .venv/bin/python -m bench.ranking [--sizes 1000 10000 100000] [--runs 5] [--json]

For each catalog size, a `HybridRecommender` (the engine's model) learns interactions spread over the
catalog, then we time `HybridRecommender.rank(user, k)` -- the full hybrid score (collaborative +
content + popularity), eligibility, exclusions and per-item components of the explanation -- and,
as the baseline in the same run, River's `BiasedMF.rank(user, items)[:k]` on the very same trained
model (it scores the MF part only, one `predict_one` per item in Python). Medians of several runs;
the ratio is River time / engine time.
"""

from __future__ import annotations

import argparse
import random
import time
from functools import partial

from bench.common import add_json_option, fmt, median, print_table, write_json


def trained_recommender(n_items: int, n_users: int, interactions: int, categories: int = 50, seed: int = 7):
    """A recommender whose catalog has `n_items` items and whose MF has learned `interactions` events."""
    from online_models.recommender import HybridRecommender

    rec = HybridRecommender(seed=seed)
    rng = random.Random(seed)
    for i in range(n_items):
        rec.add_item(f"item-{i}", f"cat-{i % categories}")
    for n in range(interactions):
        item = rng.randrange(n_items)
        rec.learn_one(f"user-{rng.randrange(n_users)}", f"item-{item}", f"cat-{item % categories}",
                      strength=rng.choice((1.0, 2.0, 3.0, 5.0)), ts_ms=1_000 * n)
    return rec


def river_top(rec, user: str, items: set[str], k: int) -> list:
    """The top k of River's own ranking (`rank` scores every item in a Python loop)."""
    return rec._mf.rank(user, items)[:k]


def time_calls(fn, min_time_s: float, max_calls: int) -> float:
    """Seconds per call of `fn`, timed over at least `min_time_s` (or `max_calls` calls)."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s or calls >= max_calls:
            return elapsed / calls


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="catalog sizes")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per size (median reported)")
    parser.add_argument("--interactions", type=int, default=20_000, help="interactions learned before timing")
    add_json_option(parser, "ranking")
    args = parser.parse_args(argv)

    rows, results = [], []
    for size in args.sizes:
        rec = trained_recommender(size, n_users=500, interactions=args.interactions)
        items = set(rec._item_ids)
        affinity = {f"cat-{c}": 1.0 / (1 + c) for c in range(0, 50, 3)}
        now = 1_000 * args.interactions
        users = [f"user-{u}" for u in range(20)]
        engine_runs, river_runs = [], []
        for run in range(args.runs):
            user = users[run % len(users)]
            engine_top = rec.rank(user, args.k, affinity, now)
            assert len(engine_top) == args.k
            for r in engine_top:  # the explanation stays exact: components sum to the score
                assert abs(sum(r.components.values()) - r.score) < 1e-9
            engine_runs.append(time_calls(partial(rec.rank, user, args.k, affinity, now), 0.2, 2000))
            river_runs.append(time_calls(partial(river_top, rec, user, items, args.k), 0.2 if size < 50_000 else 0.0,
                                         200))
        engine_s, river_s = median(engine_runs), median(river_runs)
        ratio = river_s / engine_s
        rows.append([fmt(size), f"{engine_s * 1e3:.3f}", f"{river_s * 1e3:.2f}", f"{ratio:.0f}x"])
        results.append({"items": size, "k": args.k, "engine_ms": engine_s * 1e3, "river_rank_ms": river_s * 1e3,
                        "speedup": ratio, "engine_runs_ms": [x * 1e3 for x in engine_runs],
                        "river_runs_ms": [x * 1e3 for x in river_runs]})
    print_table(f"Ranking: top-{args.k}, median of {args.runs} runs (ms per call)",
                ["catalog items", "engine rank() ms", "River rank() ms", "speedup"], rows)
    by_size = {r["items"]: r for r in results}
    targets = {}
    if 100_000 in by_size:
        targets["top10_of_100k_le_2ms"] = by_size[100_000]["engine_ms"] <= 2.0
    if 10_000 in by_size:
        targets["speedup_at_10k_ge_50x"] = by_size[10_000]["speedup"] >= 50
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    data = {"runs": args.runs, "results": results, "targets": targets}
    if args.json is not None:
        write_json("ranking", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
