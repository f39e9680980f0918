"""Cold start: no offer to a user the churn model knows too little about; the threshold is a setting."""

from __future__ import annotations

from operators.engine import EngineConfig, PersonalizationEngine

T0 = 1_700_000_000_000


def decide_views(engine: PersonalizationEngine, n: int) -> list[dict]:
    profile, decisions = None, []
    for i in range(n):
        event = {"event_id": f"e{i}", "user_id": "u", "type": "page_view", "ts": T0 + i * 1000, "item_id": "i1",
                 "category": "c"}
        profile, decision = engine.handle(profile, event, T0)
        decisions.append(decision)
    return decisions


def test_a_new_visitor_at_risk_gets_no_offer_until_the_model_knows_them() -> None:
    # An untrained model says 0.5; at threshold 0.3 the rules pick a retention offer for everyone.
    engine = PersonalizationEngine(EngineConfig(churn_threshold=0.3, nba_epsilon=0.0, offer_min_confidence=0.2))
    decisions = decide_views(engine, 60)
    first = decisions[0]
    assert first["action"]["name"] == "recommend" and first["confidence"] < 0.2
    rule, = [r for r in first["rules"] if r["rule"] == "cold_start"]
    assert rule["effect"].startswith("retention_offer withheld: confidence 0.01 < 0.20")
    offered = [d["confidence"] for d in decisions if d["action"]["name"] == "retention_offer"]
    assert offered and min(offered) >= 0.2, "offers once enough is known"
    assert decisions[-1]["action"]["name"] == "retention_offer"


def test_the_gate_is_configurable() -> None:
    engine = PersonalizationEngine(EngineConfig(churn_threshold=0.3, nba_epsilon=0.0, offer_min_confidence=0.0))
    assert decide_views(engine, 1)[0]["action"]["name"] == "retention_offer"
