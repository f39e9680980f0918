"""Every kind of decision, as the dataflow's step emits it, has the shape operators.decision declares."""

from typing import Any

from evaluation.replay import Replay
from operators.audit import decision_audit
from operators.decision import ActionRecord, Decision
from operators.engine import EngineConfig, PersonalizationEngine

DAY = 86_400_000
T0 = 1_700_000_000_000


def in_declared_order(record: dict[str, Any], declared: type) -> bool:
    """The record's keys are declared by the TypedDict, in its order, and include all of its required keys."""
    order = list(declared.__annotations__)
    positions = [order.index(key) for key in record if key in order]
    return (len(positions) == len(record) and positions == sorted(positions)
            and declared.__required_keys__ <= record.keys())


def every_kind() -> dict[str, dict[str, Any]]:
    """One decision of each kind, decoded from the step's output (a win-back, too)."""
    engine = PersonalizationEngine(EngineConfig(holdout_share=0.5, churn_threshold=0.3, winback_min_idle_ms=7 * DAY,
                                                offer_min_confidence=0.0))
    r = Replay(engine, idle_ttl_s=86_400, retention_s=365 * 86_400)
    experiment = engine.experiments.current()
    treated, held = (next(f"u{i}" for i in range(1000) if experiment.assign(f"u{i}").name == arm)
                     for arm in ("personalized", "holdout"))

    def send(user: str, kind: str, ts: int, **fields: Any) -> dict[str, Any]:
        return r.event({"event_id": f"{user}-{ts}", "user_id": user, "type": kind, "ts": ts, **fields})

    kinds = {"personalized": send(treated, "page_view", T0, item_id="i1", category="c"),
             "chat": send(treated, "chat_message", T0 + 1, text="late again, not good", label="negative"),
             "holdout": send(held, "page_view", T0, item_id="i1", category="c"),
             "no consent": send("private", "consent", T0, personalization=False)}
    r.advance(T0 + 30 * DAY)
    kinds["win-back"], = r.timer_decisions
    kinds["forgotten"] = send(treated, "forget_user", T0 + 31 * DAY)
    return kinds


def test_every_kind_of_decision_has_the_declared_keys_in_order_and_its_own_audit() -> None:
    kinds = every_kind()
    assert kinds["win-back"]["trigger"] == "inactivity" and kinds["forgotten"]["forgotten"] is True
    assert kinds["holdout"]["experiment"]["arm"] == "holdout" and kinds["no consent"]["experiment"] is None
    for kind, decision in kinds.items():
        assert in_declared_order(decision, Decision), kind
        assert in_declared_order(decision["action"], ActionRecord), kind
        assert decision["audit"] == decision_audit(decision), kind
    assert "sentiment" in kinds["chat"]["audit"]["models"]
    assert "sentiment" not in kinds["personalized"]["audit"]["models"], "the text model reads chat messages only"
