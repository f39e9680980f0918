"""Win-back end to end: Tansu broker + redis-server + the Bytewax dataflow + the gateway + a real WebSocket client.

A user goes quiet; with short idle settings the engine's own timer (Bytewax notify_at) shrinks the user to
the long-term record after the TTL and then sends a `win_back_offer` decision with `trigger: "inactivity"`,
which reaches the decisions topic, Redis and the user's WebSocket subscriber. A user without consent and
a forgotten user get none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from connectors.auth import mint_token
from pulse.localservers import LocalServer
from simulator import KafkaEventSink, encode_event, send_events
from tests.enginestack import TopicReader, WebSocketWatcher, decisions, engine_and_gateway, retarget

pytestmark = pytest.mark.e2e
IDLE_TTL_S, WINBACK_IDLE_S = 2, 6


@pytest.fixture()
def stack(kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Engine and gateway with short idle settings, on this test's own topics and Redis prefix."""
    with engine_and_gateway(
        kafka_server.port, redis_server.port, tmp_path,
        PULSE_DECISION_TTL_S=str(IDLE_TTL_S), PULSE_WINBACK_MIN_IDLE_S=str(WINBACK_IDLE_S),
        PULSE_WINBACK_CHANNEL="push",
        PULSE_CHURN_THRESHOLD="0.3",  # the untrained churn model says 0.5: every quiet user is at risk
        PULSE_OFFER_MIN_CONFIDENCE="0",
    ) as env:
        yield env


def test_a_quiet_user_is_sent_a_win_back_on_the_engines_own_initiative(stack: dict[str, str]) -> None:
    env = stack
    token = mint_token(env["PULSE_GATEWAY_SECRET"], "quiet")
    subscriber = WebSocketWatcher(int(env["PULSE_GATEWAY_PORT"]), "quiet", token)
    subscriber.start()
    assert subscriber.subscribed.wait(10), "the gateway did not confirm the subscription"
    reader = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    sink = KafkaEventSink(env["KAFKA_BOOTSTRAP"])

    def send(*events: dict) -> None:
        send_events(retarget([encode_event(e) for e in events], env), sink, rate=None, duration_s=None, progress=False)

    def decided(event_ids: set[str]) -> None:
        reader.until(lambda messages: event_ids <= {d["event_id"] for d in decisions(messages)}, timeout_s=60,
                     grace_s=0)

    now = int(time.time() * 1000)
    # Topics are not ordered relative to each other: consent lands before the private user's visit.
    send({"event_id": "c1", "user_id": "private", "type": "consent", "personalization": False, "ts": now})
    decided({"c1"})
    visits = [{"event_id": f"{user}-{i}", "user_id": user, "type": "page_view", "ts": now + i, "item_id": f"i{i}",
               "category": "c"} for user in ("quiet", "private", "gone") for i in range(3)]
    send(*visits)
    decided({v["event_id"] for v in visits})
    send({"event_id": "f1", "user_id": "gone", "type": "forget_user", "ts": now + 10})
    decided({"f1"})

    # Redis keeps the latest decision for the TTL only (2 s here): watch it while waiting for the win-back.
    store, key = redis.Redis.from_url(env["REDIS_URL"]), f"{env['PULSE_REDIS_PREFIX']}:decision:quiet"
    in_redis: list[dict] = []

    def sent(messages: list) -> bool:
        stored = store.get(key)
        if stored is not None and orjson.loads(stored).get("trigger") == "inactivity":
            in_redis.append(orjson.loads(stored))
        return bool(in_redis) and any(d.get("trigger") == "inactivity" for d in decisions(messages))

    messages = reader.until(sent, timeout_s=60)
    time.sleep(IDLE_TTL_S + WINBACK_IDLE_S)  # time for wrong win-backs to the others to show up
    win_backs = [d for d in decisions(reader.poll(1.0)) if d.get("trigger") == "inactivity"]
    assert [d["user_id"] for d in win_backs] == ["quiet"], "one win-back, to the quiet user only"
    decision = win_backs[0]
    assert decision["action"]["name"] == "win_back_offer" and decision["action"]["channel"] == "push"
    assert decision["event_ts"] - (now + 2) >= WINBACK_IDLE_S * 1000, "sent only after the quiet time"
    explanation = decision["churn"]["explanation"]
    assert math.fsum([explanation["intercept"], *explanation["contributions"].values()]) == pytest.approx(
        explanation["score"], abs=1e-9)
    assert decision["audit"]["schema"] == "pulse.audit/1" and decision["model_versions"]["churn"]
    assert len(messages) >= 11

    assert in_redis[0]["decision_id"] == decision["decision_id"], "Redis held the win-back as the latest decision"
    deadline = time.monotonic() + 10
    while not any(d.get("trigger") == "inactivity" for d in subscriber.live_decisions) and time.monotonic() < deadline:
        time.sleep(0.1)
    subscriber.stop_at = 0
    pushed = [d for d in subscriber.live_decisions if d.get("trigger") == "inactivity"]
    assert [d["decision_id"] for d in pushed] == [decision["decision_id"]], "the WebSocket subscriber got it live"
    reader.close()
    sink.close()
