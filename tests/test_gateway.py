"""The WebSocket gateway against a real redis-server and real `websockets` clients, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import connectors.gateway as gateway_module
from connectors.auth import mint_token
from connectors.gateway import Gateway
from pulse.config import ConfigError, Settings
from pulse.localservers import LocalServer, free_port, start_redis, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
RECV_TIMEOUT_S = 5.0
SECRET = "test-gateway-secret"
BROKER: dict[str, str] = {}  # KAFKA_BOOTSTRAP of the session's broker, set by `outcome_log_broker`


@pytest.fixture(autouse=True)
def outcome_log_broker(kafka_server: LocalServer) -> None:
    """A real broker for the gateway's experiments feed, which reads the outcome log: without one, every
    gateway's stop waits out the feed's 2-second metadata request to an unreachable broker."""
    BROKER["KAFKA_BOOTSTRAP"] = f"127.0.0.1:{kafka_server.port}"


def make_settings(redis_port: int, **env: str) -> Settings:
    """Gateway (WebSocket and HTTP) on free ports with a token secret, and a prefix of its own so tests
    sharing a redis-server never mix."""
    base = {
        **BROKER,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PULSE_GATEWAY_PORT": "0",
        "PULSE_HTTP_PORT": "0",
        "PULSE_GATEWAY_SECRET": SECRET,
        "PULSE_REDIS_PREFIX": f"gw-{uuid.uuid4().hex[:8]}",
    }
    return Settings.from_env(base | env)


def token(user: str, ttl_s: int = 600) -> str:
    return mint_token(SECRET, user, ttl_s)


def decision(user: str, seq: int, pad: int = 0) -> bytes:
    """A decision as the engine writes it (`seq` orders them; `pad` makes it bigger)."""
    return orjson.dumps({
        "decision_id": f"{user}-{seq}", "user_id": user, "event_id": f"e-{seq}", "event_ts": 1_700_000_000_000 + seq,
        "decided_ts": 1_700_000_000_001 + seq, "seq": seq, "action": "recommend", "pad": "x" * pad,
    })


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Gateway, aioredis.Redis]]:
    """A started gateway plus a Redis client playing the engine; both always closed."""
    gateway = Gateway(settings)
    engine = aioredis.Redis.from_url(settings.redis_url, retry=Retry(ExponentialBackoff(cap=0.25), 5))
    try:
        await gateway.start()
        yield gateway, engine
    finally:
        await gateway.stop()
        await engine.aclose()


def url(gateway: Gateway, query: str = "") -> str:
    """WebSocket URL; a `?user_id=U` query gets U's token appended."""
    if query.startswith("?user_id="):
        query += "&token=" + token(query[len("?user_id="):])
    return f"ws://127.0.0.1:{gateway.port}/ws{query}"


