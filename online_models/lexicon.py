"""VADER's sentiment lexicon and rules, word by word: what each word of a text says before any label.

The `vaderSentiment` package (MIT licence, a dependency of Pulse) ships its lexicon (7,500 words,
emoticons and slang rated -4..+4 by ten people each) and its emoji descriptions inside the package,
so nothing is downloaded. `VaderLexicon.evidence(text)` runs VADER's own rules from the installed
package (negation "not good", intensity "very good" / "kind of good", ALL-CAPS emphasis, contrast
"…, but …", "least", emoji as their descriptions) and keeps the valence each word ends with, plus
the emphasis of "!" and "?", instead of only their normalized sum. The sum of those valences is
VADER's raw score, and `compound` is VADER's compound score (before VADER rounds it to 4 decimals).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    SentimentIntensityAnalyzer,
    SentiText,
)

__all__ = ["COMPOUND_ALPHA", "LexiconEvidence", "VaderLexicon", "vader"]

COMPOUND_ALPHA = 15.0  # VADER's normalization: compound = S / sqrt(S^2 + alpha)


@dataclass(frozen=True, slots=True)
class LexiconEvidence:
    """The valence of each sentiment-bearing word of a text (in order), after VADER's rules.

    `valences` holds (word, valence) for every word whose valence is not 0, and ("!", x) / ("?", x) for
    the emphasis of exclamation and question marks (signed like the text's sum, as VADER adds it).
    """

    valences: tuple[tuple[str, float], ...]

    @property
    def total(self) -> float:
        """VADER's raw score: the sum of the valences."""
        return math.fsum(valence for _, valence in self.valences)

    @property
    def scale(self) -> float:
        """1 / sqrt(total^2 + alpha): the compound is `total * scale`, so each word's share is `valence * scale`."""
        total = self.total
        return 1.0 / math.sqrt(total * total + COMPOUND_ALPHA)

    @property
    def compound(self) -> float:
        """VADER's compound score in (-1, 1), unrounded."""
        return self.total * self.scale


class VaderLexicon:
    """Per-word valences of a text by VADER's lexicon and rules (from the installed `vaderSentiment`).

    >>> lexicon = vader()
    >>> lexicon.evidence("The food was not good").valences
    (('good', -1.406),)
    >>> [word for word, _ in lexicon.evidence("VERY good, but the service was AWFUL!!").valences]
    ['good', 'awful', '!']
    >>> round(lexicon.evidence("I love it :)").compound, 4) == lexicon.polarity("I love it :)")
    True
    """

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()  # reads the lexicon files inside the package

    def polarity(self, text: str) -> float:
        """VADER's own compound score of `text` (rounded to 4 decimals, as the package returns it)."""
        return float(self._analyzer.polarity_scores(text)["compound"])

    def evidence(self, text: str) -> LexiconEvidence:
        """The valences VADER's `polarity_scores` sums for `text`, word by word (same rules, same order)."""
        analyzer = self._analyzer
        text = self._describe_emoji(text)
        sentitext = SentiText(text)
        words = sentitext.words_and_emoticons
        sentiments: list[float] = []
        for i, item in enumerate(words):
            lowered = item.lower()
            if lowered in BOOSTER_DICT or (lowered == "kind" and i < len(words) - 1 and words[i + 1].lower() == "of"):
                sentiments.append(0.0)  # intensifiers act on the next words, they carry no valence themselves
                continue
            sentiments = analyzer.sentiment_valence(0.0, sentitext, item, i, sentiments)
        sentiments = analyzer._but_check(words, sentiments)
        valences = [(word.lower(), float(valence)) for word, valence in zip(words, sentiments) if valence]
        raw = math.fsum(valence for _, valence in valences)
        if raw:
            sign = 1.0 if raw > 0 else -1.0
            exclamation, question = analyzer._amplify_ep(text), analyzer._amplify_qm(text)
            valences += [(mark, sign * value) for mark, value in (("!", exclamation), ("?", question)) if value]
        return LexiconEvidence(tuple(valences))

    def _describe_emoji(self, text: str) -> str:
        """Emoji replaced by their descriptions, spaced as VADER's `polarity_scores` does."""
        emojis = self._analyzer.emojis
        if not any(char in emojis for char in text):
            return text.strip()
        parts: list[str] = []
        after_space = True
        for char in text:
            description = emojis.get(char)
            if description is None:
                parts.append(char)
                after_space = char == " "
                continue
            if not after_space:
                parts.append(" ")
            parts.append(description)
            after_space = False
        return "".join(parts).strip()


@functools.cache
def vader() -> VaderLexicon:
    """The process's one `VaderLexicon` (the lexicon is read once; models refer to it, they do not pickle it)."""
    return VaderLexicon()
