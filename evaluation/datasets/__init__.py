"""Replays of real public data sets through the engine, one module per data set (`pulse evaluate --dataset`).

Each module exposes `DESCRIPTION`, `add_arguments(group)` for its own options, and `evaluate(args) -> int`,
which fetches the data (evaluation.fetch), replays it through the real parser and per-user step
prequentially with baselines in the same run, and writes report.md, report.json and plots.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module (imported only when used, so `pulse --help` stays fast)
DATASETS: dict[str, str] = {
    "sentiment": "evaluation.datasets.sentiment",
    "cdnow": "evaluation.datasets.cdnow",
    "movielens-100k": "evaluation.datasets.movielens",
}


def dataset_module(name: str) -> ModuleType:
    """The module that evaluates data set `name`."""
    return importlib.import_module(DATASETS[name])
