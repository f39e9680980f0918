"""The exact ROC AUC, the one Pulse reports everywhere (rolling model quality, evaluations, bootstrap intervals).

River's `metrics.ROCAUC` approximates the curve with a few thresholds, and its `RollingROCAUC` does not count
tied scores as one half, which matters here: an untrained model serves the same probability to everyone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["auc_statistic", "roc_auc"]


def auc_statistic(labels: Sequence[bool], scores: Sequence[float]) -> Callable[[np.ndarray], float]:
    """ROC AUC of `scores` for `labels` as a function of record weights (ties count one half).

    Sorting is done once, so each evaluation (e.g. one bootstrap resample's weights) costs O(records).
    NaN when the weighted labels hold only one class.

    >>> auc = auc_statistic([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
    >>> auc(np.ones(4)), auc(np.array([1.0, 1.0, 0.0, 1.0]))
    (0.875, 1.0)
    """
    values = np.asarray(scores, dtype=float)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    positive = np.asarray(labels, dtype=bool)[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) if len(order) else np.array([], int)

    def statistic(weights: np.ndarray) -> float:
        if not len(starts):
            return float("nan")
        w = np.asarray(weights, dtype=float)[order]
        pos = np.add.reduceat(w * positive, starts)  # weight of each tie group's positives
        neg = np.add.reduceat(w * ~positive, starts)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 0 or total_neg <= 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negatives scored below each tie group
        return float((pos @ (below + 0.5 * neg)) / (total_pos * total_neg))

    return statistic


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Exact ROC AUC (the Mann-Whitney statistic, ties counting one half); NaN when only one class is present.

    >>> roc_auc([False, True, False, True], [0.1, 0.9, 0.4, 0.3])
    0.75
    """
    return auc_statistic(labels, scores)(np.ones(len(scores)))
