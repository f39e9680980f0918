import math
import pickle
import random

import pytest

from online_models import SentimentClassifier
from online_models.lexicon import vader
from online_models.sentiment import LEXICON_PREFIX
from online_models.text import features, tokenize

POSITIVE = ["great", "love", "excellent", "amazing", "happy", "perfect", "wonderful", "fantastic", "helpful", "fast"]
NEGATIVE = ["terrible", "hate", "awful", "broken", "angry", "useless", "horrible", "slow", "refund", "worst"]
NEUTRAL = ["the", "order", "delivery", "app", "support", "my", "was", "is", "this", "product", "today", "service",
           "and"]

# Ukrainian and Polish shop chat: none of these words is in VADER's (English) lexicon (checked below).
LANGUAGES = {
    "uk": {"positive": ["чудово", "дякую", "швидко", "задоволений", "рекомендую", "відмінний", "зручно", "приємно"],
           "negative": ["жахливо", "зламаний", "повільно", "розчарований", "погано", "повернення", "гірший", "обман"],
           "neutral": ["замовлення", "доставка", "товар", "сьогодні", "мій", "був", "це", "підтримка", "ваш",
                       "магазин"]},
    "pl": {"positive": ["świetnie", "dziękuję", "szybko", "zadowolony", "polecam", "doskonały", "wygodnie", "miło"],
           "negative": ["okropnie", "zepsuty", "wolno", "rozczarowany", "źle", "zwrot", "najgorszy", "oszustwo"],
           "neutral": ["zamówienie", "dostawa", "produkt", "dzisiaj", "mój", "był", "to", "obsługa", "wasz", "sklep"]},
}


def _message(rng: random.Random, neutral: list[str], words: list[str]) -> str:
    tokens = rng.sample(neutral, 4) + rng.sample(words, rng.randint(1, 2))
    rng.shuffle(tokens)
    return " ".join(tokens).capitalize() + rng.choice([".", "!", "?"])


