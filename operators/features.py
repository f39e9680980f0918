"""Per-user behavioural features, updated event by event (the per-key state of the dataflow).

The state is a handful of numbers, a small bounded dict of category affinities, a bounded history
of viewed/purchased items (for business rules) and the decisions awaiting outcomes (attribution),
so Bytewax snapshots stay cheap.
"""

from __future__ import annotations

import math
from typing import Any

from operators.attribution import PendingDecisions
from operators.history import InteractionHistory
from operators.item_memory import INTERACTION_STRENGTH, ITEM_EVENTS, ItemMemory
from operators.long_term import VISIT_FEATURES, ChurnMemory

__all__ = ["CHURN_FEATURES", "INTERACTION_STRENGTH", "ITEM_EVENTS", "UserFeatures"]
AFFINITY_DECAY = 0.97  # applied to every category at each item interaction
MAX_CATEGORIES = 16  # affinities kept per user; the weakest is dropped beyond this
EWMA_ALPHA = 0.3  # weight of the newest observation in dwell and sentiment averages
MS_PER_HOUR = 3_600_000.0
CONTROL_EVENTS = frozenset({"consent", "forget_user", "churn_outcome"})  # not behaviour: they change no feature

# Names of the features the churn model sees, in a stable order.
CHURN_FEATURES = (
    "recency_hours_log",
    "events_per_session",
    "dwell_seconds",
    "click_through",
    "purchases_per_session",
    "cart_abandonment",
    "monetary_log",
    "sentiment",
    "chats_per_session",
    *VISIT_FEATURES,
)
# What the churn model reads of them: tenure and visit gaps stay in decisions and the long-term record but lowered the
# model's AUC on the simulator (drift) and on CDNOW (docs/evaluation.md).
CHURN_MODEL_FEATURES = tuple(name for name in CHURN_FEATURES
                             if name not in ("tenure_days_log", "visit_gap_hours_log", "mean_visit_gap_hours_log"))


