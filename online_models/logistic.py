"""A River transformer followed by logistic regression, with exact explanations: the base of churn and sentiment."""

from __future__ import annotations

from typing import Any

from river import linear_model, optim

from online_models.explanation import Explanation, linear_explanation

__all__ = ["ExplainedLogisticRegression"]


class ExplainedLogisticRegression:
    """`transformer | LogisticRegression` learned online; `explain(x).score` is exactly the logit of `proba(x)`.

    Predicting and explaining never update the model: both apply the transformer's `transform_one`
    and the regression as River's pipeline does at inference. Subclasses name the model (`NAME`) and
    speak their domain's inputs and labels.
    """

    NAME = "logreg"

    def __init__(self, transformer: Any, learning_rate: float, l2: float) -> None:
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self._transformer = transformer
        self._regression = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)
        self._pipeline = self._transformer | self._regression
        self._n_learned = 0

    @property
    def n_learned(self) -> int:
        """Number of labelled examples learned so far."""
        return self._n_learned

    @property
    def version(self) -> str:
        """Model version, changing with every learned example."""
        return f"{self.NAME}@{self._n_learned}"

    def _learn(self, x: Any, y: bool) -> None:
        self._pipeline.learn_one(x, y)
        self._n_learned += 1

    def _proba(self, x: Any) -> float:
        """P(True | x); 0.5 before any learning."""
        return float(self._regression.predict_proba_one(self._transformer.transform_one(x))[True])

    def _explain(self, x: Any) -> Explanation:
        """Contributions `weight * transformed value` per feature; with the intercept they sum to the logit."""
        features = self._transformer.transform_one(x)
        return linear_explanation(self._regression.weights, features, self._regression.intercept)
