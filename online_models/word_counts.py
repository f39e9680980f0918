"""Per-class word counts in a fixed number of hashed buckets: naive Bayes evidence in bounded memory.

Each word (or bigram) is counted in bucket `crc32(word) mod 2**bits` of its class, so memory is two
arrays of `2**bits` doubles whatever the vocabulary (2**19 buckets: 8 MiB), and reading or updating a
message touches only its own words' buckets. CRC-32 is the same in every process, so a snapshot
restored elsewhere reads the same buckets. Words that share a bucket share its counts (with 2**19
buckets and 200,000 distinct words and bigrams, about a third of them share one with another word).
A pickle (model snapshot, checkpoint) holds only the buckets in use, so it costs what was learned.
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["HashedWordCounts"]


class HashedWordCounts:
    """Counts of words per class (positive / negative) with Laplace-smoothed log-likelihood ratios.

    >>> counts = HashedWordCounts(bits=10)
    >>> counts.add({"great": 2.0, "service": 1.0}, positive=True)
    >>> counts.add({"awful": 1.0, "service": 1.0}, positive=False)
    >>> ratios = counts.log_ratios(counts.buckets(["great", "service", "awful"]))
    >>> ratios[0] > 0 > ratios[2]
    True
    """

    def __init__(self, bits: int, smoothing: float = 1.0) -> None:
        if not 1 <= bits <= 30:
            raise ValueError(f"bits must be in 1..30, got {bits}")
        if not smoothing > 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        self.bits = bits
        self.smoothing = smoothing
        self._mask = (1 << bits) - 1
        self._positive = array("d", bytes(8 << bits))
        self._negative = array("d", bytes(8 << bits))
        self.total_positive = 0.0
        self.total_negative = 0.0
        self.buckets_used = 0  # buckets with any count: the vocabulary size of the smoothing

    def __getstate__(self) -> dict[str, Any]:
        """The state with only the non-empty buckets of the count arrays (indices and both counts)."""
        state = self.__dict__.copy()
        positive = np.frombuffer(self._positive, dtype=np.float64)
        negative = np.frombuffer(self._negative, dtype=np.float64)
        used = np.flatnonzero((positive != 0.0) | (negative != 0.0)).astype(np.uint32)
        state["_positive"] = (used.tobytes(), positive[used].tobytes())
        state["_negative"] = negative[used].tobytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        used_bytes, positive_bytes = state["_positive"]
        used = np.frombuffer(used_bytes, dtype=np.uint32)
        positive = np.zeros(1 << state["bits"], dtype=np.float64)
        negative = np.zeros(1 << state["bits"], dtype=np.float64)
        positive[used] = np.frombuffer(positive_bytes, dtype=np.float64)
        negative[used] = np.frombuffer(state["_negative"], dtype=np.float64)
        self.__dict__.update(state)
        self._positive = array("d", positive.tobytes())
        self._negative = array("d", negative.tobytes())

    @property
    def nbytes(self) -> int:
        """Memory of the count arrays (fixed by `bits`)."""
        return 16 << self.bits

    def buckets(self, words: list[str]) -> list[int]:
        """The bucket of each word."""
        mask = self._mask
        return [zlib.crc32(word.encode("utf-8", "surrogatepass")) & mask for word in words]

    def log_ratios(self, buckets: list[int]) -> list[float]:
        """log P(word | positive) - log P(word | negative) per bucket (multinomial naive Bayes, smoothed)."""
        a = self.smoothing
        vocabulary = max(self.buckets_used, 1)
        offset = math.log(self.total_negative + a * vocabulary) - math.log(self.total_positive + a * vocabulary)
        positive, negative, log = self._positive, self._negative, math.log
        return [log(positive[b] + a) - log(negative[b] + a) + offset for b in buckets]

    def add(self, counts: Mapping[str, float], positive: bool) -> None:
        """Count a labelled message's words (word -> non-negative count)."""
        words = list(counts)
        self.add_buckets(self.buckets(words), [counts[word] for word in words], positive)

    def add_buckets(self, buckets: list[int], counts: list[float], positive: bool) -> None:
        """Count a labelled message given its words' buckets and counts."""
        own, other = (self._positive, self._negative) if positive else (self._negative, self._positive)
        for bucket, count in zip(buckets, counts):
            if own[bucket] == 0.0 and other[bucket] == 0.0 and count:
                self.buckets_used += 1
            own[bucket] += count
        if positive:
            self.total_positive += math.fsum(counts)
        else:
            self.total_negative += math.fsum(counts)
