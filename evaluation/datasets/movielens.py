"""MovieLens-100K: 100,000 ratings (1-5) of 1,682 films by 943 users, 1997-09 to 1998-04, replayed in time order.

The data ship inside the `recbole` 1.2.1 wheel (`recbole/dataset_example/ml-100k/ml-100k.inter` and
`ml-100k.item`); they are fetched into the cache at evaluation time (evaluation.fetch), never committed.

Mapping: every film is first registered as an `item_upsert` with its first genre as category; a rating
>= 4 becomes a `purchase` (price `PRICE`, the same for every film: spend carries no signal here), a lower
one a `page_view`. Ratings are replayed by timestamp; ratings of one user within the same second (three in
four ratings share their second with another of the user's) are ordered by a keyed hash of (user, film):
a fixed pseudo-random order that carries nothing about the rating, the film or what comes next.

Pulse is the engine as deployed (default settings, `PULSE_RECO_*` from the environment), with the business
rule `[exclude] consumed = true`; the baselines exclude the same items. Their parameters were tuned on the
first 50% of the stream (`--tune`, see `BASELINE_GRID`); the values below are the best there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.fetch import PackageFile, package_file
from evaluation.reco_baselines import (
    CoOccurrence,
    DecayedPopularity,
    FactorizationMF,
    MostPopular,
    RandomItems,
    StreamRecommender,
)
from evaluation.reco_replay import PULSE, Interaction, replay_interactions
from evaluation.reco_report import write_report
from operators.engine import EngineConfig
from pulse.config import Settings

__all__ = ["DESCRIPTION", "add_arguments", "evaluate", "load"]

DESCRIPTION = "MovieLens-100K ratings (recbole 1.2.1 wheel), replayed in time order; ratings >= 4 as purchases"
RATINGS = PackageFile("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter")
FILMS = PackageFile("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.item")
POSITIVE_RATING = 4
PRICE = 1.0
TIE_KEY = b"pulse-movielens-ties"
K = 10
DAY_S = 86_400.0

# Baselines with their parameters tuned on the first 50% of the stream (`--tune`, 2026-12-05).
BASELINES: dict[str, dict[str, Any]] = {
    "most popular": {"positives_only": True},
    "decayed popularity": {"half_life_s": 365 * DAY_S, "positives_only": True},
    "BiasedMF": {"n_factors": 16, "learning_rate": 0.01, "negatives": 8},
    "co-occurrence": {"count_positives_only": False, "context_positives_only": False},
    "random": {},
}
BASELINE_GRID: dict[str, list[dict[str, Any]]] = {
    "most popular": [{"positives_only": p} for p in (False, True)],
    "decayed popularity": [{"half_life_s": h * DAY_S, "positives_only": p}
                           for h in (1 / 24, 1, 7, 30, 90, 365) for p in (False, True)],
    "BiasedMF": [{"n_factors": f, "learning_rate": r, "negatives": n}
                 for f in (16, 32) for r in (0.01, 0.02, 0.05) for n in (1, 4, 8)],
    "co-occurrence": [{"count_positives_only": c, "context_positives_only": x}
                      for c in (False, True) for x in (False, True)],
}
PULSE_GRID: dict[str, list[Any]] = {  # one setting at a time, the others at their defaults
    "popularity_half_life_s": [3600.0, DAY_S, 7 * DAY_S, 30 * DAY_S],
    "context_half_life_s": [600.0, 3600.0, DAY_S],
    "blend_learning_rate": [0.02, 0.05, 0.1],
    "neighbour_slots": [32, 64, 96],
    "collaborative_min_strength": [0.0, 2.0],
}


class Data:
    """The ratings in replay order, as dense indices, and the films' ids and categories."""

    def __init__(self, interactions: list[Interaction], item_ids: list[str], categories: list[str], n_users: int):
        self.interactions = interactions
        self.item_ids = item_ids
        self.categories = categories
        self.n_users = n_users


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Options of `pulse evaluate --dataset movielens-100k`."""
    group.add_argument("--tune", action="store_true",
                       help="movielens-100k: tune the baselines' and Pulse's parameters on the first 50%% of the "
                            "stream (grids in evaluation/datasets/movielens.py) and report hit@10 there, instead of "
                            "evaluating")


def load(limit: int | None = None, quiet: bool = False) -> Data:
    """The ratings (the first `limit` in replay order) and the films, fetched into the cache when missing."""
    ratings_path, films_path = package_file(RATINGS, quiet), package_file(FILMS, quiet)
    genres: dict[str, str] = {}
    with open(films_path, encoding="latin-1") as films:
        next(films)
        for line in films:
            fields = line.rstrip("\n").split("\t")
            first = fields[3].split() if len(fields) > 3 else []
            genres[fields[0]] = first[0] if first else "unknown"
    rows = []
    with open(ratings_path, encoding="latin-1") as ratings:
        next(ratings)
        for line in ratings:
            user, film, rating, ts = line.split("\t")
            rows.append((int(float(ts)), _tie(user, film), user, film, float(rating)))
    rows.sort()
    if limit is not None:
        rows = rows[:limit]
    films = sorted(genres, key=int)
    film_index = {film: position for position, film in enumerate(films)}
    user_index: dict[str, int] = {}
    interactions = [Interaction(user_index.setdefault(user, len(user_index)), film_index[film],
                                rating >= POSITIVE_RATING, ts) for ts, _, user, film, rating in rows]
    return Data(interactions, [f"m{film}" for film in films], [genres[film] for film in films], len(user_index))


def baselines(data: Data, chosen: dict[str, dict[str, Any]], seed: int) -> dict[str, Callable[[], StreamRecommender]]:
    """Factories of the baselines with the given parameters (by name)."""
    n_items, n_users = len(data.item_ids), data.n_users
    makers: dict[str, Callable[[dict[str, Any]], StreamRecommender]] = {
        "most popular": lambda p: MostPopular(n_items, **p),
        "decayed popularity": lambda p: DecayedPopularity(n_items, **p),
        "BiasedMF": lambda p: FactorizationMF(n_users, n_items, seed=seed, **p),
        "co-occurrence": lambda p: CoOccurrence(n_users, n_items, window=20, **p),
        "random": lambda p: RandomItems(n_items, seed=seed, **p),
    }
    return {name: (lambda make=makers[name], params=params: make(params)) for name, params in chosen.items()}


def engine_config(seed: int) -> EngineConfig:
    """The engine as deployed: the recommender's settings from the environment (defaults otherwise)."""
    settings = Settings.from_env()
    return EngineConfig(seed=seed, recommender=settings.recommender_config())


