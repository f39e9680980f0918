"""Words of any script: Unicode-normalized, casefolded tokens and bigrams of a chat message.

Text is NFKC-normalized (so "é" typed as one code point or as "e" + combining accent is one word, and
full-width or ligature forms fold to their plain letters) and casefolded ("Straße" and "STRASSE" agree).
Accents are kept: they tell Polish and Ukrainian words apart ("że" is not "ze", "її" is not "ii").
A word is a run of letters, combining marks and digits of any script (of the Basic Multilingual Plane,
where every living script's letters are), with inner apostrophes kept ("don't", "п'ять"). Scripts written
without spaces between words (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) give one token per
character, so their bigrams are character pairs; emoji and other symbols are one token each.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata

__all__ = ["features", "tokenize"]

# Scripts written without spaces between words: each character is a token (code point ranges).
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x3400, 0x4DBF),
             (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'", "`": "'"})
_BMP_END = 0x10000  # word characters are looked up in the Basic Multilingual Plane (a fast regex class)
_SYMBOLS_END = 0x20000  # symbols (emoji) also in the plane above it


@functools.cache
def _pattern() -> re.Pattern[str]:
    """The token pattern, built once from Unicode categories (Python's `\\w` leaves out combining marks)."""
    word: list[tuple[int, int]] = []
    single: list[tuple[int, int]] = []
    unspaced = {code for lo, hi in _UNSPACED for code in range(lo, min(hi + 1, _SYMBOLS_END))}
    for code in range(_SYMBOLS_END):
        if code in unspaced:
            continue
        category = unicodedata.category(chr(code))
        if category[0] in "LMN" and code < _BMP_END:
            _extend(word, code)
        elif category == "So":
            _extend(single, code)
    single = sorted(single + list(_UNSPACED))
    word_class = _char_class(word)
    # Classes of BMP characters only compile to lookup tables; the ones above are tried last.
    bmp_single = [(lo, min(hi, _BMP_END - 1)) for lo, hi in single if lo < _BMP_END]
    astral_single = [(max(lo, _BMP_END), hi) for lo, hi in single if hi >= _BMP_END]
    return re.compile(f"{word_class}+(?:'{word_class}+)*|{_char_class(bmp_single)}"
                      f"|(?=[\\U00010000-\\U0010FFFF]){_char_class(astral_single)}")


def _extend(ranges: list[tuple[int, int]], code: int) -> None:
    if ranges and ranges[-1][1] == code - 1:
        ranges[-1] = (ranges[-1][0], code)
    else:
        ranges.append((code, code))


def _char_class(ranges: list[tuple[int, int]]) -> str:
    parts = (re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)
    return "[" + "".join(parts) + "]"


def tokenize(text: str) -> list[str]:
    """The words of `text`, normalized (NFKC), casefolded, in order.

    >>> tokenize("Don’t LOVE it!! Żółw, привіт 👍")
    ["don't", 'love', 'it', 'żółw', 'привіт', '👍']
    >>> tokenize("Cafe\\u0301 ＡＢＣ Straße") == tokenize("Café abc STRASSE")
    True
    >>> tokenize("很好吃")
    ['很', '好', '吃']
    """
    normalized = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return _pattern().findall(normalized)


def features(text: str) -> list[str]:
    """Words followed by space-joined word bigrams ("not good"): what the learned part counts.

    >>> features("Not good at all")
    ['not', 'good', 'at', 'all', 'not good', 'good at', 'at all']
    """
    words = tokenize(text)
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]

