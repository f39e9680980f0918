"""Business rules over recommendations and offers, declared in a TOML file and hot-reloaded.

Example (`PULSE_RULES_FILE=rules.toml`; every section is optional):

    [exclude]
    purchased = true          # never recommend what the user bought (at any time)
    consumed = false          # true: nor anything they ever viewed, clicked or carted (e.g. films, articles)
    seen_minutes = 30         # nor what they viewed in the last 30 minutes

    [categories]
    allow = []                # when non-empty, only these categories are recommended
    deny = ["gift-cards"]

    [boosts]
    categories = { "summer-sale" = 0.5 }   # added to the score (shown as the "boost" component)

    [pins]
    items = ["item-0001"]     # shown first, in this order, whenever rankable

    [diversity]
    max_per_category = 3

    [offers]
    retention_cooldown_hours = 168   # a retention offer at most once per user per week

Each rule that changes what a user sees is reported in the decision's `rules` list.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_models.recommender import CategoryFilter, RankedItems, Recommendation
from operators.history import InteractionHistory
from operators.hot_reload import ConfigFileError, HotReloadedFile
from operators.item_memory import ItemMemory

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
CANDIDATE_FACTOR = 4  # ranked candidates per requested slot, so exclusions and diversity still fill k


class RulesError(ConfigFileError):
    """The rules file cannot be read or holds an invalid rule."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Parsed business rules; the default instance applies none."""

    exclude_purchased: bool = False
    exclude_consumed: bool = False
    exclude_seen_minutes: float = 0.0
    allow_categories: tuple[str, ...] = ()
    deny_categories: tuple[str, ...] = ()
    category_boosts: dict[str, float] = field(default_factory=dict)
    pinned_items: tuple[str, ...] = ()
    max_per_category: int = 0
    retention_cooldown_hours: float = 0.0
    version: str = "none"

    @classmethod
    def from_toml(cls, text: str, version: str) -> RuleSet:
        """Parse and validate the TOML rules text."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"rules file is not valid TOML: {exc}") from None
        exclude, categories = doc.get("exclude", {}), doc.get("categories", {})
        try:
            rules = cls(
                exclude_purchased=bool(exclude.get("purchased", False)),
                exclude_consumed=bool(exclude.get("consumed", False)),
                exclude_seen_minutes=float(exclude.get("seen_minutes", 0)),
                allow_categories=tuple(str(c) for c in categories.get("allow", [])),
                deny_categories=tuple(str(c) for c in categories.get("deny", [])),
                category_boosts={str(c): float(b) for c, b in doc.get("boosts", {}).get("categories", {}).items()},
                pinned_items=tuple(str(i) for i in doc.get("pins", {}).get("items", [])),
                max_per_category=int(doc.get("diversity", {}).get("max_per_category", 0)),
                retention_cooldown_hours=float(doc.get("offers", {}).get("retention_cooldown_hours", 0)),
                version=version,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise RulesError(f"invalid rule value: {exc}") from None
        if rules.exclude_seen_minutes < 0 or rules.max_per_category < 0 or rules.retention_cooldown_hours < 0:
            raise RulesError("seen_minutes, max_per_category and retention_cooldown_hours must be >= 0")
        return rules

    def category_filter(self) -> CategoryFilter | None:
        """The category allow/deny lists and boosts, applied inside vectorized ranking."""
        if not (self.allow_categories or self.deny_categories or self.category_boosts):
            return None
        allowed = {c: 1.0 for c in self.allow_categories} | {c: 0.0 for c in self.deny_categories}
        return CategoryFilter(allowed, 0.0 if self.allow_categories else 1.0, self.category_boosts)

    def exclusions(self, history: InteractionHistory, now_ms: int) -> dict[str, str]:
        """Items seen recently that the user must not be shown, each with the reason."""
        if not self.exclude_seen_minutes:
            return {}
        since = now_ms - int(self.exclude_seen_minutes * MS_PER_MINUTE)
        return {item: f"seen in the last {self.exclude_seen_minutes:g} min" for item in history.seen_since(since)}

    def excluded_keys(self, memory: ItemMemory) -> tuple[np.ndarray | None, str]:
        """Keys (online_models.item_keys) of the items bought or consumed that the user must not be shown, and why."""
        if self.exclude_consumed:
            return memory.consumed_keys(), "already viewed or bought"
        if self.exclude_purchased:
            return memory.purchased_keys(), "already purchased"
        return None, ""

    def finalize(
        self, ranked: RankedItems, pinned: list[Recommendation], k: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Pins first, then ranked items under the diversity cap; returns the top k (as decision records,
        `Recommendation.to_dict`) and the rules applied.

        Chooses on the candidates' ids and categories; only the chosen ones become records.
        """
        if not pinned and not self.max_per_category:  # no rule to apply: the ranking's first k
            return ranked.records(range(min(k, len(ranked)))), []
        applied: list[dict[str, Any]] = []
        chosen = [rec.to_dict() for rec in pinned[:k]]
        if chosen:
            applied.append({"rule": "pin", "effect": "pinned first", "items": [r["item_id"] for r in chosen]})
        taken = {r["item_id"] for r in chosen}
        per_category: dict[str, int] = {}
        for rec in chosen:
            per_category[rec["category"]] = per_category.get(rec["category"], 0) + 1
        cap = self.max_per_category
        picked: list[int] = []
        capped: list[str] = []
        room = k - len(chosen)
        for position, (item_id, category) in enumerate(zip(ranked.item_ids, ranked.categories)):
            if len(picked) >= room:
                break
            if item_id in taken:
                continue
            count = per_category.get(category, 0)
            if cap and count >= cap:
                capped.append(item_id)
                continue
            picked.append(position)
            per_category[category] = count + 1
        if capped:
            applied.append({"rule": "diversity", "effect": f"skipped: more than {cap} from one category",
                            "items": capped})
        return chosen + ranked.records(picked), applied

    def offer_allowed(self, history: InteractionHistory, now_ms: int) -> tuple[bool, str]:
        """Whether a retention offer may be made now, and why not if it may not."""
        last = history.last_offer_ms
        if not self.retention_cooldown_hours or last is None:
            return True, ""
        if now_ms - last >= self.retention_cooldown_hours * MS_PER_HOUR:
            return True, ""
        hours_ago = (now_ms - last) / MS_PER_HOUR
        return False, (f"retention offer suppressed: last one {hours_ago:.1f} h ago, "
                       f"limit once per {self.retention_cooldown_hours:g} h")


class RulesFile(HotReloadedFile[RuleSet]):
    """The rules of a TOML file, re-read when the file changes (checked at most once a second).

    A file that becomes invalid is reported in the log and the previous rules stay in force.
    """

    error = RulesError

    def __init__(self, path: str | os.PathLike | None) -> None:
        super().__init__(path, RuleSet.from_toml, RuleSet(), what="rules")