def evaluate(args: argparse.Namespace) -> int:
    """Replay the ratings through Pulse and the baselines; write the report (or tune with --tune)."""
    progress = not args.no_progress
    data = load(args.limit, quiet=args.no_progress)
    out = Path(args.out or Path("reports") / "movielens-100k")
    if args.tune:
        return _tune(data, args.seed, out, progress)
    config = engine_config(args.seed)
    started = time.perf_counter()
    result = replay_interactions(data.interactions, data.item_ids, data.categories,
                                 baselines(data, BASELINES, args.seed),
                                 config, k=K, price=PRICE, progress=progress)
    notes = [
        (f"`pulse evaluate --dataset movielens-100k{'' if args.limit is None else f' --limit {args.limit}'}` "
         f"(seed {args.seed}), {time.strftime('%Y-%m-%d')}: {result.n_events:,} ratings of {result.n_users:,} users, "
         f"{result.n_items:,} films, replayed in time order (ties within a second: keyed hash of user and film)."),
        (f"Rating >= {POSITIVE_RATING}: `purchase` (price {PRICE:g}); otherwise `page_view`. Each positive of a user "
         "is scored on the top 10 that the user was shown at their previous event (Pulse: the decision of that event, "
         "through the real parser and per-user step; baselines: their ranking after learning that event). "
         "Every method excludes the films the user already rated."),
        "Baselines' parameters, tuned on the first 50% of the stream (`--tune`): "
        + "; ".join(f"{name} {params or '(none)'}" for name, params in BASELINES.items()) + ".",
        f"Pulse: recommender settings {config.recommender.parameters()}.",
        "Intervals: bootstrap 95% over users; 'Pulse / best baseline' is a paired ratio of means.",
    ]
    summary = write_report(result, out, "Recommendations on real ratings: MovieLens-100K", notes,
                           {"command": notes[0], "baselines": BASELINES,
                            "pulse_settings": config.recommender.parameters(),
                            "price": PRICE, "positive_rating": POSITIVE_RATING},
                           n_boot=args.bootstrap, seed=args.seed)
    lines = []
    for subset in ("all", "last_50"):
        ratios = summary["subsets"][subset]["pulse_vs_best"]
        lines.append(f"{subset}: " + ", ".join(f"{metric} {r['ratio'][0]:.3f}x {r['baseline']}"
                                               for metric, r in ratios.items()))
    print(f"report: {out / 'report.md'} ({time.perf_counter() - started:.0f} s); Pulse / best baseline: "
          + "; ".join(lines))
    return 0


def _tune(data: Data, seed: int, out: Path, progress: bool) -> int:
    """hit@10 on the first half of the stream for every grid point; the best per method is printed."""
    first_half = data.interactions[: len(data.interactions) // 2]
    results: dict[str, list[tuple[dict[str, Any], float]]] = {}
    candidates = {f"{name} #{i}": (name, params)
                  for name, grid in BASELINE_GRID.items() for i, params in enumerate(grid)}
    grid_factories = {label: baselines(data, {name: params}, seed)[name]
                      for label, (name, params) in candidates.items()}
    base_config = engine_config(seed)
    result = replay_interactions(first_half, data.item_ids, data.categories, grid_factories, base_config, K, PRICE,
                                 progress)
    hit = {name: float(np.mean(records.hit)) for name, records in result.methods.items()}
    for label, (name, params) in candidates.items():
        results.setdefault(name, []).append((params, hit[label]))
    results.setdefault("Pulse", []).append(({"(defaults)": base_config.recommender.parameters()}, hit[PULSE]))
    for setting, values in PULSE_GRID.items():
        for value in values:
            recommender = replace(base_config.recommender, **{setting: value})
            if recommender == base_config.recommender:
                continue
            variant = replay_interactions(first_half, data.item_ids, data.categories, {},
                                          replace(base_config, recommender=recommender), K, PRICE, progress)
            results["Pulse"].append(({setting: value}, float(np.mean(variant.methods[PULSE].hit))))
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Tuning on the first 50% of MovieLens-100K ({len(first_half):,} ratings), hit@10", ""]
    for name, rows in results.items():
        best = max(rows, key=lambda row: row[1])
        lines.append(f"## {name}: best {best[0]} ({best[1]:.4f})")
        lines += [f"- {params}: {value:.4f}" for params, value in rows] + [""]
    (out / "tune.md").write_text("\n".join(lines))
    (out / "tune.json").write_text(json.dumps({name: [[params, value] for params, value in rows]
                                               for name, rows in results.items()}, indent=2, default=str))
    print("\n".join(lines), file=sys.stdout)
    return 0


def _tie(user: str, film: str) -> bytes:
    return hashlib.blake2b(f"{user}:{film}".encode(), digest_size=8, key=TIE_KEY).digest()
