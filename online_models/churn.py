"""Online churn classifier: bounded standard scaling followed by logistic regression, with exact explanations."""

from __future__ import annotations

from online_models.explanation import Explanation
from online_models.logistic import ExplainedLogisticRegression
from online_models.scaling import BoundedStandardScaler

__all__ = ["ChurnClassifier"]


class ChurnClassifier(ExplainedLogisticRegression):
    """P(churn) from numeric user features: `BoundedStandardScaler() | LogisticRegression` (River).

    Predicting and explaining never update the model: both apply the scaler's `transform_one`
    and the regression exactly as River's pipeline does at inference, so
    `sigmoid(explain_one(x).score) == predict_proba_one(x)`.

    >>> model = ChurnClassifier(learning_rate=0.1)
    >>> for _ in range(100):
    ...     model.learn_one({"idle_days": 30.0, "visits": 1.0}, True)
    ...     model.learn_one({"idle_days": 1.0, "visits": 9.0}, False)
    >>> model.predict_proba_one({"idle_days": 30.0, "visits": 1.0}) > 0.9
    True
    >>> model.explain_one({"idle_days": 30.0, "visits": 1.0}).top(1)[0][1] > 0
    True
    >>> model.version
    'churn-logreg@200'
    """

    NAME = "churn-logreg"

    def __init__(self, learning_rate: float = 0.05, l2: float = 0.0) -> None:
        super().__init__(BoundedStandardScaler(), learning_rate, l2)

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Update the scaler statistics and the regression with one labelled example (True = churned)."""
        self._learn(x, bool(y))

    def predict_proba_one(self, x: dict[str, float]) -> float:
        """P(churn) in [0, 1]; 0.5 before any learning."""
        return self._proba(x)

    def explain_one(self, x: dict[str, float]) -> Explanation:
        """Contributions `weight * scaled value` per feature; with the intercept they sum to the logit."""
        return self._explain(x)
