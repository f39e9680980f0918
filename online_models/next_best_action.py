"""Next-best-action rules over model outputs: escalate, retain, or recommend."""

from __future__ import annotations

import math

from online_models.actions import RULE_ACTIONS as ACTIONS
from online_models.actions import Action

__all__ = ["ACTIONS", "Action", "RuleBasedPolicy"]


class RuleBasedPolicy:
    """Deterministic rules (propensity 1.0), in priority order.

    1. sentiment <= `escalation_threshold` -> "escalate_to_agent";
    2. churn probability >= `churn_threshold` -> "retention_offer";
    3. otherwise -> "recommend".

    >>> policy = RuleBasedPolicy()
    >>> policy.decide(churn_probability=0.9, sentiment=-0.72).reason
    'sentiment -0.72 <= -0.50: hand over to a human agent'
    >>> policy.decide(churn_probability=0.9, sentiment=None).name
    'retention_offer'
    >>> policy.decide(churn_probability=0.1, sentiment=0.3).name
    'recommend'
    """

    def __init__(self, churn_threshold: float = 0.6, escalation_threshold: float = -0.5) -> None:
        if not 0.0 <= churn_threshold <= 1.0:
            raise ValueError(f"churn_threshold must be in [0, 1], got {churn_threshold}")
        if not -1.0 <= escalation_threshold <= 1.0:
            raise ValueError(f"escalation_threshold must be in [-1, 1], got {escalation_threshold}")
        self.churn_threshold = churn_threshold
        self.escalation_threshold = escalation_threshold

    def decide(self, churn_probability: float, sentiment: float | None) -> Action:
        """Pick the action for a user given P(churn) in [0, 1] and recent sentiment in [-1, 1] (None: unknown)."""
        if not 0.0 <= churn_probability <= 1.0:
            raise ValueError(f"churn_probability must be in [0, 1], got {churn_probability}")
        if sentiment is not None and not (math.isfinite(sentiment) and -1.0 <= sentiment <= 1.0):
            raise ValueError(f"sentiment must be in [-1, 1] or None, got {sentiment}")
        if sentiment is not None and sentiment <= self.escalation_threshold:
            return Action(
                "escalate_to_agent",
                1.0,
                f"sentiment {sentiment:.2f} <= {self.escalation_threshold:.2f}: hand over to a human agent",
            )
        if churn_probability >= self.churn_threshold:
            return Action(
                "retention_offer",
                1.0,
                f"churn probability {churn_probability:.2f} >= {self.churn_threshold:.2f}: make a retention offer",
            )
        return Action(
            "recommend",
            1.0,
            f"churn probability {churn_probability:.2f} < {self.churn_threshold:.2f} and no escalation: "
            "recommend items",
        )
