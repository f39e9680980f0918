"""Online churn classifier: bounded standard scaling followed by logistic regression, with exact explanations."""

from __future__ import annotations

import math

from river import base, linear_model, optim
from river.utils.math import sigmoid

from online_models.explanation import Explanation
from online_models.scaling import BoundedStandardScaler

__all__ = ["ChurnClassifier"]



class DecayingRate(optim.base.Scheduler):
    """`learning_rate / sqrt(1 + t / decay_steps)`: a constant step early, settling as labels accumulate.

    >>> [round(DecayingRate(0.05, 500).get(t), 4) for t in (0, 500, 1500)]
    [0.05, 0.0354, 0.025]
    """

    def __init__(self, learning_rate: float, decay_steps: float) -> None:
        self.learning_rate = learning_rate
        self.decay_steps = decay_steps

    def get(self, t: int) -> float:
        return self.learning_rate / math.sqrt(1.0 + t / self.decay_steps) if self.decay_steps else self.learning_rate


OPTIMIZERS = {"adagrad": optim.AdaGrad, "sgd": optim.SGD}


class ChurnClassifier(base.Classifier):
    """P(churn) from numeric user features: `BoundedStandardScaler | LogisticRegression`, a River classifier.

    Learning updates the scaler, then the regression on the scaled features (as River's pipeline
    does). Predicting and explaining never update the model: both apply the scaler's
    `transform_one` and the regression, so `sigmoid(explain_one(x).score) == predict_proba_one(x)[True]`.

    `optimizer` "sgd" (default) takes steps of `learning_rate / sqrt(1 + labels / decay_steps)`: the
    first few hundred labels move the model quickly (and a flip of what drives churn is followed), then
    the served probabilities settle instead of chasing the latest labels ("adagrad" shrinks each
    weight's step as its own gradients accumulate). Chosen on the CDNOW replay with a 90-day horizon and
    the simulator's scenarios (docs/evaluation.md).

    >>> model = ChurnClassifier(learning_rate=0.1)
    >>> for _ in range(100):
    ...     model.learn_one({"idle_days": 30.0, "visits": 1.0}, True)
    ...     model.learn_one({"idle_days": 1.0, "visits": 9.0}, False)
    >>> model.predict_proba_one({"idle_days": 30.0, "visits": 1.0})[True] > 0.9
    True
    >>> model.predict_one({"idle_days": 1.0, "visits": 9.0})
    False
    >>> model.explain_one({"idle_days": 30.0, "visits": 1.0}).top(1)[0][1] > 0
    True
    >>> model.version
    'churn-logreg@200'
    """

    NAME = "churn-logreg"

    def __init__(self, learning_rate: float = 0.05, l2: float = 0.0, optimizer: str = "sgd",
                 intercept_lr: float = 0.01, bound: float = 3.0, decay_steps: float = 500.0) -> None:
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if not intercept_lr >= 0:
            raise ValueError(f"intercept_lr must be >= 0, got {intercept_lr}")
        if not decay_steps >= 0:
            raise ValueError(f"decay_steps must be >= 0, got {decay_steps}")
        self.learning_rate = learning_rate
        self.l2 = l2
        self.optimizer = optimizer
        self.intercept_lr = intercept_lr
        self.bound = bound
        self.decay_steps = decay_steps
        rate = DecayingRate(learning_rate, decay_steps) if optimizer == "sgd" and decay_steps else learning_rate
        self._scaler = BoundedStandardScaler(bound)
        self._regression = linear_model.LogisticRegression(
            optimizer=OPTIMIZERS[optimizer](rate), l2=l2, intercept_lr=intercept_lr)
        self._n_learned = 0
        self._weights_copy: dict | None = None  # see _weights()

    @classmethod
    def _unit_test_params(cls):
        yield {"learning_rate": 0.1}
        yield {"optimizer": "adagrad", "l2": 0.001}

    @property
    def _multiclass(self) -> bool:
        return False

    @property
    def n_learned(self) -> int:
        """Number of labelled examples learned so far."""
        return self._n_learned

    @property
    def version(self) -> str:
        """Model version, changing with every learned example."""
        return f"{self.NAME}@{self._n_learned}"

    def __setstate__(self, state: dict) -> None:
        if "_transformer" in state:  # a checkpoint from before the model was a River classifier (SGD, no params)
            scaler, regression = state.pop("_transformer"), state["_regression"]
            state.pop("_pipeline", None)
            state.update(_scaler=scaler, learning_rate=regression.optimizer.learning_rate, l2=regression.l2,
                         optimizer="sgd", intercept_lr=regression.intercept_lr.learning_rate, bound=scaler.bound,
                         decay_steps=0.0)
        self.__dict__.update(state)
        self._weights_copy = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_weights_copy": None}  # derived: copied again on first use

    def learn_one(self, x: dict, y: bool) -> None:
        """Update the scaler statistics, then the regression on the scaled example (True = churned)."""
        self._scaler.learn_one(x)
        self._regression.learn_one(self._scaler.transform_one(x), bool(y))
        self._n_learned += 1
        self._weights_copy = None

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        """`{False: 1 - p, True: p}` with p = P(churn); 0.5 before any learning."""
        p = float(sigmoid(self.explain_one(x).score))
        return {False: 1.0 - p, True: p}

    def explain_one(self, x: dict) -> Explanation:
        """Contributions `weight * scaled value` per feature; with the intercept they sum to the logit."""
        contributions = self._scaler.weighted_one(x, self._weights())
        return Explanation(intercept=float(self._regression.intercept), contributions=contributions)

    def _weights(self) -> dict:
        """The regression's weights (River's `weights` copies them: the copy is kept until the next label)."""
        if self._weights_copy is None:
            self._weights_copy = self._regression.weights
        return self._weights_copy
