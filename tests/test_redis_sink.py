"""The Redis decision writer against a real redis-server: what it stores, publishes, erases and reports."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import redis
from redis_scan import holding

from connectors.redis_sink import ERASE, STORE, RedisDecisionWriter, resp_command
from operators.user_state import DecisionOut
from pulse.config import Settings
from pulse.localservers import LocalServer, start_redis


def settings_for(port: int) -> Settings:
    return Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{port}/0",
                              "PULSE_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
                              "PULSE_DECISION_TTL_S": "600"})


def test_resp_command_is_the_redis_protocol() -> None:
    assert resp_command(b"SET", b"k", b"v\r\n") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n"


def test_a_decision_is_one_script_call() -> None:
    settings = settings_for(6379)
    payload = b'{"bin":"\r\n\x00"}'
    writer = RedisDecisionWriter(settings)
    keys = (settings.decision_key("ann").encode(), settings.explanations_key("ann").encode(),
            settings.explanation_ids_key("ann").encode())
    index, channel = settings.explanation_key("").encode(), settings.decision_channel("ann").encode()
    assert writer.encode([DecisionOut("ann", "d-1", payload, False)]) == (
        resp_command(b"EVAL", STORE, b"3", *keys, payload, b"600", b"5", b"d-1", index, b"ann", channel), 1)
    erasures = [DecisionOut("ann", "d-2", payload, True), DecisionOut("ann", "d-3", payload, False, False)]
    assert writer.encode(erasures) == (
        resp_command(b"EVAL", ERASE, b"3", *keys, payload, index, channel) * 2, 2)
    writer.close()


def _subscribed(client: redis.Redis, *channels: str) -> redis.client.PubSub:
    subscriber = client.pubsub()
    subscriber.subscribe(*channels)
    for _ in channels:
        subscriber.get_message(timeout=2)  # the subscribe confirmations
    return subscriber


def test_batch_stores_latest_and_explanations_and_publishes(redis_server: LocalServer) -> None:
    settings = settings_for(redis_server.port)
    client = redis.Redis(port=redis_server.port)
    subscriber = _subscribed(client, settings.decision_channel("ann"), settings.decision_channel("bob"))
    writer = RedisDecisionWriter(settings)
    payloads = [b'{"seq":1,"bin":"\\r\\n\x00"}', b'{"seq":2}']
    writer.write_batch([DecisionOut("ann", "d-1", payloads[0], False), DecisionOut("ann", "d-2", payloads[1], False),
                        DecisionOut("bob", "d-3", b'{"seq":3}', False)])
    writer.flush()
    assert client.get(settings.decision_key("ann")) == payloads[1]  # the latest of the batch wins
    assert client.hgetall(settings.explanations_key("ann")) == {b"d-1": payloads[0], b"d-2": payloads[1]}
    assert client.lrange(settings.explanation_ids_key("ann"), 0, -1) == [b"d-2", b"d-1"]
    assert client.get(settings.explanation_key("d-1")) == b"ann"
    for key in (settings.decision_key("ann"), settings.explanations_key("ann"), settings.explanation_ids_key("bob"),
                settings.explanation_key("d-3")):
        assert 590 < client.ttl(key) <= 600
    received = [subscriber.get_message(timeout=2)["data"] for _ in range(3)]
    assert received == [*payloads, b'{"seq":3}']
    writer.write_batch([DecisionOut("ann", "d-1", payloads[0], False)])  # a replayed decision is not kept twice
    writer.flush()
    assert client.lrange(settings.explanation_ids_key("ann"), 0, -1) == [b"d-1", b"d-2"]
    writer.close()
    subscriber.close()


def test_each_user_keeps_only_their_last_n_explanations(redis_server: LocalServer) -> None:
    settings = replace(settings_for(redis_server.port), explanations_per_user=3)
    client = redis.Redis(port=redis_server.port)
    writer = RedisDecisionWriter(settings)
    writer.write_batch([DecisionOut("ann", f"d-{i}", b'{"i":%d}' % i, False) for i in range(50)])
    writer.flush()
    assert client.lrange(settings.explanation_ids_key("ann"), 0, -1) == [b"d-49", b"d-48", b"d-47"]
    assert sorted(client.hkeys(settings.explanations_key("ann"))) == [b"d-47", b"d-48", b"d-49"]
    index = [key for key in client.scan_iter(settings.explanation_key("*"))]
    assert sorted(index) == [settings.explanation_key(f"d-{i}").encode() for i in (47, 48, 49)]
    assert len(list(client.scan_iter(f"{settings.redis_prefix}:*"))) == 3 + 3  # latest, hash, ids, 3 index entries
    writer.close()


@pytest.mark.parametrize("erasure", ["forget_user", "consent withdrawn"])
def test_erasure_leaves_nothing_of_the_user(redis_server: LocalServer, erasure: str) -> None:
    settings = settings_for(redis_server.port)
    client = redis.Redis(port=redis_server.port)
    subscriber = _subscribed(client, settings.decision_channel("p-ann"))
    writer = RedisDecisionWriter(settings)
    chat = b'{"user_id":"p-ann","words":{"zebra":-0.4,"umbrella":0.1}}'
    writer.write_batch([DecisionOut("p-ann", f"d-{i}", chat, False) for i in range(30)]
                       + [DecisionOut("bob", "d-bob", b'{"user_id":"bob"}', False)])
    writer.flush()
    assert holding(client, ["p-ann", "zebra"])  # the search finds them before the erasure (the test can fail)
    last = b'{"user_id":"p-ann","forgotten":true}' if erasure == "forget_user" else b'{"user_id":"p-ann"}'
    out = DecisionOut("p-ann", "d-last", last, forget=erasure == "forget_user", personal=False)
    writer.write_batch([out])
    writer.flush()
    assert holding(client, ["p-ann", "zebra", "umbrella"]) == []
    assert client.get(settings.decision_key("bob")) == b'{"user_id":"bob"}'  # other users keep theirs
    assert [subscriber.get_message(timeout=2)["data"] for _ in range(31)][-1] == last  # published, not stored
    writer.write_batch([DecisionOut("p-ann", "d-later", b'{"user_id":"p-ann"}', False, personal=False)])
    writer.flush()
    assert holding(client, ["p-ann"]) == []  # decisions without consent are never stored
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
        writer.write_batch([DecisionOut("ann", "d-1", b"{}", False)])  # its replies are read with the next batch
        client.config_set("maxmemory", 0)
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            writer.write_batch([DecisionOut("ann", "d-2", b'{"ok":1}', False)])
        writer.flush()  # the connection was not left out of step: d-2's reply is read, and it was stored
        assert client.get(settings.decision_key("ann")) == b'{"ok":1}'
        client.config_set("maxmemory", 1)
        writer.write_batch([DecisionOut("ann", "d-3", b"{}", False)])
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            writer.flush()
        client.config_set("maxmemory", 0)
        writer.close()
    finally:
        server.stop()


def test_a_batch_never_confirmed_is_sent_again_on_a_new_connection(redis_server: LocalServer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(redis_server.port)
    client = redis.Redis(port=redis_server.port)
    writer = RedisDecisionWriter(settings)
    writer.write_batch([DecisionOut("ann", "d-1", b'{"seq":1}', False)])
    host, port = writer._connection._sock.getsockname()[:2]  # the writer's socket, and no other client's
    assert client.client_kill(f"{host}:{port}")
    writer.write_batch([DecisionOut("bob", "d-2", b'{"seq":2}', False)])  # sent into the closed socket
    writer.flush()
    assert "retrying" in caplog.text  # its reply never came: sent again on a new connection
    assert client.get(settings.decision_key("ann")) == b'{"seq":1}'
    assert client.get(settings.decision_key("bob")) == b'{"seq":2}'
    writer.close()
