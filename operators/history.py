"""What a user recently saw, when they last got an offer and were handed over to an agent: the memory
business rules and guardrails need. (What they bought, at any time, is in operators.item_memory.)"""

from __future__ import annotations

from typing import Any

MAX_VIEWED = 50
VIEW_EVENTS = frozenset({"page_view", "click", "add_to_cart"})


class InteractionHistory:
    """Bounded per-user history (oldest entries dropped first).

    `purchased` is only read from snapshots taken before purchases moved to `ItemMemory` (which takes them over).

    >>> h = InteractionHistory()
    >>> h.record({"type": "page_view", "item_id": "i1", "ts": 5})
    >>> h.seen_since(5)
    ['i1']
    """

    __slots__ = ("viewed", "purchased", "last_offer_ms", "escalated_at_chat")

    def __init__(self, viewed: dict[str, int] | None = None, purchased: dict[str, int] | None = None,
                 last_offer_ms: int | None = None, escalated_at_chat: int | None = None) -> None:
        self.viewed: dict[str, int] = {} if viewed is None else viewed
        self.purchased: dict[str, int] = {} if purchased is None else purchased
        self.last_offer_ms = last_offer_ms
        self.escalated_at_chat = escalated_at_chat  # chat messages the user had sent when last handed over

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return InteractionHistory, (self.viewed, self.purchased, self.last_offer_ms, self.escalated_at_chat)

    def record(self, event: dict[str, Any]) -> None:
        """Remember item views."""
        item_id = event.get("item_id")
        if item_id is not None and event["type"] in VIEW_EVENTS:
            _remember(self.viewed, item_id, event["ts"], MAX_VIEWED)

    def seen_since(self, since_ms: int) -> list[str]:
        """Items viewed at or after `since_ms`."""
        return [item for item, ts in self.viewed.items() if ts >= since_ms]


def _remember(entries: dict[str, int], item_id: str, ts: int, limit: int) -> None:
    entries.pop(item_id, None)  # re-insert: dict order is recency order
    entries[item_id] = ts
    if len(entries) > limit:
        del entries[next(iter(entries))]
