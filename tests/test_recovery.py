"""Crash recovery: `pulse run` (Bytewax recovery on by default) killed with SIGKILL mid-stream and restarted.

Every valid event must end with a decision (at least once; duplicates carry the same event_id), Kafka
offsets and per-user state must resume from the last snapshot (not from scratch), and the shared models
must continue from their checkpoint instead of starting over.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
from enginestack import Engine, TopicReader, decided_ids, decisions, duplicates, produce, retarget, stack_env

from operators.features import INTERACTION_STRENGTH
from pulse.localservers import LocalServer
from simulator import EventGenerator, SimulationConfig, World, encode_event

pytestmark = pytest.mark.e2e
RATE = 400.0


def _learned(version: str) -> int:
    """Examples a model learned, from its version (`name@COUNT`, optionally followed by `/...`)."""
    match = re.search(r"@(\d+)", version)
    assert match, version
    return int(match.group(1))


def test_kill_9_mid_stream_then_restart_loses_nothing(kafka_server: LocalServer, redis_server: LocalServer,
                                                      tmp_path: Path) -> None:
    env = stack_env(kafka_server.port, redis_server.port, tmp_path)
    config = SimulationConfig(users=30, items=60, seed=11, malformed_ratio=0.02)
    events = retarget(EventGenerator(World(config)).events(3000), env)
    valid = [e.event for e in events if e.valid]
    warmup = retarget([encode_event({"event_id": "warmup", "user_id": "warmup", "type": "page_view",
                                     "ts": valid[0]["ts"]})], env)
    engine = Engine(env, tmp_path / "engine.log").start()
    reader = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    sender = threading.Thread(target=produce, args=(events, env, RATE))
    try:
        produce(warmup, env)
        reader.until(lambda ms: len(ms) >= 1, 60, engine.alive)

        # Kill -9 at a random point of a paced stream (after at least two snapshot intervals).
        kill_at = int(len(valid) * random.uniform(0.5, 0.8))
        sender.start()
        reader.until(lambda ms: len(ms) >= kill_at, 60, engine.alive)
        engine.kill9()
        before = decisions(reader.poll(1.0))
        sender.join()

        engine.start()
        expected = {e["event_id"] for e in valid} | {"warmup"}
        reader.until(lambda ms: expected <= decided_ids(ms), 90, engine.alive)
        after = decisions(reader.messages)
    finally:
        engine.stop()
        reader.close()
        if sender.is_alive():
            sender.join()

    # No valid event skipped; duplicates only from the replay of the last epoch, not a restart from scratch.
    assert decided_ids(reader.messages) == expected
    replayed = duplicates(reader.messages)
    print(f"\nkilled after {len(before)} decisions; {replayed} replayed after restart; {len(after)} decision records")
    assert replayed < len(before), "the restart re-read the topics from the beginning: offsets were not recovered"

    # Per-user state survived: each user's last decision counts exactly that user's sessions and purchases.
    last: dict[str, dict] = {}
    for decision in after:
        last[decision["user_id"]] = decision
    for user, decision in last.items():
        if user == "warmup" or not decision["personalized"]:  # a holdout's decisions show no features
            continue
        mine = Counter(e["type"] for e in valid if e["user_id"] == user)
        assert decision["features"]["sessions"] == mine["session_start"], user
        assert decision["features"]["purchases"] == mine["purchase"], user

    # The models continued from their checkpoint: they count at least every interaction of the stream.
    learnable = sum(1 for e in valid if e["type"] in INTERACTION_STRENGTH and e.get("item_id"))
    labeled = sum(1 for e in valid if e["type"] == "chat_message" and e.get("label"))
    def final(model: str) -> int:
        return max(_learned(d["model_versions"][model]) for d in after if model in d["model_versions"])

    assert final("recommender") >= learnable
    assert final("sentiment") >= labeled
    assert (Path(env["PULSE_RECOVERY_DIR"]) / "models-p0.pkl").exists()

    # Redis holds, per user, the decision of the last event decided (replays rewrite the same decision).
    store = redis.Redis.from_url(env["REDIS_URL"])
    for user, decision in last.items():
        stored = store.get(f"{env['PULSE_REDIS_PREFIX']}:decision:{user}")
        assert stored is not None and orjson.loads(stored)["event_id"] == decision["event_id"], user
