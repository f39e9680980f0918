"""Next-best-action as a contextual bandit: epsilon-greedy over per-action River linear reward models.

Every choice logs its propensity (the probability the policy had of choosing that action), so
logged decisions can evaluate other policies off-policy with `ips` / `snips`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

from river import linear_model, optim

from online_models.actions import ACTIONS, WIN_BACK_OFFER
from online_models.scaling import BoundedStandardScaler

__all__ = ["NBA_ACTIONS", "EpsilonGreedyBandit", "ips", "snips"]

# the bandit of `pulse evaluate` learns over every action taken at an event (a win-back has no event)
NBA_ACTIONS = tuple(action for action in ACTIONS if action != WIN_BACK_OFFER)


def _default_model():
    """A linear reward model whose SGD steps cannot overshoot.

    With standardized values bounded by 3, weights learning at 0.001 and the intercept at 0.01, one step
    moves the prediction by at most `0.001 * 9 * d + 0.01` of its error for `d` features: less than all
    of it (no overshoot) for up to 110 features. (SGD at 0.01 on unbounded values diverged to predicted
    rewards of 1e11 within 30,000 events of the simulator.)
    """
    return BoundedStandardScaler(bound=3.0) | linear_model.LinearRegression(
        optimizer=optim.SGD(0.001), intercept_lr=0.01, l2=0.0
    )


class EpsilonGreedyBandit:
    """Contextual epsilon-greedy: exploit the action with the best predicted reward, explore uniformly with `epsilon`.

    `predict_one(context)` returns `(action, propensity)`; `learn_one(context, action, reward)`
    updates only that action's reward model (how rewards arrive is up to the caller).
    With `k` actions the greedy action has propensity `1 - epsilon + epsilon / k`, every other `epsilon / k`.

    >>> bandit = EpsilonGreedyBandit(actions=("a", "b"), epsilon=0.1, seed=1)
    >>> for _ in range(300):
    ...     bandit.learn_one({"x": 1.0}, "a", 0.0)
    ...     bandit.learn_one({"x": 1.0}, "b", 1.0)
    >>> bandit.greedy_one({"x": 1.0})
    'b'
    >>> bandit.probabilities({"x": 1.0})
    {'a': 0.05, 'b': 0.95}
    """

    def __init__(
        self,
        actions: Sequence[str] = NBA_ACTIONS,
        epsilon: float = 0.1,
        seed: int = 0,
        model_factory: Callable[[], object] = _default_model,
    ) -> None:
        if len(actions) < 1 or len(set(actions)) != len(actions):
            raise ValueError("actions must be non-empty and distinct")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.actions = tuple(actions)
        self.epsilon = epsilon
        self._rng = random.Random(seed)
        self._models = {action: model_factory() for action in self.actions}
        self.pulls = {action: 0 for action in self.actions}

    def expected_rewards(self, context: Mapping[str, float]) -> dict[str, float]:
        """Predicted reward of each action in this context."""
        return {action: float(model.predict_one(dict(context))) for action, model in self._models.items()}

    def greedy_one(self, context: Mapping[str, float]) -> str:
        """The action with the highest predicted reward (ties: the first in `actions`)."""
        return self._greedy(self.expected_rewards(context))

    def probabilities(self, context: Mapping[str, float]) -> dict[str, float]:
        """The policy's probability of each action in this context."""
        return self._probabilities(self.greedy_one(context))

    def predict_one(self, context: Mapping[str, float]) -> tuple[str, float]:
        """Choose an action; return it with its propensity."""
        action, propensity, _ = self.choose_one(context)
        return action, propensity

    def choose_one(self, context: Mapping[str, float]) -> tuple[str, float, dict[str, float]]:
        """Choose an action; return it with its propensity and every action's predicted reward (one pass of the models)."""
        rewards = self.expected_rewards(context)
        greedy = self._greedy(rewards)
        if self._rng.random() < self.epsilon:
            action = self.actions[self._rng.randrange(len(self.actions))]
        else:
            action = greedy
        return action, self._probabilities(greedy)[action], rewards

    def _greedy(self, rewards: Mapping[str, float]) -> str:
        best = self.actions[0]
        for action in self.actions[1:]:
            if rewards[action] > rewards[best]:
                best = action
        return best

    def _probabilities(self, greedy: str) -> dict[str, float]:
        explore = self.epsilon / len(self.actions)
        return {a: round(explore + (1.0 - self.epsilon if a == greedy else 0.0), 12) for a in self.actions}

    def learn_one(self, context: Mapping[str, float], action: str, reward: float) -> None:
        """Teach the chosen action's reward model the observed reward."""
        if action not in self._models:
            raise ValueError(f"unknown action {action!r}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        self._models[action].learn_one(dict(context), float(reward))
        self.pulls[action] += 1


def ips(rewards: Sequence[float], propensities: Sequence[float], target_probabilities: Sequence[float]) -> float:
    """Inverse propensity scoring: mean of `reward * pi(a|x) / propensity` over logged decisions.

    `target_probabilities[i]` is the target policy's probability of the logged action i.

    >>> ips([1.0, 0.0, 1.0], [0.5, 0.5, 0.25], [1.0, 0.0, 0.5])
    1.3333333333333333
    """
    _check(rewards, propensities, target_probabilities)
    return math.fsum(r * t / p for r, p, t in zip(rewards, propensities, target_probabilities)) / len(rewards)


def snips(rewards: Sequence[float], propensities: Sequence[float], target_probabilities: Sequence[float]) -> float:
    """Self-normalized IPS: `sum(reward * w) / sum(w)` with `w = pi(a|x) / propensity` (0 when every w is 0).

    >>> snips([1.0, 0.0, 1.0], [0.5, 0.5, 0.25], [1.0, 0.0, 0.5])
    1.0
    """
    _check(rewards, propensities, target_probabilities)
    weights = [t / p for p, t in zip(propensities, target_probabilities)]
    total = math.fsum(weights)
    return math.fsum(r * w for r, w in zip(rewards, weights)) / total if total > 0 else 0.0


def _check(rewards: Sequence[float], propensities: Sequence[float], targets: Sequence[float]) -> None:
    if not len(rewards) == len(propensities) == len(targets) or not rewards:
        raise ValueError("rewards, propensities and target probabilities must be non-empty and of equal length")
    if any(not 0.0 < p <= 1.0 for p in propensities):
        raise ValueError("propensities must be in (0, 1]")
