"""End to end against real servers: Tansu broker + redis-server + the Bytewax dataflow + the gateway.

The simulator sends valid and malformed events; we check that every valid event produced exactly one
decision record, every malformed one is in the dead-letter topic with its reason, Redis holds each
user's latest decision, and a real WebSocket client received its user's decisions live.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from connectors.auth import mint_token
from pulse.localservers import LocalServer
from simulator import EventGenerator, KafkaEventSink, SimulationConfig, World, encode_event, send_events
from tests.enginestack import WebSocketWatcher, engine_and_gateway, retarget

pytestmark = pytest.mark.e2e
TIMEOUT_S = 120


@pytest.fixture()
def running_stack(kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment naming unique topics/prefix for this test, plus running engine and gateway processes."""
    with engine_and_gateway(kafka_server.port, redis_server.port, tmp_path) as env:
        yield env


def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = TIMEOUT_S) -> list:
    """All messages of `topic` once `expected` have arrived (then a short grace period for extras)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    messages = []
    deadline = time.monotonic() + timeout_s
    grace_end = None
    while time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.2):
            if message.error() is None:
                messages.append(message)
        if len(messages) >= expected:
            grace_end = grace_end or time.monotonic() + 2.0
            if time.monotonic() >= grace_end:
                break
    consumer.close()
    return messages


def test_every_event_gets_one_decision_or_a_dead_letter(running_stack: dict[str, str]) -> None:
    env = running_stack
    config = SimulationConfig(users=40, items=80, seed=3, malformed_ratio=0.05, consent_off_share=0.1)
    events = list(EventGenerator(World(config)).events(1500))
    forgotten_user = next(e.event["user_id"] for e in events if e.valid)
    forget = retarget([encode_event({"event_id": "forget-1", "user_id": forgotten_user, "type": "forget_user",
                                     "ts": 0})], env)
    events = retarget(events, env)
    valid = [e for e in events if e.valid]
    malformed = [e for e in events if not e.valid]
    assert len(malformed) > 20 and len(valid) > 1000
    watched_user = next(e.event["user_id"] for e in valid if e.event["user_id"] != forgotten_user)

    watcher = WebSocketWatcher(int(env["PULSE_GATEWAY_PORT"]), watched_user,
                               mint_token(env["PULSE_GATEWAY_SECRET"], watched_user), TIMEOUT_S)
    watcher.start()
    assert watcher.subscribed.wait(10), "gateway did not confirm the subscription"

    sink = KafkaEventSink(env["KAFKA_BOOTSTRAP"])
    send_events(events, sink, rate=None, duration_s=None, progress=False)
    _read_topic(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"], len(valid))
    # Topics are not ordered relative to each other: forget the user once their events are decided.
    send_events(forget, sink, rate=None, duration_s=None, progress=False)
    sink.close()
    valid += forget

    # Every valid event produced exactly one decision record.
    decisions = [orjson.loads(m.value())
                 for m in _read_topic(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"], len(valid))]
    decided_events = [d["event_id"] for d in decisions]
    assert len(decided_events) == len(set(decided_events)), "an event was decided twice"
    assert set(decided_events) == {e.event["event_id"] for e in valid}
    for decision in decisions:
        assert decision["decision_id"] == f"d-{decision['event_id']}"
        if decision["personalized"]:
            churn = decision["churn"]["explanation"]
            assert churn["intercept"] + sum(churn["contributions"].values()) == pytest.approx(churn["score"], abs=1e-9)
            for rec in decision["recommendations"]:
                assert sum(rec["components"].values()) == pytest.approx(rec["score"], abs=1e-9)

    # Every malformed event is in the dead-letter topic, verbatim, with a reason.
    dead = _read_topic(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DEAD_LETTER"], len(malformed))
    assert len(dead) == len(malformed)
    assert sorted(m.value() or b"" for m in dead) == sorted(e.value for e in malformed)
    for message in dead:
        headers = dict(message.headers())
        assert headers["pulse-error"], "dead letter without a reason"
        source_topic = headers["pulse-source"].decode().split("/")[0]
        assert source_topic in {env["PULSE_TOPIC_CLICKSTREAM"], env["PULSE_TOPIC_CHAT"], env["PULSE_TOPIC_CONTROL"]}

    # Redis holds each user's latest decision (the one made last, per the decision log); the forgotten user's is
    # erased, and so is that of users without consent (their decisions are published, never stored); a holdout
    # user's non-personalized decision is stored (they consented).
    last_decision_of: dict[str, dict] = {}
    for decision in decisions:
        last_decision_of[decision["user_id"]] = decision
    store = redis.Redis.from_url(env["REDIS_URL"])
    prefix = env["PULSE_REDIS_PREFIX"]
    assert store.get(f"{prefix}:decision:{forgotten_user}") is None
    assert last_decision_of[forgotten_user]["event_id"] == "forget-1"
    assert any(not d["personalized"] for d in last_decision_of.values())
    for user, last in last_decision_of.items():
        if user == forgotten_user:
            continue
        latest = store.get(f"{prefix}:decision:{user}")
        if not last["personalized"] and last["experiment"] is None:  # no consent (a holdout's is stored)
            assert latest is None, user
            continue
        assert latest is not None and orjson.loads(latest)["event_id"] == last["event_id"], user
        assert 0 < store.ttl(f"{prefix}:decision:{user}") <= 86400

    # The WebSocket client got its user's decisions live, in the order they were made.
    expected = [d["event_id"] for d in decisions if d["user_id"] == watched_user]
    deadline = time.monotonic() + 30
    while len(watcher.frames) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    watcher.stop_at = 0
    received = [d["event_id"] for d in watcher.live_decisions]
    assert received == expected
    assert {f["decision"]["user_id"] for f in watcher.frames} == {watched_user}


def test_consent_off_users_get_no_personalization(running_stack: dict[str, str]) -> None:
    env = running_stack
    now = int(time.time() * 1000)
    raw = [
        {"event_id": "c1", "user_id": "private", "type": "consent", "personalization": False, "ts": now},
        {"event_id": "c2", "user_id": "private", "type": "page_view", "item_id": "i1", "category": "x", "ts": now + 1},
        {"event_id": "c3", "user_id": "private", "type": "chat_message", "text": "terrible awful", "ts": now + 2},
    ]
    sink = KafkaEventSink(env["KAFKA_BOOTSTRAP"])
    # Topics are not ordered relative to each other: the consent decision lands before the events follow.
    send_events(retarget([encode_event(raw[0])], env), sink, rate=None, duration_s=None, progress=False)
    _read_topic(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"], 1)
    send_events(retarget([encode_event(e) for e in raw[1:]], env), sink, rate=None, duration_s=None, progress=False)
    sink.close()
    decisions = [orjson.loads(m.value()) for m in _read_topic(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"], 3)]
    assert sorted(d["event_id"] for d in decisions) == ["c1", "c2", "c3"]
    for decision in decisions:
        assert decision["personalized"] is False
        assert decision["churn"] is None and decision["sentiment"] is None and decision["features"] == {}
        assert decision["action"]["name"] == "recommend"
