"""Ground-truth reactions of simulated users to a decision (hidden from the engine).

When a user arrives, the site shows the decision made on their `session_start`: up to ten
recommendations (unless the action is `do_nothing`) and possibly an intervention. The simulated
user scans the list top-down and clicks at most one item, with a probability that rises with their
hidden preference for the item's category, with favourites and item quality, and falls with rank.
A click may turn into add-to-cart and purchase (price sensitivity and engagement decide; a
`discount` lowers the price). Interventions change the user's churn risk for this session:

- `retention_offer`: at-risk users (hidden churn risk >= AT_RISK) churn with half the risk; costs OFFER_COST.
- `escalate_to_agent`: unhappy users (hidden mood < 0) churn with 0.6x the risk; costs AGENT_COST.
- `discount`: 15% off a purchase made from the recommendations (revenue is the discounted price).
- `recommend` / `do_nothing`: no intervention (`do_nothing` also shows no recommendations).

`OFFER_COST` and `AGENT_COST` are fractions of the catalog's median price; `Reaction.cost` is in currency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.world import UserProfile, World, sigmoid

AT_RISK = 0.3
OFFER_CHURN_FACTOR = 0.5
AGENT_CHURN_FACTOR = 0.6
OFFER_COST = 0.15
AGENT_COST = 0.3
DISCOUNT = 0.15
POSITION_DECAY = 0.15
SHOWN = 10


@dataclass
class Reaction:
    """What the user did in response to a decision: new events (carrying the decision id) and effects."""

    events: list[dict[str, Any]] = field(default_factory=list)
    clicked: str | None = None
    converted: bool = False
    revenue: float = 0.0
    cost: float = 0.0
    churn_factor: float = 1.0


def click_probability(world: World, user: UserProfile, item_id: str, position: int) -> float:
    """P(click) of a shown item at 0-based `position`, from the user's hidden preferences."""
    item = world.item_by_id.get(item_id)
    if item is None:
        return 0.0
    weight = float(user.category_weights[world.categories.index(item.category)])
    favourite = 1.5 if item_id in user.favourite_items else 0.0
    base = sigmoid(-4.0 + 6.0 * weight + favourite + 0.4 * item.quality)
    return base / (1.0 + POSITION_DECAY * position)


def react(
    world: World, user: UserProfile, decision: dict[str, Any], ts: int, rng: np.random.Generator, churn_risk: float
) -> Reaction:
    """The user's reaction to `decision` shown at `ts` (see the module docstring).

    >>> from simulator.world import SimulationConfig
    >>> world = World(SimulationConfig(users=1, items=20, categories=2, seed=3))
    >>> user = world.users[0]
    >>> r = react(world, user, {"decision_id": "d-1", "recommendations": [], "action": {"name": "retention_offer"}},
    ...           ts=0, rng=np.random.default_rng(0), churn_risk=0.9)
    >>> (r.events, r.churn_factor, round(r.cost / world.median_price, 2))
    ([], 0.5, 0.15)
    """
    action = (decision.get("action") or {}).get("name", "recommend")
    reaction = Reaction()
    price_factor = 1.0
    if action == "retention_offer":
        reaction.cost += OFFER_COST * world.median_price
        if churn_risk >= AT_RISK:
            reaction.churn_factor = OFFER_CHURN_FACTOR
    elif action == "escalate_to_agent":
        reaction.cost += AGENT_COST * world.median_price
        if user.mood < 0:
            reaction.churn_factor = AGENT_CHURN_FACTOR
    elif action == "discount":
        price_factor = 1.0 - DISCOUNT
    if action == "do_nothing":
        return reaction
    decision_id = decision.get("decision_id")
    for position, rec in enumerate((decision.get("recommendations") or [])[:SHOWN]):
        if rng.random() >= click_probability(world, user, rec["item_id"], position):
            continue
        item = world.item_by_id[rec["item_id"]]
        reaction.clicked = item.item_id
        fields = {"user_id": user.user_id, "item_id": item.item_id, "category": item.category,
                  "price": item.price, "decision_id": decision_id}
        reaction.events.append({**fields, "type": "click", "ts": ts + 1})
        price = item.price * price_factor
        price_term = user.price_sensitivity * math.log(max(price, 0.01) / world.median_price)
        if rng.random() < sigmoid(0.3 + 2.0 * (user.engagement - 0.5) + 0.3 * item.quality - price_term):
            reaction.events.append({**fields, "type": "add_to_cart", "ts": ts + 2})
            reaction.events.append({**fields, "type": "purchase", "price": round(price, 2), "ts": ts + 3})
            reaction.converted = True
            reaction.revenue = round(price, 2)
        break
    return reaction
