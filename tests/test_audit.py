"""Bias audit (`pulse audit`) and the decisions' audit records."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer
from enginestack import ROOT

from connectors.kafka_io import ensure_topics
from operators.audit import decision_audit
from pulse.bias_audit import disparities, simulator_groups, tabulate
from pulse.config import Settings
from pulse.localservers import LocalServer


def _decision(n: int, user: str, segment: int, action: str, personalized: bool = True) -> dict:
    return {"decision_id": f"d-{n}", "event_id": str(n), "user_id": user, "segment": segment,
            "personalized": personalized, "action": {"name": action}}


def _skewed(n_per_segment: int = 100) -> list[dict]:
    """Segment 0 gets the retention offer 30% of the time, segment 1 only 5%."""
    decisions = []
    for segment, offers in ((0, 30), (1, 5)):
        for i in range(n_per_segment):
            n = segment * 1000 + i
            decisions.append(_decision(n, f"u{segment}-{i % 10}", segment,
                                       "retention_offer" if i < offers else "recommend"))
    return decisions


def test_disparity_beyond_threshold_is_flagged() -> None:
    table = tabulate(_skewed())
    assert table["segment"]["0"].rate("retention_offer") == 0.3
    flagged = disparities(table, threshold=0.8, min_decisions=30, min_gap=0.02)
    offer = [d for d in flagged if d.dimension == "segment" and d.action == "retention_offer"]
    assert len(offer) == 1 and offer[0].low_group == "1" and round(offer[0].ratio, 3) == round(0.05 / 0.3, 3)
    assert not disparities(table, threshold=0.1, min_decisions=30, min_gap=0.02)  # a looser threshold flags nothing
    assert not disparities(table, threshold=0.8, min_decisions=101, min_gap=0.02)  # too few decisions per group


def test_replayed_and_erasure_decisions_are_not_counted() -> None:
    erasure = {"decision_id": "d-x", "forgotten": True, "user_id": "u", "personalized": False,
               "action": {"name": "forget"}}
    decisions = _skewed() + _skewed()[:10] + [erasure]
    table = tabulate(decisions)
    assert sum(stats.decisions for stats in table["segment"].values()) == 200


def test_simulator_groups_join_on_user_id() -> None:
    groups = simulator_groups(users=50, seed=3, items=40)
    assert len(groups) == 50 and set(groups["user-00001"]) == {"sim:engagement", "sim:price_sensitivity", "sim:mood",
                                                               "sim:churn_risk"}
    decisions = [_decision(i, f"user-{i % 50 + 1:05d}", 0, "recommend") for i in range(200)]
    table = tabulate(decisions, groups)
    assert sum(s.decisions for s in table["sim:engagement"].values()) == 200


def test_cli_reads_a_file_and_exits_1_on_disparities(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in _skewed()))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "audit", "--file", str(path)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "segment: 'retention_offer' 1 0.050 vs 0 0.300" in result.stdout
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "audit", "--file", str(path), "--threshold", "0.1",
                             "--json"],
                            env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert result.returncode == 0 and orjson.loads(result.stdout)["disparities"] == []


def test_cli_reads_the_decisions_topic(kafka_server: LocalServer) -> None:
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    bootstrap = f"127.0.0.1:{kafka_server.port}"
    producer = Producer({"bootstrap.servers": bootstrap})
    env = dict(os.environ, PYTHONPATH=str(ROOT), KAFKA_BOOTSTRAP=bootstrap, PULSE_TOPIC_DECISIONS=topic,
               PULSE_TOPIC_CLICKSTREAM=f"c-{topic}", PULSE_TOPIC_CHAT=f"h-{topic}", PULSE_TOPIC_CONTROL=f"o-{topic}",
               PULSE_TOPIC_DEAD_LETTER=f"d-{topic}")
    ensure_topics(Settings.from_env(env))
    for decision in _skewed():
        producer.produce(topic, orjson.dumps(decision), key=decision["user_id"].encode())
    producer.flush(10)
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "audit", "--json"], env=env, cwd=ROOT,
                            capture_output=True, timeout=60)
    report = orjson.loads(result.stdout)
    assert report["groups"]["segment"]["0"]["decisions"] == 100 and report["groups"]["segment"]["1"]["decisions"] == 100
    assert result.returncode == 1


def test_decision_audit_records_models_and_data_categories() -> None:
    chat = {"personalized": True, "sentiment": {"message": {"score": -0.5}},
            "model_versions": {"recommender": "r@1", "churn": "c@2", "sentiment": "s@3", "policy": "p",
                               "snapshot": "none"}}
    audit = decision_audit(chat)
    assert audit["models"] == {"recommender": "r@1", "churn": "c@2", "sentiment": "s@3", "policy": "p"}
    assert "chat messages" in audit["data_categories"] and audit["personal_data"] is True
    click = decision_audit({**chat, "sentiment": {"message": None}})
    assert "sentiment" not in click["models"] and "chat messages" not in click["data_categories"]
    assert decision_audit({"forgotten": True, "personalized": False})["models"] == {}
