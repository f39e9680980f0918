"""Evaluation metrics. Classification metrics use river.metrics; ranking metrics and intervals are written here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from river import metrics

from online_models.metrics import roc_auc  # re-exported: the exact AUC of every report

__all__ = [
    "bootstrap_lift",
    "catalog_coverage",
    "classification_report",
    "hit_at_k",
    "intra_list_diversity",
    "mean_ci",
    "ndcg_at_k",
    "roc_auc",
    "sentiment_report",
]

Z95 = 1.959963984540054


def hit_at_k(ranked: Sequence[str], target: str, k: int = 10) -> float:
    """1.0 if `target` is among the first `k` ranked items, else 0.0.

    >>> hit_at_k(["a", "b", "c"], "c", k=2), hit_at_k(["a", "b", "c"], "c", k=3)
    (0.0, 1.0)
    """
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int = 10) -> float:
    """NDCG@k with one relevant item: `1 / log2(position + 1)` (1-based position) if in the top k, else 0.

    >>> ndcg_at_k(["a", "b"], "a"), round(ndcg_at_k(["a", "b"], "b"), 4), ndcg_at_k(["a"], "z")
    (1.0, 0.6309, 0.0)
    """
    top = list(ranked[:k])
    if target not in top:
        return 0.0
    return 1.0 / math.log2(top.index(target) + 2)


def catalog_coverage(recommended_lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one recommended list.

    >>> catalog_coverage([["a", "b"], ["b", "c"]], catalog_size=4)
    0.75
    """
    if catalog_size <= 0:
        raise ValueError("catalog_size must be positive")
    return len({item for items in recommended_lists for item in items}) / catalog_size


def intra_list_diversity(categories: Sequence[str]) -> float:
    """Share of pairs of recommended items whose categories differ (0: one category, 1: all different).

    >>> round(intra_list_diversity(["x", "x", "y"]), 4)
    0.6667
    >>> intra_list_diversity(["x"])
    0.0
    """
    n = len(categories)
    if n < 2:
        return 0.0
    same = sum(c * (c - 1) / 2 for c in _counts(categories))
    return 1.0 - same / (n * (n - 1) / 2)


def _counts(values: Sequence[str]) -> list[int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return list(counts.values())


def classification_report(y_true: Sequence[bool], probabilities: Sequence[float], threshold: float = 0.5) -> dict:
    """ROC AUC (exact), log loss and F1 at `threshold` (river.metrics) of binary probabilistic predictions."""
    log_loss, f1 = metrics.LogLoss(), metrics.F1()
    for y, p in zip(y_true, probabilities):
        log_loss.update(bool(y), float(p))
        f1.update(bool(y), bool(p >= threshold))
    return {"n": len(y_true), "roc_auc": roc_auc(y_true, probabilities), "log_loss": log_loss.get(), "f1": f1.get()}


def sentiment_report(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """Accuracy and macro F1 (river.metrics) of predicted sentiment labels."""
    accuracy, macro_f1 = metrics.Accuracy(), metrics.MacroF1()
    for y, p in zip(y_true, y_pred):
        accuracy.update(y, p)
        macro_f1.update(y, p)
    return {"n": len(y_true), "accuracy": accuracy.get(), "macro_f1": macro_f1.get()}


def mean_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and its normal-approximation confidence interval `mean ± z * sd / sqrt(n)` (sample sd, ddof=1).

    >>> [round(v, 4) for v in mean_ci([1.0, 2.0, 3.0])]
    [2.0, 0.8684, 3.1316]
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (float("nan"),) * 3
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def bootstrap_lift(
    treatment: Sequence[float], control: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Relative lift `mean(treatment) / mean(control) - 1` with a percentile bootstrap interval (users resampled).

    >>> lift, low, high = bootstrap_lift([2.0] * 50, [1.0] * 50)
    >>> (lift, low, high)
    (1.0, 1.0, 1.0)
    """
    t = np.asarray(treatment, dtype=float)
    c = np.asarray(control, dtype=float)
    if len(t) == 0 or len(c) == 0 or c.mean() == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    t_means = t[rng.integers(0, len(t), size=(n_boot, len(t)))].mean(axis=1)
    c_means = c[rng.integers(0, len(c), size=(n_boot, len(c)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = t_means / c_means - 1.0
    lifts = lifts[np.isfinite(lifts)]
    alpha = (1.0 - level) / 2.0
    return float(t.mean() / c.mean() - 1.0), float(np.quantile(lifts, alpha)), float(np.quantile(lifts, 1 - alpha))
