"""The gateway's HTTP API against a real redis-server and Tansu broker: ingest, reads, auth, metrics."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from connectors.auth import mint_token
from connectors.gateway import Gateway
from connectors.kafka_io import ensure_topics
from connectors.redis_sink import RedisDecisionWriter
from operators.user_state import DecisionOut
from pulse.config import Settings
from pulse.localservers import LocalServer

SECRET, OPERATOR = "http-test-secret", "operator-test-token"
TS = 1_763_900_000_000


def settings_for(kafka: LocalServer, redis_server: LocalServer) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings.from_env({
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka.port}", "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "PULSE_GATEWAY_PORT": "0", "PULSE_HTTP_PORT": "0", "PULSE_GATEWAY_SECRET": SECRET,
        "PULSE_OPERATOR_TOKEN": OPERATOR, "PULSE_REDIS_PREFIX": f"http-{run}",
        **{f"PULSE_TOPIC_{kind.upper()}": f"{kind}-{run}" for kind in ("clickstream", "chat", "control", "decisions")},
    })


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": f"e-{uuid.uuid4().hex[:6]}", "user_id": "u1", "ts": TS, "type": "page_view", **fields}


def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[tuple[bytes, bytes]] = []
    for _ in range(50):
        out += [(m.key(), m.value()) for m in consumer.consume(100, 0.2) if m.error() is None]
        if len(out) >= expected:
            break
    consumer.close()
    return out


async def call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
               **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return response.status, body


def test_ingest_validates_and_produces_to_the_right_topic(kafka_server: LocalServer, redis_server: LocalServer) -> None:
    settings = settings_for(kafka_server, redis_server)
    ensure_topics(settings)
    good = [event(type="click", item_id="i1", user_id="u1"), event(type="chat_message", text="love it", user_id="u2"),
            event(type="consent", personalization=True, user_id="u3")]
    mine = event(type="click", item_id="i9", user_id="u7")

    async def scenario() -> None:
        gateway = Gateway(settings)
        await gateway.start()
        base = f"http://127.0.0.1:{gateway.http.port}"
        try:
            async with aiohttp.ClientSession() as session:
                assert (await call(session, "POST", f"{base}/v1/events", json=good[0]))[0] == 401
                status, single = await call(session, "POST", f"{base}/v1/events", OPERATOR, json=good[0])
                assert status == 200 and single["accepted"] == 1
                assert single["results"] == [{"index": 0, "status": "accepted", "event_id": good[0]["event_id"],
                                              "topic": settings.topic_clickstream}]
                batch = [good[1], {"user_id": "u1"}, good[2], event(type="purchase", item_id="i"), "nope"]
                status, result = await call(session, "POST", f"{base}/v1/events", OPERATOR, json=batch)
                assert status == 200 and (result["accepted"], result["rejected"]) == (2, 3)
                statuses = [(r["index"], r["status"]) for r in result["results"]]
                assert statuses == [(0, "accepted"), (1, "rejected"), (2, "accepted"), (3, "rejected"), (4, "rejected")]
                assert result["results"][1]["error"] == "missing field 'event_id'"
                assert result["results"][3]["error"] == "missing field 'price'"
                assert "JSON object" in result["results"][4]["error"]
                status, body = await call(session, "POST", f"{base}/v1/events", OPERATOR, data=b"{not json")
                assert status == 400 and "not JSON" in body["error"]
                latin1 = orjson.dumps(good[1]).replace(b"love", b"caf\xe9")
                at = latin1.index(b"\xe9")
                assert await call(session, "POST", f"{base}/v1/events", OPERATOR, data=latin1) == (
                    400, {"error": f"body is not JSON: invalid UTF-8: byte 0xe9 at position {at}"})
                huge = b"[" + b" " * (5 * 1024 * 1024) + b"]"
                assert await call(session, "POST", f"{base}/v1/events", OPERATOR, data=huge) == (
                    413, {"error": "body larger than 4194304 bytes"})

                # A browser's user token may post events for its own user only.
                status, result = await call(session, "POST", f"{base}/v1/events", mint_token(SECRET, "u7"),
                                            json=[mine, event(user_id="u8")])
                assert [r["status"] for r in result["results"]] == ["accepted", "rejected"]
                assert "another user" in result["results"][1]["error"]
                expired = mint_token(SECRET, "u7", -1)
                assert (await call(session, "POST", f"{base}/v1/events", expired, json=mine))[0] == 401

                status, text = await call(session, "GET", f"{base}/metrics?token={OPERATOR}")
                assert status == 200 and b'pulse_ingest_events_total{status="accepted",topic="clickstream"} 2.0' in text
        finally:
            producer = weakref.ref(gateway.http.producer)
            await gateway.stop()
        assert producer() is None  # released by stop, though the gateway object lives on

    asyncio.run(scenario())
    clicks = read_all(settings.kafka_bootstrap, settings.topic_clickstream, 2)
    assert sorted(clicks) == [(b"u1", orjson.dumps(good[0])), (b"u7", orjson.dumps(mine))]
    assert read_all(settings.kafka_bootstrap, settings.topic_chat, 1) == [(b"u2", orjson.dumps(good[1]))]
    assert read_all(settings.kafka_bootstrap, settings.topic_control, 1) == [(b"u3", orjson.dumps(good[2]))]


def test_reads_and_operator_credentials(kafka_server: LocalServer, redis_server: LocalServer) -> None:
    settings = settings_for(kafka_server, redis_server)
    stored = {"decision_id": "d-e1", "user_id": "u1", "churn": {"explanation": {"contributions": {"x": 0.5}}}}

    async def scenario() -> None:
        gateway = Gateway(settings)
        store = aioredis.Redis.from_url(settings.redis_url)
        await gateway.start()
        base = f"http://127.0.0.1:{gateway.http.port}"
        try:
            writer = RedisDecisionWriter(settings)  # stores and publishes as the engine's sink does
            writer.write_batch([DecisionOut("u1", "d-e1", orjson.dumps(stored), False)])
            writer.close()
            async with aiohttp.ClientSession() as session:
                assert await call(session, "GET", f"{base}/v1/decisions/u1", OPERATOR) == (200, stored)
                assert await call(session, "GET", f"{base}/v1/decisions/u1", mint_token(SECRET, "u1")) == (200, stored)
                assert await call(session, "GET", f"{base}/v1/decisions/u1", mint_token(SECRET, "u2")) == (
                    403, {"error": "this user token is for another user"})
                assert (await call(session, "GET", f"{base}/v1/decisions/u1", "forged"))[0] == 401
                assert (await call(session, "GET", f"{base}/v1/decisions/nobody", OPERATOR))[0] == 404
                assert await call(session, "GET", f"{base}/v1/explanations/d-e1?token={OPERATOR}") == (200, stored)
                assert (await call(session, "GET", f"{base}/v1/explanations/d-zz", OPERATOR))[0] == 404
                for path in ("/", "/metrics", "/v1/feed", "/v1/stats", "/v1/explanations/d-e1"):
                    assert (await call(session, "GET", base + path))[0] == 401, path
                    assert (await call(session, "GET", base + path, "wrong"))[0] == 401, path
                    assert (await call(session, "GET", base + path, mint_token(SECRET, "u1")))[0] == 401, path
                for _ in range(50):
                    status, feed = await call(session, "GET", f"{base}/v1/feed?limit=5", OPERATOR)
                    if feed:
                        break
                    await asyncio.sleep(0.05)
                assert feed == [stored]
                status, stats = await call(session, "GET", f"{base}/v1/stats", OPERATOR)
                assert status == 200 and stats["gateway"]["redis_connected"] and stats["engine"]["engines"] == 0
                status, page = await call(session, "GET", f"{base}/?token={OPERATOR}")
                assert status == 200 and b"<canvas" in page
                assert (await call(session, "GET", f"{base}/shop.html"))[0] == 200  # public pages
                assert (await call(session, "GET", f"{base}/pulse-client.js"))[0] == 200
                assert (await call(session, "GET", f"{base}/dashboard.html"))[0] == 404
                assert (await call(session, "GET", f"{base}/..%2Fpyproject.toml"))[0] == 404
                assert await call(session, "GET", f"{base}/client-config.json") == (200, {"ws_port": gateway.port,
                                                                                       "ws_path": "/ws"})
        finally:
            await gateway.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_cli_token_verifies(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from connectors.auth import verify_token
    from pulse.cli import main

    monkeypatch.setenv("PULSE_GATEWAY_SECRET", SECRET)
    assert main(["token", "user-42", "--ttl", "3600"]) == 0
    assert verify_token(SECRET, capsys.readouterr().out.strip()) == "user-42"
    for argv, refusal in ((["token", ""], "USER must not be empty"), (["token", " "], "USER must not be empty"),
                          (["token", "u", "--ttl", "-60"], "--ttl must be a positive"),
                          (["token", "u", "--ttl", "0"], "--ttl must be a positive")):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and refusal in captured.err, argv
    monkeypatch.delenv("PULSE_GATEWAY_SECRET")
    assert main(["token", "user-42"]) == 2
    assert "PULSE_GATEWAY_SECRET" in capsys.readouterr().err
