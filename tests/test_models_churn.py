import copy
import math
import random

import pytest

from online_models import ChurnClassifier
from online_models.metrics import roc_auc


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _stream(n: int, seed: int = 1):
    """Users whose churn follows a known logistic model of a few behavioural features."""
    rng = random.Random(seed)
    for _ in range(n):
        x = {
            "recency_hours_log": rng.uniform(0.0, 6.0),
            "sessions_7d": float(rng.randint(0, 20)),
            "dwell_seconds": rng.gauss(60.0, 20.0),
        }
        x.update({f"noise_{i}": rng.gauss(0.0, 1.0) for i in range(8)})
        logit = (1.2 * (x["recency_hours_log"] - 3.0) - 0.25 * (x["sessions_7d"] - 10.0)
                 - 0.02 * (x["dwell_seconds"] - 60.0))
        yield x, rng.random() < _sigmoid(logit)


def test_progressive_validation_auc_improves():
    model = ChurnClassifier()
    scores, labels = [], []
    for x, y in _stream(3000):
        scores.append(model.predict_proba_one(x)[True])
        labels.append(y)
        model.learn_one(x, y)
    early, late = roc_auc(labels[:100], scores[:100]), roc_auc(labels[-1000:], scores[-1000:])
    assert late > 0.75
    assert late > early + 0.05
    assert model.n_learned == 3000
    assert model.version == "churn-logreg@3000"


def test_prior_to_learning_probability_is_one_half():
    assert ChurnClassifier().predict_proba_one({"a": 3.0}) == {False: 0.5, True: 0.5}


def test_before_any_label_the_frequency_prior_ranks_by_visits():
    model = ChurnClassifier()
    p = [model.predict_proba_one({"visits_log": math.log(n), "recency_hours_log": 2.0})[True] for n in (1, 2, 4, 9)]
    assert p == pytest.approx([1 / 2, 1 / 3, 1 / 5, 1 / 10])  # odds of churn 1 / visits
    explanation = model.explain_one({"visits_log": math.log(4), "recency_hours_log": 2.0})
    assert explanation.contributions == {"visits_log": pytest.approx(-math.log(4)), "recency_hours_log": 0.0}
    assert explanation.intercept == 0.0
    assert ChurnClassifier(frequency_prior=0.0).predict_proba_one({"visits_log": 2.0})[True] == 0.5


def test_labels_correct_the_prior_when_it_is_wrong():
    """Frequent visitors who churn (the prior says they stay): the regression learns to overrule it."""
    rng = random.Random(4)
    model = ChurnClassifier(learning_rate=0.05)
    for _ in range(3000):
        visits = rng.randint(1, 30)
        x = {"visits_log": math.log(visits)}
        model.learn_one(x, rng.random() < _sigmoid(1.5 * (math.log(visits) - 1.5)))
    low, high = (model.predict_proba_one({"visits_log": math.log(n)})[True] for n in (1, 30))
    assert high > 0.7 and low < 0.2
    e = model.explain_one({"visits_log": math.log(30)})
    assert _sigmoid(e.score) == pytest.approx(high, abs=1e-12) and e.contributions["visits_log"] > 0


def test_explanation_is_exact_logit():
    model = ChurnClassifier(learning_rate=0.1, l2=0.001)
    stream = list(_stream(600, seed=2))
    for x, y in stream[:500]:
        model.learn_one(x, y)
    for x, _ in stream[500:] + [({"recency_hours_log": 50.0, "sessions_7d": 0.0}, None), ({"unseen": 1.0}, None)]:
        explanation = model.explain_one(x)
        assert set(explanation.contributions) == set(x)
        assert _sigmoid(explanation.score) == pytest.approx(model.predict_proba_one(x)[True], abs=1e-9)


def test_explanation_signs_follow_the_true_model():
    model = ChurnClassifier()
    for x, y in _stream(3000):
        model.learn_one(x, y)
    e = model.explain_one({"recency_hours_log": 6.0, "sessions_7d": 0.0, "dwell_seconds": 60.0})
    assert e.contributions["recency_hours_log"] > 0
    assert e.contributions["sessions_7d"] > 0  # few sessions -> pushes towards churn
    assert e.top(1)[0][0] in {"recency_hours_log", "sessions_7d"}


