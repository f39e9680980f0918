"""Next-best-action as a contextual bandit: epsilon-greedy over per-action River linear reward models.

Every choice logs its propensity (the probability the policy had of choosing that action), so
logged decisions can evaluate other policies off-policy with `ips` / `snips`.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from river import bandit, base, linear_model, optim, stats

from online_models.actions import ACTIONS, WIN_BACK_OFFER
from online_models.scaling import BoundedStandardScaler

__all__ = ["NBA_ACTIONS", "EpsilonGreedyBandit", "LinearRewards", "ips", "snips"]

# the bandit of `pulse evaluate` learns over every action taken at an event (a win-back has no event)
NBA_ACTIONS = tuple(action for action in ACTIONS if action != WIN_BACK_OFFER)


def _default_model():
    """A linear reward model whose SGD steps cannot overshoot.

    With standardized values bounded by 3, weights learning at 0.001 and the intercept at 0.01, one step
    moves the prediction by at most `0.001 * 9 * d + 0.01` of its error for `d` features: less than all
    of it (no overshoot) for up to 110 features; unbounded values and larger steps can diverge.
    """
    return BoundedStandardScaler(bound=3.0) | linear_model.LinearRegression(
        optimizer=optim.SGD(0.001), intercept_lr=0.01, l2=0.0
    )


class LinearRewards:
    """Every action's default reward model (`_default_model`) predicting at once, from arrays of its parameters.

    River's `predict_one` of `BoundedStandardScaler | LinearRegression` is, per feature in the context's
    order, `z = clip((x - mean) / var**0.5, -bound, bound)` (0 when the variance is 0), then
    `intercept + sum(weight * z)` summed in that order. The same operations here run on one row per action,
    the sums as a cumulative sum (in the same order), so the predictions are River's to the bit. A row is
    read from its model again after the model learns (`refresh`).

    >>> models = {"a": _default_model(), "b": _default_model()}
    >>> for i in range(50):
    ...     models["a"].learn_one({"x": float(i % 7), "y": 1.0}, float(i % 3))
    >>> rewards = LinearRewards(("x", "y"), models)
    >>> context = {"x": 2.0, "y": 1.0}
    >>> rewards.predict(context) == {name: model.predict_one(context) for name, model in models.items()}
    True
    """

    def __init__(self, names: tuple[str, ...], models: Mapping[str, object]) -> None:
        self.names = names
        self._models = dict(models)
        self._actions = tuple(models)
        shape = (len(self._actions), len(names))
        self._means, self._scales = np.zeros(shape), np.ones(shape)
        self._constant = np.zeros(shape, dtype=bool)  # zero variance: the standardized value is 0
        self._weights = np.zeros(shape)
        self._intercepts = np.zeros(len(self._actions))
        self._bounds = np.zeros((len(self._actions), 1))
        for row in range(len(self._actions)):
            self._read(row)

    def refresh(self, action: str) -> None:
        """Read the action's model again (after it learned)."""
        self._read(self._actions.index(action))

    def predict(self, context: Mapping[str, float]) -> dict[str, float]:
        """Each action's predicted reward (the context must have exactly `names`, in that order)."""
        values = np.fromiter(context.values(), dtype=float, count=len(self.names))
        scaled = values - self._means
        scaled /= self._scales
        np.clip(scaled, -self._bounds, self._bounds, out=scaled)
        np.copyto(scaled, 0.0, where=self._constant)
        scaled *= self._weights
        rewards = np.cumsum(scaled, axis=1)[:, -1] + self._intercepts
        return dict(zip(self._actions, rewards.tolist()))

    def _read(self, row: int) -> None:
        scaler, regression = self._models[self._actions[row]].steps.values()
        means, weights, names = scaler.means, regression.weights, self.names
        variances = [scaler.vars.get(name, 0.0) for name in names]
        self._means[row] = [means.get(name, 0.0) for name in names]
        self._constant[row] = [not variance for variance in variances]
        self._scales[row] = [variance**0.5 if variance else 1.0 for variance in variances]
        self._weights[row] = [weights.get(name, 0.0) for name in names]
        self._intercepts[row] = regression.intercept
        self._bounds[row] = scaler.bound