async def recv(ws: ClientConnection, timeout: float = RECV_TIMEOUT_S) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send(ws: ClientConnection, message: object) -> None:
    """Send a command; a subscribe without a token gets the user's token."""
    if isinstance(message, dict) and isinstance(message.get("subscribe"), str) and "token" not in message:
        message = {**message, "token": token(message["subscribe"])}
    await ws.send(orjson.dumps(message).decode())


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_latest_stored_decision_then_live_ones_in_order(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        async with running(settings) as (gateway, engine), connect(url(gateway)) as ws:
            await engine.set(settings.decision_key("alice"), decision("alice", 0), ex=60)
            await send(ws, {"subscribe": "alice"})
            assert await recv(ws) == {"type": "subscribed", "user_id": "alice"}
            latest = await recv(ws)
            assert latest["type"] == "decision" and latest["latest"] is True
            assert latest["decision"] == orjson.loads(decision("alice", 0))
            for seq in range(1, 6):
                await engine.publish(settings.decision_channel("alice"), decision("alice", seq))
            frames = [await recv(ws) for _ in range(5)]
            assert [frame["decision"]["seq"] for frame in frames] == [1, 2, 3, 4, 5]
            assert all(frame["type"] == "decision" and "latest" not in frame for frame in frames)
            await wait_until(lambda: gateway.stats["delivered"] == 6)

    asyncio.run(scenario())


def test_pseudonymized_users_subscribe_by_their_own_id(redis_server: LocalServer) -> None:
    """With PULSE_PSEUDONYMIZE_KEY the engine stores pseudonyms; a browser still subscribes as itself."""
    from operators.privacy import pseudonymize

    async def scenario() -> None:
        settings = make_settings(redis_server.port, PULSE_PSEUDONYMIZE_KEY="k")
        alias = pseudonymize("alice", "k")
        async with running(settings) as (gateway, engine), connect(url(gateway)) as ws:
            await engine.set(settings.decision_key(alias), decision(alias, 0), ex=60)
            await send(ws, {"subscribe": "alice"})
            assert await recv(ws) == {"type": "subscribed", "user_id": "alice"}
            assert (await recv(ws))["decision"]["user_id"] == alias
            await engine.publish(settings.decision_channel(alias), decision(alias, 1))
            assert (await recv(ws))["decision"]["seq"] == 1

    asyncio.run(scenario())


def test_clients_only_receive_their_users_decisions(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        async with running(settings) as (gateway, engine), connect(url(gateway, "?user_id=a")) as a, \
                connect(url(gateway, "?user_id=b")) as b:
            assert (await recv(a))["user_id"] == "a" and (await recv(b))["user_id"] == "b"
            for seq in range(3):
                await engine.publish(settings.decision_channel("b"), decision("b", seq))
            await engine.publish(settings.decision_channel("nobody"), decision("nobody", 0))
            await engine.publish(settings.decision_channel("a"), decision("a", 9))
            assert (await recv(a))["decision"]["decision_id"] == "a-9"
            assert [(await recv(b))["decision"]["decision_id"] for _ in range(3)] == ["b-0", "b-1", "b-2"]
            await send(a, {"ping": 1})
            assert (await recv(a))["type"] == "pong"  # nothing of b's was queued in between
            assert gateway.stats | {"redis_connected": True} == {
                "connections": 2, "subscriptions": 2, "delivered": 4, "dropped": 0, "redis_connected": True}

    asyncio.run(scenario())


def test_query_subscription_errors_ping_and_unsubscribe(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        async with running(settings) as (gateway, engine), connect(url(gateway, "?user_id=carol")) as ws:
            assert await recv(ws) == {"type": "subscribed", "user_id": "carol"}
            for bad in ("not json", "[1, 2]", '{"bogus": 1}', '{"subscribe": ""}', '{"subscribe": 7}',
                        '{"subscribe": "x", "ping": 1}', '{"unsubscribe": "dave"}'):
                await ws.send(bad)
                reply = await recv(ws)
                assert reply["type"] == "error" and reply["error"], bad
            await send(ws, {"ping": {"n": 1}})
            assert await recv(ws) == {"type": "pong", "ping": {"n": 1}, "dropped": 0}
            await engine.publish(settings.decision_channel("carol"), decision("carol", 1))
            assert (await recv(ws))["decision"]["decision_id"] == "carol-1"  # still usable after errors

            for i in range(gateway_module.MAX_SUBSCRIPTIONS - 1):
                await send(ws, {"subscribe": f"u{i}"})
                assert (await recv(ws))["type"] == "subscribed"
            await send(ws, {"subscribe": "one-too-many"})
            assert "at most" in (await recv(ws))["error"]

            await send(ws, {"unsubscribe": "carol"})
            assert await recv(ws) == {"type": "unsubscribed", "user_id": "carol"}
            await engine.publish(settings.decision_channel("carol"), decision("carol", 2))
            await engine.publish(settings.decision_channel("u0"), decision("u0", 1))
            assert (await recv(ws))["decision"]["decision_id"] == "u0-1"

            async with connect(url(gateway, "?user_id=" + "x" * 300)) as too_long:
                assert (await recv(too_long))["type"] == "error"
        assert gateway.stats["connections"] == 0 and gateway.stats["subscriptions"] == 0

    asyncio.run(scenario())


def test_a_closed_connection_is_freed_by_reference_counting_alone(redis_server: LocalServer) -> None:
    """No reference cycle keeps a closed connection's server side (the collector is off meanwhile): with
    PULSE_GC_FREEZE a cycle frozen while open would stay until the next pass over everything."""

    async def scenario() -> None:
        async with running(make_settings(redis_server.port)) as (gateway, _):
            async with connect(url(gateway, "?user_id=leaving")) as ws:
                assert (await recv(ws))["type"] == "subscribed"
                (client,) = gateway._clients
                server_side = [weakref.ref(part) for part in (client.ws, client.ws.protocol, client.ws.transport)]
                del client
            gc.collect()
            gc.disable()
            try:
                deadline = time.monotonic() + 5
                while any(ref() is not None for ref in server_side) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert [ref() is None for ref in server_side] == [True, True, True]
            finally:
                gc.enable()

    asyncio.run(scenario())


def test_slow_client_loses_oldest_frames_without_slowing_others(redis_server: LocalServer) -> None:
    queue, count, pad = 25, 2000, 8192

    async def scenario() -> None:
        settings = make_settings(redis_server.port, PULSE_GATEWAY_QUEUE=str(queue))
        # The slow client's kernel buffer is tiny and websockets stops reading after one frame, so the
        # backlog lands in the gateway, not in socket buffers (loopback autotunes them to 32 MB).
        slow_sock = socket.socket()
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with running(settings) as (gateway, engine):
            slow_sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(slow_sock, ("127.0.0.1", gateway.port))
            async with connect(url(gateway, "?user_id=erin"), sock=slow_sock, max_queue=1) as slow, \
                    connect(url(gateway, "?user_id=erin")) as fast:
                assert (await recv(slow))["type"] == "subscribed" and (await recv(fast))["type"] == "subscribed"
                # Bursts of one queue's worth: the fast reader shares this event loop with the gateway, so
                # it is only "fast" if it may read between bursts; the slow one never reads at all.
                started, seqs = time.monotonic(), []
                for burst in range(0, count, queue):
                    async with engine.pipeline(transaction=False) as pipe:
                        for seq in range(burst, burst + queue):
                            pipe.publish(settings.decision_channel("erin"), decision("erin", seq, pad))
                        await pipe.execute()
                    seqs += [(await recv(fast))["decision"]["seq"] for _ in range(queue)]
                elapsed = time.monotonic() - started
                assert seqs == list(range(count)) and elapsed < 10.0
                assert gateway.stats["dropped"] > 0
                assert all(client.queue.qsize() <= queue for client in gateway._clients)

                received = []
                while True:  # drain the slow client, then learn its dropped counter
                    frame = await recv(slow)
                    if frame["type"] != "decision":
                        break
                    received.append(frame["decision"]["seq"])
                    if received[-1] == count - 1:
                        await send(slow, {"ping": "done"})
                assert frame["type"] == "pong" and frame["dropped"] > 0
                assert received == sorted(received) and received[-1] == count - 1  # the newest always arrives
                assert len(received) + frame["dropped"] == count
                assert gateway.stats["dropped"] == frame["dropped"]

    asyncio.run(scenario())


def test_thousands_of_idle_connections_each_get_their_decision(redis_server: LocalServer) -> None:
    clients = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 3 * clients:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        async with running(settings) as (gateway, engine), contextlib.AsyncExitStack() as stack:
            gate = asyncio.Semaphore(100)  # stay within the listen backlog

            async def open_one(i: int) -> ClientConnection:
                async with gate:
                    ws = await stack.enter_async_context(connect(url(gateway, f"?user_id=user{i}")))
                    assert (await recv(ws, 30))["type"] == "subscribed"
                    return ws

            sockets = await asyncio.gather(*(open_one(i) for i in range(clients)))
            assert gateway.stats["connections"] == clients and gateway.stats["subscriptions"] == clients
            async with engine.pipeline(transaction=False) as pipe:
                for i in range(clients):
                    pipe.publish(settings.decision_channel(f"user{i}"), decision(f"user{i}", i))
                await pipe.execute()
            frames = await asyncio.gather(*(recv(ws, 20) for ws in sockets))
            assert [frame["decision"]["user_id"] for frame in frames] == [f"user{i}" for i in range(clients)]
            assert gateway.stats["delivered"] == clients

    asyncio.run(scenario())


def test_healthz_and_unknown_paths(redis_server: LocalServer) -> None:
    def get(address: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    async def scenario() -> None:
        async with running(make_settings(redis_server.port)) as (gateway, _):
            base = f"http://127.0.0.1:{gateway.port}"
            assert await asyncio.to_thread(get, f"{base}/healthz") == (200, b"ok\n")
            assert (await asyncio.to_thread(get, f"{base}/elsewhere"))[0] == 404

    asyncio.run(scenario())


def test_dispatcher_reconnects_after_redis_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first retry comes 2 s after the loss, so the decision written below, while the gateway is
    # still disconnected, can only reach the client through the re-send that follows a reconnection.
    monkeypatch.setattr(gateway_module, "RECONNECT_MIN_S", 2.0)
    server = start_redis()
    port = server.port

    async def scenario() -> None:
        nonlocal server
        settings = make_settings(port)
        async with running(settings) as (gateway, engine), connect(url(gateway, "?user_id=frank")) as ws:
            assert (await recv(ws))["type"] == "subscribed"
            await engine.publish(settings.decision_channel("frank"), decision("frank", 1))
            assert (await recv(ws))["decision"]["seq"] == 1

            server.stop()
            await wait_until(lambda: not gateway.stats["redis_connected"])
            async with connect(url(gateway, "?user_id=gina")) as other:  # still serving without Redis
                assert (await recv(other))["type"] == "subscribed"
                await send(other, {"ping": 0})
                assert (await recv(other))["type"] == "pong"

            server = start_redis(port)
            await engine.set(settings.decision_key("frank"), decision("frank", 2), ex=60)  # missed live
            assert not gateway.stats["redis_connected"]
            resent = await recv(ws, 15)
            assert resent["latest"] is True and resent["decision"]["seq"] == 2
            assert gateway.stats["redis_connected"]
            await engine.publish(settings.decision_channel("frank"), decision("frank", 3))
            assert (await recv(ws))["decision"]["seq"] == 3

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_run_gateway_serves_until_sigterm_with_the_collector_freezing(redis_server: LocalServer) -> None:
    port = free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0", PULSE_GATEWAY_PORT=str(port),
               PULSE_HTTP_PORT="0", PULSE_GATEWAY_SECRET=SECRET)
    env.pop("PULSE_GC_FREEZE", None)
    code = ("from connectors.gateway import run_gateway; from pulse.config import Settings; "
            "from pulse.runtime import PROCESS_FREEZER; run_gateway(Settings.from_env()); "
            "print('freezing:', PROCESS_FREEZER.installed)")
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        assert out.decode().strip().endswith("freezing: True")  # PULSE_GC_FREEZE's default
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_subscriptions_need_a_valid_token_for_that_user(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        forged = mint_token("not-the-secret", "alice", 600)
        expired = mint_token(SECRET, "alice", -5)
        async with running(settings) as (gateway, engine), connect(url(gateway)) as ws:
            for bad_token, reason in ((None, "missing token"), (forged, "bad token signature"),
                                      (expired, "token expired"), (token("mallory"), "token for another user"),
                                      ("v1.garbage", "malformed token"),
                                      (token("alice")[:-3] + "AAA", "bad token signature")):
                message = {"subscribe": "alice"} | ({} if bad_token is None else {"token": bad_token})
                await ws.send(orjson.dumps(message).decode())
                reply = await recv(ws)
                assert reply["type"] == "error" and reason in reply["error"], (bad_token, reply)
            assert gateway.stats["subscriptions"] == 0
            await engine.publish(settings.decision_channel("alice"), decision("alice", 1))
            await send(ws, {"ping": 1})
            assert (await recv(ws))["type"] == "pong"  # alice's decision never reached this connection
            async with connect(url(gateway, "?user_id=alice").replace("alice&", "bob&", 1)) as cross:
                assert "token for another user" in (await recv(cross))["error"]
            await send(ws, {"subscribe": "alice"})  # a proper token works on the same connection
            assert (await recv(ws))["type"] == "subscribed"
            metrics = gateway.metrics.registry
            assert metrics.get_sample_value("pulse_ws_refused_total", {"reason": "token_expired"}) == 1
            assert metrics.get_sample_value("pulse_ws_refused_total", {"reason": "bad_token_signature"}) == 2

    asyncio.run(scenario())


def test_origin_allow_list_rate_limit_and_idle_timeout(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port, PULSE_GATEWAY_ORIGINS="https://shop.example",
                                 PULSE_GATEWAY_RATE="5", PULSE_GATEWAY_IDLE_S="1")
        async with running(settings) as (gateway, _):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url(gateway, "?user_id=a"), origin="https://evil.example"):
                    pass
            assert refused.value.response.status_code == 403
            async with connect(url(gateway, "?user_id=a"), origin="https://shop.example") as ws:
                assert (await recv(ws))["type"] == "subscribed"
                for i in range(30):  # burst allowance is 2 x 5 messages
                    try:
                        await send(ws, {"ping": i})
                    except ConnectionClosed:
                        break
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await recv(ws)
                assert closed.value.rcvd.code == 1008 and "rate" in closed.value.rcvd.reason
            async with connect(url(gateway)) as idle:  # never subscribes: closed after ~1 s
                started = time.monotonic()
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(idle, 5)
                assert closed.value.rcvd.code == 1000 and 0.9 < time.monotonic() - started < 3.5

    asyncio.run(scenario())


def test_auth_can_only_be_disabled_explicitly_without_a_secret(redis_server: LocalServer) -> None:
    with pytest.raises(ConfigError, match="PULSE_GATEWAY_INSECURE"):
        asyncio.run(Gateway(make_settings(redis_server.port, PULSE_GATEWAY_SECRET="")).start())
    with pytest.raises(ConfigError, match="only allowed while PULSE_GATEWAY_SECRET is unset"):
        make_settings(redis_server.port, PULSE_GATEWAY_INSECURE="1")

    async def scenario() -> None:
        settings = make_settings(redis_server.port, PULSE_GATEWAY_SECRET="", PULSE_GATEWAY_INSECURE="1")
        async with running(settings) as (gateway, _), connect(url(gateway) + "?user_id=anyone") as ws:
            assert await recv(ws) == {"type": "subscribed", "user_id": "anyone"}

    asyncio.run(scenario())


@pytest.mark.parametrize(("command", "env", "code", "message"), [
    ("gateway", {"PULSE_GATEWAY_SECRET": SECRET, "REDIS_URL": "redis://127.0.0.1:{free}/0"}, 3, "Redis at redis://"),
    ("run", {"REDIS_URL": "redis://127.0.0.1:{free}/0"}, 3, "Is redis-server running?"),
    ("gateway", {"PULSE_GATEWAY_SECRET": SECRET, "REDIS_URL": "http://nope"}, 2, "not a valid Redis URL"),
    ("gateway", {"PULSE_GATEWAY_SECRET": "", "REDIS_URL": "redis://127.0.0.1:{redis}/0"}, 2,
     "set PULSE_GATEWAY_SECRET"),
    ("gateway", {"PULSE_GATEWAY_SECRET": SECRET, "PULSE_GATEWAY_INSECURE": "1"}, 2, "only allowed while"),
    ("gateway", {"PULSE_HTTP_PORT": "99999"}, 2, "PULSE_HTTP_PORT must be a port number"),
])
def test_cli_errors_are_one_line_not_tracebacks(redis_server: LocalServer, command: str, env: dict[str, str],
                                                code: int, message: str) -> None:
    env = {k: v.format(free=free_port(), redis=redis_server.port) for k, v in env.items()}
    result = subprocess.run([sys.executable, "-m", "pulse.cli", command], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PULSE_HTTP_PORT": "0", **env}, timeout=60)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_oversize_message_closes_with_1009_and_is_counted(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        async with running(make_settings(redis_server.port)) as (gateway, _), connect(url(gateway)) as ws:
            await ws.send("x" * (gateway_module.MAX_CLIENT_MESSAGE + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 1009
            metrics = gateway.metrics.registry
            await wait_until(lambda: metrics.get_sample_value("pulse_ws_refused_total",
                                                              {"reason": "message_too_big"}) == 1)

    asyncio.run(scenario())


def test_an_erasure_removes_the_users_decisions_from_the_dashboard_feed(redis_server: LocalServer) -> None:
    async def scenario() -> None:
        settings = make_settings(redis_server.port)
        async with running(settings) as (gateway, engine):
            await wait_until(lambda: gateway.stats["redis_connected"])
            for user in ("alice", "bob", "alice"):
                await engine.publish(settings.decision_channel(user), decision(user, 1))
            await wait_until(lambda: len(gateway._feed) == 3)
            forgotten = orjson.dumps({"decision_id": "d-f", "user_id": "alice", "forgotten": True})
            await engine.publish(settings.decision_channel("alice"), forgotten)
            await wait_until(lambda: any(b"forgotten" in d for d in gateway._feed))
            feed = [orjson.loads(d) for d in gateway._feed]
            assert [(d["user_id"], d.get("forgotten", False)) for d in feed] == [("bob", False), ("alice", True)]

    asyncio.run(scenario())
