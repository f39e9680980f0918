"""Experiments in-process: assignment by salted hash, what an arm changes in the engine, outcomes, hot reload."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operators.attribution import OutcomeLabels, PendingDecision, _restore_pending
from operators.audit import decision_audit
from operators.engine import EngineConfig, PersonalizationEngine
from operators.experiments import (
    ExperimentError,
    ExperimentsFile,
    default_experiment,
    parse_experiment,
)
from operators.hot_reload import ConfigFileError
from operators.parse import Accepted
from operators.privacy import Pseudonymizer, pseudonymize

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_763_900_000_000
OFFERS_FILE = """
name = "offers"
salt = "offers-salt"
[[arms]]
name = "holdout"
share = 0.2
personalized = false
[[arms]]
name = "offers"
share = 0.4
[[arms]]
name = "no-offers"
share = 0.4
offers = false
"""


def users_in(experiment, arm: str, n: int = 3) -> list[str]:
    """The first `n` user ids (u0, u1, ...) the experiment puts in `arm`."""
    found = [f"u{i}" for i in range(10_000) if experiment.assign(f"u{i}").name == arm]
    return found[:n]


def send(engine: PersonalizationEngine, profiles: dict, user: str, kind: str, ts: int, **fields) -> dict:
    return send_settling(engine, profiles, user, kind, ts, **fields)[0]


def send_settling(engine: PersonalizationEngine, profiles: dict, user: str, kind: str, ts: int,
                  **fields) -> tuple[dict, list[dict]]:
    """The decision, and the outcomes the event settled."""
    event = {"event_id": f"{user}-{kind}-{ts}", "user_id": user, "type": kind, "ts": ts, **fields}
    profiles[user], decision, outcomes = engine.handle_with_outcomes(profiles.get(user), event, ingest_ms=ts)
    return decision, outcomes


def test_assignment_follows_the_shares_and_is_a_pure_function_of_salt_and_user() -> None:
    experiment = default_experiment(0.05, salt="s1")
    users = [f"user-{i:06d}" for i in range(40_000)]
    holdout = sum(experiment.assign(user).name == "holdout" for user in users)
    assert abs(holdout - 2000) < 4 * math.sqrt(40_000 * 0.05 * 0.95)
    again = default_experiment(0.05, salt="s1")
    assert all(again.assign(user) == experiment.assign(user) for user in users[:2000])
    other_salt = default_experiment(0.05, salt="s2")
    moved = sum(other_salt.assign(user).name != experiment.assign(user).name for user in users)
    assert 2 * 1500 < moved < 2 * 2400, "another salt reshuffles users independently"
    assert [arm.name for arm in default_experiment(0.0).arms] == ["personalized"]


def test_assignment_is_the_same_in_another_process() -> None:
    """No per-process randomness (Python's str hash is salted per process; the assignment must not be)."""
    users = [f"user-{i}" for i in range(200)]
    code = ("import json, sys; from operators.experiments import default_experiment as d; "
            "e = d(0.3, 'cross'); print(json.dumps([e.assign(u).name for u in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(users)], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    experiment = default_experiment(0.3, "cross")
    assert json.loads(out.stdout) == [experiment.assign(user).name for user in users]


def test_assignment_does_not_depend_on_event_order() -> None:
    events = [{"event_id": f"e{i}", "user_id": f"u{i % 30}", "type": "page_view", "ts": T0 + i, "item_id": f"i{i % 7}",
               "category": "c"} for i in range(300)]
    arms = []
    for ordered in (events, list(reversed(events))):
        engine, profiles, seen = PersonalizationEngine(EngineConfig(holdout_share=0.4, experiment_salt="x")), {}, {}
        for event in ordered:
            profiles[event["user_id"]], decision = engine.handle(profiles.get(event["user_id"]), event, event["ts"])
            seen.setdefault(event["user_id"], set()).add(decision["experiment"]["arm"])
        arms.append(seen)
    assert arms[0] == arms[1] and all(len(arm) == 1 for arm in arms[0].values())
    assert {next(iter(arm)) for arm in arms[0].values()} == {"holdout", "personalized"}


def test_the_arm_is_the_pseudonym_s_when_user_ids_are_pseudonymized() -> None:
    engine = PersonalizationEngine(EngineConfig(holdout_share=0.5, experiment_salt="p"))
    pseudonymizer, experiment = Pseudonymizer("key"), engine.experiments.current()
    for i in range(40):
        raw = {"event_id": f"e{i}", "user_id": f"person-{i}", "type": "session_start", "ts": T0}
        event = pseudonymizer(Accepted(raw, T0)).event
        _, decision = engine.handle(None, event, T0)
        assert decision["user_id"] == pseudonymize(f"person-{i}", "key")
        assert decision["experiment"]["arm"] == experiment.assign(pseudonymize(f"person-{i}", "key")).name


def test_holdout_users_get_the_non_personalized_decision_and_their_outcomes_are_logged() -> None:
    engine = PersonalizationEngine(EngineConfig(holdout_share=0.5, experiment_salt="h", attribution_window_ms=60_000,
                                                churn_threshold=0.0, nba_epsilon=0.0,
                                                offer_min_confidence=0.0))  # no cold-start gate: offers at once
    experiment, profiles = engine.experiments.current(), {}
    held, treated = users_in(experiment, "holdout", 1)[0], users_in(experiment, "personalized", 1)[0]
    shown = send(engine, profiles, held, "session_start", T0)
    assert shown["personalized"] is False and shown["churn"] is None and shown["features"] == {}
    assert shown["action"]["name"] == "recommend" and "holdout" in shown["action"]["reason"]
    assert shown["experiment"] == {"name": "holdout", "arm": "holdout"}
    assert shown["model_versions"] == {"recommender": engine.recommender.version, "policy": "non-personalized",
                                       "experiment": experiment.version}
    assert shown["audit"] == decision_audit(shown)
    assert shown["audit"]["basis"] == "holdout arm 'holdout' of experiment 'holdout'"
    send(engine, profiles, held, "click", T0 + 1000, item_id="i1", category="c", decision_id=shown["decision_id"])
    send(engine, profiles, held, "purchase", T0 + 2000, item_id="i1", category="c", price=12.5,
         decision_id=shown["decision_id"])
    assert profiles[held].n_clicks == 1, "a holdout user's profile still learns"
    _, later = send_settling(engine, profiles, held, "page_view", T0 + 120_000, item_id="i2", category="c")
    outcome = next(o for o in later if o["decision_id"] == shown["decision_id"])
    assert outcome["experiment"] == {"name": "holdout", "arm": "holdout"}
    assert outcome["reward"] == 1.0 and outcome["revenue"] == 12.5 and outcome["event_type"] == "session_start"
    assert engine.policy.n_rewards == 0, "the policy does not learn from decisions it did not make"

    personalized = send(engine, profiles, treated, "session_start", T0)
    assert personalized["personalized"] is True and personalized["experiment"]["arm"] == "personalized"
    assert personalized["action"]["name"] == "retention_offer"  # churn threshold 0: the rules offer
    assert personalized["model_versions"]["experiment"] == experiment.version
    _, settled = send_settling(engine, profiles, treated, "page_view", T0 + 120_000, item_id="i2", category="c")
    assert [o["experiment"]["arm"] for o in settled] == ["personalized"] and engine.policy.n_rewards == 1


def test_users_without_consent_and_forgotten_users_are_in_no_experiment() -> None:
    engine, profiles = PersonalizationEngine(EngineConfig(holdout_share=0.5, attribution_window_ms=60_000)), {}
    off = send(engine, profiles, "private", "consent", T0, personalization=False)
    view = send(engine, profiles, "private", "page_view", T0 + 1, item_id="i1", category="c")
    assert off["experiment"] is None and view["experiment"] is None and view["personalized"] is False
    assert view["audit"] == decision_audit(view) and view["audit"]["basis"] == "no consent to personalization"
    assert profiles["private"].pending.entries == [], "no outcome is ever logged for them"

    send(engine, profiles, "leaver", "session_start", T0)
    forgotten, outcomes = send_settling(engine, profiles, "leaver", "forget_user", T0 + 1)
    assert forgotten["experiment"] is None and profiles["leaver"] is None
    assert outcomes == [], "pending decisions are dropped, not logged"
    # The assignment is recomputed from the id, never stored: the engine's state holds nothing per user for it.
    assert b"leaver" not in pickle.dumps(engine.experiments.current())


def test_an_arm_without_offers_turns_offers_into_recommendations(tmp_path: Path) -> None:
    path = tmp_path / "experiment.toml"
    path.write_text(OFFERS_FILE)
    engine = PersonalizationEngine(EngineConfig(experiments_file=str(path), churn_threshold=0.0, nba_epsilon=0.0,
                                                offer_min_confidence=0.0))  # no cold-start gate: offers at once
    experiment, profiles = engine.experiments.current(), {}
    assert experiment.control == "holdout" and experiment.version.startswith("experiment.toml@")
    with_offers = [send(engine, profiles, user, "session_start", T0) for user in users_in(experiment, "offers")]
    without = [send(engine, profiles, user, "session_start", T0) for user in users_in(experiment, "no-offers")]
    assert {d["action"]["name"] for d in with_offers} == {"retention_offer"}
    for decision in without:
        assert decision["action"] == {"name": "recommend", "propensity": 1.0, "observed_reward": None,
                                      "reason": "retention_offer withheld: experiment arm 'no-offers' makes no offers"}
        assert decision["rules"][-1]["rule"] == "experiment" and decision["personalized"] is True
        assert decision["experiment"] == {"name": "offers", "arm": "no-offers"}
    assert all(profiles[d["user_id"]].history.last_offer_ms is None for d in without), "no offer cooldown started"


def test_experiments_file_hot_reload_keeps_the_last_good_version(tmp_path: Path, caplog) -> None:
    path = tmp_path / "experiment.toml"
    path.write_text(OFFERS_FILE)
    engine = PersonalizationEngine(EngineConfig(experiments_file=str(path)))
    first = engine.experiments.current()
    user = users_in(first, "offers", 1)[0]
    assert send(engine, {}, user, "session_start", T0)["model_versions"]["experiment"] == first.version

    path.write_text(OFFERS_FILE.replace('name = "offers"\nsalt', 'name = "offers-2"\nsalt'))
    os.utime(path, (time.time() + 5, time.time() + 5))
    time.sleep(1.05)  # re-read within a second of the change
    decision = send(engine, {}, user, "session_start", T0 + 1)
    assert decision["experiment"]["name"] == "offers-2" and decision["model_versions"]["experiment"] != first.version
    second = engine.experiments.current()

    path.write_text(OFFERS_FILE.replace("share = 0.2", "share = 0.3"))  # shares no longer sum to 1
    os.utime(path, (time.time() + 10, time.time() + 10))
    time.sleep(1.05)
    with caplog.at_level(logging.ERROR, logger="pulse.config"):
        assert engine.experiments.current() is second, "a broken edit keeps the experiment in force"
    assert "arm shares must sum to 1" in caplog.text


@pytest.mark.parametrize(("text", "error"), [
    ('name = "x"\n', "at least one [[arms]]"),
    ('name = "x"\n[[arms]]\nname = "a"\nshare = 0.5\n', "must sum to 1"),
    ('name = "x"\n[[arms]]\nname = "a"\nshare = 1\noffer = false\n', "unknown keys ['offer']"),
    ('name = "x"\ncontrol = "b"\n[[arms]]\nname = "a"\nshare = 1\n', "control arm 'b'"),
    ('name = "x y"\n[[arms]]\nname = "a"\nshare = 1\n', "experiment name"),
    ('name = "x"\n[[arms]]\nname = "a"\nshare = 0.5\n[[arms]]\nname = "a"\nshare = 0.5\n', "unique"),
    ('name = "x"\n[[arms]]\nname = "a"\nshare = "half"\n', "'share' (a number)"),
    ("name = ", "not valid TOML"),
])
def test_invalid_experiments_are_rejected(text: str, error: str) -> None:
    with pytest.raises(ExperimentError, match=re.escape(error)):
        parse_experiment(text, "f@0")


def test_a_broken_or_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read experiment file"):
        ExperimentsFile(str(tmp_path / "absent.toml"), default_experiment())
    (tmp_path / "bad.toml").write_text('name = "x"\n')
    with pytest.raises(ConfigFileError, match="at least one"):
        ExperimentsFile(str(tmp_path / "bad.toml"), default_experiment())


def test_pending_decisions_keep_their_labels_through_snapshots() -> None:
    labels = OutcomeLabels("holdout", "holdout", False, "session_start")
    pending = PendingDecision("d-1", T0, "recommend", 1.0, ("i1",), {}, labels=OutcomeLabels(*labels), revenue=3.5)
    restored = pickle.loads(pickle.dumps(pending))
    assert restored == pending and restored.labels is pending.labels, "labels are shared, not copied per decision"
    old = _restore_pending("d-2", T0, "recommend", 1.0, (), (), b"", 0.0, (), "none")  # a snapshot from before
    assert old.labels is None and old.revenue == 0


def test_the_recommender_hit_rate_ignores_non_personalized_decisions() -> None:
    """Holdout users are shown the popularity ranking: their clicks say nothing about the recommender."""
    from prometheus_client import CollectorRegistry

    from operators.metrics import EngineMetrics

    metrics = EngineMetrics(CollectorRegistry())
    for share in (1.0, 0.0):
        engine, profiles = PersonalizationEngine(EngineConfig(holdout_share=share)), {}
        for i, kind in enumerate(("page_view", "click")):
            event = {"event_id": f"e{share}-{i}", "user_id": "u", "type": kind, "ts": T0 + i, "item_id": "i1",
                     "category": "c"}
            metrics.before_event(event, engine, profiles.get("u"))
            profiles["u"], decision = engine.handle(profiles.get("u"), event, T0 + i)
            metrics.after_decision(decision)
        assert len(metrics.hits) == (0 if share == 1.0 else 1)


def test_a_holdout_users_decisions_are_stored_and_a_withdrawn_users_are_not() -> None:
    """Redis stores a consenting holdout user's decisions; it stores nothing of a user without consent."""
    from operators.user_state import user_logic_builder

    engine = PersonalizationEngine(EngineConfig(holdout_share=0.5, experiment_salt="h"))
    held = users_in(engine.experiments.current(), "holdout", 1)[0]
    logic = user_logic_builder(engine)(None)

    def step(kind: str, ts: int, **fields):
        event = {"event_id": f"{held}-{kind}-{ts}", "user_id": held, "type": kind, "ts": ts, **fields}
        (out,), _ = logic.on_batch([Accepted(event, ts)])
        return out

    shown = step("page_view", T0, item_id="i1", category="c")
    assert json.loads(shown.payload)["personalized"] is False and shown.personal, "a holdout user consented"
    withdrawn = step("consent", T0 + 1, personalization=False)
    assert not withdrawn.personal and not step("page_view", T0 + 2, item_id="i1").personal