def test_predict_and_explain_do_not_learn():
    model = ChurnClassifier()
    for x, y in _stream(200):
        model.learn_one(x, y)
    before = copy.deepcopy(model)
    for x, _ in _stream(200, seed=3):
        model.predict_proba_one(x)
        model.explain_one(x)
    assert model._scaler.counts == before._scaler.counts
    assert dict(model._scaler.means) == dict(before._scaler.means)
    assert dict(model._scaler.vars) == dict(before._scaler.vars)
    assert model._regression.weights == before._regression.weights
    assert model._regression.intercept == before._regression.intercept
    assert model.n_learned == 200


def test_same_stream_same_model():
    a, b = ChurnClassifier(), ChurnClassifier()
    for x, y in _stream(300):
        a.learn_one(x, y)
        b.learn_one(x, y)
    probe = {"recency_hours_log": 4.0, "sessions_7d": 2.0, "dwell_seconds": 30.0}
    assert a.predict_proba_one(probe) == b.predict_proba_one(probe)


@pytest.mark.parametrize("kwargs", [{"learning_rate": 0.0}, {"l2": -1.0}, {"optimizer": "adam"},
                                    {"intercept_lr": -1.0}, {"frequency_prior": -1.0},
                                    {"frequency_prior": math.inf}])
def test_bad_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ChurnClassifier(**kwargs)


def test_a_checkpoint_of_the_earlier_model_still_loads():
    """Model checkpoints pickled before the model was a River classifier keep predicting the same."""
    import pickle

    from river import linear_model, optim

    from online_models.scaling import BoundedStandardScaler

    scaler, regression = BoundedStandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    pipeline = scaler | regression
    for x, y in _stream(200):
        pipeline.learn_one(x, y)
    old = ChurnClassifier.__new__(ChurnClassifier)
    old.__dict__.update(_transformer=scaler, _regression=regression, _pipeline=pipeline, _n_learned=200)
    restored = pickle.loads(pickle.dumps(old))
    probe = {"recency_hours_log": 4.0, "sessions_7d": 2.0, "dwell_seconds": 30.0}
    assert restored.predict_proba_one(probe)[True] == pytest.approx(pipeline.predict_proba_one(probe)[True], abs=1e-12)
    assert (restored.optimizer, restored.learning_rate, restored.version) == ("sgd", 0.05, "churn-logreg@200")


def test_a_checkpoint_from_before_the_prior_keeps_predicting_the_same():
    """A model pickled before the frequency prior existed restores without one and goes on learning."""
    import pickle

    from river import linear_model

    model = ChurnClassifier(frequency_prior=0.0)
    for x, y in _stream(200):
        model.learn_one({**x, "visits_log": 1.0}, y)
    state = dict(model.__dict__)
    del state["frequency_prior"]
    state["_regression"] = copy.deepcopy(state["_regression"])
    state["_regression"].__class__ = linear_model.LogisticRegression  # what older checkpoints hold
    old = ChurnClassifier.__new__(ChurnClassifier)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    probe = {"recency_hours_log": 4.0, "sessions_7d": 2.0, "dwell_seconds": 30.0, "visits_log": 1.0}
    assert restored.frequency_prior == 0.0
    assert restored.predict_proba_one(probe) == model.predict_proba_one(probe)
    restored.learn_one(probe, True)
    assert restored.n_learned == 201


def test_explanation_reads_rivers_current_weights_exactly():
    """explain_one fuses scaling and weighting and keeps a copy of River's weights until the next label."""
    model = ChurnClassifier(learning_rate=0.1)
    for x, y in _stream(400, seed=4):
        explanation = model.explain_one(x)
        scaled = model._scaler.transform_one(x)
        weights = model._regression.weights
        assert explanation.contributions == {name: weights.get(name, 0.0) * value for name, value in scaled.items()}
        assert explanation.intercept == model._regression.intercept
        river = model._regression.predict_proba_one(scaled)[True]  # River's own logistic regression
        assert _sigmoid(explanation.score) == pytest.approx(river, rel=1e-12)
        model.learn_one(x, y)
