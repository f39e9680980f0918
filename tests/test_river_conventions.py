"""Every Pulse model follows River's conventions, checked by River's own checks.

Estimators (the churn and sentiment classifiers, the scaler, the segmenter, the bandit's reward models) go
through `river.checks.check_estimator`. The next-best-action bandit is a River contextual policy, for
which River has no estimator checks: it goes through the general checks River runs on every estimator
(parameters, clone, repr, pickling, docs) and its policy protocol (`pull`, `update`).
"""

from __future__ import annotations

import pytest
from river import checks
from river.checks import common

from online_models.bandit import EpsilonGreedyBandit, _default_model
from online_models.churn import ChurnClassifier
from online_models.exploring_policy import ExploringPolicy
from online_models.next_best_action import RuleBasedPolicy
from online_models.scaling import BoundedStandardScaler
from online_models.segments import BehaviourSegmenter
from online_models.sentiment import SentimentClassifier

ESTIMATORS = [ChurnClassifier, SentimentClassifier, BoundedStandardScaler, BehaviourSegmenter]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_river_estimator_checks(estimator: type) -> None:
    for params in estimator._unit_test_params():
        checks.check_estimator(estimator(**params))


def test_the_bandits_reward_models_pass_river_estimator_checks() -> None:
    checks.check_estimator(_default_model())


GENERAL_CHECKS = ["check_repr", "check_str", "check_clone_same_class", "check_clone_is_idempotent",
                  "check_init_has_default_params_for_tests", "check_init_default_params_are_not_mutable",
                  "check_doc", "check_clone_changes_memory_addresses", "check_mutate_can_be_idempotent",
                  "check_pickling_supports_roundtrip", "check_repr_roundtrips_clone",
                  "check_clone_with_new_params_applies", "check_get_params_matches_signature"]


@pytest.mark.parametrize("check", GENERAL_CHECKS)
def test_the_bandit_passes_rivers_general_checks(check: str) -> None:
    getattr(common, check)(EpsilonGreedyBandit(actions=("a", "b"), epsilon=0.2, seed=1))


def test_the_bandit_follows_rivers_policy_protocol() -> None:
    policy = EpsilonGreedyBandit(actions=("a", "b", "c"), epsilon=0.0, seed=1)
    for _ in range(200):
        policy.update("b", {"x": 1.0}, 1.0)
        policy.update("a", {"x": 1.0}, 0.0)
    assert policy.pull(["a", "b", "c"], {"x": 1.0}) == "b"
    assert policy.pull(["a", "c"], {"x": 1.0}) in ("a", "c"), "only the arms offered"
    assert policy.n_updates == 400 and policy.ranking[0] == "b"
    fresh = policy.clone()
    assert fresh.n_updates == 0 and fresh.epsilon == 0.0


def test_an_exploring_policy_from_a_checkpoint_before_river_policies_loads() -> None:
    """Checkpoints written before the bandit was a River policy (its counts were `pulls`) still load."""
    policy = ExploringPolicy(RuleBasedPolicy(), epsilon=0.1, warmup=5, seed=3)
    state = policy.bandit.__dict__.copy()
    for name in ("reward_obj", "reward_scaler", "burn_in", "seed", "model_factory", "_rewards", "_counts", "_n"):
        del state[name]
    state["pulls"] = {"recommend": 7, "discount": 2}
    old = EpsilonGreedyBandit.__new__(EpsilonGreedyBandit)
    old.__setstate__(state)
    policy.bandit = old
    assert policy.n_rewards == 9
    policy.learn_one({"x": 1.0}, "discount", 0.5)
    assert policy.n_rewards == 10
