"""Contextual bandit: propensities, learning, and off-policy estimators."""

from __future__ import annotations

import pickle
import random

import pytest

from online_models.bandit import NBA_ACTIONS, EpsilonGreedyBandit, ips, snips


def test_propensities_sum_to_one_and_match_choice_frequencies() -> None:
    bandit = EpsilonGreedyBandit(NBA_ACTIONS, epsilon=0.2, seed=3)
    context = {"x": 1.0}
    probabilities = bandit.probabilities(context)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    counts = {a: 0 for a in NBA_ACTIONS}
    for _ in range(20000):
        action, propensity, _ = bandit.choose_one(context)
        assert propensity == probabilities[action]
        counts[action] += 1
    for action in NBA_ACTIONS:
        assert counts[action] / 20000 == pytest.approx(probabilities[action], abs=0.015)


def test_learns_the_best_action_per_context() -> None:
    bandit = EpsilonGreedyBandit(("recommend", "retention_offer"), epsilon=0.1, seed=0)
    rng = random.Random(0)
    for _ in range(3000):
        risk = rng.random()
        context = {"churn_probability": risk}
        action, _, _ = bandit.choose_one(context)
        reward = (1.0 if risk > 0.5 else -0.5) if action == "retention_offer" else 0.2
        bandit.update(action, context, reward + rng.gauss(0, 0.1))
    assert bandit.greedy_one({"churn_probability": 0.95}) == "retention_offer"
    assert bandit.greedy_one({"churn_probability": 0.05}) == "recommend"


def test_ips_and_snips_by_hand() -> None:
    # logged: (reward, propensity); target takes the logged action with prob 1, 0, 1
    rewards, props, target = [2.0, 1.0, 0.0], [0.5, 0.25, 0.5], [1.0, 0.0, 1.0]
    assert ips(rewards, props, target) == pytest.approx((2.0 * 2 + 0 + 0) / 3)
    assert snips(rewards, props, target) == pytest.approx((2.0 * 2) / (2 + 0 + 2))
    with pytest.raises(ValueError):
        ips([1.0], [0.0], [1.0])


def test_ips_is_unbiased_on_a_simulated_log() -> None:
    rng = random.Random(1)
    rewards, props, target = [], [], []
    for _ in range(40000):  # uniform logging over two actions; action "b" pays 1 w.p. 0.7, "a" w.p. 0.2
        action = rng.choice("ab")
        reward = float(rng.random() < (0.7 if action == "b" else 0.2))
        rewards.append(reward)
        props.append(0.5)
        target.append(1.0 if action == "b" else 0.0)
    assert ips(rewards, props, target) == pytest.approx(0.7, abs=0.02)
    assert snips(rewards, props, target) == pytest.approx(0.7, abs=0.02)


def test_reward_models_stay_bounded_on_a_rare_extreme_feature_value() -> None:
    """A feature almost always 0 (hours since the previous event) but now and then 0.25 must not make SGD diverge."""
    rng = random.Random(4)
    bandit = EpsilonGreedyBandit(("recommend",), epsilon=0.0, seed=0)
    predictions = []
    for _ in range(20000):
        context = {"recency_hours_log": 0.25 if rng.random() < 0.002 else 0.0, "churn_probability": rng.random(),
                   **{f"f{i}": rng.gauss(0.0, 1.0) for i in range(8)}}
        predictions.append(bandit.expected_rewards(context)["recommend"])
        bandit.update("recommend", context, float(rng.random() < 0.3))
    assert max(abs(p) for p in predictions) < 2.0
    assert sum(predictions[-2000:]) / 2000 == pytest.approx(0.3, abs=0.05)


def test_the_fast_reward_path_equals_rivers_predict_one_to_the_bit() -> None:
    """`expected_rewards` reads the default models' parameters as arrays: it must be River's own prediction."""
    rng = random.Random(5)
    names = ("recency_hours_log", "constant", "rare", *(f"f{i}" for i in range(12)), "churn_probability")
    bandit = EpsilonGreedyBandit(NBA_ACTIONS, epsilon=0.2, seed=2)

    def context() -> dict[str, float]:
        values = {name: rng.gauss(0.0, 2.0) for name in names}
        values.update(constant=1.0, rare=50.0 if rng.random() < 0.01 else 0.0)  # zero variance, clipped outliers
        return values

    for step in range(3000):
        x = context()
        action, _, rewards = bandit.choose_one(x)
        assert rewards == {a: model.predict_one(dict(x)) for a, model in bandit._models.items()}, step
        bandit.update(action, x, rng.gauss(0.3, 1.0))
    copy = pickle.loads(pickle.dumps(bandit))
    x = context()
    assert copy.expected_rewards(x) == bandit.expected_rewards(x) == {
        a: model.predict_one(dict(x)) for a, model in bandit._models.items()}
    reordered = dict(reversed(list(x.items())))  # another feature order: the arrays are rebuilt for it
    assert bandit.expected_rewards(reordered) == {a: m.predict_one(dict(reordered)) for a, m in bandit._models.items()}
