"""Next-best-action that explores: rule guardrails, then a contextual bandit that starts from the rules.

- Escalation to a human on strongly negative sentiment is a guardrail: always taken (propensity 1).
- Until the bandit has learned from `warmup` rewards, the policy plays the rule-based action with
  probability `1 - epsilon` and explores uniformly otherwise, so the engine gathers the outcomes it
  lacks ("active feedback") without acting blindly.
- After warm-up the bandit's epsilon-greedy choice takes over.
Every action is returned with its propensity, so logged decisions support off-policy evaluation
(`online_models.bandit.ips` / `snips`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from online_models.actions import BANDIT_ACTIONS
from online_models.bandit import EpsilonGreedyBandit
from online_models.next_best_action import Action, RuleBasedPolicy

__all__ = ["BANDIT_ACTIONS", "ExploringPolicy"]


class ExploringPolicy:
    """Rules as a prior, a bandit as the learner.

    >>> policy = ExploringPolicy(RuleBasedPolicy(churn_threshold=0.6), epsilon=0.0, warmup=10, seed=1)
    >>> policy.decide({"x": 1.0}, churn_probability=0.9, sentiment=None).name
    'retention_offer'
    >>> policy.decide({"x": 1.0}, churn_probability=0.1, sentiment=-0.9).name
    'escalate_to_agent'
    """

    def __init__(self, rules: RuleBasedPolicy, epsilon: float = 0.05, warmup: int = 1000, seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.rules = rules
        self.bandit = EpsilonGreedyBandit(BANDIT_ACTIONS, epsilon=epsilon, seed=seed)
        self.epsilon = epsilon
        self.warmup = warmup
        self._rng = random.Random(seed)

    @property
    def n_rewards(self) -> int:
        """Rewards learned so far."""
        return self.bandit.n_updates

    @property
    def version(self) -> str:
        """Changes with every learned reward; names the phase."""
        phase = "bandit" if self.n_rewards >= self.warmup else "rules+explore"
        return f"nba-{phase}@{self.n_rewards}"

    def decide(self, context: Mapping[str, float], churn_probability: float, sentiment: float | None) -> Action:
        """Choose the next-best action with its propensity and reason."""
        rule_action = self.rules.decide(churn_probability, sentiment)
        if rule_action.name not in BANDIT_ACTIONS:
            return rule_action  # guardrail (hand over to a human)
        if self.n_rewards < self.warmup:
            return self._explore_around(rule_action)
        action, propensity, rewards = self.bandit.choose_one(context)
        expected = rewards[action]
        return Action(action, propensity, f"bandit: expected reward {expected:.3f} (propensity {propensity:.3f})")

    def _explore_around(self, rule_action: Action) -> Action:
        explore = self.epsilon / len(BANDIT_ACTIONS)
        probabilities = {a: explore + (1.0 - self.epsilon if a == rule_action.name else 0.0) for a in BANDIT_ACTIONS}
        if self._rng.random() < self.epsilon:
            name = BANDIT_ACTIONS[self._rng.randrange(len(BANDIT_ACTIONS))]
        else:
            name = rule_action.name
        propensity = round(probabilities[name], 12)
        if name == rule_action.name:
            return Action(name, propensity, rule_action.reason)
        return Action(name, propensity, f"exploring (rules chose {rule_action.name}): gathers outcome data")

    def learn_one(self, context: Mapping[str, float], action: str, reward: float) -> None:
        """Learn the reward an action earned (guardrail actions are not the bandit's)."""
        if action in BANDIT_ACTIONS:
            self.bandit.update(action, context, reward)
