"""A user's item memory: exclusions hold for any history length, the recent items stay bounded and compact."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from online_models.item_keys import context_records, item_key
from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import UserFeatures
from operators.item_memory import RECENT_ITEMS, ItemMemory
from operators.user_state import profile_snapshot

T0 = 1_700_000_000_000


def test_purchases_are_remembered_past_any_cap_at_eight_bytes_each() -> None:
    memory = ItemMemory()
    for i in range(1_000):
        memory.record("purchase", f"item-{i}", T0 + i)
        memory.record("page_view", f"seen-{i}", T0 + i)
    assert all(memory.has_purchased(f"item-{i}") for i in range(1_000))
    assert not memory.has_purchased("seen-3")
    assert sorted(memory.purchased_keys().tolist()) == sorted(item_key(f"item-{i}") for i in range(1_000))
    assert len(memory.consumed_keys()) == 2_000
    assert memory.consumed.itemsize * len(memory.consumed) == 16_000  # 8 bytes per distinct item
    assert len(pickle.dumps(memory)) < 16_000 + 1_000  # and about that much in a snapshot


def test_a_view_after_a_purchase_keeps_the_purchase_and_moves_the_item_to_the_front() -> None:
    memory = ItemMemory()
    memory.record("purchase", "a", 1)
    memory.record("page_view", "b", 2)
    memory.record("click", "a", 3)
    records = context_records(memory.recent)
    assert records["key"].tolist() == [item_key("b"), item_key("a")]
    assert records["ts"].tolist() == [2, 3] and records["strength"].tolist() == [1, 2]
    assert memory.has_purchased("a") and memory.n_consumed == 2


def test_recent_items_are_bounded_and_distinct() -> None:
    memory = ItemMemory()
    for i in range(3 * RECENT_ITEMS):
        memory.record("page_view", f"i{i % (2 * RECENT_ITEMS)}", i)
    keys = context_records(memory.recent)["key"]
    assert len(keys) == RECENT_ITEMS == len(set(keys.tolist()))
    assert keys[-1] == item_key(f"i{(3 * RECENT_ITEMS - 1) % (2 * RECENT_ITEMS)}")


def engine_excluding(tmp_path: Path, rule: str, top_k: int, n_items: int) -> PersonalizationEngine:
    """An engine whose rules file turns on the exclusion `rule`, with items i0, i1, ... of category c."""
    rules = tmp_path / "rules.toml"
    rules.write_text(f"[exclude]\n{rule} = true\n")
    engine = PersonalizationEngine(EngineConfig(top_k=top_k, rules_file=str(rules)))
    for i in range(n_items):
        engine.apply_item({"event_id": f"up{i}", "type": "item_upsert", "item_id": f"i{i}", "category": "c", "ts": T0})
    return engine


def test_never_recommend_what_the_user_bought_past_one_hundred_purchases(tmp_path) -> None:
    engine = engine_excluding(tmp_path, "purchased", top_k=50, n_items=200)
    profile = None
    bought: set[str] = set()
    for i in range(150):  # the user buys the 150 most popular items, the oldest purchase first
        event = {"event_id": f"e{i}", "user_id": "u", "type": "purchase", "item_id": f"i{i}", "category": "c",
                 "price": 1.0, "ts": T0 + i}
        profile, decision = engine.handle(profile, event, ingest_ms=T0 + i)
        bought.add(f"i{i}")
        shown = {r["item_id"] for r in decision["recommendations"]}
        assert not shown & bought, f"after {i + 1} purchases: {sorted(shown & bought)[:5]} recommended again"
    assert len(decision["recommendations"]) == 50
    excluded = next(rule for rule in decision["rules"] if rule["rule"] == "exclude")
    assert excluded["effect"] == "excluded: already purchased" and excluded["count"] == 150
    assert set(excluded["items"]) <= bought and len(excluded["items"]) == 20


def test_consumed_rule_excludes_everything_the_user_interacted_with(tmp_path) -> None:
    engine = engine_excluding(tmp_path, "consumed", top_k=5, n_items=8)
    profile, decision = None, {}
    for i, kind in enumerate(["page_view", "click", "add_to_cart", "purchase"]):
        event = {"event_id": f"e{i}", "user_id": "u", "type": kind, "item_id": f"i{i}", "ts": T0 + i}
        if kind == "purchase":
            event["price"] = 2.0
        profile, decision = engine.handle(profile, event, ingest_ms=T0)
    assert sorted(r["item_id"] for r in decision["recommendations"]) == ["i4", "i5", "i6", "i7"]


def test_an_event_without_category_never_overwrites_the_catalog_category() -> None:
    engine = PersonalizationEngine(EngineConfig(top_k=3))
    engine.apply_item({"event_id": "up", "type": "item_upsert", "item_id": "boot", "category": "shoes", "ts": T0})
    profile, decision = engine.handle(None, {"event_id": "e1", "user_id": "u", "type": "click", "item_id": "boot",
                                             "ts": T0}, ingest_ms=T0)
    profile, decision = engine.handle(profile, {"event_id": "e2", "user_id": "v", "type": "page_view",
                                                "item_id": "boot", "ts": T0 + 1}, ingest_ms=T0)
    assert engine.recommender.category_of("boot") == "shoes" == engine.catalog["boot"]["category"]
    assert [r["category"] for r in decision["recommendations"]] == ["shoes"]


def test_a_profile_snapshot_from_before_the_item_memory_keeps_its_purchases() -> None:
    profile = UserFeatures(first_ts=T0, user_id="ann")
    profile.history.purchased.update({"old-1": T0, "old-2": T0 + 1})  # how older versions remembered purchases
    values = tuple(getattr(profile, name) for name in UserFeatures.__slots__ if name != "items")
    from operators.features import _restore_features

    restored = pickle.loads(pickle.dumps(_restore_features(values)))
    assert restored.items.has_purchased("old-1") and restored.items.has_purchased("old-2")
    assert pickle.loads(profile_snapshot(restored)).items.n_consumed == 2


@pytest.mark.parametrize("item_id", ["a", "item-0001", "ünïcode", "x" * 128])
def test_item_keys_are_stable_and_leave_the_flag_bit_free(item_id: str) -> None:
    key = item_key(item_id)
    assert key == item_key(item_id) and key % 2 == 0 and 0 <= key < 2**64
    assert np.uint64(key) == np.array([key], dtype=np.uint64)[0]
