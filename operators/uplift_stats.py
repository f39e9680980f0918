"""Statistics of the live uplift: ratio metrics with cluster-robust intervals, lifts, and the sample-ratio check.

Every live metric is a ratio of two sums over an arm's users (conversions per decision, revenue per user,
sessions per user...). Users are randomized, not decisions, and one user's decisions are correlated, so
the variance must treat a user as the unit. The aggregator (operators/uplift.py) keeps each arm's sums in
K hash buckets of users; every user's decisions fall in one bucket, so the K bucket sums are independent
and identically distributed, and the delta method over them gives the ratio's variance (Deng, Knoblich
and Lu, "Applying the Delta Method in Metric Analytics", KDD 2018):

    r = X / Y,   Var(r) ~= K / (K - 1) * sum_b (x_b - r * y_b)^2 / Y^2

which is the per-user (cluster-robust) variance when each bucket holds at most one user, and stays valid,
with a slightly noisier estimate of itself, when buckets hold several. Intervals are 95% Wald intervals
(normal quantile). The relative lift of an arm over the control, r_t / r_c - 1, gets its variance from the
delta method too (the arms hold disjoint users, so they are independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # standard normal quantile of 0.975


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its standard error and 95% interval."""

    value: float
    se: float

    @property
    def low(self) -> float:
        """Lower bound of the 95% interval."""
        return self.value - Z_95 * self.se

    @property
    def high(self) -> float:
        """Upper bound of the 95% interval."""
        return self.value + Z_95 * self.se

    def excludes_zero(self) -> bool:
        """Whether the 95% interval lies entirely on one side of 0."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"value": self.value, "low": self.low, "high": self.high, "se": self.se}


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray) -> Estimate | None:
    """Sum of `numerators` over sum of `denominators` (per bucket), with its delta-method standard error.

    None when the denominators sum to 0 (nothing to divide by yet).

    >>> e = ratio_estimate(np.array([1.0, 0.0, 2.0, 1.0]), np.array([2.0, 1.0, 3.0, 2.0]))
    >>> round(e.value, 4), round(e.se, 4)
    (0.5, 0.1021)
    """
    x = np.asarray(numerators, dtype=float)
    y = np.asarray(denominators, dtype=float)
    total_x, total_y = float(x.sum()), float(y.sum())
    if total_y <= 0.0:
        return None
    ratio = total_x / total_y
    k = len(x)
    if k < 2:
        return Estimate(ratio, math.nan)
    residuals = x - ratio * y
    variance = k / (k - 1) * float(residuals @ residuals) / (total_y * total_y)
    return Estimate(ratio, math.sqrt(variance))


def difference(treatment: Estimate, control: Estimate) -> Estimate:
    """treatment - control, for independent arms.

    >>> d = difference(Estimate(0.3, 0.03), Estimate(0.2, 0.04)); round(d.value, 3), round(d.se, 3)
    (0.1, 0.05)
    """
    return Estimate(treatment.value - control.value, math.hypot(treatment.se, control.se))


def relative_lift(treatment: Estimate, control: Estimate) -> Estimate | None:
    """treatment / control - 1 with its delta-method standard error; None when the control's value is 0.

    >>> lift = relative_lift(Estimate(0.3, 0.03), Estimate(0.2, 0.02)); round(lift.value, 3), round(lift.se, 4)
    (0.5, 0.2121)
    """
    if control.value == 0.0:
        return None
    c, t = control.value, treatment.value
    variance = (treatment.se / c) ** 2 + (t * control.se / (c * c)) ** 2
    return Estimate(t / c - 1.0, math.sqrt(variance))


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `df` (a positive integer) degrees of freedom, in closed form.

    >>> round(chi2_sf(3.841458820694124, 1), 6), round(chi2_sf(5.991464547107979, 2), 6)
    (0.05, 0.05)
    """
    if df < 1:
        raise ValueError("df must be a positive integer")
    if statistic <= 0.0:
        return 1.0
    half = statistic / 2.0
    if df % 2 == 0:  # Q(df/2, x/2) = exp(-x/2) * sum_{i < df/2} (x/2)^i / i!
        term = total = 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    # odd: erfc(sqrt(x/2)) + exp(-x/2) * sum_{i=1}^{(df-1)/2} (x/2)^(i-1/2) / Gamma(i+1/2)
    total, term = math.erfc(math.sqrt(half)), math.sqrt(half) / math.gamma(1.5)
    for i in range(1, (df - 1) // 2 + 1):
        if i > 1:
            term *= half / (i - 0.5)
        total += math.exp(-half) * term
    return min(1.0, total)


def sample_ratio_check(users: dict[str, float], shares: dict[str, float], alpha: float,
                       min_expected: float = 5.0) -> dict[str, Any]:
    """Chi-square goodness of fit of the users counted per arm against the configured shares.

    `users`: counted users per arm (arms absent from `shares` are unexpected); `shares`: configured shares.
    The check runs once every arm with a positive share expects at least `min_expected` users (the
    chi-square approximation needs it); `alarm` is set when p < `alpha`, or at once when users turn up in
    an arm that is not configured or whose share is 0.

    >>> sample_ratio_check({"a": 500, "b": 500}, {"a": 0.5, "b": 0.5}, 0.001)["alarm"]
    False
    >>> check = sample_ratio_check({"a": 560, "b": 440}, {"a": 0.5, "b": 0.5}, 0.001)
    >>> check["alarm"], round(check["p_value"], 5)
    (True, 0.00015)
    """
    total = float(sum(users.values()))
    stray = sorted(arm for arm, n in users.items() if n > 0 and shares.get(arm, 0.0) <= 0.0)
    live = {arm: share for arm, share in shares.items() if share > 0.0}
    expected = {arm: total * share for arm, share in live.items()}
    result: dict[str, Any] = {"checked": False, "alarm": bool(stray), "chi2": None, "df": max(len(live) - 1, 0),
                              "p_value": None, "alpha": alpha, "unexpected_arms": stray,
                              "expected_users": expected, "reason": ""}
    if stray:
        result["reason"] = f"users in arms that should have none: {', '.join(stray)}"
    if len(live) < 2:
        result["reason"] = result["reason"] or "one arm only: nothing to compare"
        return result
    if min(expected.values()) < min_expected:
        result["reason"] = result["reason"] or f"waiting for at least {min_expected:g} expected users in every arm"
        return result
    statistic = sum((users.get(arm, 0.0) - e) ** 2 / e for arm, e in expected.items())
    p_value = chi2_sf(statistic, len(live) - 1)
    result.update(checked=True, chi2=statistic, p_value=p_value, alarm=bool(stray) or p_value < alpha)
    if not result["reason"]:
        result["reason"] = (f"users per arm do not match the configured shares (p = {p_value:.2g} < {alpha:g})"
                            if p_value < alpha else "users per arm match the configured shares")
    return result
