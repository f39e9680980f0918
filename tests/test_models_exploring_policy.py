"""The engine's next-best-action: guardrails, exploration around the rules with true propensities, then the bandit."""

from __future__ import annotations

from collections import Counter

import pytest

from online_models.exploring_policy import BANDIT_ACTIONS, ExploringPolicy
from online_models.next_best_action import RuleBasedPolicy


def test_escalation_is_a_guardrail() -> None:
    policy = ExploringPolicy(RuleBasedPolicy(), epsilon=1.0, seed=3)
    for _ in range(50):
        action = policy.decide({}, churn_probability=0.1, sentiment=-0.9)
        assert (action.name, action.propensity) == ("escalate_to_agent", 1.0)


def test_warmup_explores_around_the_rule_with_exact_propensities() -> None:
    policy = ExploringPolicy(RuleBasedPolicy(churn_threshold=0.6), epsilon=0.2, warmup=10_000, seed=1)
    actions = [policy.decide({}, churn_probability=0.9, sentiment=None) for _ in range(5000)]
    counts = Counter(a.name for a in actions)
    assert set(counts) == set(BANDIT_ACTIONS)
    assert counts["retention_offer"] / 5000 == pytest.approx(0.8 + 0.05, abs=0.02)
    for action in actions:
        assert action.propensity == pytest.approx(0.85 if action.name == "retention_offer" else 0.05)


def test_after_warmup_the_bandit_learns_the_best_action() -> None:
    policy = ExploringPolicy(RuleBasedPolicy(churn_threshold=0.6), epsilon=0.1, warmup=200, seed=2)
    assert policy.version == "nba-rules+explore@0"
    for _ in range(100):
        for action in BANDIT_ACTIONS:
            policy.learn_one({"risk": 1.0}, action, 1.0 if action == "discount" else 0.0)
    policy.learn_one({"risk": 1.0}, "escalate_to_agent", 1.0)  # not the bandit's action: ignored
    assert policy.n_rewards == 400 and policy.version == "nba-bandit@400"
    chosen = Counter(policy.decide({"risk": 1.0}, churn_probability=0.1, sentiment=None).name for _ in range(1000))
    assert chosen.most_common(1)[0][0] == "discount" and chosen["discount"] > 850