class EpsilonGreedyBandit(bandit.base.ContextualPolicy):
    """Contextual epsilon-greedy, a River contextual policy: the best predicted reward, or uniform with `epsilon`.

    River's protocol: `pull(arm_ids, context)` chooses an arm, `update(arm_id, context, reward)` teaches
    that arm's reward model (how rewards arrive is up to the caller). Pulse's extension, `choose_one`,
    also returns the choice's propensity: with `k` actions the greedy one has `1 - epsilon + epsilon / k`,
    every other `epsilon / k`, so logged choices support off-policy evaluation (`ips`, `snips`).

    >>> policy = EpsilonGreedyBandit(actions=("a", "b"), epsilon=0.1, seed=1)
    >>> for _ in range(300):
    ...     policy.update("a", {"x": 1.0}, 0.0)
    ...     policy.update("b", {"x": 1.0}, 1.0)
    >>> policy.greedy_one({"x": 1.0})
    'b'
    >>> policy.probabilities({"x": 1.0})
    {'a': 0.05, 'b': 0.95}
    >>> policy.pull(["a", "b"], {"x": 1.0}) in ("a", "b")
    True
    """

    def __init__(
        self,
        actions: Sequence[str] = NBA_ACTIONS,
        epsilon: float = 0.1,
        seed: int = 0,
        model_factory: Callable[[], object] | None = None,
    ) -> None:
        if len(actions) < 1 or len(set(actions)) != len(actions):
            raise ValueError("actions must be non-empty and distinct")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        super().__init__(reward_obj=stats.Mean(), burn_in=0)
        self.actions = tuple(actions)
        self.epsilon = epsilon
        self.seed = seed
        self.model_factory = model_factory
        self._rng = random.Random(seed)
        make = _default_model if model_factory is None else model_factory
        self._models = {action: make() for action in self.actions}
        self._linear: LinearRewards | None = None  # the default models' fast path, see expected_rewards()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_linear": None}  # derived: rebuilt on first use

    def __setstate__(self, state: dict) -> None:
        if "pulls" in state:  # a checkpoint from before the policy was River's: counts were `pulls`
            pulls = state.pop("pulls")
            state.update(reward_obj=stats.Mean(), reward_scaler=None, burn_in=0, seed=0, model_factory=None,
                         _rewards=collections.defaultdict(stats.Mean),
                         _counts=collections.Counter(pulls), _n=sum(pulls.values()))
        self.__dict__.update(state)
        self._linear = None

    def __repr__(self) -> str:
        return base.Base.__repr__(self)  # River's estimators' form (the policy's table needs pulled arms)

    @property
    def n_updates(self) -> int:
        """Rewards learned so far."""
        return self._n

    def expected_rewards(self, context: Mapping[str, float]) -> dict[str, float]:
        """Predicted reward of each action in this context (the default models: all at once, `LinearRewards`)."""
        if self.model_factory is not None:
            return {action: float(model.predict_one(dict(context))) for action, model in self._models.items()}
        linear = self._linear
        if linear is None or linear.names != tuple(context):
            linear = self._linear = LinearRewards(tuple(context), self._models)
        return linear.predict(context)

    def greedy_one(self, context: Mapping[str, float]) -> str:
        """The action with the highest predicted reward (ties: the first in `actions`)."""
        return self._greedy(self.expected_rewards(context), self.actions)

    def probabilities(self, context: Mapping[str, float]) -> dict[str, float]:
        """The policy's probability of each action in this context."""
        return self._probabilities(self.greedy_one(context), self.actions)

    def choose_one(self, context: Mapping[str, float]) -> tuple[str, float, dict[str, float]]:
        """Choose an action: it, its propensity and every action's predicted reward (one pass of the models)."""
        rewards = self.expected_rewards(context)
        action, greedy = self._choose(rewards, self.actions)
        return action, self._probabilities(greedy, self.actions)[action], rewards

    def _pull(self, arm_ids: list[str], context: dict) -> str:  # type: ignore[override]
        rewards = self.expected_rewards(context)
        return self._choose(rewards, tuple(arm_ids))[0]

    def update(self, arm_id: str, context: Mapping[str, float], reward: float) -> None:  # type: ignore[override]
        """Teach the chosen action's reward model the observed reward."""
        if arm_id not in self._models:
            raise ValueError(f"unknown action {arm_id!r}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        super().update(arm_id, context, float(reward))
        self._models[arm_id].learn_one(dict(context), float(reward))
        if self._linear is not None:
            self._linear.refresh(arm_id)

    def _choose(self, rewards: Mapping[str, float], arms: tuple[str, ...]) -> tuple[str, str]:
        """(the chosen arm, the greedy arm): the greedy one, or with probability `epsilon` a uniform draw."""
        greedy = self._greedy(rewards, arms)
        if self._rng.random() < self.epsilon:
            return arms[self._rng.randrange(len(arms))], greedy
        return greedy, greedy

    @staticmethod
    def _greedy(rewards: Mapping[str, float], arms: tuple[str, ...]) -> str:
        best = arms[0]
        for action in arms[1:]:
            if rewards[action] > rewards[best]:
                best = action
        return best

    def _probabilities(self, greedy: str, arms: tuple[str, ...]) -> dict[str, float]:
        explore = self.epsilon / len(arms)
        return {a: round(explore + (1.0 - self.epsilon if a == greedy else 0.0), 12) for a in arms}


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
