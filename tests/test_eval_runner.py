"""The evaluation runner on short streams: the control group gets no personalization, regimes behave as named."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from evaluation.report import summarize, write_report
from evaluation.runner import ARMS, EvalConfig, StratifiedAssigner, explanation_errors, run
from online_models.bandit import NBA_ACTIONS
from simulator.reactions import AT_RISK, react
from simulator.scenarios import SCENARIOS, ScenarioStream

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run():
    served = []
    result = run(EvalConfig(scenario="drift", events=4000, users=80, items=120, seed=3),
                 on_decision=lambda arm, event, decision: served.append((arm, event["user_id"], decision)))
    return result, served


def test_control_group_receives_no_personalization(small_run) -> None:
    result, served = small_run
    by_arm = defaultdict(list)
    for arm, user_id, decision in served:
        by_arm[arm].append(decision)
        assert result["user_stats"][user_id]["arm"] == arm
    assert all(len(by_arm[arm]) > 20 for arm in ARMS)
    for decision in by_arm["control"]:
        assert decision["personalized"] is False
        assert decision["action"]["name"] == "recommend" and decision["churn"] is None
        assert decision["features"] == {} and "segment" not in decision and "confidence" not in decision
        for rec in decision["recommendations"]:
            assert rec["components"]["collaborative"] == 0.0 and rec["components"]["content"] == 0.0
    treated = by_arm["personalized"] + by_arm["personalized+bandit"]
    assert all(d["personalized"] is True and "segment" in d for d in treated)
    assert any(r["components"]["content"] > 0 for d in treated for r in d["recommendations"])
    assert {d["action"]["name"] for d in by_arm["personalized+bandit"]} - {"recommend"}


def test_static_is_frozen_and_periodic_retrains(small_run) -> None:
    result, _ = small_run
    variants = result["variants"]
    freeze = result["freeze_step"]
    online_reco, static_reco = variants["online"].model("reco"), variants["static"].model("reco")
    assert static_reco.n_learned < online_reco.n_learned
    learned_before_freeze = sum(1 for s, *_ in result["records"]["online"].reco if s < freeze)
    assert static_reco.n_learned >= learned_before_freeze  # it learned the whole first part
    cfg = result["config"]
    assert variants["periodic"].retrains == list(range(freeze, cfg["events"], cfg["retrain_every"]))


def test_explanations_exact_on_every_personalized_decision(small_run) -> None:
    result, _ = small_run
    assert result["explanations_checked"] > 1000
    assert set(result["explanation_max_error"]) >= {"churn_sum", "churn_probability", "recommendation_sum"}
    assert max(result["explanation_max_error"].values()) < 1e-9
    broken = {"churn": {"probability": 0.5,
                        "explanation": {"intercept": 0.0, "contributions": {"a": 1.0}, "score": 1.0}}}
    assert explanation_errors(broken)["churn_probability"] > 0.2


def test_stratified_assignment_is_balanced_within_strata() -> None:
    assigner = StratifiedAssigner(ARMS, seed=0)
    rng = np.random.default_rng(0)
    strata = {f"u{i}": int(rng.integers(4)) for i in range(301)}
    for user, stratum in strata.items():
        assigner.assign(user, stratum)
        assert assigner.assign(user, stratum) == assigner.assigned[user]  # sticky
    for stratum in range(4):
        counts = Counter(assigner.assigned[u] for u, s in strata.items() if s == stratum)
        assert max(counts.values()) - min(counts.get(a, 0) for a in ARMS) <= 1


def test_drift_scenario_rotates_preferences_and_flips_churn_drivers() -> None:
    stream = ScenarioStream(SCENARIOS["drift"], n_events=2000, users=30, items=60, seed=1)
    before = {u: p for u, p in stream.profiles.items()}
    for _ in stream:
        pass
    assert stream.events_by_phase == [(1000, "drift")]
    user = "user-00001"
    assert np.allclose(np.roll(before[user].category_weights, 4), stream.profiles[user].category_weights)
    engaged = [p for p in stream.profiles.values() if p.engagement > 0.7]
    idle = [p for p in stream.profiles.values() if p.engagement < 0.3]
    assert np.mean([p.churn_risk for p in engaged]) > np.mean([p.churn_risk for p in idle])  # flipped
    assert np.mean([p.churn_risk for p in before.values() if p.engagement > 0.7]) < \
        np.mean([p.churn_risk for p in before.values() if p.engagement < 0.3])


def test_cold_start_adds_users_and_items_and_seasonal_peaks() -> None:
    stream = ScenarioStream(SCENARIOS["cold-start"], n_events=3000, users=20, items=60, seed=2)
    list(stream)
    assert len(stream.world.items) == 60 + 3000 // 150 - 1 and len(stream.world.users) >= 20 + 3000 // 40 - 1
    seasonal = ScenarioStream(SCENARIOS["seasonal"], n_events=6000, users=200, items=60, seed=2)
    starts = [e["ts"] for e in seasonal if e["type"] == "session_start"]
    peak = sum(seasonal.season_intensity(ts) > 0 for ts in starts[200:])  # after the initial arrivals
    assert peak / len(starts[200:]) > 0.6  # uniform arrivals would give 0.5; rate x(1 +- 0.6 sin) gives ~0.69


def test_reactions_follow_ground_truth() -> None:
    stream = ScenarioStream(SCENARIOS["stationary"], n_events=10, users=50, items=80, seed=4)
    world = stream.world
    user = max(stream.profiles.values(), key=lambda p: p.category_weights.max())
    liked = [i.item_id for i in world.items if i.category == user.top_category][:10]
    disliked = [i.item_id for i in world.items if user.category_weights[world.categories.index(i.category)] < 0.01][:10]
    rng = np.random.default_rng(0)
    clicks = {"liked": 0, "disliked": 0}
    for name, items in (("liked", liked), ("disliked", disliked)):
        decision = {"decision_id": "d", "recommendations": [{"item_id": i} for i in items],
                    "action": {"name": "recommend"}}
        clicks[name] = sum(react(world, user, decision, 0, rng, 0.1).clicked is not None for _ in range(300))
    assert clicks["liked"] > 2 * clicks["disliked"]
    offer = {"recommendations": [], "action": {"name": "retention_offer"}}
    assert react(world, user, offer, 0, rng, churn_risk=AT_RISK + 0.1).churn_factor == 0.5
    assert react(world, user, offer, 0, rng, churn_risk=AT_RISK - 0.1).churn_factor == 1.0
    nothing = {"recommendations": [{"item_id": i} for i in liked], "action": {"name": "do_nothing"}}
    assert react(world, user, nothing, 0, rng, 0.1).events == []


def test_report_files(small_run, tmp_path: Path) -> None:
    result, _ = small_run
    summary = write_report(result, tmp_path)
    for name in ("report.md", "report.json", "churn_auc.png", "recommendations.png", "sentiment.png", "ab_test.png"):
        assert (tmp_path / name).stat().st_size > 500
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["phases"]) == {"after_freeze", "freeze_to_drift", "after_drift"}
    assert data["ab_test"]["control"]["users"] > 0 and "lift_vs_control" in data["ab_test"]["personalized"]["revenue"]
    assert summary["drift"]["periodic_retrains"] == len(result["variants"]["periodic"].retrains)


def test_bandit_arm_logs_its_greedy_choice_and_the_report_evaluates_it(small_run) -> None:
    """The logged action is the greedy one exactly when its propensity is the greedy propensity."""
    result, _ = small_run
    logs = [d for d in result["decision_log"] if d["arm"] == "personalized+bandit"]
    epsilon, k = result["config"]["bandit_epsilon"], len(NBA_ACTIONS)
    assert len(logs) > 20
    for d in logs:
        assert d["greedy_action"] in NBA_ACTIONS
        assert (d["action"] == d["greedy_action"]) == (d["propensity"] == pytest.approx(1 - epsilon + epsilon / k))
    assert all(d["greedy_action"] is None for d in result["decision_log"] if d["arm"] != "personalized+bandit")
    by_hand = sum(d["reward"] / d["propensity"] for d in logs if d["action"] == d["greedy_action"]) / len(logs)
    estimate = summarize(result)["bandit"]["estimates"]["bandit greedy (its learned choice, no exploration)"]
    assert estimate["ips"] == pytest.approx(by_hand)


def test_cli_evaluate(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pulse.cli", "evaluate", "--scenario", "stationary", "--events", "1500",
                          "--users", "40", "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "report.md").read_text().startswith("# Pulse evaluation — scenario `stationary`")
    bad = subprocess.run([sys.executable, "-m", "pulse.cli", "evaluate", "--scenario", "nope"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
