"""The churn baselines of the CDNOW replay, scoring each purchase with what they knew at it.

- recency: days since the customer's previous purchase, at the scored purchase (0 at a first purchase);
- frequency: purchases so far, negated (fewer purchases, higher risk);
- RFM logistic: River's `StandardScaler | LogisticRegression` (its defaults) on recency days, frequency and
  total spend, learning each label when it arrives (the plain online baseline);
- RFM logistic, log scale: the same on log(1 + recency days), log(frequency), log(1 + spend);
- RFM logistic, log scale, learned at the horizon: the same, but a "not churned" that arrives before its
  horizon is learned once the horizon has passed, the schedule Pulse learns on (operators.long_term).

Each model predicts at the purchase with the state it has then; a label is scored with the prediction of
the purchase it refers to and learned on that purchase's features (no feature from the label's time).
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

from river import compose, linear_model, preprocessing

RECENCY, FREQUENCY = "recency (days since previous purchase)", "frequency (purchases, negated)"
RFM, RFM_LOG, RFM_LOG_HORIZON = ("RFM logistic", "RFM logistic, log scale", "RFM logistic, log scale, at the horizon")
MODELS = (RFM, RFM_LOG, RFM_LOG_HORIZON)
METHODS = (RECENCY, FREQUENCY, *MODELS)
PROBABILISTIC = frozenset(MODELS)


def _pipeline() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Baselines:
    """Every baseline, fed the same purchases and labels in time order.

    >>> b = Baselines(horizon_days=10)
    >>> b.purchase("c", day=0, dollars=12.0)
    >>> scores = b.label("c", churned=True, purchase_day=0)
    >>> names = "recency (days since previous purchase)", "frequency (purchases, negated)", "RFM logistic"
    >>> tuple(scores[name] for name in names)
    (0.0, -1.0, 0.5)
    """

    def __init__(self, horizon_days: int) -> None:
        self.horizon_days = horizon_days
        self._models = {name: _pipeline() for name in MODELS}
        self._history: dict[str, tuple[int, int, float]] = {}  # customer -> (purchases, last day, spend)
        self._served: dict[tuple[str, int], tuple[dict[str, Any], dict[str, float]]] = {}
        self._held: list[tuple[int, int, dict[str, float], bool]] = []  # (due day, sequence, features, label)
        self._sequence = itertools.count()

    def advance(self, day: int) -> None:
        """Learn the held labels whose horizon has passed by `day`."""
        while self._held and self._held[0][0] <= day:
            _, _, x, churned = heapq.heappop(self._held)
            self._models[RFM_LOG_HORIZON].learn_one(x, churned)

    def purchase(self, customer: str, day: int, dollars: float) -> None:
        """Score the purchase with every baseline as it is now."""
        count, last_day, spend = self._history.get(customer, (0, day, 0.0))
        count, spend = count + 1, spend + dollars
        self._history[customer] = (count, day, spend)
        recency = float(day - last_day)
        raw = {"recency_days": recency, "frequency": float(count), "monetary": spend}
        log = {"recency_days": math.log1p(recency), "frequency": math.log(count), "monetary": math.log1p(spend)}
        features = {RFM: raw, RFM_LOG: log, RFM_LOG_HORIZON: log}
        scores = {RECENCY: recency, FREQUENCY: -float(count)}
        scores |= {name: self._models[name].predict_proba_one(features[name]).get(True, 0.5) for name in MODELS}
        self._served[(customer, day)] = (features, scores)

    def label(self, customer: str, churned: bool, purchase_day: int) -> dict[str, float]:
        """The scores of the labelled purchase; the models learn the label on its features."""
        features, scores = self._served.pop((customer, purchase_day))
        self._models[RFM].learn_one(features[RFM], churned)
        self._models[RFM_LOG].learn_one(features[RFM_LOG], churned)
        due = purchase_day + self.horizon_days
        if churned:
            self._models[RFM_LOG_HORIZON].learn_one(features[RFM_LOG_HORIZON], churned)
        else:
            heapq.heappush(self._held, (due, next(self._sequence), features[RFM_LOG_HORIZON], churned))
        return scores