def _labelled(n: int, seed: int, vocabulary: dict[str, list[str]] | None = None) -> list[tuple[str, str]]:
    vocabulary = vocabulary or {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        out.append((_message(rng, vocabulary["neutral"], vocabulary[label]), label))
    return out


def _accuracy(model: SentimentClassifier, data) -> float:
    return sum(model.predict_one(text) == label for text, label in data) / len(data)


def _logit(model: SentimentClassifier, text: str) -> float:
    """The model's score recomputed from its parts, independently of `explain_one`."""
    counts: dict[str, float] = {}
    for token in features(text):
        counts[token] = counts.get(token, 0.0) + 1.0
    ratios = model.counts.log_ratios(model.counts.buckets(list(counts)))
    total = sum(counts.values())
    evidence = sum(c * r for c, r in zip(counts.values(), ratios)) / math.sqrt(total) if total else 0.0
    return model.intercept + model.lexicon_coef * vader().evidence(text).compound + model.evidence_coef * evidence


@pytest.fixture(scope="module")
def trained() -> SentimentClassifier:
    model = SentimentClassifier()
    for text, label in _labelled(400, seed=1):
        model.learn_one(text, label)
    return model


def test_the_lexicon_makes_day_one_good():
    model = SentimentClassifier()
    assert _accuracy(model, _labelled(300, seed=2)) > 0.95
    assert model.predict_one("The parcel wasn't good") == "negative"  # negation
    assert model.predict_proba_one("Very good!!")["positive"] > model.predict_proba_one("good")["positive"] > 0.5
    assert model.predict_proba_one("anything") == {"negative": 0.5, "positive": 0.5}


def test_labels_make_it_better_and_correct_the_lexicon(trained):
    model = SentimentClassifier()
    # In this shop "sick" praises (the lexicon rates it -2.3) and "dispatch" complains (not in the lexicon).
    shop = [("that jacket is sick", "positive"), ("sick colours, sick fit", "positive"),
            ("still waiting for dispatch", "negative"), ("dispatch again, nothing moves", "negative")]
    assert model.predict_one("sick design") == "negative"
    for _ in range(15):
        for text, label in shop:
            model.learn_one(text, label)
    assert model.predict_one("sick design") == "positive"
    assert model.predict_one("dispatch") == "negative"
    assert trained.n_learned == 400 and trained.version == "sentiment-vader-nb@400"
    assert _accuracy(trained, _labelled(300, seed=3)) > 0.95


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_learns_a_language_the_lexicon_does_not_know(language):
    vocabulary = LANGUAGES[language]
    train, held_out = _labelled(300, seed=4, vocabulary=vocabulary), _labelled(300, seed=5, vocabulary=vocabulary)
    assert all(not vader().evidence(text).valences for text, _ in train + held_out)  # the lexicon is silent
    model = SentimentClassifier()
    assert _accuracy(model, held_out) < 0.6
    for text, label in train:
        model.learn_one(text, label)
    assert _accuracy(model, held_out) > 0.95
    word = vocabulary["negative"][0]
    shouted = model.explain_one(f"{word.upper()}!")
    assert shouted.contributions[word] < 0  # casefolded: the same word as the lowercase one it learned


def test_tokens_of_any_script_are_normalized():
    assert tokenize("Żółw ŻÓŁW z\u0307o\u0301łw") == ["żółw"] * 3  # casefolded, combining accents composed (NFKC)
    assert tokenize("Ґанок, п’ять і ЇЖАК") == ["ґанок", "п'ять", "і", "їжак"]  # Ukrainian letters kept as they are
    assert tokenize("बहुत अच्छा") == ["बहुत", "अच्छा"]  # combining vowel signs belong to the word
    assert tokenize("很好 ดีมาก 😡") == ["很", "好", "ด", "ี", "ม", "า", "ก", "😡"]
    assert features("nie polecam") == ["nie", "polecam", "nie polecam"]


def test_explanations_are_exact_and_per_word(trained):
    texts = [text for text, _ in _labelled(200, seed=6)] + [
        "", "Zzz unknown words only", "not good at all", "VERY good, but the delivery was AWFUL!!!", "Дякую 😀",
        "Terrible delivery, awful support", "the the the",
    ]
    for text in texts:
        explanation = trained.explain_one(text)
        assert explanation.score == pytest.approx(_logit(trained, text), abs=1e-12)
        proba = trained.predict_proba_one(text)
        assert proba["positive"] == 1.0 / (1.0 + math.exp(-explanation.score)) or proba["positive"] == pytest.approx(
            1.0 / (1.0 + math.exp(-explanation.score)), abs=1e-15)
        assert proba["negative"] + proba["positive"] == pytest.approx(1.0, abs=1e-15)
        lexicon = math.fsum(v for k, v in explanation.contributions.items() if k.startswith(LEXICON_PREFIX))
        assert lexicon == pytest.approx(trained.lexicon_coef * vader().evidence(text).compound, abs=1e-12)
    e = trained.explain_one("Terrible delivery, awful support")
    assert {"terrible", "awful", "terrible delivery", "lexicon:terrible", "lexicon:awful"} <= set(e.contributions)
    assert e.contributions["terrible"] < 0 and e.contributions["lexicon:terrible"] < 0
    assert trained.explain_one("not good at all").contributions["lexicon:good"] < 0  # VADER's negation rule


def test_predict_and_explain_do_not_learn(trained):
    before = pickle.dumps(trained)
    for text, _ in _labelled(50, seed=7):
        trained.predict_one(text)
        trained.predict_proba_one(text)
        trained.explain_one(text)
    assert pickle.dumps(trained) == before


def test_learning_touches_only_the_messages_words_and_memory_is_fixed():
    model = SentimentClassifier(hash_bits=16)
    assert len(pickle.dumps(model)) < 2_000  # a snapshot holds the buckets in use only
    rng = random.Random(8)
    for i in range(30_000):  # 90,000 distinct words and bigrams: more than the 65,536 buckets
        model.learn_one(f"word{rng.random()} other{i}", rng.choice(["positive", "negative"]))
    assert len(model.counts._positive) == len(model.counts._negative) == 2**16  # memory fixed by hash_bits
    assert len(pickle.dumps(model)) < 2_000 + 2**16 * 20
    positive, negative = model.counts._positive[:], model.counts._negative[:]
    model.learn_one("brand new words here", "positive")
    changed = {i for i in range(len(positive)) if model.counts._positive[i] != positive[i]
               or model.counts._negative[i] != negative[i]}
    assert changed == set(model.counts.buckets(features("brand new words here")))
    assert model.counts.nbytes == 2 * 8 * 2**16


def test_a_restored_snapshot_predicts_the_same(trained):
    trained.explain_one("great service")  # fills the read cache, which is not state
    restored = pickle.loads(pickle.dumps(trained))
    copy = pickle.loads(pickle.dumps(trained))
    data = _labelled(50, seed=9)
    texts = [text for text, _ in data]
    assert [restored.predict_proba_one(text) for text in texts] == [trained.predict_proba_one(text) for text in texts]
    for text, label in data:
        restored.learn_one(text, label)
        copy.learn_one(text, label)
    assert restored.n_learned == trained.n_learned + 50
    assert pickle.dumps(restored) == pickle.dumps(copy)


@pytest.mark.parametrize("label", ["neutral", "Positive", "", None, True])
def test_unknown_labels_are_rejected(label):
    model = SentimentClassifier()
    with pytest.raises(ValueError):
        model.learn_one("hello", label)
    assert model.n_learned == 0


def test_bag_of_words_input_and_bad_counts():
    model = SentimentClassifier()
    for _ in range(10):
        model.learn_one({"great": 1, "service": 2}, "positive")
        model.learn_one({"late": 1, "service": 1}, "negative")
    assert model.predict_one({"great": 1}) == "positive" and model.predict_one({"late": 3}) == "negative"
    with pytest.raises(ValueError, match="counts must be >= 0"):
        model.predict_one({"great": -1})
