"""Cold start: no offer to a user the churn model knows too little about.

A decision's `confidence` (online_models.confidence) is the churn probability's distance from the
action threshold times the evidence of the user's events (`1 - exp(-events / 20)`): a visitor's first
events give little evidence, so a high churn probability then says more about the model's prior than
about the user. Offers (`retention_offer`, `discount`, `win_back_offer`) below `min_confidence` become
recommendations, and the decision lists the rule that withheld them.
"""

from __future__ import annotations

from typing import Any

from online_models.actions import OFFER_ACTIONS, RECOMMEND, Action

__all__ = ["gate_offer"]


def gate_offer(action: Action, confidence: float, min_confidence: float) -> tuple[Action, list[dict[str, Any]]]:
    """`action` unchanged, or `recommend` with the `cold_start` rule for an offer made with too little confidence.

    >>> gate_offer(Action("retention_offer", 0.95, "churn risk"), confidence=0.02, min_confidence=0.2)[1][0]["effect"]
    'retention_offer withheld: confidence 0.02 < 0.20 (too little known of the user)'
    >>> gate_offer(Action("retention_offer", 0.95, "churn risk"), confidence=0.5, min_confidence=0.2)[0].name
    'retention_offer'
    """
    if action.name not in OFFER_ACTIONS or confidence >= min_confidence:
        return action, []
    why = f"{action.name} withheld: confidence {confidence:.2f} < {min_confidence:.2f} (too little known of the user)"
    return Action(RECOMMEND, 1.0, why), [{"rule": "cold_start", "effect": why}]
