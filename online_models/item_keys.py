"""Stable 64-bit keys of item ids, and a user's recent items as a compact record array.

Per-user memories (what a user consumed, their recent items) hold item keys instead of item id strings:
8 bytes per item, the same in every process and after every restart (unlike Python's salted `hash`).
A key is the first 8 bytes of BLAKE2b of the UTF-8 id, with the lowest bit cleared: that bit is free
for a flag stored next to the key (see operators.item_memory). Two ids share a key with probability
about n^2 / 2^64 for n items (1e-9 for 100 million items): an item would then be excluded with the other.

The user's recent items travel from the per-user state to the recommender as `CONTEXT_RECORD` records
(key, timestamp, interaction strength), newest last, packed in an immutable `bytes` object.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["CONTEXT_RECORD", "KEY_FLAG", "context_records", "item_key"]

KEY_FLAG = np.uint64(1)  # the bit left free in every key
_KEY_MASK = 0xFFFF_FFFF_FFFF_FFFE

# One recent item: its key, the event time (epoch ms) and the interaction strength (1 view .. 5 purchase).
CONTEXT_RECORD = np.dtype([("key", "<u8"), ("ts", "<i8"), ("strength", "u1")])


def item_key(item_id: str) -> int:
    """The item's stable 64-bit key (lowest bit 0).

    >>> item_key("item-1") == item_key("item-1"), item_key("item-1") == item_key("item-2"), item_key("item-1") % 2
    (True, False, 0)
    """
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little") & _KEY_MASK


def context_records(packed: bytes) -> np.ndarray:
    """The records packed in `packed` (a read-only view, oldest first).

    >>> records = np.array([(item_key("a"), 5, 1)], dtype=CONTEXT_RECORD)
    >>> context_records(records.tobytes())["ts"].tolist()
    [5]
    """
    return np.frombuffer(packed, dtype=CONTEXT_RECORD)
