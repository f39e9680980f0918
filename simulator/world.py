"""Synthetic world: a product catalog and users with hidden ground truth."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np
from river.utils.math import sigmoid

# Churn-risk logit = CHURN_BIAS + CHURN_ENGAGEMENT * (0.5 - engagement) + CHURN_MOOD * mood.
CHURN_BIAS = -1.2
CHURN_ENGAGEMENT = 5.0
CHURN_MOOD = -1.5


@dataclass
class SimulationConfig:
    """Parameters of a simulated world and its event stream.

    `start_ms` is the simulated clock at the first event (None: wall-clock now, which
    makes timestamps and event ids differ between runs).
    """

    users: int = 1000
    items: int = 500
    categories: int = 12
    seed: int = 42
    label_share: float = 0.3
    chat_share: float = 0.08
    malformed_ratio: float = 0.0
    churn_outcome_prob: float = 0.25
    consent_off_share: float = 0.0
    start_ms: int | None = None

    def __post_init__(self) -> None:
        if min(self.users, self.items, self.categories) < 1:
            raise ValueError("users, items and categories must be positive")
        for name in ("label_share", "chat_share", "malformed_ratio", "churn_outcome_prob", "consent_off_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item with its category, price and latent quality (drives popularity)."""

    item_id: str
    category: str
    price: float
    quality: float


@dataclass(frozen=True)
class UserProfile:
    """A synthetic user's hidden ground truth.

    `category_weights[i]` is the probability that a page view is in `World.categories[i]`; within a
    category, `favourite_items` of it are viewed half the time. `churn_risk` is the
    probability that a churn outcome for this user is `churned=true`.
    """

    user_id: str
    category_weights: np.ndarray
    top_category: str
    favourite_items: tuple[str, ...]
    engagement: float
    mood: float
    price_sensitivity: float
    churn_risk: float
    consent_personalization: bool
    category_cdf: list[float] = field(repr=False, compare=False)


def churn_risk(engagement: float, mood: float) -> float:
    """Ground-truth churn probability from the drivers of observable behaviour."""
    return sigmoid(CHURN_BIAS + CHURN_ENGAGEMENT * (0.5 - engagement) + CHURN_MOOD * mood)


class World:
    """Catalog plus users. `users` holds every user ever created, including replacements of churned users.

    >>> world = World(SimulationConfig(users=3, items=20, categories=4, seed=1))
    >>> [u.user_id for u in world.users]
    ['user-00001', 'user-00002', 'user-00003']
    >>> world.items[0].item_id, world.categories[0]
    ('item-0001', 'cat-01')
    """

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config or SimulationConfig()
        if self.config.items < self.config.categories:
            raise ValueError("need at least one item per category")
        rng = np.random.default_rng(self.config.seed)
        self.categories = [f"cat-{i + 1:02d}" for i in range(self.config.categories)]
        self._category_index = {category: i for i, category in enumerate(self.categories)}
        self.items = self._make_items(rng)
        self.item_by_id = {item.item_id: item for item in self.items}
        self.median_price = float(np.median([item.price for item in self.items]))
        self._category_items: list[list[Item]] = [[] for _ in self.categories]
        for item in self.items:
            self._category_items[self._category_index[item.category]].append(item)
        self._category_item_cdf = [
            _cdf([math.exp(item.quality) for item in items]) for items in self._category_items
        ]
        self.users: list[UserProfile] = []
        self.user_by_id: dict[str, UserProfile] = {}
        for _ in range(self.config.users):
            self.spawn_user(rng)

    def _make_items(self, rng: np.random.Generator) -> list[Item]:
        n, c = self.config.items, self.config.categories
        # Every category gets at least one item; the rest are spread at random.
        cats = np.concatenate([np.arange(c), rng.integers(0, c, size=n - c)])
        rng.shuffle(cats)
        prices = np.round(rng.lognormal(3.2, 0.7, size=n), 2)
        quality = rng.normal(0.0, 1.0, size=n)
        return [
            Item(f"item-{i + 1:04d}", self.categories[cats[i]], float(prices[i]), float(quality[i]))
            for i in range(n)
        ]

    def spawn_user(self, rng: np.random.Generator) -> UserProfile:
        """Create a brand-new user (next id), record it in `users` and return it."""
        c = len(self.categories)
        preferred = rng.choice(c, size=min(c, int(rng.integers(1, 4))), replace=False)
        weights = 0.1 * rng.dirichlet(np.full(c, 0.5))
        weights[preferred] += 0.9 * rng.dirichlet(np.full(len(preferred), 2.0))
        cdf = _cdf(weights.tolist())
        favourites: list[str] = []
        for _ in range(int(rng.integers(2, 6))):
            item = self.sample_item(self.categories[_draw(cdf, rng)], rng)
            if item.item_id not in favourites:
                favourites.append(item.item_id)
        engagement = float(rng.beta(2.0, 2.0))
        mood = float(np.clip(rng.normal(0.2, 0.5), -1.0, 1.0))
        user = UserProfile(
            user_id=f"user-{len(self.users) + 1:05d}",
            category_weights=weights,
            top_category=self.categories[int(np.argmax(weights))],
            favourite_items=tuple(favourites),
            engagement=engagement,
            mood=mood,
            price_sensitivity=float(rng.uniform(0.2, 2.0)),
            churn_risk=churn_risk(engagement, mood),
            consent_personalization=bool(rng.random() >= self.config.consent_off_share),
            category_cdf=cdf,
        )
        self.users.append(user)
        self.user_by_id[user.user_id] = user
        return user

    def sample_category(self, user: UserProfile, rng: np.random.Generator) -> str:
        """Draw a category from the user's preference weights."""
        return self.categories[_draw(user.category_cdf, rng)]

    def sample_item(self, category: str, rng: np.random.Generator) -> Item:
        """Draw an item of `category` by popularity (exp of latent quality)."""
        idx = self._category_index[category]
        return self._category_items[idx][_draw(self._category_item_cdf[idx], rng)]

    def add_item(self, category: str, price: float, quality: float) -> Item:
        """Add a brand-new catalog item (next id) to `category`; later draws of that category may pick it."""
        idx = self._category_index[category]
        item = Item(f"item-{len(self.items) + 1:04d}", category, float(price), float(quality))
        self.items.append(item)
        self.item_by_id[item.item_id] = item
        self._category_items[idx].append(item)
        self._category_item_cdf[idx] = _cdf([math.exp(i.quality) for i in self._category_items[idx]])
        return item


def _cdf(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


def _draw(cdf: list[float], rng: np.random.Generator) -> int:
    """Index drawn with probabilities proportional to the increments of `cdf`."""
    return min(bisect_right(cdf, rng.random() * cdf[-1]), len(cdf) - 1)
