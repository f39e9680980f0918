"""Online churn classifier: a fixed frequency prior plus logistic regression on bounded standard scores, with
exact explanations."""

from __future__ import annotations

import math

from river import base, linear_model, optim
from river.utils.math import sigmoid

from online_models.explanation import Explanation
from online_models.scaling import BoundedStandardScaler
from online_models.step_boost import BoostedRate, StepBooster, log_loss_of_logit

__all__ = ["FREQUENCY_FEATURE", "ChurnClassifier"]

FREQUENCY_FEATURE = "visits_log"
"""The feature the frequency prior reads: log of the user's visits (operators.long_term)."""


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


class OffsetLogisticRegression(linear_model.LogisticRegression):
    """River's logistic regression whose logit gets a fixed per-example offset (the prior), while learning too.

    `learn_offset_one(x, y, offset)` takes the gradient of the loss at `offset + intercept + weights · x`, so
    the weights learn what the offset leaves unexplained (a logistic regression with an offset term).
    """

    _offset = 0.0

    def learn_offset_one(self, x: dict, y: bool, offset: float) -> None:
        self._offset = offset
        try:
            self.learn_one(x, y)
        finally:
            self._offset = 0.0

    def _raw_dot_one(self, x: dict) -> float:
        return super()._raw_dot_one(x) + self._offset


