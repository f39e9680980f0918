"""Drift-adaptive steps of the churn model (online_models.step_boost): a flip of the label relationship raises the
step and the model recovers faster than with a constant step; without a change the step stays at its base;
explanations stay exact; checkpoints restore; the engine boosts only labels learned on arrival."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from online_models import ChurnClassifier
from online_models.step_boost import StepBooster, log_loss_of_logit
from operators.engine import EngineConfig, PersonalizationEngine
from pulse.config import ConfigError, Settings

FLIP = 1500


def _stream(n: int, seed: int, flip_at: int | None = None):
    """Users whose churn follows a logistic model of two features; its signs flip at label `flip_at`."""
    rng = random.Random(seed)
    for i in range(n):
        x = {"recency_hours_log": rng.gauss(3.0, 1.0), "sessions_7d": rng.gauss(5.0, 2.0), "noise": rng.gauss(0, 1)}
        sign = -1.0 if flip_at is not None and i >= flip_at else 1.0
        logit = sign * (1.5 * (x["recency_hours_log"] - 3.0) - 0.6 * (x["sessions_7d"] - 5.0))
        yield x, rng.random() < 1.0 / (1.0 + math.exp(-logit))


def _progressive_losses(model: ChurnClassifier, stream) -> tuple[list[float], list[float]]:
    """Per-label log-loss before learning, and the model's step multiplier at each label."""
    losses, multipliers = [], []
    for x, y in stream:
        p = min(max(model.predict_proba_one(x)[True], 1e-12), 1 - 1e-12)
        losses.append(-math.log(p if y else 1.0 - p))
        model.learn_one(x, y)
        multipliers.append(model.step_multiplier)
    return losses, multipliers


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_a_flip_the_step_rises_and_the_loss_recovers_faster_than_with_a_constant_step(seed: int) -> None:
    adaptive = ChurnClassifier(learning_rate=0.02, step_boost=5.0)
    constant = ChurnClassifier(learning_rate=0.02)
    boosted, multipliers = _progressive_losses(adaptive, _stream(2400, seed, FLIP))
    plain, _ = _progressive_losses(constant, _stream(2400, seed, FLIP))
    assert [c for c in adaptive.step_changes if FLIP <= c < FLIP + 40], adaptive.step_changes
    assert max(multipliers[FLIP:FLIP + 50]) > 4.0
    assert multipliers[-1] < 1.01, "decays back to the base step"
    after, after_plain = _mean(boosted[FLIP:FLIP + 300]), _mean(plain[FLIP:FLIP + 300])
    assert after < after_plain - 0.05, (after, after_plain)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_without_a_change_the_step_stays_at_its_base_but_for_rare_alarms(seed: int) -> None:
    """The Page-Hinkley test (7 nats, 0.1 per label) raises about one false alarm per 1,700 labels of this stream
    (24 in 40,000, seeds 0-9); each boosts the step for a few dozen labels and costs no measurable loss."""
    adaptive = ChurnClassifier(learning_rate=0.02, step_boost=5.0)
    constant = ChurnClassifier(learning_rate=0.02)
    boosted, multipliers = _progressive_losses(adaptive, _stream(4000, seed))
    plain, _ = _progressive_losses(constant, _stream(4000, seed))
    assert len(adaptive.step_changes) <= 4, adaptive.step_changes
    assert sum(m < 1.05 for m in multipliers) >= 0.8 * len(multipliers)  # a boost stays above 1.05 ~220 labels
    assert _mean(boosted[500:]) < _mean(plain[500:]) + 0.005


def test_a_model_without_step_boost_never_changes_its_step() -> None:
    model = ChurnClassifier(learning_rate=0.02)
    _, multipliers = _progressive_losses(model, _stream(2400, 1, FLIP))
    assert (model.step_changes, set(multipliers)) == ([], {1.0})


def test_a_drop_of_the_loss_is_no_change() -> None:
    booster = StepBooster(boost=5.0, threshold=7.0, allowance=0.1)
    for loss in [1.5] * 300 + [0.2] * 300:
        booster.observe(loss)
    assert booster.n_changes == 0 and booster.multiplier == 1.0


def test_explanations_stay_exact_while_the_step_is_boosted() -> None:
    model = ChurnClassifier(learning_rate=0.02, step_boost=5.0)
    checked = 0
    for x, y in _stream(2000, 7, FLIP):
        x = {**x, "visits_log": math.log(2.0)}  # the frequency prior is folded in too
        explanation = model.explain_one(x)
        logit = explanation.intercept + sum(explanation.contributions.values())
        assert explanation.score == pytest.approx(logit, abs=1e-12)
        assert 1.0 / (1.0 + math.exp(-logit)) == pytest.approx(model.predict_proba_one(x)[True], abs=1e-12)
        checked += model.step_multiplier > 1.5
        model.learn_one(x, y)
    assert checked > 20, "some predictions were made with boosted weights"


