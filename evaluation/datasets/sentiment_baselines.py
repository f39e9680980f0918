"""Sentiment baselines replayed beside Pulse: each predicts a message's label before learning it.

- `Majority`: the label seen most often so far.
- `Lexicon`: the sign of VADER's compound score (vaderSentiment's own `polarity_scores`); a text
  without any sentiment-bearing word (compound exactly 0) gets the majority label so far.
- `RiverPipeline`: a River text pipeline, `BagOfWords | MultinomialNB` (River's defaults) or
  `TFIDF | LogisticRegression` with SGD step 1.0 (Pulse's former sentiment model's step; River's default
  0.01 learned too slowly to leave the majority class within these sets; of 0.3, 1 and 3, on the first
  half of each set, 1 and 3 were within 0.013 of each other).
"""

from __future__ import annotations

from collections import Counter

from river import feature_extraction, linear_model, naive_bayes, optim

from online_models.lexicon import vader

__all__ = ["BASELINES", "Lexicon", "Majority", "RiverPipeline"]


class Majority:
    """The most frequent label so far ("positive" before any, and on ties)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def predict(self, text: str) -> str:
        return "negative" if self.counts["negative"] > self.counts["positive"] else "positive"

    def learn(self, text: str, label: str) -> None:
        self.counts[label] += 1


class Lexicon(Majority):
    """VADER's compound sign; the majority label when the compound is 0.

    >>> lexicon = Lexicon()
    >>> lexicon.predict("what a lovely day"), lexicon.predict("the parcel was lost"), lexicon.predict("ok")
    ('positive', 'negative', 'positive')
    """

    def predict(self, text: str) -> str:
        compound = vader().polarity(text)
        if compound > 0:
            return "positive"
        if compound < 0:
            return "negative"
        return super().predict(text)


class RiverPipeline(Majority):
    """A River text pipeline (label "positive" as True); the majority label until it has learned both labels."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "nb":
            self.model = feature_extraction.BagOfWords() | naive_bayes.MultinomialNB()
        elif kind == "tfidf-lr":
            self.model = feature_extraction.TFIDF() | linear_model.LogisticRegression(optimizer=optim.SGD(1.0))
        else:
            raise ValueError(f"unknown pipeline {kind!r}")

    def predict(self, text: str) -> str:
        if len(self.counts) < 2:
            return super().predict(text)
        return "positive" if self.model.predict_one(text) else "negative"

    def learn(self, text: str, label: str) -> None:
        super().learn(text, label)
        self.model.learn_one(text, label == "positive")


# method name -> factory; the names are the report's
BASELINES = {
    "majority": Majority,
    "lexicon (VADER)": Lexicon,
    "BagOfWords | MultinomialNB": lambda: RiverPipeline("nb"),
    "TF-IDF | LogisticRegression": lambda: RiverPipeline("tfidf-lr"),
}
