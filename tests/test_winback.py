"""Proactive win-back through the dataflow's per-user step, timers in event time: when, what, and when not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from evaluation.replay import Replay
from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import UserFeatures
from operators.winback import next_check_ms

DAY_S, DAY = 86_400, 86_400_000
T0 = 1_700_000_000_000


def replay(**config: object) -> Replay:
    # An untrained churn model says 0.5 for everyone: at threshold 0.3 every quiet user is at risk.
    settings = {"churn_threshold": 0.3, "winback_min_idle_ms": 7 * DAY, "offer_min_confidence": 0.0, **config}
    return Replay(PersonalizationEngine(EngineConfig(**settings)), idle_ttl_s=DAY_S, retention_s=365 * DAY_S)


def visit(r: Replay, user: str, ts: int, n: int = 3) -> None:
    for i in range(n):
        r.event({"event_id": f"{user}-{ts}-{i}", "user_id": user, "type": "page_view", "ts": ts + i * 1000,
                 "item_id": f"i{i}", "category": "c"})


def teach_long_gaps_churn(engine: PersonalizationEngine) -> None:
    """Customers who came back after a long gap churned, those back within days did not."""
    for n in range(600):
        gap_days = 1 + n % 60
        profile = UserFeatures(first_ts=T0, user_id="t")
        for ts in (T0, T0 + gap_days * DAY):
            profile.update({"type": "page_view", "ts": ts, "item_id": "i1", "category": "c"})
        engine.churn.learn_one(profile.churn_features(), gap_days > 20)


def test_a_quiet_users_risk_crossing_the_threshold_sends_one_win_back() -> None:
    r = replay(churn_threshold=0.55)
    teach_long_gaps_churn(r.engine)
    visit(r, "u", T0)
    last_ts = T0 + 2000
    r.advance(T0 + 100 * DAY)
    assert r.timer_decisions, "no win-back"
    decision, = r.timer_decisions
    assert decision["trigger"] == "inactivity" and decision["event_type"] == "inactivity"
    assert decision["action"]["name"] == "win_back_offer" and decision["action"]["channel"] == "email"
    assert decision["decision_id"] == f"d-inactivity:u:{last_ts}" and decision["user_id"] == "u"
    assert decision["churn"]["probability"] >= 0.55
    explanation = decision["churn"]["explanation"]
    assert math.fsum([explanation["intercept"], *explanation["contributions"].values()]) == pytest.approx(
        explanation["score"], abs=1e-12)
    assert 1 / (1 + math.exp(-explanation["score"])) == pytest.approx(decision["churn"]["probability"])
    assert decision["audit"]["personal_data"] and "churn" in decision["audit"]["models"]
    assert set(decision["model_versions"]) >= {"churn", "recommender", "policy"}
    schema = json.loads((Path(__file__).parents[1] / "schemas" / "decision.schema.json").read_text())
    assert [e.message for e in Draft202012Validator(schema).iter_errors(decision)] == []
    # The risk grew with the quiet time: it was checked at 7, 8.75, ... days and crossed 0.55 later than at once.
    sent_after = (decision["event_ts"] - last_ts) / DAY
    assert 7 < sent_after < 100
    r.advance(T0 + 300 * DAY)
    assert len(r.timer_decisions) == 1, "one win-back per quiet stretch"
    visit(r, "u", T0 + 301 * DAY)
    r.advance(T0 + 400 * DAY)
    assert len(r.timer_decisions) == 2, "back and quiet again: a new stretch"


def test_the_checks_follow_a_growing_schedule() -> None:
    due, checks = 0, []
    while due < 365 * DAY:
        due = next_check_ms(0, due, 7 * DAY)
        checks.append(due / DAY)
    assert checks[:3] == [7.0, 8.75, pytest.approx(10.9375)] and 15 <= len(checks) <= 20


def test_no_win_back_without_consent_after_erasure_or_within_the_offer_limit(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[offers]\nretention_cooldown_hours = 2400\n")  # one offer per 100 days
    r = replay(rules_file=str(rules))
    r.event({"event_id": "c", "user_id": "private", "type": "consent", "personalization": False, "ts": T0})
    visit(r, "private", T0)
    visit(r, "forgotten", T0)
    r.event({"event_id": "f", "user_id": "forgotten", "type": "forget_user", "ts": T0 + 5000})
    visit(r, "offered", T0)  # at risk from the first event: a retention offer then, so no win-back for 100 days
    r.advance(T0 + 99 * DAY)
    assert r.timer_decisions == []
    r.advance(T0 + 200 * DAY)
    assert [d["user_id"] for d in r.timer_decisions] == ["offered"]


def test_cold_start_users_get_no_win_back() -> None:
    r = replay(offer_min_confidence=0.2)
    visit(r, "newcomer", T0, n=2)  # two events: confidence about 0.03
    r.advance(T0 + 200 * DAY)
    assert r.timer_decisions == []


def test_no_win_back_for_a_holdout_user_and_the_experiment_labels_the_ones_sent() -> None:
    """A holdout gets no offer of any kind: the quiet users of the holdout arm get no win-back."""
    r = replay(churn_threshold=0.55, holdout_share=0.5, experiment_salt="winback")
    teach_long_gaps_churn(r.engine)
    experiment = r.engine.experiments.current()
    users = [f"u{i}" for i in range(40)]
    for user in users:
        visit(r, user, T0)
    r.advance(T0 + 100 * DAY)
    held = {u for u in users if not experiment.assign(u).personalized}
    sent = {d["user_id"] for d in r.timer_decisions}
    assert held and sent, "both arms are represented"
    assert not sent & held, "a holdout user got a win-back offer"
    assert all(d["experiment"] == {"name": "holdout", "arm": "personalized"} for d in r.timer_decisions)
