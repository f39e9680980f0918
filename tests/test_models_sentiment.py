import copy
import math
import random

import pytest

from online_models import SentimentClassifier

POSITIVE = ["great", "love", "excellent", "amazing", "happy", "perfect", "wonderful", "fantastic", "helpful", "fast"]
NEGATIVE = ["terrible", "hate", "awful", "broken", "angry", "useless", "horrible", "slow", "refund", "worst"]
NEUTRAL = ["the", "order", "delivery", "app", "support", "my", "was", "is", "this", "product", "today", "service", "and"]


def _message(rng: random.Random, words: list[str]) -> str:
    tokens = rng.sample(NEUTRAL, 4) + rng.sample(words, rng.randint(1, 2))
    rng.shuffle(tokens)
    return " ".join(tokens).capitalize() + rng.choice([".", "!", "?"])


def _labelled(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        out.append((_message(rng, POSITIVE if label == "positive" else NEGATIVE), label))
    return out


def _accuracy(model: SentimentClassifier, data) -> float:
    return sum((model.predict_one(text) > 0) == (label == "positive") for text, label in data) / len(data)


@pytest.fixture(scope="module")
def trained() -> SentimentClassifier:
    model = SentimentClassifier()
    for text, label in _labelled(400, seed=1):
        model.learn_one(text, label)
    return model


def test_learns_to_classify_held_out_messages(trained):
    held_out = _labelled(300, seed=2)
    assert _accuracy(SentimentClassifier(), held_out) < 0.6  # untrained: score 0 everywhere
    assert _accuracy(trained, held_out) > 0.8
    assert trained.n_learned == 400
    assert trained.version == "sentiment-tfidf-logreg@400"


def test_scores_are_in_range_and_polarized(trained):
    assert 0.3 < trained.predict_one("The support was amazing and fast!") <= 1.0
    assert -1.0 <= trained.predict_one("This app is useless, I hate it") < -0.3
    assert SentimentClassifier().predict_one("anything") == 0.0


def test_explanation_is_exact_logit_with_token_and_bigram_names(trained):
    for text, _ in _labelled(200, seed=3) + [("", ""), ("Zzz unknown words only", "")]:
        explanation = trained.explain_one(text)
        p_positive = (trained.predict_one(text) + 1.0) / 2.0
        assert 1.0 / (1.0 + math.exp(-explanation.score)) == pytest.approx(p_positive, abs=1e-9)
        assert all(isinstance(name, str) for name in explanation.contributions)
    e = trained.explain_one("Terrible delivery, awful support")
    assert {"terrible", "awful", "terrible delivery"} <= set(e.contributions)
    assert e.top(1)[0][0] in {"terrible", "awful"}
    assert e.contributions["terrible"] < 0


def test_predict_and_explain_do_not_learn(trained):
    before = copy.deepcopy(trained)
    for text, _ in _labelled(50, seed=4):
        trained.predict_one(text)
        trained.explain_one(text)
    assert trained._transformer.n == before._transformer.n
    assert trained._transformer.dfs == before._transformer.dfs
    assert trained._regression.weights == before._regression.weights


def test_lowercases_and_strips_accents(trained):
    assert trained.predict_one("GREAT") == trained.predict_one("great")
    assert "cafe" in trained.explain_one("Café").contributions


@pytest.mark.parametrize("label", ["neutral", "Positive", "", None, True])
def test_unknown_labels_are_rejected(label):
    model = SentimentClassifier()
    with pytest.raises(ValueError):
        model.learn_one("hello", label)
    assert model.n_learned == 0
