"""Live uplift in-process: interval coverage with per-user clustering, the sample-ratio check, the aggregator's
bounds and privacy, and the whole loop (simulated users reacting to the engine's decisions) showing the lift."""

from __future__ import annotations

import gc
import math
import types

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats as scipy_stats

from connectors.experiments_api import ExperimentsApi
from evaluation.bootstrap import GroupResampler
from operators.engine import EngineConfig, PersonalizationEngine
from operators.experiments import default_experiment
from operators.uplift import UpliftAggregator
from operators.uplift_stats import (
    Z_95,
    chi2_sf,
    ratio_estimate,
    relative_lift,
    sample_ratio_check,
)
from pulse.config import Settings
from simulator.scenarios import SCENARIOS, ScenarioStream

SALT = "uplift-test"


def clustered_users(rng: np.random.Generator, n: int, rate_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Decisions and clicks of `n` users whose click propensities differ a lot (strong within-user correlation)."""
    decisions = 1 + rng.poisson(10, n)
    propensity = np.minimum(rng.beta(1.0, 4.0, n) * rate_scale, 1.0)
    return decisions, rng.binomial(decisions, propensity)


def buckets(values: np.ndarray, bucket_of_user: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(bucket_of_user, weights=values, minlength=k)


def test_ratio_intervals_cover_with_per_user_clustering_where_per_decision_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    k, covered, naive_covered, reps = 1024, 0, 0, 400
    for _ in range(reps):
        decisions, clicks = clustered_users(rng, 600)
        bucket_of_user = rng.integers(0, k, len(decisions))
        estimate = ratio_estimate(buckets(clicks, bucket_of_user, k), buckets(decisions, bucket_of_user, k))
        covered += estimate.low <= 0.2 <= estimate.high
        p, n = clicks.sum() / decisions.sum(), decisions.sum()
        naive_covered += abs(p - 0.2) <= Z_95 * math.sqrt(p * (1 - p) / n)  # decisions treated as independent
    assert 0.93 <= covered / reps <= 0.97
    assert naive_covered / reps < 0.85, "ignoring that a user's decisions are correlated under-covers"


def test_relative_lift_intervals_cover_the_true_lift() -> None:
    rng = np.random.default_rng(2)
    k, covered, reps = 1024, 0, 400
    true_lift = 1.25 * (1.0 - _clip_loss()) - 1.0
    for _ in range(reps):
        estimates = []
        for scale, n in ((1.0, 300), (1.25, 700)):
            decisions, clicks = clustered_users(rng, n, scale)
            bucket_of_user = rng.integers(0, k, n)
            estimates.append(ratio_estimate(buckets(clicks, bucket_of_user, k), buckets(decisions, bucket_of_user, k)))
        control, treatment = estimates
        lift = relative_lift(treatment, control)
        covered += lift.low <= true_lift <= lift.high
    assert 0.93 <= covered / reps <= 0.975


def _clip_loss() -> float:
    """Relative loss of E[min(1.25 p, 1)] against 1.25 E[p] for p ~ Beta(1, 4) (the true lift is just under 25%)."""
    grid = np.linspace(0, 1, 200_001)
    density = scipy_stats.beta(1, 4).pdf(grid)
    clipped = np.trapezoid(np.minimum(1.25 * grid, 1.0) * density, grid)
    return 1.0 - clipped / (1.25 * 0.2)


def test_aggregator_intervals_agree_with_a_bootstrap_over_users() -> None:
    rng = np.random.default_rng(3)
    aggregator = UpliftAggregator(min_users=1)
    users, rewards = [], []
    for user, (n, p) in enumerate(zip(1 + rng.poisson(8, 800), rng.beta(1.0, 4.0, 800))):
        for j in range(n):
            reward = 0.3 if rng.random() < p else 0.0
            aggregator.add({"decision_id": f"d-{user}-{j}", "user_id": f"u{user}", "reward": reward,
                            "joined_by": "decision_id" if reward else "none", "action": "recommend",
                            "experiment": {"name": "x", "arm": "a"}})
            users.append(user)
            rewards.append(float(reward > 0))
    ours = aggregator.report()["experiments"][0]["arms"][0]["metrics"]["click_rate"]
    point, low, high = GroupResampler(users, n_boot=1000, seed=0).mean(rewards)
    assert ours["value"] == pytest.approx(point)
    assert (ours["high"] - ours["low"]) == pytest.approx(high - low, rel=0.15)


def test_chi2_survival_matches_scipy() -> None:
    for df in range(1, 9):
        for x in (0.1, 1.0, 3.84, 10.0, 25.0, 60.0):
            assert chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9, abs=1e-15)


def test_sample_ratio_check_false_alarm_rate_and_power() -> None:
    rng = np.random.default_rng(4)
    shares = {"holdout": 0.05, "personalized": 0.95}
    def alarm() -> bool:
        counts = rng.multinomial(5000, list(shares.values()))
        return sample_ratio_check(dict(zip(shares, counts)), shares, 0.01)["alarm"]

    alarms = sum(alarm() for _ in range(3000))
    assert 0.005 <= alarms / 3000 <= 0.016, "about alpha of correct assignments alarm"
    skewed = sum(sample_ratio_check(dict(zip(shares, rng.multinomial(5000, [0.06, 0.94]))), shares, 0.001)["alarm"]
                 for _ in range(200))
    assert skewed / 200 > 0.5, "5000 users catch a 6% holdout configured as 5% most of the time"
    assert sample_ratio_check({"holdout": 3, "personalized": 20}, shares, 0.001)["checked"] is False
    stray = sample_ratio_check({"holdout": 50, "personalized": 950, "old-arm": 1}, shares, 0.001)
    assert stray["alarm"] and stray["unexpected_arms"] == ["old-arm"]


def outcome(i: int, user: str, arm: str, reward: float = 0.0, experiment: str = "holdout", **fields) -> dict:
    return {"decision_id": f"d-{i}", "user_id": user, "reward": reward, "action": "recommend",
            "joined_by": "decision_id" if reward else "none", "event_type": "page_view", "revenue": 0.0,
            "experiment": {"name": experiment, "arm": arm}, **fields}


def test_a_lift_is_significant_only_with_the_minimum_of_users() -> None:
    configured = default_experiment(0.5, SALT)
    for min_users, significant in ((10, True), (200, False)):
        aggregator = UpliftAggregator(min_users=min_users)
        for i in range(4000):
            user = f"u{i % 100}"
            arm = configured.assign(user).name
            aggregator.add(outcome(i, user, arm, 0.3 if (arm == "personalized" or i % 3 == 0) else 0.0))
        rows = aggregator.report(configured)["experiments"][0]["arms"]
        lift = next(row for row in rows if row["name"] == "personalized")["lift"]["click_rate"]
        assert lift["relative"]["low"] > 0 and lift["significant"] is significant
        assert lift["enough_users"] is significant


def test_users_are_counted_once_across_processes_and_redeliveries() -> None:
    aggregator = UpliftAggregator()
    first = outcome(1, "u1", "personalized", 0.3)
    aggregator.add(first)  # settled by engine process A
    aggregator.add(outcome(2, "u1", "personalized"))  # the same user, later settled by process B after a rescale
    aggregator.add(first)  # redelivered after an engine's recovery
    report = aggregator.report()
    arm = report["experiments"][0]["arms"][0]
    assert (arm["users"], arm["decisions"], report["duplicates"]) == (1, 2, 1)
    aggregator.add({**outcome(3, "u2", "x"), "experiment": None})
    assert aggregator.report()["not_enrolled"] == 1


def test_memory_is_bounded_and_names_nobody() -> None:
    aggregator = UpliftAggregator(max_users=50)
    for i in range(300):
        aggregator.add(outcome(i, f"secret-user-{i % 100}", "personalized"))
    experiment = aggregator.report()["experiments"][0]
    assert experiment["users"] == 50 and experiment["users_capped"] is True
    assert experiment["arms"][0]["decisions"] == 150 and experiment["left_out_outcomes"] == 150
    for i in range(6):  # a new experiment name starts a new analysis; only the latest few are kept
        aggregator.add(outcome(1000 + i, "u", "a", experiment=f"exp-{i}"))
    assert len(aggregator.report()["experiments"]) == 4
    seen: set[int] = set()
    pending = [vars(aggregator)]
    while pending:  # nothing the aggregator holds spells a user id
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            assert "secret-user" not in obj
        elif isinstance(obj, (bytes, bytearray)):
            assert b"secret-user" not in obj
        elif not isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType,
                                  types.BuiltinFunctionType)):
            pending.extend(gc.get_referents(obj))


def closed_loop(engine: PersonalizationEngine, aggregator: UpliftAggregator, n_events: int, users: int,
                seed: int = 7) -> None:
    """Simulated users react to the decisions the engine serves on their `session_start` (the simulator's hidden
    truth: they click what matches their tastes), every settled outcome goes to the aggregator."""
    stream = ScenarioStream(SCENARIOS["stationary"], n_events=n_events, users=users, items=200, seed=seed)
    profiles: dict = {}
    last = 0
    for event in stream:
        user = event["user_id"]
        profiles[user], decision, outcomes = engine.handle_with_outcomes(profiles.get(user), event, event["ts"])
        for settled in outcomes:
            aggregator.add(settled)
        if event["type"] == "session_start":
            stream.react(user, decision)
        last = event["ts"]
    for user, profile in profiles.items():
        if profile is not None:
            for settled in engine.expire(profile, user, last + 86_400_000, idle=True):
                aggregator.add(settled)


def test_personalization_lifts_conversion_over_the_holdout_in_a_closed_loop() -> None:
    engine = PersonalizationEngine(EngineConfig(holdout_share=0.3, experiment_salt=SALT))
    aggregator = UpliftAggregator(min_users=50)
    closed_loop(engine, aggregator, 30_000, users=300)
    experiment = aggregator.report(engine.experiments.current())["experiments"][0]
    holdout, personalized = experiment["arms"]
    assert (holdout["name"], holdout["control"], personalized["name"]) == ("holdout", True, "personalized")
    lift = personalized["lift"]["click_rate"]
    assert lift["significant"] and lift["relative"]["low"] > 0, lift
    share = holdout["decision_share"]
    assert abs(share["value"] - 0.3) < 4 * share["se"], share
    assert experiment["srm"]["checked"] and not experiment["srm"]["alarm"], experiment["srm"]
    offers = "offers_per_user"
    assert holdout["metrics"][offers]["value"] == 0.0 and personalized["metrics"][offers]["value"] > 0


def test_an_experiment_file_compares_engine_configurations_by_arm(tmp_path) -> None:
    """Offers on against offers off, both against a holdout, from the hot-reloaded file; lifts against `offers`."""
    path = tmp_path / "experiment.toml"
    path.write_text('name = "offers-test"\ncontrol = "offers"\n'
                    '[[arms]]\nname = "holdout"\nshare = 0.2\npersonalized = false\n'
                    '[[arms]]\nname = "offers"\nshare = 0.4\n'
                    '[[arms]]\nname = "no-offers"\nshare = 0.4\noffers = false\n')
    engine = PersonalizationEngine(EngineConfig(experiments_file=str(path)))
    aggregator = UpliftAggregator(min_users=20)
    closed_loop(engine, aggregator, 6_000, users=200)
    experiment = aggregator.report(engine.experiments.current())["experiments"][0]
    rows = {row["name"]: row for row in experiment["arms"]}
    assert list(rows) == ["holdout", "offers", "no-offers"] and experiment["control"] == "offers"
    assert rows["offers"]["metrics"]["offers_per_user"]["value"] > 0
    assert rows["no-offers"]["metrics"]["offers_per_user"]["value"] == 0.0
    assert rows["no-offers"]["lift"]["offers_per_user"]["relative"]["value"] == pytest.approx(-1.0)
    assert "lift" not in rows["offers"] and set(rows["holdout"]["lift"]) == set(rows["no-offers"]["lift"])
    assert not experiment["srm"]["alarm"], experiment["srm"]


def test_a_skewed_assignment_sets_off_the_sample_ratio_alarm_in_metrics_too() -> None:
    """An engine process assigns 40% to the holdout while the experiment says 30% (e.g. a stale configuration)."""
    settings = Settings.from_env({"PULSE_HOLDOUT_SHARE": "0.3", "PULSE_EXPERIMENT_SALT": SALT})
    registry = CollectorRegistry()
    api = ExperimentsApi(settings, registry)  # not started: outcomes are fed in-process below
    skewed = PersonalizationEngine(EngineConfig(holdout_share=0.4, experiment_salt=SALT))
    profiles: dict = {}
    for i in range(3000):
        user = f"user-{i}"
        event = {"event_id": f"e{i}", "user_id": user, "type": "session_start", "ts": 1_763_900_000_000 + i}
        profiles[user], _ = skewed.handle(None, event, event["ts"])
        for settled in skewed.expire(profiles[user], user, event["ts"] + 86_400_000, idle=True):
            api.aggregator.add(settled)
    srm = api.report()["experiments"][0]["srm"]
    assert srm["checked"] and srm["alarm"] and srm["p_value"] < 1e-6, srm
    samples = {(s.name, tuple(s.labels.values())): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples}
    assert samples[("pulse_experiment_srm_alarm", ("holdout",))] == 1.0
    assert samples[("pulse_experiment_users", ("holdout", "holdout"))] > 0.35 * 3000