class UserFeatures:
    """Behavioural profile of one user.

    >>> f = UserFeatures(first_ts=0)
    >>> f.update({"type": "add_to_cart", "ts": 1000, "item_id": "i1", "category": "shoes", "price": 10.0})
    >>> f.churn_features()["cart_abandonment"]
    1.0
    """

    __slots__ = (
        "first_ts", "last_ts", "previous_ts", "n_events", "n_sessions", "n_page_views", "n_clicks", "n_carts",
        "n_purchases", "n_searches", "n_chats", "monetary", "dwell_ewma", "sentiment_ewma", "category_affinity",
        "personalization", "history", "pending", "user_id", "segment", "memory", "items",
    )

    def __init__(self, first_ts: int, user_id: str = "") -> None:
        self.user_id = user_id
        self.segment: int | None = None  # behaviour segment, refreshed at session boundaries
        self.first_ts = first_ts
        self.last_ts = first_ts
        self.previous_ts = first_ts
        self.n_events = 0
        self.n_sessions = 0
        self.n_page_views = 0
        self.n_clicks = 0
        self.n_carts = 0
        self.n_purchases = 0
        self.n_searches = 0
        self.n_chats = 0
        self.monetary = 0.0
        self.dwell_ewma = 0.0
        self.sentiment_ewma = 0.0
        self.category_affinity: dict[str, float] = {}
        self.personalization = True
        self.history = InteractionHistory()
        self.pending = PendingDecisions()
        self.memory = ChurnMemory()  # visits, served churn probability, held labels (operators.long_term)
        self.items = ItemMemory()  # every item consumed (exclusions) and the recent ones (recommender context)

    def __reduce__(self) -> tuple[Any, tuple[tuple[Any, ...]]]:
        # A plain tuple of the slots: Bytewax pickles every touched user's profile at each epoch.
        return _restore_features, (tuple([getattr(self, name) for name in UserFeatures.__slots__]),)

    def update(self, event: dict[str, Any]) -> None:
        """Fold one behavioural event into the profile (control events change nothing)."""
        event_type = event["type"]
        if event_type in CONTROL_EVENTS:
            return
        ts = event["ts"]
        self.memory.observe(ts, self.last_ts, self.n_events, event_type == "session_start")
        self.previous_ts = self.last_ts
        self.last_ts = max(self.last_ts, ts)
        self.n_events += 1
        if event_type == "session_start":
            self.n_sessions += 1
        elif event_type == "page_view":
            self.n_page_views += 1
            dwell = event.get("dwell_ms")
            if dwell is not None:
                self.dwell_ewma += EWMA_ALPHA * (dwell / 1000.0 - self.dwell_ewma)
        elif event_type == "click":
            self.n_clicks += 1
        elif event_type == "add_to_cart":
            self.n_carts += 1
        elif event_type == "purchase":
            self.n_purchases += 1
            self.monetary += float(event["price"])
        elif event_type == "search":
            self.n_searches += 1
        elif event_type == "chat_message":
            self.n_chats += 1
        self.history.record(event)
        if event_type in ITEM_EVENTS:
            item_id = event.get("item_id")
            if item_id is not None:
                self.items.record(event_type, item_id, ts)
            category = event.get("category")
            if category is not None:
                self._reinforce(category, INTERACTION_STRENGTH[event_type])

    def observe_sentiment(self, score: float) -> None:
        """Fold the sentiment score of the user's latest chat message into the recent-sentiment average."""
        if self.n_chats <= 1:
            self.sentiment_ewma = score
        else:
            self.sentiment_ewma += EWMA_ALPHA * (score - self.sentiment_ewma)

    def _reinforce(self, category: str, strength: float) -> None:
        affinity = self.category_affinity
        for name in affinity:
            affinity[name] *= AFFINITY_DECAY
        affinity[category] = affinity.get(category, 0.0) + strength
        if len(affinity) > MAX_CATEGORIES:
            del affinity[min(affinity, key=affinity.__getitem__)]

    def normalized_affinity(self) -> dict[str, float]:
        """Category affinities scaled to [0, 1] (the strongest category is 1)."""
        if not self.category_affinity:
            return {}
        top = max(self.category_affinity.values())
        return {name: value / top for name, value in self.category_affinity.items()}

    @property
    def recent_sentiment(self) -> float | None:
        """Recent chat sentiment in [-1, 1], or None before the first chat message."""
        return self.sentiment_ewma if self.n_chats else None

    def churn_features(self, now_ms: int | None = None) -> dict[str, float]:
        """The churn model's inputs: scale-free behavioural ratios, log-scaled recency and spend, visits.

        At `now_ms` (default: the latest behavioural event) recency is the gap before that event, or,
        later, the time since it (how an idle user's risk grows).
        """
        # A stream without session events still has visits (operators.long_term): per-session ratios count those,
        # so they do not become copies of the event counts.
        sessions = max(self.n_sessions, self.memory.n_visits, 1)
        now = self.last_ts if now_ms is None else max(now_ms, self.last_ts)
        recency = now - self.last_ts if now > self.last_ts else self.last_ts - self.previous_ts
        return {
            "recency_hours_log": math.log1p(max(recency, 0) / MS_PER_HOUR),
            "events_per_session": self.n_events / sessions,
            "dwell_seconds": self.dwell_ewma,
            "click_through": self.n_clicks / max(self.n_page_views, 1),
            "purchases_per_session": self.n_purchases / sessions,
            "cart_abandonment": max(self.n_carts - self.n_purchases, 0) / self.n_carts if self.n_carts else 0.0,
            "monetary_log": math.log1p(self.monetary),
            "sentiment": self.sentiment_ewma,
            "chats_per_session": self.n_chats / sessions,
            **self.memory.visit_features(self.first_ts, self.last_ts, now),
        }


def _restore_features(values: tuple[Any, ...]) -> UserFeatures:
    """Unpickle a `UserFeatures` (see `UserFeatures.__reduce__`)."""
    features = UserFeatures.__new__(UserFeatures)
    if len(values) < UserFeatures.__slots__.index("memory") + 1:  # a snapshot from before the churn memory
        features.memory = ChurnMemory()
    for name, value in zip(UserFeatures.__slots__, values):
        setattr(features, name, value)
    if len(values) < UserFeatures.__slots__.index("items") + 1:  # a snapshot from before the item memory
        features.items = ItemMemory()
        for item_id, ts in sorted(features.history.purchased.items(), key=lambda entry: entry[1]):
            features.items.record("purchase", item_id, ts)
    return features
