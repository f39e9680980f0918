"""The churn model's frequency prior in the engine: served before any label, split exactly in the explanation, set
by the settings; the step size follows whether labels have a horizon."""

from __future__ import annotations

import math
import random

import pytest

from evaluation.replay import Replay
from online_models import ChurnClassifier
from operators.engine import EngineConfig, PersonalizationEngine
from pulse.config import ConfigError, Settings

DAY_S, DAY = 86_400, 86_400_000
T0 = 1_700_000_000_000


def purchase(event_id: str, ts: int, user: str = "u") -> dict:
    return {"event_id": event_id, "user_id": user, "type": "purchase", "ts": ts, "item_id": "i1", "category": "c",
            "price": 20.0}


def replay(**config: object) -> Replay:
    engine = PersonalizationEngine(EngineConfig(winback_min_idle_ms=0, **config))  # type: ignore[arg-type]
    return Replay(engine, idle_ttl_s=DAY_S, retention_s=365 * DAY_S)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_before_any_label_the_engine_serves_odds_of_one_per_visit_and_explains_them_exactly() -> None:
    r = replay()
    served = [r.event(purchase(f"p{n}", T0 + n * 7 * DAY)) for n in range(4)]  # four visits a week apart
    assert r.engine.churn.n_learned == 0
    assert [d["churn"]["probability"] for d in served] == pytest.approx([1 / 2, 1 / 3, 1 / 4, 1 / 5])
    explanation = served[-1]["churn"]["explanation"]
    assert explanation["intercept"] == 0.0, "before any label the scaler's means are 0: the prior is all visits_log's"
    assert explanation["contributions"]["visits_log"] == pytest.approx(-math.log(4))
    assert sum(explanation["contributions"].values()) + explanation["intercept"] == pytest.approx(_logit(1 / 5))


def test_without_the_prior_the_engine_serves_one_half_before_any_label() -> None:
    r = replay(churn_frequency_prior=0.0)
    served = [r.event(purchase(f"p{n}", T0 + n * 7 * DAY)) for n in range(3)]
    assert [d["churn"]["probability"] for d in served] == [0.5, 0.5, 0.5]


def test_the_step_size_follows_the_label_horizon() -> None:
    without = PersonalizationEngine(EngineConfig(churn_learning_rate=0.03, churn_horizon_learning_rate=0.004))
    with_horizon = PersonalizationEngine(EngineConfig(churn_horizon_ms=90 * DAY, churn_learning_rate=0.03,
                                                      churn_horizon_learning_rate=0.004, churn_frequency_prior=0.5))
    assert (without.churn.learning_rate, without.churn.frequency_prior) == (0.03, 1.0)
    assert (with_horizon.churn.learning_rate, with_horizon.churn.frequency_prior) == (0.004, 0.5)


def test_the_prior_is_split_around_the_labelled_mean_and_the_explanation_stays_exact() -> None:
    rng = random.Random(11)
    model = ChurnClassifier(learning_rate=0.05, frequency_prior=0.8)
    for _ in range(2000):
        visits = rng.randint(1, 20)
        x = {"visits_log": math.log(visits), "recency_hours_log": rng.uniform(0.0, 6.0)}
        logit = 1.0 * (x["recency_hours_log"] - 3.0) - 0.5 * x["visits_log"]
        model.learn_one(x, rng.random() < 1.0 / (1.0 + math.exp(-logit)))
    mean = model._scaler.means["visits_log"]
    weights, scaled = model._regression.weights, model._scaler.transform_one
    for visits in (1, 3, 20):
        x = {"visits_log": math.log(visits), "recency_hours_log": 2.0}
        e = model.explain_one(x)
        assert e.score == pytest.approx(_logit(model.predict_proba_one(x)[True]), abs=1e-9)
        assert e.intercept == pytest.approx(model._regression.intercept - 0.8 * mean)
        learned = weights["visits_log"] * scaled(x)["visits_log"]
        assert e.contributions["visits_log"] == pytest.approx(learned - 0.8 * (x["visits_log"] - mean))
        assert e.contributions["recency_hours_log"] == pytest.approx(weights["recency_hours_log"] *
                                                                     scaled(x)["recency_hours_log"])
    at_mean = model.explain_one({"visits_log": mean, "recency_hours_log": 2.0})
    assert at_mean.contributions["visits_log"] == pytest.approx(0.0, abs=1e-9), "the average user: no visits effect"


@pytest.mark.parametrize(("variable", "value"), [("PULSE_CHURN_FREQUENCY_PRIOR", "-0.5"),
                                                 ("PULSE_CHURN_LEARNING_RATE", "0"),
                                                 ("PULSE_CHURN_HORIZON_LEARNING_RATE", "-0.1")])
def test_bad_churn_settings_are_rejected(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_the_settings_reach_the_engine_defaults() -> None:
    settings = Settings.from_env({})
    config = EngineConfig()
    assert (settings.churn_learning_rate, settings.churn_horizon_learning_rate, settings.churn_frequency_prior) == (
        config.churn_learning_rate, config.churn_horizon_learning_rate, config.churn_frequency_prior)


def test_the_model_reads_only_its_features_and_explains_only_those() -> None:
    rng = random.Random(5)
    chosen = ChurnClassifier(learning_rate=0.05, features=("visits_log", "recency_hours_log"))
    plain = ChurnClassifier(learning_rate=0.05)
    for _ in range(500):
        x = {"visits_log": math.log(rng.randint(1, 9)), "recency_hours_log": rng.uniform(0.0, 6.0)}
        y = rng.random() < 1.0 / (1.0 + math.exp(-(x["recency_hours_log"] - 3.0)))
        chosen.learn_one({**x, "tenure_days_log": rng.uniform(0.0, 5.0)}, y)  # an extra input, ignored
        plain.learn_one(x, y)
    probe = {"visits_log": math.log(3), "recency_hours_log": 5.0}
    assert chosen.predict_proba_one({**probe, "tenure_days_log": 4.0}) == plain.predict_proba_one(probe)
    assert set(chosen.explain_one({**probe, "tenure_days_log": 4.0}).contributions) == set(probe)


def test_the_engine_serves_the_model_features_and_shows_every_churn_feature() -> None:
    from operators.features import CHURN_FEATURES, CHURN_MODEL_FEATURES

    r = replay()
    decision = r.event(purchase("p1", T0))
    assert set(decision["churn"]["explanation"]["contributions"]) == set(CHURN_MODEL_FEATURES)
    assert "tenure_days_log" in decision["features"] and "tenure_days_log" not in CHURN_MODEL_FEATURES
    assert set(CHURN_MODEL_FEATURES) < set(CHURN_FEATURES) and "visits_log" in CHURN_MODEL_FEATURES


def test_a_checkpoint_from_before_the_model_chose_its_features_reads_them_all() -> None:
    import pickle

    model = ChurnClassifier(learning_rate=0.05)
    for n in range(50):
        model.learn_one({"visits_log": math.log(1 + n % 5), "tenure_days_log": n / 10}, n % 3 == 0)
    state = dict(model.__dict__)
    del state["features"]
    old = ChurnClassifier.__new__(ChurnClassifier)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    probe = {"visits_log": 1.0, "tenure_days_log": 2.0}
    assert restored.features is None and restored.predict_proba_one(probe) == model.predict_proba_one(probe)
