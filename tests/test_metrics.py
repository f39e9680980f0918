"""Engine metrics: rolling quality measures and the counters fed by a real engine, in a private registry."""

from __future__ import annotations

import gc
import math
import random
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from connectors.gateway_metrics import GatewayMetrics
from operators.contracts import TOPIC_KIND_OF_TYPE
from operators.engine import PersonalizationEngine
from operators.metrics import ChurnQuality, EngineMetrics, RollingShare, reason_class
from operators.parse import EventParser

TS = 1_763_900_000_000


def test_rolling_auc_and_log_loss_match_their_definitions() -> None:
    rng = random.Random(1)
    window = ChurnQuality(size=200)
    pairs = [(round(rng.random(), 2), rng.random() < 0.4) for _ in range(300)]
    for p, y in pairs:
        window.add(p, y)
    kept = pairs[-200:]
    positives = [p for p, y in kept if y]
    negatives = [p for p, y in kept if not y]
    pairwise = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in positives for b in negatives)
    assert window.auc() == pytest.approx(pairwise / (len(positives) * len(negatives)))
    expected = sum(-math.log(max(min(p if y else 1 - p, 1 - 1e-15), 1e-15)) for p, y in kept) / len(kept)
    assert window.log_loss() == pytest.approx(expected)
    assert math.isnan(ChurnQuality().auc()) and math.isnan(ChurnQuality().log_loss())
    one_class = ChurnQuality()
    one_class.add(0.3, True)
    assert math.isnan(one_class.auc()) and not math.isnan(one_class.log_loss())
    share = RollingShare(size=3)
    assert math.isnan(share.get())
    for outcome in (True, True, False, False):
        share.add(outcome)
    assert share.get() == pytest.approx(1 / 3) and len(share) == 3


@pytest.mark.parametrize(("reason", "label"), [
    ("invalid JSON: unexpected character", "invalid_json"), ("oversize event: 9 bytes > limit 1", "oversize"),
    ("missing field 'item_id'", "missing_field"), ("unknown event type 'x'", "unknown_type"),
    ("type 'click' belongs on the clickstream topic, not chat", "wrong_topic"),
    ("field 'rating' must be an integer 1..5", "invalid_field"),
])
def test_dead_letter_reasons_have_bounded_labels(reason: str, label: str) -> None:
    assert reason_class(reason) == label


def test_engine_metrics_follow_a_real_engine() -> None:
    registry = CollectorRegistry()
    metrics = EngineMetrics(registry)
    engine = PersonalizationEngine()
    parser = EventParser({"clickstream": "clickstream", "chat": "chat", "control": "control"}, 4096)
    metrics.observe_parsed(parser.parse(b"{oops", None, "clickstream", 0, 1))
    profile = None

    def handle(event: dict) -> dict:
        nonlocal profile
        metrics.observe_parsed(parser.parse(orjson.dumps(event), None, TOPIC_KIND_OF_TYPE[event["type"]], 0, 1))
        metrics.before_event(event, engine, profile)
        profile, decision = engine.handle(profile, event, event["ts"] + 5)
        metrics.after_decision(decision)
        return decision

    first = handle({"event_id": "e1", "user_id": "u", "type": "page_view", "ts": TS, "item_id": "i1", "category": "c"})
    top = first["recommendations"][0]["item_id"]
    handle({"event_id": "e2", "user_id": "u", "type": "click", "ts": TS + 1, "item_id": top, "category": "c"})
    handle({"event_id": "e3", "user_id": "u", "type": "click", "ts": TS + 2, "item_id": "not-recommended"})
    handle({"event_id": "e4", "user_id": "u", "type": "chat_message", "ts": TS + 3, "text": "awful",
            "label": "negative"})
    handle({"event_id": "e5", "user_id": "u", "type": "churn_outcome", "ts": TS + 4, "churned": True})
    handle({"event_id": "e6", "user_id": "u", "type": "churn_outcome", "ts": TS + 5, "churned": False})

    value = registry.get_sample_value
    assert value("pulse_events_total", {"topic": "clickstream", "type": "click"}) == 2
    assert value("pulse_events_total", {"topic": "unknown", "type": "invalid"}) == 1
    assert value("pulse_dead_letters_total", {"reason": "invalid_json"}) == 1
    assert value("pulse_decisions_total", {"action": "recommend"}) >= 1
    assert value("pulse_latency_seconds_count", {"stage": "event_to_decision"}) == 6
    assert value("pulse_latency_seconds_bucket", {"stage": "event_to_ingest", "le": "0.005"}) == 6  # all 5 ms
    assert value("pulse_model_quality", {"model": "recommender", "measure": "hit_rate"}) == 0.5
    assert value("pulse_model_quality_samples", {"model": "sentiment"}) == 1
    assert value("pulse_model_quality_samples", {"model": "churn"}) == 2
    assert value("pulse_model_quality", {"model": "churn", "measure": "auc"}) in (0.0, 0.5, 1.0)
    assert b"pulse_model_quality" in generate_latest(registry)


def test_garbage_collector_pauses_are_timed_per_generation_in_engine_and_gateway_registries() -> None:
    idle_gateway = {"connections": 0, "subscriptions": 0, "delivered": 0, "dropped": 0, "redis_connected": False}
    registries = [CollectorRegistry(), GatewayMetrics(lambda: idle_gateway).registry]
    EngineMetrics(registries[0])

    def full_passes() -> list[tuple[float, float]]:
        return [(r.get_sample_value("pulse_gc_pause_seconds_count", {"generation": "2"}),
                 r.get_sample_value("pulse_gc_pause_seconds_sum", {"generation": "2"})) for r in registries]

    gc.disable()  # no automatic pass in between: the one below is the only one counted
    try:
        held = [[{}] for _ in range(300_000)]  # a heap a full pass takes milliseconds to scan
        before = full_passes()
        started = time.perf_counter()
        gc.collect()
        elapsed = time.perf_counter() - started
        after = full_passes()
        del held
    finally:
        gc.enable()
    for (count_before, sum_before), (count_after, sum_after) in zip(before, after):
        assert count_after == count_before + 1
        assert 0.5 * elapsed < sum_after - sum_before <= elapsed
