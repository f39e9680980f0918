"""The engine as a shop runs it, in-process: catalog events, business rules in decisions, attribution, offers."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import CHURN_FEATURES, UserFeatures
from operators.user_state import profile_snapshot

T0 = 1_700_000_000_000


class Shopper:
    """Feeds one user's events to an engine, numbering them."""

    def __init__(self, engine: PersonalizationEngine, user_id: str = "u1") -> None:
        self.engine, self.user_id, self.profile, self.n = engine, user_id, None, 0
        self.settled: list[dict] = []  # the outcomes the latest event settled

    def send(self, kind: str, ts: int, **fields) -> dict:
        self.n += 1
        event = {"event_id": f"{self.user_id}-{self.n}", "user_id": self.user_id, "type": kind, "ts": ts, **fields}
        self.profile, decision, self.settled = self.engine.handle_with_outcomes(self.profile, event, ingest_ms=ts)
        return decision


def item(item_id: str, category: str, ts: int = T0, **fields) -> dict:
    return {"event_id": f"up-{item_id}-{ts}", "type": "item_upsert", "item_id": item_id, "category": category,
            "ts": ts, **fields}


def ids(decision: dict) -> list[str]:
    return [r["item_id"] for r in decision["recommendations"]]


@pytest.fixture()
def shop() -> PersonalizationEngine:
    engine = PersonalizationEngine(EngineConfig(top_k=3, attribution_window_ms=60_000))
    for i in range(6):
        engine.apply_item(item(f"shoe-{i}", "shoes"))
        engine.apply_item(item(f"hat-{i}", "hats"))
    return engine


def test_new_items_rank_at_once_and_deleted_or_unavailable_ones_leave(shop: PersonalizationEngine) -> None:
    user = Shopper(shop)
    user.send("page_view", T0, item_id="scarf-0", category="scarves")  # affinity for scarves
    shop.apply_item(item("scarf-new", "scarves"))
    assert "scarf-new" in ids(user.send("session_start", T0 + 1)), "a brand-new item ranks through content at once"
    shop.apply_item({"event_id": "del", "type": "item_delete", "item_id": "scarf-new", "ts": T0 + 2})
    assert "scarf-new" not in ids(user.send("session_start", T0 + 3))
    assert shop.catalog["scarf-new"]["deleted"] is True
    shop.apply_item(item("scarf-0", "scarves", T0 + 4, in_stock=False))
    assert "scarf-0" not in ids(user.send("session_start", T0 + 5))
    shop.apply_item(item("scarf-0", "scarves", T0 + 6, available_from=T0 + 100))
    assert "scarf-0" not in ids(user.send("session_start", T0 + 7)), "not yet available"
    assert "scarf-0" in ids(user.send("session_start", T0 + 101))


def test_rules_shape_recommendations_and_are_explained(shop: PersonalizationEngine, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[exclude]\npurchased = true\n[categories]\ndeny = ["hats"]\n[boosts]\ncategories = { "shoes" = 0.25 }\n'
        '[pins]\nitems = ["hat-5"]\n[diversity]\nmax_per_category = 2\n'
    )
    engine = PersonalizationEngine(EngineConfig(top_k=3, rules_file=str(rules)))
    for i in range(4):
        engine.apply_item(item(f"shoe-{i}", "shoes"))
        engine.apply_item(item(f"hat-{i}", "hats"))
        engine.apply_item(item(f"bag-{i}", "bags"))
    engine.apply_item(item("hat-5", "hats"))
    user = Shopper(engine)
    user.send("purchase", T0, item_id="shoe-0", category="shoes", price=10.0)
    decision = user.send("page_view", T0 + 1, item_id="shoe-1", category="shoes")
    recs = decision["recommendations"]
    assert [r["category"] for r in recs].count("shoes") <= 2
    assert "shoe-0" not in ids(decision), "purchased items are excluded"
    assert not any(r["category"] == "hats" for r in recs), "denied category (the pin is a hat: deny wins)"
    for r in recs:
        assert sum(r["components"].values()) == pytest.approx(r["score"], abs=1e-12)
        assert r["components"]["boost"] == (0.25 if r["category"] == "shoes" else 0.0)
    applied = {entry["rule"]: entry for entry in decision["rules"]}
    assert applied["exclude"]["effect"] == "excluded: already purchased" and applied["exclude"]["items"] == ["shoe-0"]
    assert applied["categories"]["deny"] == ["hats"]
    assert "diversity" in applied
    assert decision["model_versions"]["rules"].startswith("rules.toml@")


def test_offer_limit_turns_a_second_offer_into_a_recommendation(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[offers]\nretention_cooldown_hours = 24\n")
    engine = PersonalizationEngine(EngineConfig(churn_threshold=0.0, rules_file=str(rules), nba_epsilon=0.0,
                                                offer_min_confidence=0.0))  # no cold-start gate: the limit alone
    user = Shopper(engine)
    first = user.send("session_start", T0)
    second = user.send("session_start", T0 + 3_600_000)
    assert first["action"]["name"] == "retention_offer"
    assert second["action"]["name"] == "recommend"
    assert second["rules"][-1] == {"rule": "offer_limit",
                                  "effect": "retention offer suppressed: last one 1.0 h ago, limit once per 24 h"}
    third = user.send("session_start", T0 + 25 * 3_600_000)
    assert third["action"]["name"] == "retention_offer"


def test_outcomes_join_decisions_and_feed_rewards(shop: PersonalizationEngine) -> None:
    shop.policy.epsilon = 0.0  # the rule's action every time
    user = Shopper(shop)
    shown = user.send("page_view", T0, item_id="shoe-1", category="shoes")
    user.send("click", T0 + 1_000, item_id=ids(shown)[0], category="shoes", decision_id=shown["decision_id"])
    later = user.send("session_start", T0 + 120_000)  # closes the 60 s windows
    joined = {a["decision_id"]: a for a in user.settled}
    assert joined[shown["decision_id"]]["reward"] == 0.3
    assert joined[shown["decision_id"]]["joined_by"] == "decision_id"
    click_decision = f"d-{user.user_id}-2"
    assert joined[click_decision]["reward"] == 0.0 and joined[click_decision]["joined_by"] == "none"
    assert shop.action_rewards["recommend"].n == 2 and shop.policy.n_rewards == 2
    # The bandit learns in the context it chose in: the churn features plus the churn probability.
    assert set(user.profile.pending.entries[-1].context) == set(CHURN_FEATURES) | {"churn_probability"}
    assert later["action"]["observed_reward"] == pytest.approx(0.15)


def test_idle_expiry_settles_everything_pending(shop: PersonalizationEngine) -> None:
    user = Shopper(shop)
    user.send("page_view", T0, item_id="shoe-1", category="shoes")
    settled = shop.expire(user.profile, user.user_id, now_ms=T0 + 10, idle=True)
    assert [a["reason"] for a in settled] == ["user expired"] and user.profile.pending.entries == []


def test_snapshot_copies_history_and_pending(shop: PersonalizationEngine) -> None:
    user = Shopper(shop)
    user.send("purchase", T0, item_id="shoe-1", category="shoes", price=1.0)
    snapshot: UserFeatures = pickle.loads(profile_snapshot(user.profile))
    user.send("click", T0 + 10, item_id="shoe-2", category="shoes")
    assert "shoe-2" not in snapshot.history.viewed and len(snapshot.pending.entries) == 1