def test_a_boosted_model_checkpoint_restores_mid_boost_and_learns_on_identically() -> None:
    model = ChurnClassifier(learning_rate=0.02, step_boost=5.0)
    stream = list(_stream(2000, 8, FLIP))
    for x, y in stream[:FLIP + 30]:
        model.learn_one(x, y)
    assert model.step_multiplier > 1.5
    restored = pickle.loads(pickle.dumps(model))
    booster = restored._booster
    assert restored._regression.optimizer.lr.booster is booster is restored._regression.intercept_lr.booster
    for x, y in stream[FLIP + 30:]:
        model.learn_one(x, y)
        restored.learn_one(x, y)
    probe = {"recency_hours_log": 4.0, "sessions_7d": 2.0, "noise": 0.0}
    assert restored.predict_proba_one(probe) == model.predict_proba_one(probe)
    assert (restored.version, restored.step_changes) == (model.version, model.step_changes)


def test_a_checkpoint_from_before_adaptive_steps_keeps_constant_steps() -> None:
    model = ChurnClassifier(learning_rate=0.05)
    for x, y in _stream(300, 9):
        model.learn_one(x, y)
    state = dict(model.__dict__)
    for name in ("step_boost", "boost_decay_labels", "change_threshold", "change_allowance", "_booster"):
        del state[name]
    old = ChurnClassifier.__new__(ChurnClassifier)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    probe = {"recency_hours_log": 4.0, "sessions_7d": 2.0, "noise": 0.0}
    assert (restored.step_boost, restored.step_changes, restored.step_multiplier) == (1.0, [], 1.0)
    assert restored.predict_proba_one(probe) == model.predict_proba_one(probe)
    for x, y in _stream(300, 10, flip_at=0):
        restored.learn_one(x, y)
        model.learn_one(x, y)
    assert restored.predict_proba_one(probe) == model.predict_proba_one(probe) and restored.n_learned == 600


def test_the_engine_boosts_only_labels_learned_on_arrival() -> None:
    assert PersonalizationEngine(EngineConfig()).churn.step_boost == 5.0
    with_horizon = PersonalizationEngine(EngineConfig(churn_horizon_ms=90 * 86_400_000))
    assert (with_horizon.churn.step_boost, with_horizon.churn.learning_rate) == (1.0, 0.002)
    tuned = PersonalizationEngine(EngineConfig(churn_step_boost=3.0, churn_boost_decay_labels=20.0,
                                               churn_change_threshold=5.0, churn_change_allowance=0.2))
    churn = tuned.churn
    assert (churn.step_boost, churn.boost_decay_labels, churn.change_threshold, churn.change_allowance) == (
        3.0, 20.0, 5.0, 0.2)
    fresh = tuned.churn_adaptive.factory()  # what a drift retrain builds
    assert fresh.step_boost == 3.0 and fresh is not churn


def test_the_settings_reach_the_engine_defaults() -> None:
    settings, config = Settings.from_env({}), EngineConfig()
    assert settings.churn_config() == {name: getattr(config, name) for name in settings.churn_config()}


@pytest.mark.parametrize(("variable", "value"), [("PULSE_CHURN_STEP_BOOST", "0.5"), ("PULSE_CHURN_STEP_BOOST", "inf"),
                                                 ("PULSE_CHURN_BOOST_DECAY_LABELS", "0"),
                                                 ("PULSE_CHURN_CHANGE_THRESHOLD", "-1"),
                                                 ("PULSE_CHURN_CHANGE_ALLOWANCE", "-0.1")])
def test_bad_step_boost_settings_are_rejected(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize("kwargs", [{"boost": 0.5}, {"boost": math.inf}, {"decay_labels": 0.0}, {"threshold": 0.0},
                                    {"allowance": -1.0}])
def test_bad_booster_parameters_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        StepBooster(**kwargs)


def test_log_loss_of_a_logit_matches_the_probability_form() -> None:
    for logit in (-30.0, -2.0, 0.0, 0.7, 12.0):
        p = 1.0 / (1.0 + math.exp(-logit))
        assert log_loss_of_logit(logit, True) == pytest.approx(-math.log(p), rel=1e-9)
        assert log_loss_of_logit(logit, False) == pytest.approx(-math.log(1.0 - p), rel=1e-9)
