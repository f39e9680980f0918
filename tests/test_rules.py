"""Business rules: parsing, exclusions, category lists, boosts, pins, diversity, offer limits, hot reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from online_models.item_keys import item_key
from online_models.recommender import RankedItems, Recommendation
from operators.history import InteractionHistory
from operators.item_memory import ItemMemory
from operators.rules import RulesError, RuleSet, RulesFile

HOUR = 3_600_000


def rec(item: str, category: str, score: float) -> Recommendation:
    return Recommendation(item, category, score, {"collaborative": 0.0, "content": score, "popularity": 0.0,
                                                 "neighbours": 0.0})


def test_parse_every_section() -> None:
    rules = RuleSet.from_toml(
        """
        [exclude]
        purchased = true
        seen_minutes = 30
        [categories]
        deny = ["gift"]
        [boosts]
        categories = { "sale" = 0.5 }
        [pins]
        items = ["i9"]
        [diversity]
        max_per_category = 2
        [offers]
        retention_cooldown_hours = 168
        """,
        version="v1",
    )
    assert rules.exclude_purchased and rules.exclude_seen_minutes == 30
    assert rules.deny_categories == ("gift",) and rules.category_boosts == {"sale": 0.5}
    assert rules.pinned_items == ("i9",) and rules.max_per_category == 2 and rules.retention_cooldown_hours == 168
    category_filter = rules.category_filter()
    assert category_filter.allowed == {"gift": 0.0} and category_filter.default_allowed == 1.0


@pytest.mark.parametrize("text",
                         ["[exclude", "[diversity]\nmax_per_category = 'x'", "[offers]\nretention_cooldown_hours = -1"])
def test_invalid_rules_are_rejected(text: str) -> None:
    with pytest.raises(RulesError):
        RuleSet.from_toml(text, version="bad")


def test_exclusions_name_their_reason() -> None:
    history, memory = InteractionHistory(), ItemMemory()
    history.record({"type": "page_view", "item_id": "old", "ts": 0})
    memory.record("page_view", "old", 0)
    history.record({"type": "page_view", "item_id": "recent", "ts": 50 * 60_000})
    memory.record("purchase", "bought", 10)
    rules = RuleSet(exclude_purchased=True, exclude_seen_minutes=30)
    assert rules.exclusions(history, now_ms=60 * 60_000) == {"recent": "seen in the last 30 min"}
    keys, reason = rules.excluded_keys(memory)
    assert keys.tolist() == [item_key("bought")] and reason == "already purchased"
    keys, reason = RuleSet(exclude_purchased=True, exclude_consumed=True).excluded_keys(memory)
    assert sorted(keys.tolist()) == sorted([item_key("bought"), item_key("old")])
    assert reason == "already viewed or bought"
    assert RuleSet().exclusions(history, now_ms=0) == {} and RuleSet().excluded_keys(memory) == (None, "")
    assert RuleSet.from_toml("[exclude]\nconsumed = true\n", "v").exclude_consumed


def test_pins_first_then_diversity_cap() -> None:
    ranked = RankedItems.of([rec("a1", "a", 9), rec("a2", "a", 8), rec("a3", "a", 7), rec("b1", "b", 6),
                             rec("p", "c", 5)])
    chosen, applied = RuleSet(max_per_category=2).finalize(ranked, pinned=[rec("p", "c", 5)], k=4)
    assert [r["item_id"] for r in chosen] == ["p", "a1", "a2", "b1"]
    assert applied == [
        {"rule": "pin", "effect": "pinned first", "items": ["p"]},
        {"rule": "diversity", "effect": "skipped: more than 2 from one category", "items": ["a3"]},
    ]
    chosen, applied = RuleSet().finalize(ranked, pinned=[], k=2)
    assert [r["item_id"] for r in chosen] == ["a1", "a2"] and applied == []


def test_offer_cooldown() -> None:
    history = InteractionHistory()
    rules = RuleSet(retention_cooldown_hours=24)
    assert rules.offer_allowed(history, 0) == (True, "")
    history.last_offer_ms = 0
    allowed, why = rules.offer_allowed(history, 2 * HOUR)
    assert not allowed and why == "retention offer suppressed: last one 2.0 h ago, limit once per 24 h"
    assert rules.offer_allowed(history, 24 * HOUR) == (True, "")


def test_rules_file_hot_reload_keeps_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[diversity]\nmax_per_category = 2\n")
    rules_file = RulesFile(path)
    first = rules_file.current()
    assert first.max_per_category == 2 and first.version.startswith("rules.toml@")

    path.write_text("[diversity]\nmax_per_category = 3\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    rules_file._checked = 0.0  # skip the once-a-second throttle
    assert rules_file.current().max_per_category == 3 and rules_file.current().version != first.version

    path.write_text("[diversity\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    rules_file._checked = 0.0
    assert rules_file.current().max_per_category == 3, "an invalid file must not replace the rules in force"


def test_missing_rules_file_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        RulesFile(tmp_path / "absent.toml")
    assert RulesFile(None).current() == RuleSet()


def test_finalize_builds_recommendations_only_for_the_chosen_items() -> None:
    ranked = RankedItems.of([rec(f"a{i}", "a", 50 - i) for i in range(40)] + [rec("b1", "b", 1)])
    chosen, applied = RuleSet(max_per_category=2).finalize(ranked, pinned=[], k=3)
    assert chosen == [ranked[0].to_dict(), ranked[1].to_dict(), ranked[40].to_dict()]
    assert applied[0]["items"] == [f"a{i}" for i in range(2, 40)]
