"""A user's item memory: every item they consumed (for exclusions, any history length) and their recent
items (the recommender's context).

Per-user cost: 8 bytes per distinct item the user ever viewed, clicked, carted or bought (a sorted array of
`online_models.item_keys` keys, the lowest bit flagging a purchase), plus the last `RECENT_ITEMS` distinct
items as 17-byte records (key, time, strength): at most 340 bytes. A user with 1,000 distinct items costs
about 8.3 KB; lookups are binary searches.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from typing import Any

import numpy as np

from online_models.item_keys import CONTEXT_RECORD, KEY_FLAG, item_key

__all__ = ["INTERACTION_STRENGTH", "ITEM_EVENTS", "RECENT_ITEMS", "ItemMemory"]

RECENT_ITEMS = 20  # distinct recent items kept as the recommender's context
# How strongly an interaction signals interest in its item (also the recommender's learning strength).
INTERACTION_STRENGTH: dict[str, float] = {"page_view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
ITEM_EVENTS = frozenset(INTERACTION_STRENGTH)
_RECORD = struct.Struct("<QqB")  # one CONTEXT_RECORD


class ItemMemory:
    """The items one user consumed and their recent ones.

    >>> memory = ItemMemory()
    >>> memory.record("purchase", "tent", 1_000)
    >>> memory.record("page_view", "kayak", 2_000)
    >>> memory.record("page_view", "tent", 3_000)  # a purchase stays a purchase; the tent is recent again
    >>> memory.has_purchased("tent"), memory.has_purchased("kayak"), memory.n_consumed
    (True, False, 2)
    >>> from online_models.item_keys import context_records
    >>> context_records(memory.recent)["ts"].tolist()
    [2000, 3000]
    """

    __slots__ = ("consumed", "recent")

    def __init__(self, consumed: array | None = None, recent: bytes = b"") -> None:
        self.consumed = array("Q") if consumed is None else consumed  # sorted keys | purchase flag
        self.recent = recent  # CONTEXT_RECORD records, oldest first; replaced (never mutated) on update

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return ItemMemory, (self.consumed, self.recent)

    @property
    def n_consumed(self) -> int:
        """Distinct items consumed."""
        return len(self.consumed)

    def record(self, event_type: str, item_id: str, ts: int) -> None:
        """Remember an item interaction (`event_type` in `ITEM_EVENTS`)."""
        key = item_key(item_id)
        purchased = event_type == "purchase"
        consumed = self.consumed
        at = bisect.bisect_left(consumed, key)
        if at < len(consumed) and consumed[at] >> 1 == key >> 1:
            if purchased:
                consumed[at] = key | 1
        else:
            consumed.insert(at, key | 1 if purchased else key)
        self.recent = _with_recent(self.recent, key, ts, int(INTERACTION_STRENGTH[event_type]))

    def has_purchased(self, item_id: str) -> bool:
        """Whether the user bought the item (at any time)."""
        key = item_key(item_id)
        at = bisect.bisect_left(self.consumed, key)
        return at < len(self.consumed) and self.consumed[at] == key | 1

    def purchased_keys(self) -> np.ndarray:
        """Keys of every item the user bought (a new array)."""
        keys = np.array(self.consumed, dtype=np.uint64)
        return keys[(keys & KEY_FLAG) == KEY_FLAG] ^ KEY_FLAG

    def consumed_keys(self) -> np.ndarray:
        """Keys of every item the user viewed, clicked, carted or bought (a new array)."""
        return np.array(self.consumed, dtype=np.uint64) & ~KEY_FLAG


def _with_recent(packed: bytes, key: int, ts: int, strength: int) -> bytes:
    """`packed` with the item as the newest record (an older record of it dropped), at most RECENT_ITEMS."""
    size = CONTEXT_RECORD.itemsize
    key_bytes = key.to_bytes(8, "little")
    at = packed.find(key_bytes)
    while at >= 0 and at % size:  # a match inside another record's time or strength
        at = packed.find(key_bytes, at + 1)
    if at >= 0:
        packed = packed[:at] + packed[at + size:]
    return (packed + _RECORD.pack(key, ts, strength))[-RECENT_ITEMS * size:]
