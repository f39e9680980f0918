"""The next-best-action vocabulary: every action a decision can take, and which of them are offers.

One place names them; the rules, the bandit, the engine's offer limits and the bias audit all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACTIONS", "BANDIT_ACTIONS", "OFFER_ACTIONS", "RULE_ACTIONS", "WIN_BACK_OFFER", "Action"]

RECOMMEND = "recommend"
RETENTION_OFFER = "retention_offer"
DISCOUNT = "discount"
ESCALATE_TO_AGENT = "escalate_to_agent"
DO_NOTHING = "do_nothing"
WIN_BACK_OFFER = "win_back_offer"
"""Sent on the engine's own initiative to a quiet user whose churn risk crossed the threshold (operators.winback)."""

ACTIONS = (RECOMMEND, RETENTION_OFFER, DISCOUNT, ESCALATE_TO_AGENT, DO_NOTHING, WIN_BACK_OFFER)
"""Every action a personalized decision can carry."""
RULE_ACTIONS = (RECOMMEND, RETENTION_OFFER, ESCALATE_TO_AGENT)
"""The actions the rule-based policy chooses among."""
BANDIT_ACTIONS = (RECOMMEND, RETENTION_OFFER, DISCOUNT, DO_NOTHING)
"""The actions the contextual bandit learns among (escalation stays a rule guardrail)."""
OFFER_ACTIONS = frozenset({RETENTION_OFFER, DISCOUNT, WIN_BACK_OFFER})
"""Actions that make the user an offer (subject to the offer limit rule and audited per segment)."""


@dataclass(frozen=True, slots=True)
class Action:
    """The chosen action, the probability the policy chose it, and why."""

    name: str
    propensity: float
    reason: str

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"name": self.name, "propensity": float(self.propensity), "reason": self.reason}
