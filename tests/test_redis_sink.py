"""The Redis decision writer against a real redis-server: what it stores, publishes, erases and reports."""

from __future__ import annotations

import uuid

import pytest
import redis

from connectors.redis_sink import RedisDecisionWriter, resp_command
from operators.user_state import DecisionOut
from pulse.config import Settings
from pulse.localservers import LocalServer, start_redis


def settings_for(port: int) -> Settings:
    return Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "PULSE_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
                              "PULSE_DECISION_TTL_S": "600"})


def test_resp_command_is_the_redis_protocol() -> None:
    assert resp_command(b"SET", b"k", b"v\r\n") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n"


def test_a_decision_is_encoded_as_its_three_commands() -> None:
    settings = settings_for(6379)
    payload = b'{"bin":"\r\n\x00"}'
    writer = RedisDecisionWriter(settings)
    ttl = b"600"
    assert writer.encode([DecisionOut("ann", "d-1", payload, False)]) == (
        resp_command(b"SET", settings.decision_key("ann").encode(), payload, b"EX", ttl)
        + resp_command(b"SET", settings.explanation_key("d-1").encode(), payload, b"EX", ttl)
        + resp_command(b"PUBLISH", settings.decision_channel("ann").encode(), payload), 3)
    writer.close()


def test_batch_sets_latest_and_explanation_publishes_and_forgets(redis_server: LocalServer) -> None:
    settings = settings_for(redis_server.port)
    client = redis.Redis(port=redis_server.port)
    subscriber = client.pubsub()
    subscriber.subscribe(settings.decision_channel("ann"), settings.decision_channel("bob"))
    for _ in range(2):
        subscriber.get_message(timeout=2)  # the subscribe confirmations
    writer = RedisDecisionWriter(settings)
    payloads = [b'{"seq":1,"bin":"\\r\\n\x00"}', b'{"seq":2}']
    writer.write_batch([DecisionOut("ann", "d-1", payloads[0], False), DecisionOut("ann", "d-2", payloads[1], False),
                        DecisionOut("bob", "d-3", b'{"seq":3}', False)])
    assert client.get(settings.decision_key("ann")) == payloads[1]  # the latest of the batch wins
    assert client.get(settings.explanation_key("d-1")) == payloads[0]
    assert 590 < client.ttl(settings.decision_key("ann")) <= 600
    assert 590 < client.ttl(settings.explanation_key("d-3")) <= 600
    received = [subscriber.get_message(timeout=2)["data"] for _ in range(3)]
    assert received == [*payloads, b'{"seq":3}']

    writer.write_batch([DecisionOut("bob", "d-4", b'{"forgotten":true}', True)])
    assert client.get(settings.decision_key("bob")) is None
    assert subscriber.get_message(timeout=2)["data"] == b'{"forgotten":true}'
    writer.close()
    subscriber.close()


def test_rejected_commands_raise_after_the_batch_is_read_and_the_writer_recovers() -> None:
    server = start_redis()
    try:
        settings = settings_for(server.port)
        client = redis.Redis(port=server.port)
        writer = RedisDecisionWriter(settings)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            writer.write_batch([DecisionOut("ann", "d-1", b"{}", False)])
        client.config_set("maxmemory", 0)
        writer.write_batch([DecisionOut("ann", "d-2", b'{"ok":1}', False)])  # the connection was not left out of step
        assert client.get(settings.decision_key("ann")) == b'{"ok":1}'
        writer.close()
    finally:
        server.stop()
