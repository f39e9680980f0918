"""The engine in-process on a simulated stream: decisions are complete, explained exactly, and learn."""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pytest

from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import UserFeatures
from simulator import EventGenerator, SimulationConfig, World
from simulator.phrases import NEGATIVE


def run_stream(n: int, seed: int = 5) -> tuple[PersonalizationEngine, list[dict], World]:
    world = World(SimulationConfig(users=200, items=120, seed=seed))
    engine = PersonalizationEngine(EngineConfig(top_k=10))
    profiles: dict[str, UserFeatures | None] = {}
    decisions = []
    for sim_event in EventGenerator(world).events(n):
        event = sim_event.event
        user = event["user_id"]
        profiles[user], decision = engine.handle(profiles.get(user), event, ingest_ms=int(time.time() * 1000))
        decisions.append(decision)
    return engine, decisions, world


@pytest.fixture(scope="module")
def stream() -> tuple[PersonalizationEngine, list[dict], World]:
    return run_stream(12_000)


def test_every_decision_is_complete_and_exactly_explained(stream) -> None:
    _, decisions, _ = stream
    for d in decisions:
        assert d["schema"] == "pulse.decision/1" and d["decision_id"] == f"d-{d['event_id']}"
        assert d["decided_ts"] >= d["ingest_ts"]
        if not d["personalized"]:
            continue
        churn = d["churn"]
        assert 0.0 <= churn["probability"] <= 1.0
        logit = churn["explanation"]["intercept"] + sum(churn["explanation"]["contributions"].values())
        assert logit == pytest.approx(churn["explanation"]["score"], abs=1e-9)
        assert 1 / (1 + math.exp(-logit)) == pytest.approx(churn["probability"], abs=1e-9)
        assert len(d["recommendations"]) <= 10
        scores = [r["score"] for r in d["recommendations"]]
        assert scores == sorted(scores, reverse=True)
        for rec in d["recommendations"]:
            assert sum(rec["components"].values()) == pytest.approx(rec["score"], abs=1e-9)
        message = d["sentiment"]["message"]
        if d["event_type"] == "chat_message":
            expl = message["explanation"]
            assert 2 / (1 + math.exp(-expl["score"])) - 1 == pytest.approx(message["score"], abs=1e-9)
        assert d["action"]["name"] in {"recommend", "retention_offer", "discount", "do_nothing", "escalate_to_agent"}
        assert d["action"]["reason"] and 0 < d["action"]["propensity"] <= 1
        assert 0.0 <= d["confidence"] <= 1.0 and d["segment"] in range(5)
        assert set(d["model_versions"]) == {"recommender", "churn", "sentiment", "policy", "segments", "rules",
                                            "experiment", "snapshot"}
    assert all(len(d["recommendations"]) == 10 for d in decisions[-1000:] if d["personalized"])


def test_churn_probability_tracks_ground_truth(stream) -> None:
    """Late in the stream, predicted churn correlates with the simulator's hidden churn risk."""
    _, decisions, world = stream
    risk = {u.user_id: u.churn_risk for u in world.users}
    late = [d for d in decisions[len(decisions) // 2:] if d["personalized"] and d["event_type"] == "session_end"]
    predicted = np.array([d["churn"]["probability"] for d in late])
    truth = np.array([risk[d["user_id"]] for d in late])
    assert len(late) > 100
    assert np.corrcoef(predicted, truth)[0, 1] > 0.3


def test_recommendations_follow_the_users_taste(stream) -> None:
    """Users' recommendations fall mostly in their hidden favourite categories (better than chance)."""
    _, decisions, world = stream
    users = {u.user_id: u for u in world.users}
    last = {}
    for d in decisions:
        if d["personalized"] and d["recommendations"]:
            last[d["user_id"]] = d
    hits = []
    for user_id, d in last.items():
        favourite = users[user_id].top_category
        hits.append(np.mean([r["category"] == favourite for r in d["recommendations"]]))
    chance = 1 / world.config.categories
    assert np.mean(hits) > 2 * chance


def test_negative_chat_escalates_to_a_human(stream) -> None:
    engine, _, _ = stream
    profile = None
    for i, text in enumerate([f"{NEGATIVE[0]}. {NEGATIVE[4]}.", f"{NEGATIVE[2]}. {NEGATIVE[8]}."]):
        event = {"event_id": f"x{i}", "user_id": "angry", "type": "chat_message", "text": text,
                 "ts": 1_700_000_000_000 + i}
        profile, decision = engine.handle(profile, event, ingest_ms=event["ts"])
    assert decision["sentiment"]["recent"] < -0.5
    assert decision["action"]["name"] == "escalate_to_agent"


def test_a_hand_over_answers_the_messages_sent_so_far(stream) -> None:
    """One escalation per negative message: the events after it, until the next message, follow the policy."""
    engine, _, _ = stream
    profile, ts = None, 1_700_000_000_000
    actions = []
    for i, (kind, text) in enumerate([("chat_message", f"{NEGATIVE[0]}. {NEGATIVE[4]}."), ("page_view", None),
                                      ("click", None), ("chat_message", f"{NEGATIVE[2]}. {NEGATIVE[8]}."),
                                      ("page_view", None)]):
        event = {"event_id": f"h{i}", "user_id": "upset", "type": kind, "ts": ts + i}
        event.update({"text": text} if text else {"item_id": "item-0001", "category": "cat-00"})
        profile, decision = engine.handle(profile, event, ingest_ms=event["ts"])
        actions.append(decision["action"]["name"])
        withheld = [r for r in decision["rules"] if r["rule"] == "escalation_once"]
        assert bool(withheld) == (kind != "chat_message")
        assert decision["sentiment"]["recent"] < -0.5
    assert [a == "escalate_to_agent" for a in actions] == [True, False, False, True, False]
    restored = pickle.loads(pickle.dumps(profile))
    assert restored.history.escalated_at_chat == profile.n_chats == 2


def test_forget_and_consent() -> None:
    engine = PersonalizationEngine()
    event = {"event_id": "a", "user_id": "u", "type": "page_view", "item_id": "i", "category": "c",
             "ts": 1_700_000_000_000}
    profile, _ = engine.handle(None, event, event["ts"])
    assert profile is not None and profile.n_page_views == 1
    off = {"event_id": "b", "user_id": "u", "type": "consent", "personalization": False, "ts": event["ts"] + 1}
    profile, decision = engine.handle(profile, off, off["ts"])
    assert profile.n_page_views == 0 and decision["personalized"] is False
    profile, decision = engine.handle(profile, {**event, "event_id": "c"}, event["ts"] + 2)
    assert profile.n_events == 0 and decision["personalized"] is False, "no profile is built without consent"
    forget = {"event_id": "d", "user_id": "u", "type": "forget_user", "ts": event["ts"] + 3}
    profile, decision = engine.handle(profile, forget, forget["ts"])
    assert profile is None and decision["forgotten"] is True
