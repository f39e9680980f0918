"""Online sentiment classifier over chat messages: TF-IDF of unigrams and bigrams, then logistic regression."""

from __future__ import annotations

import re

from river import feature_extraction

from online_models.explanation import Explanation
from online_models.logistic import ExplainedLogisticRegression

__all__ = ["SentimentClassifier", "tokenize"]

LABELS = ("positive", "negative")
_WORD = re.compile(r"(?u)\b\w[\w'-]*\b")


def tokenize(text: str) -> list[str]:
    """Unigrams followed by space-joined bigrams of an already lowercased text.

    >>> tokenize("not good at all")
    ['not', 'good', 'at', 'all', 'not good', 'good at', 'at all']
    """
    words = _WORD.findall(text)
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class SentimentClassifier(ExplainedLogisticRegression):
    """Sentiment of a text in [-1, 1]: River `TFIDF | LogisticRegression` trained on "positive"/"negative".

    Feature names are tokens and bigrams ("not good"), so explanations read naturally; they are
    exact: `explain_one(text).score` is the logit of P(positive). Predicting and explaining never
    update the model.

    >>> model = SentimentClassifier()
    >>> for _ in range(20):
    ...     model.learn_one("great service, thank you", "positive")
    ...     model.learn_one("terrible service, awful", "negative")
    >>> model.predict_one("great, thank you") > 0 > model.predict_one("awful")
    True
    >>> model.explain_one("awful").top(1)[0][0]
    'awful'
    """

    NAME = "sentiment-tfidf-logreg"

    def __init__(self, learning_rate: float = 1.0, l2: float = 0.0) -> None:
        super().__init__(feature_extraction.TFIDF(tokenizer=tokenize), learning_rate, l2)

    def learn_one(self, text: str, label: str) -> None:
        """Learn one labelled message; `label` must be "positive" or "negative"."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        self._learn(text, label == "positive")

    def predict_one(self, text: str) -> float:
        """Sentiment score `2 * P(positive) - 1` in [-1, 1]; 0 before any learning."""
        return 2.0 * self._proba(text) - 1.0

    def explain_one(self, text: str) -> Explanation:
        """Contributions `weight * tf-idf` per token/bigram; with the intercept they sum to logit P(positive)."""
        return self._explain(text)
