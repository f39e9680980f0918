"""Bootstrap confidence intervals that resample users (or any groups), not single records.

Records of one user are not independent (the same tastes, the same history), so intervals resample whole
users with replacement. Each resample is expressed as integer weights on the records (how many times
their user was drawn), so statistics are computed as weighted ones in O(records) per resample, without
building resampled arrays. Every column of one call sees the same resamples, so ratios between columns
(Pulse against a baseline) get paired intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from online_models.metrics import auc_statistic

__all__ = ["GroupResampler", "weighted_auc", "weighted_log_loss"]


class GroupResampler:
    """Resamples of the groups of `groups` (one label per record), as record weights.

    >>> r = GroupResampler(["u1", "u1", "u2"], n_boot=200, seed=1)
    >>> point, low, high = r.mean([1.0, 1.0, 0.0])
    >>> round(point, 3), 0.0 <= low <= point <= high <= 1.0
    (0.667, True)
    """

    def __init__(self, groups: Sequence[Hashable], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        _, self._group_of_record = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        self.n_groups = int(self._group_of_record.max()) + 1 if len(groups) else 0
        self.n_boot = n_boot
        self.level = level
        rng = np.random.default_rng(seed)
        # One row of group draw counts per resample, drawn once and shared by every statistic.
        self._counts = [np.bincount(rng.integers(0, self.n_groups, self.n_groups), minlength=self.n_groups)
                        for _ in range(n_boot)] if self.n_groups else []

    def interval(self, statistic: Callable[[np.ndarray], float],
                 mask: np.ndarray | None = None) -> tuple[float, float, float]:
        """(point estimate, low, high) of `statistic(weights)`; `mask` restricts it to some records."""
        n = len(self._group_of_record)
        ones = np.ones(n)
        base = ones if mask is None else ones * mask
        point = statistic(base)
        values = []
        for counts in self._counts:
            weights = counts[self._group_of_record].astype(float)
            if mask is not None:
                weights *= mask
            value = statistic(weights)
            if np.isfinite(value):
                values.append(value)
        if not values:
            return point, float("nan"), float("nan")
        alpha = (1.0 - self.level) / 2.0
        return float(point), float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))

    def mean(self, values: Sequence[float], mask: np.ndarray | None = None) -> tuple[float, float, float]:
        """The mean of `values` with its interval."""
        x = np.asarray(values, dtype=float)
        return self.interval(lambda w: _ratio(float(w @ x), float(w.sum())), mask)

    def ratio_of_means(self, numerator: Sequence[float], denominator: Sequence[float],
                       mask: np.ndarray | None = None) -> tuple[float, float, float]:
        """mean(numerator) / mean(denominator) over the same records, with a paired interval."""
        a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
        return self.interval(lambda w: _ratio(float(w @ a), float(w @ b)), mask)

    def means(self, columns: Mapping[str, Sequence[float]], mask: np.ndarray | None = None,
              ratio_to: str | None = None) -> dict[str, dict[str, tuple[float, float, float]]]:
        """Each column's mean with its interval, and with `ratio_to` each column's paired ratio to that column."""
        out: dict[str, dict[str, tuple[float, float, float]]] = {}
        for name, values in columns.items():
            out[name] = {"mean": self.mean(values, mask)}
            if ratio_to is not None:
                out[name]["ratio"] = self.ratio_of_means(values, columns[ratio_to], mask)
        return out


weighted_auc = auc_statistic  # the AUC under record weights (online_models.metrics)


def weighted_log_loss(y: Sequence[bool], probabilities: Sequence[float],
                      eps: float = 1e-15) -> Callable[[np.ndarray], float]:
    """A statistic: mean log-loss of `probabilities` for labels `y` under record weights.

    >>> round(weighted_log_loss([True, False], [0.8, 0.2])(np.ones(2)), 4)
    0.2231
    """
    p = np.clip(np.asarray(probabilities, dtype=float), eps, 1.0 - eps)
    losses = -np.where(np.asarray(y, dtype=bool), np.log(p), np.log1p(-p))
    return lambda weights: _ratio(float(weights @ losses), float(weights.sum()))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")
