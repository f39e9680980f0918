"""Online sentiment of chat messages: VADER's lexicon as the prior, naive Bayes word evidence learned from labels.

The score of a message (the logit of P(positive)) is

    intercept + lexicon_coef * compound + evidence_coef * evidence

- `compound`: VADER's compound score (online_models.lexicon: its lexicon and negation / intensity /
  contrast rules), a sum over the message's words of `valence * scale`. It makes day one good.
- `evidence`: multinomial naive Bayes log-likelihood ratios of the message's words and bigrams,
  learned from labelled messages in hashed counts (online_models.word_counts; any script, see
  online_models.text), summed and divided by the square root of the message's token count.
- `intercept`, `lexicon_coef` and `evidence_coef` are learned online by logistic regression
  (AdaGrad steps). Labels thus correct the lexicon twice: word by word through the evidence (a word
  the lexicon misjudges, or does not know, gets its own ratio) and as a whole through its weight.

Both parts are sums over words, so the explanation is exact: one contribution per word for the
learned evidence (named by the word or bigram) and one per sentiment-bearing word for the lexicon
(named `lexicon:word`; "!" and "?" carry VADER's punctuation emphasis), summing with the intercept
to the score. Explaining, predicting and learning a message cost what its words cost; memory is
fixed by `hash_bits` (2**19 buckets: 8 MiB of counts), whatever the vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from river import base
from river.utils.math import sigmoid

from online_models.explanation import Explanation
from online_models.lexicon import vader
from online_models.text import features
from online_models.word_counts import HashedWordCounts

__all__ = ["LEXICON_PREFIX", "SentimentClassifier"]

LEXICON_PREFIX = "lexicon:"


@dataclass(frozen=True, slots=True)
class _Message:
    """What the model reads of one message: its tokens' counts and buckets, and the lexicon's valences."""

    tokens: tuple[str, ...]
    counts: tuple[float, ...]
    buckets: tuple[int, ...]
    norm: float  # 1 / sqrt(token count)
    valences: tuple[tuple[str, float], ...]
    scale: float  # VADER's compound = sum(valences) * scale


class SentimentClassifier(base.Classifier):
    """P(positive) of a chat message from VADER's lexicon prior and naive Bayes evidence learned online.

    `x` is a text, or a mapping of tokens to non-negative counts (e.g. River's `BagOfWords` output:
    then only the learned evidence speaks). `labels` are the (negative, positive) labels.

    Parameters
    ----------
    labels
        The negative and the positive label.
    hash_bits
        The word counts use `2**hash_bits` buckets per class (8 bytes each).
    smoothing
        Laplace smoothing of the word counts.
    lexicon_weight
        Initial weight of VADER's compound score in the logit (learned from then on).
    evidence_weight
        Initial weight of the naive Bayes evidence (learned from then on).
    learning_rate
        AdaGrad step of the intercept and the two weights.

    >>> model = SentimentClassifier()
    >>> model.predict_one("The support was great, thank you!")  # the lexicon, before any label
    'positive'
    >>> model.predict_one("Посилка прийшла зламана")  # Ukrainian: not in the lexicon, nothing learned yet
    'positive'
    >>> for _ in range(5):
    ...     model.learn_one("Посилка прийшла зламана", "negative")
    ...     model.learn_one("Дякую, все чудово", "positive")
    >>> model.predict_one("Посилка зламана")
    'negative'
    >>> explanation = model.explain_one("not good at all")
    >>> explanation.contributions["lexicon:good"] < 0  # negated by VADER's rules
    True
    >>> p = model.predict_proba_one("not good at all")["positive"]
    >>> abs(1 / (1 + math.exp(-explanation.score)) - p) < 1e-15
    True
    >>> model.version
    'sentiment-vader-nb@10'
    """

    NAME = "sentiment-vader-nb"

    def __init__(
        self,
        labels: tuple[Hashable, Hashable] = ("negative", "positive"),
        hash_bits: int = 19,
        smoothing: float = 1.0,
        lexicon_weight: float = 3.0,
        evidence_weight: float = 0.5,
        learning_rate: float = 0.3,
    ) -> None:
        if len(labels) != 2 or labels[0] == labels[1]:
            raise ValueError(f"labels must be two distinct labels (negative, positive), got {labels!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.labels = tuple(labels)
        self.hash_bits = hash_bits
        self.smoothing = smoothing
        self.lexicon_weight = lexicon_weight
        self.evidence_weight = evidence_weight
        self.learning_rate = learning_rate
        self.counts = HashedWordCounts(hash_bits, smoothing)
        self.intercept = 0.0
        self.lexicon_coef = float(lexicon_weight)
        self.evidence_coef = float(evidence_weight)
        self._squared_gradients = [0.0, 0.0, 0.0]  # AdaGrad: intercept, lexicon_coef, evidence_coef
        self.n_learned = 0
        self._last: tuple[str, _Message] | None = None  # the last text read (explain, then learn, reads it once)
        vader(), features("")  # load the lexicon and build the tokenizer now (once per process), not on a message

    @classmethod
    def _unit_test_params(cls):
        yield {"labels": (False, True), "hash_bits": 10}

    @property
    def version(self) -> str:
        """Model version, changing with every learned example."""
        return f"{self.NAME}@{self.n_learned}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_last"] = None  # a cache, not state
        return state

    # -- River's protocol ---------------------------------------------------------------------------------------

    def predict_proba_one(self, x: str | Mapping[Any, float], **kwargs: Any) -> dict[Hashable, float]:
        """{negative: 1 - p, positive: p}, p = sigmoid of `explain_one(x).score`; never learns."""
        p = float(sigmoid(self.explain_one(x).score))
        return {self.labels[0]: 1.0 - p, self.labels[1]: p}

    def predict_one(self, x: str | Mapping[Any, float], **kwargs: Any) -> Hashable:
        """The positive label when P(positive) >= 0.5, else the negative one."""
        return self.labels[1] if self.explain_one(x).score >= 0.0 else self.labels[0]

    def learn_one(self, x: str | Mapping[Any, float], y: Hashable) -> None:
        """Learn one labelled message: a logistic step on the intercept and weights, then count its words."""
        if y == self.labels[1]:
            positive = True
        elif y == self.labels[0]:
            positive = False
        else:
            raise ValueError(f"label must be one of {self.labels!r}, got {y!r}")
        message = self._read(x)
        compound = math.fsum(valence for _, valence in message.valences) * message.scale
        ratios = self.counts.log_ratios(list(message.buckets))
        evidence = math.fsum(c * r for c, r in zip(message.counts, ratios)) * message.norm
        error = sigmoid(self.intercept + self.lexicon_coef * compound + self.evidence_coef * evidence) - positive
        steps = self._adagrad((error, error * compound, error * evidence))
        self.intercept -= steps[0]
        self.lexicon_coef -= steps[1]
        self.evidence_coef -= steps[2]
        self.counts.add_buckets(list(message.buckets), list(message.counts), positive)
        self.n_learned += 1

    # -- Pulse's extension ---------------------------------------------------------------------------------------

    def explain_one(self, x: str | Mapping[Any, float]) -> Explanation:
        """Per-word contributions (learned evidence by word, lexicon as `lexicon:word`); with the intercept they
        sum to the logit."""
        message = self._read(x)
        contributions: dict[str, float] = {}
        weight = self.evidence_coef * message.norm
        for token, count, ratio in zip(message.tokens, message.counts, self.counts.log_ratios(list(message.buckets))):
            contributions[token] = weight * count * ratio
        weight = self.lexicon_coef * message.scale
        for word, valence in message.valences:
            name = LEXICON_PREFIX + word
            contributions[name] = contributions.get(name, 0.0) + weight * valence
        return Explanation(intercept=self.intercept, contributions=contributions)

    # -- internals ------------------------------------------------------------------------------------------------

    def _read(self, x: str | Mapping[Any, float]) -> _Message:
        """The message as the model reads it; a text read just before (explain, then learn) is not read again."""
        if isinstance(x, str):
            last = self._last
            if last is not None and last[0] == x:
                return last[1]
            counts: dict[str, float] = {}
            for token in features(x):
                counts[token] = counts.get(token, 0.0) + 1.0
            evidence = vader().evidence(x)
            message = self._message(counts, evidence.valences, evidence.scale)
            self._last = (x, message)
            return message
        counts = {}
        for name, value in x.items():
            value = float(value)
            if not value >= 0.0:
                raise ValueError(f"token counts must be >= 0, got {value!r} for {name!r}")
            if value:
                counts[str(name)] = counts.get(str(name), 0.0) + value
        return self._message(counts, (), 0.0)

    def _message(self, counts: dict[str, float], valences: tuple[tuple[str, float], ...], scale: float) -> _Message:
        tokens = tuple(counts)
        total = math.fsum(counts.values())
        return _Message(tokens, tuple(counts.values()), tuple(self.counts.buckets(list(tokens))),
                        1.0 / math.sqrt(total) if total else 0.0, valences, scale)

    def _adagrad(self, gradients: tuple[float, float, float]) -> list[float]:
        steps = []
        for i, gradient in enumerate(gradients):
            self._squared_gradients[i] += gradient * gradient
            accumulated = self._squared_gradients[i]
            steps.append(self.learning_rate * gradient / math.sqrt(accumulated) if accumulated > 0 else 0.0)
        return steps
