"""Behaviour model: the events of one user session, driven by the user's ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.phrases import chat_text
from simulator.world import Item, UserProfile, World, sigmoid

SEARCH_PROB = 0.12
FAVOURITE_PROB = 0.5
MAX_PAGE_VIEWS = 60
QUERY_WORDS = ("deals", "best", "new", "cheap", "gift", "sale", "top rated", "premium")


@dataclass(frozen=True, slots=True)
class Session:
    """Events of one session in time order (without event ids) and whether it ended in churn."""

    events: list[dict[str, Any]]
    churned: bool


class _SessionBuilder:
    def __init__(self, world: World, user: UserProfile, session_index: int, start_ms: int, rng: np.random.Generator):
        self.world, self.user, self.rng = world, user, rng
        self.session_id = f"{user.user_id}-s{session_index}"
        self.ts = start_ms
        self.events: list[dict[str, Any]] = []

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.append({"user_id": self.user.user_id, "type": type_, "ts": self.ts, **fields})

    def emit_clickstream(self, type_: str, item: Item | None = None, **fields: Any) -> None:
        if item is not None:
            fields = {"item_id": item.item_id, "category": item.category, "price": item.price, **fields}
        self.emit(type_, session_id=self.session_id, **fields)

    def pause(self, mean_ms: float = 1500.0) -> None:
        self.ts += 200 + int(self.rng.exponential(mean_ms))

    def choose_item(self) -> Item:
        """Category by preference weights; within it a favourite with FAVOURITE_PROB, else by popularity."""
        category = self.world.sample_category(self.user, self.rng)
        favourites = [i for i in self.user.favourite_items if self.world.item_by_id[i].category == category]
        if favourites and self.rng.random() < FAVOURITE_PROB:
            return self.world.item_by_id[favourites[int(self.rng.integers(len(favourites)))]]
        return self.world.sample_item(category, self.rng)

    def price_term(self, item: Item) -> float:
        return self.user.price_sensitivity * math.log(max(item.price, 0.01) / self.world.median_price)


def simulate_session(
    world: World, user: UserProfile, session_index: int, start_ms: int, rng: np.random.Generator
) -> Session:
    """Simulate one session of `user` starting at `start_ms`.

    Engagement lengthens sessions and dwell, raises click/cart/purchase rates; price times price
    sensitivity lowers cart and purchase rates; mood sets chat polarity. After `session_end`, with
    probability `churn_outcome_prob`, a `churn_outcome` with churned ~ Bernoulli(churn_risk) follows.
    """
    cfg = world.config
    eng = user.engagement
    b = _SessionBuilder(world, user, session_index, start_ms, rng)
    if session_index == 0 and not user.consent_personalization:
        b.emit("consent", personalization=False)
        b.pause(300.0)
    b.emit_clickstream("session_start")
    cart: list[Item] = []
    n_views = min(int(rng.geometric(1.0 / (1.0 + 12.0 * eng))), MAX_PAGE_VIEWS)
    for _ in range(n_views):
        b.pause()
        if rng.random() < SEARCH_PROB:
            category = world.sample_category(user, rng)
            b.emit_clickstream("search", query=f"{category} {QUERY_WORDS[int(rng.integers(len(QUERY_WORDS)))]}")
            b.pause()
        item = b.choose_item()
        dwell_ms = int(rng.lognormal(math.log(1500.0 + 9000.0 * eng), 0.7))
        b.emit_clickstream("page_view", item, dwell_ms=dwell_ms)
        b.ts += dwell_ms
        favourite = 1.0 if item.item_id in user.favourite_items else 0.0
        if rng.random() < sigmoid(-1.5 + 3.0 * (eng - 0.5) + 0.5 * item.quality + favourite):
            b.emit_clickstream("click", item)
            b.pause(800.0)
            if rng.random() < sigmoid(-0.5 + 2.0 * (eng - 0.5) - 0.5 * b.price_term(item)):
                b.emit_clickstream("add_to_cart", item)
                cart.append(item)
        if rng.random() < cfg.chat_share:
            b.pause()
            _emit_chat(b, rng, cfg.label_share)
    for item in cart:
        if rng.random() < sigmoid(-0.2 + 3.0 * (eng - 0.5) + 0.3 * item.quality - b.price_term(item)):
            b.pause(800.0)
            b.emit_clickstream("purchase", item)
    b.pause()
    b.emit_clickstream("session_end")
    churned = False
    if rng.random() < cfg.churn_outcome_prob:
        churned = bool(rng.random() < user.churn_risk)
        b.pause(300.0)
        b.emit("churn_outcome", churned=churned)
    return Session(b.events, churned)


def _emit_chat(b: _SessionBuilder, rng: np.random.Generator, label_share: float) -> None:
    polarity = "positive" if rng.random() < sigmoid(3.0 * b.user.mood) else "negative"
    fields: dict[str, Any] = {"text": chat_text(polarity, rng)}
    if rng.random() < label_share:
        fields["label"] = polarity
        fields["rating"] = int(rng.integers(4, 6)) if polarity == "positive" else int(rng.integers(1, 3))
    b.emit("chat_message", **fields)
