"""Issue 7 through the real dataflow: catalog topic, hot-reloaded rules, outcome attribution, idle expiry.

Real Tansu broker, real redis-server, `pulse run` as a child process.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Producer

from pulse.localservers import LocalServer
from simulator import encode_event
from tests.enginestack import ROOT, Engine, TopicReader, decisions, produce, retarget, stack_env

pytestmark = pytest.mark.e2e
RULES_V1 = '[categories]\ndeny = ["hats"]\n[diversity]\nmax_per_category = 2\n'
RULES_V2 = '[categories]\ndeny = ["hats", "bags"]\n[diversity]\nmax_per_category = 2\n'


class Shop:
    """The running engine plus helpers to send events and read its outputs."""

    def __init__(self, env: dict[str, str], engine: Engine) -> None:
        self.env, self.engine = env, engine
        self.decisions = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
        self.outcomes = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_OUTCOMES"])
        self.dead = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DEAD_LETTER"])
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP"]})

    def items(self, *events: dict) -> None:
        for event in events:
            self.producer.produce(self.env["PULSE_TOPIC_ITEMS"], orjson.dumps(event), key=event["item_id"].encode())
        self.producer.flush(10)

    def produce(self, user: str, kind: str, **fields) -> str:
        """Send one user event; return its id."""
        event_id = f"{user}-{uuid.uuid4().hex[:6]}"
        event = {"event_id": event_id, "user_id": user, "type": kind, "ts": int(time.time() * 1000), **fields}
        produce(retarget([encode_event(event)], self.env), self.env)
        return event_id

    def send(self, user: str, kind: str, **fields) -> dict:
        """Send one user event and wait for its decision (a user's events are decided in order: the decision
        also means every earlier event of the user was)."""
        event_id = self.produce(user, kind, **fields)
        found = self.decisions.until(lambda ms: any(d["event_id"] == event_id for d in decisions(ms)), 30,
                                     self.engine.alive, grace_s=0)
        return next(d for d in decisions(found) if d["event_id"] == event_id)

    def outcome_of(self, decision_id: str) -> dict:
        found = self.outcomes.until(lambda ms: any(orjson.loads(m.value())["decision_id"] == decision_id for m in ms),
                                    30, self.engine.alive, grace_s=0)
        return next(o for o in map(lambda m: orjson.loads(m.value()), found) if o["decision_id"] == decision_id)


@pytest.fixture()
def shop(kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path) -> Iterator[Shop]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES_V1)
    env = stack_env(
        kafka_server.port, redis_server.port, tmp_path, PULSE_RULES_FILE=str(rules),
        PULSE_ATTRIBUTION_WINDOW_S="2", PULSE_DECISION_TTL_S="4", PULSE_TOP_K="4",
        PULSE_MODEL_DIR=str(tmp_path / "models"), PULSE_MODEL_SNAPSHOT_S="0",
    )
    engine = Engine(env, tmp_path / "engine.log").start()
    try:
        yield Shop(env, engine)
        assert engine.alive(), engine.log_tail()
    finally:
        engine.stop()


def upsert(item_id: str, category: str, **fields) -> dict:
    return {"event_id": f"up-{item_id}-{uuid.uuid4().hex[:4]}", "type": "item_upsert", "item_id": item_id,
            "category": category, "ts": int(time.time() * 1000), **fields}


def test_catalog_rules_attribution_and_expiry(shop: Shop, tmp_path: Path) -> None:
    catalog = [upsert(f"{c}-{i}", c, price=10.0 + i) for c in ("shoes", "hats", "bags") for i in range(5)]
    shop.items(*catalog, {"event_id": "bad-item", "type": "item_upsert", "item_id": "x", "ts": int(time.time() * 1000)})
    prefix = shop.env["PULSE_REDIS_PREFIX"]
    deadline = time.monotonic() + 30
    while shop.redis.exists(*(f"{prefix}:item:{e['item_id']}" for e in catalog)) < len(catalog):
        assert time.monotonic() < deadline, "catalog records never reached Redis"
        time.sleep(0.2)
    assert orjson.loads(shop.redis.get(f"{prefix}:item:shoes-3"))["price"] == 13.0
    dead = shop.dead.until(lambda ms: len(ms) >= 1, 30, grace_s=0)
    assert dict(dead[0].headers())["pulse-error"] == b"missing field 'category'"

    # Rules: hats denied, at most 2 per category; every applied rule is in the explanation.
    first = shop.send("ann", "page_view", item_id="shoes-1", category="shoes")
    categories = [r["category"] for r in first["recommendations"]]
    assert "hats" not in categories and max(categories.count(c) for c in set(categories)) <= 2
    assert {r["rule"] for r in first["rules"]} >= {"categories"}
    assert first["model_versions"]["rules"].startswith("rules.toml@")

    # Catalog: a deleted item leaves the ranking at once.
    top = first["recommendations"][0]["item_id"]
    shop.items({"event_id": f"del-{top}", "type": "item_delete", "item_id": top, "ts": int(time.time() * 1000)})
    deadline = time.monotonic() + 30
    while not orjson.loads(shop.redis.get(f"{prefix}:item:{top}"))["deleted"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    second = shop.send("ann", "session_start")
    assert top not in [r["item_id"] for r in second["recommendations"]]

    # Hot reload: bags denied too, without restarting the engine.
    (tmp_path / "rules.toml").write_text(RULES_V2)
    time.sleep(1.5)
    third = shop.send("ann", "session_start")
    assert "bags" not in [r["category"] for r in third["recommendations"]]
    assert third["model_versions"]["rules"] != first["model_versions"]["rules"]

    # Attribution: a click naming a decision joins it; the window closes on the engine's timer.
    clicked = third["recommendations"][0]["item_id"]
    shop.send("ann", "click", item_id=clicked, category="shoes", decision_id=third["decision_id"])
    joined = shop.outcome_of(third["decision_id"])
    assert joined["reward"] == 0.3 and joined["joined_by"] == "decision_id" and joined["action"] == "recommend"
    unjoined = shop.outcome_of(second["decision_id"])
    assert unjoined["reward"] == 0.0 and unjoined["joined_by"] == "none"

    # Idle expiry: after the TTL the full profile is gone (only the churn aggregates of the long-term record stay)
    # and so is the Redis decision.
    bob = shop.send("bob", "session_start")
    assert bob["features"]["sessions"] == 1
    assert 0 < shop.redis.ttl(f"{prefix}:decision:bob") <= 4
    time.sleep(5.5)
    assert shop.redis.get(f"{prefix}:decision:bob") is None
    again = shop.send("bob", "page_view", item_id="shoes-1", category="shoes")
    assert again["features"]["sessions"] == 1, "the long-term record brought the user's aggregates back"
    assert shop.outcome_of(bob["decision_id"])["reason"] in {"user expired", "window closed"}


def pulse(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pulse.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_model_snapshot_and_rollback_without_stopping(shop: Shop) -> None:
    for i in range(5):
        shop.produce("cat", "page_view", item_id=f"item-{i}", category="shoes")
    before = shop.send("cat", "session_start")
    saved = pulse(shop.env, "models", "snapshot", "--name", "before")
    assert saved.returncode == 0, saved.stderr
    assert "process 0: snapshot before ok" in saved.stdout
    for i in range(5):
        shop.produce("cat", "page_view", item_id=f"item-{i}", category="shoes")
    grown = shop.send("cat", "session_start")
    n_before = int(before["model_versions"]["recommender"].split("@")[1].split("/")[0])  # reco-hybrid@N/blend@M
    assert int(grown["model_versions"]["recommender"].split("@")[1].split("/")[0]) == n_before + 5

    listed = pulse(shop.env, "models", "list")
    assert listed.returncode == 0 and "before" in listed.stdout
    snapshot_hash = listed.stdout.split("before")[1].split()[1]

    rolled = pulse(shop.env, "models", "rollback", "before")
    assert rolled.returncode == 0, rolled.stderr
    after = shop.send("cat", "session_start")
    assert after["model_versions"]["recommender"] == before["model_versions"]["recommender"]
    assert after["model_versions"]["snapshot"] == snapshot_hash
    assert shop.engine.alive()

    missing = pulse(shop.env, "models", "rollback", "no-such-snapshot")
    assert missing.returncode == 1 and "no snapshot 'no-such-snapshot'" in missing.stderr