class ChurnClassifier(base.Classifier):
    """P(churn) from numeric user features: a fixed frequency prior plus `BoundedStandardScaler | LogisticRegression`.

    logit = `-frequency_prior * visits_log` + intercept + Σ weight · bounded standard score. The prior
    term needs no labels: before any, the odds of churn are 1 / visits (a first visit 0.5, a fourth
    0.2), so users are ranked by how often they came back from the first event on, while labels can
    take H days (the churn horizon) to arrive. The regression learns what the prior leaves unexplained,
    its `visits_log` weight included, so with enough labels the prior is corrected rather than obeyed.

    Learning updates the scaler, then the regression on the scaled features (as River's pipeline
    does), with the prior as a fixed offset of the logit. Predicting and explaining never update the
    model; the explanation folds the prior into the `visits_log` contribution and the intercept, so
    `sigmoid(explain_one(x).score) == predict_proba_one(x)[True]` and contributions + intercept = logit.

    `features` names the inputs the model reads (None: every feature it is given); the others are ignored
    when learning, predicting and explaining.

    `optimizer` "sgd" (default) takes constant steps of `learning_rate` (with `decay_steps` > 0 they
    shrink as `1 / sqrt(1 + labels / decay_steps)`); "adagrad" shrinks each weight's step as its own
    gradients accumulate. Constant steps keep following a drift however long the model has run; the
    engine takes smaller ones when labels have a horizon (`PULSE_CHURN_HORIZON_LEARNING_RATE`). Chosen
    on the CDNOW replay at H = 90, the first half of H = 180 and the simulator's scenarios
    (docs/evaluation.md).

    `step_boost` > 1 makes the steps (of the weights and the intercept) drift-adaptive
    (online_models.step_boost): a Page-Hinkley test on the model's own log-loss per label, taken before
    it learns the label, detects a jump (`change_threshold` nats above the running mean plus
    `change_allowance` per label); the steps are then multiplied by `step_boost`, decaying back to 1
    with time constant `boost_decay_labels` labels. Fast tracking after a change, the base step's low
    variance otherwise; predicting and explaining are unchanged (one linear model). 1 (default): off.

    >>> model = ChurnClassifier(learning_rate=0.1)
    >>> round(model.predict_proba_one({"visits_log": math.log(4)})[True], 6)  # the prior alone: odds 1 / 4
    0.2
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
    >>> adaptive = ChurnClassifier(learning_rate=0.02, step_boost=5.0)
    >>> for i in range(600):  # the label relationship flips after 300 labels
    ...     adaptive.learn_one({"idle_days": float(i % 2)}, bool(i % 2) == (i < 300))
    >>> adaptive.step_changes  # detected 5 labels after the flip; the step then shrinks back to 0.02
    [305]
    """

    NAME = "churn-logreg"

    def __init__(self, learning_rate: float = 0.01, l2: float = 0.0, optimizer: str = "sgd",
                 intercept_lr: float = 0.01, bound: float = 3.0, decay_steps: float = 0.0,
                 frequency_prior: float = 1.0, features: tuple[str, ...] | None = None, step_boost: float = 1.0,
                 boost_decay_labels: float = 50.0, change_threshold: float = 7.0,
                 change_allowance: float = 0.1) -> None:
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
        if not (frequency_prior >= 0 and math.isfinite(frequency_prior)):
            raise ValueError(f"frequency_prior must be a finite number >= 0, got {frequency_prior}")
        self.learning_rate = learning_rate
        self.l2 = l2
        self.optimizer = optimizer
        self.intercept_lr = intercept_lr
        self.bound = bound
        self.decay_steps = decay_steps
        self.frequency_prior = frequency_prior
        self.features = None if features is None else tuple(features)
        self.step_boost = step_boost
        self.boost_decay_labels = boost_decay_labels
        self.change_threshold = change_threshold
        self.change_allowance = change_allowance
        rate = (DecayingRate(learning_rate, decay_steps) if optimizer == "sgd" and decay_steps
                else optim.schedulers.Constant(learning_rate))
        intercept_rate: optim.base.Scheduler = optim.schedulers.Constant(intercept_lr)
        self._booster: StepBooster | None = None  # None: constant steps
        if step_boost != 1.0:
            self._booster = StepBooster(step_boost, boost_decay_labels, change_threshold, change_allowance)
            rate, intercept_rate = BoostedRate(rate, self._booster), BoostedRate(intercept_rate, self._booster)
        self._scaler = BoundedStandardScaler(bound)
        self._regression = OffsetLogisticRegression(
            optimizer=OPTIMIZERS[optimizer](rate), l2=l2, intercept_lr=intercept_rate)
        self._n_learned = 0
        self._weights_copy: dict | None = None  # see _weights()

    @classmethod
    def _unit_test_params(cls):
        yield {"learning_rate": 0.1}
        yield {"optimizer": "adagrad", "l2": 0.001, "frequency_prior": 0.0}
        yield {"features": ("visits_log", "recency_hours_log")}
        yield {"learning_rate": 0.05, "step_boost": 4.0, "boost_decay_labels": 20.0, "change_threshold": 3.0}

    @property
    def _multiclass(self) -> bool:
        return False

    @property
    def n_learned(self) -> int:
        """Number of labelled examples learned so far."""
        return self._n_learned

    @property
    def step_changes(self) -> list[int]:
        """Labels (0-based) at which a jump of the log-loss boosted the step (always empty with `step_boost` 1)."""
        return [] if self._booster is None else list(self._booster.changes)

    @property
    def step_multiplier(self) -> float:
        """The factor the base steps are multiplied by now (1: base steps)."""
        return 1.0 if self._booster is None else self._booster.multiplier

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
        if "frequency_prior" not in state:  # a checkpoint from before the prior: it learned without one
            state["frequency_prior"] = 0.0
            state["_regression"].__class__ = OffsetLogisticRegression
        state.setdefault("features", None)  # ... and from before the model chose its inputs: it read them all
        if "step_boost" not in state:  # ... and from before drift-adaptive steps: it learned with constant ones
            state.update(step_boost=1.0, boost_decay_labels=50.0, change_threshold=7.0, change_allowance=0.1,
                         _booster=None)
        self.__dict__.update(state)
        self._weights_copy = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_weights_copy": None}  # derived: copied again on first use

    def _inputs(self, x: dict) -> dict:
        """The features of `x` the model reads."""
        return x if self.features is None else {name: x[name] for name in self.features if name in x}

    def prior_logit(self, x: dict) -> float:
        """The fixed part of the logit: `-frequency_prior * visits_log` (0 without that feature)."""
        return -self.frequency_prior * x.get(FREQUENCY_FEATURE, 0.0)

    def learn_one(self, x: dict, y: bool) -> None:
        """Update the scaler statistics, then the regression on the scaled example with the prior as offset."""
        x = self._inputs(x)
        if self._booster is not None:  # the label's progressive log-loss sets this step's size
            logit = self._regression._raw_dot_one(self._scaler.transform_one(x)) + self.prior_logit(x)
            self._booster.observe(log_loss_of_logit(logit, bool(y)))
        self._scaler.learn_one(x)
        self._regression.learn_offset_one(self._scaler.transform_one(x), bool(y), self.prior_logit(x))
        self._n_learned += 1
        self._weights_copy = None

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        """`{False: 1 - p, True: p}` with p = P(churn); the prior's alone before any learning."""
        p = float(sigmoid(self.explain_one(x).score))
        return {False: 1.0 - p, True: p}

    def explain_one(self, x: dict) -> Explanation:
        """Contributions `weight * scaled value` per feature; with the intercept they sum to the logit.

        The prior's term is split like the scaled features, around the mean of the labelled examples:
        `-frequency_prior * (visits_log - mean)` joins the `visits_log` contribution and the rest the
        intercept, so a contribution says how the user differs from the average labelled user.
        """
        x = self._inputs(x)
        contributions = self._scaler.weighted_one(x, self._weights())
        intercept = float(self._regression.intercept)
        if self.frequency_prior and FREQUENCY_FEATURE in x:
            mean = self._scaler.means.get(FREQUENCY_FEATURE, 0.0)
            contributions[FREQUENCY_FEATURE] += self.prior_logit(x) - self.prior_logit({FREQUENCY_FEATURE: mean})
            intercept += self.prior_logit({FREQUENCY_FEATURE: mean})
        return Explanation(intercept=intercept, contributions=contributions)

    def _weights(self) -> dict:
        """The regression's weights (River's `weights` copies them: the copy is kept until the next label)."""
        if self._weights_copy is None:
            self._weights_copy = self._regression.weights
        return self._weights_copy
