"""Fault tests against real servers: redis-server stopped and restarted mid-stream, broker unavailable
at start, gateway restarted under a connected client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis
import websockets
from enginestack import ROOT, Engine, TopicReader, decided_ids, decisions, produce, retarget, stack_env

from pulse.localservers import LocalServer, free_port, start_redis, start_tansu, wait_for_port
from simulator import EventGenerator, SimulationConfig, World, encode_event

pytestmark = pytest.mark.e2e


def _latest_matches_log(store: redis.Redis, prefix: str, log: list[dict]) -> bool:
    last: dict[str, str] = {}
    for decision in log:
        last[decision["user_id"]] = decision["event_id"]
    for user, event_id in last.items():
        stored = store.get(f"{prefix}:decision:{user}")
        if stored is None or orjson.loads(stored)["event_id"] != event_id:
            return False
    return True


def test_redis_outage_mid_stream_delays_but_loses_nothing(kafka_server: LocalServer, tmp_path: Path) -> None:
    own_redis = start_redis(data_dir=tmp_path / "redis")
    env = stack_env(kafka_server.port, own_redis.port, tmp_path)
    events = retarget(EventGenerator(World(SimulationConfig(users=20, items=40, seed=9))).events(1200), env)
    valid = {e.event["event_id"] for e in events if e.valid}
    engine = Engine(env, tmp_path / "engine.log").start()
    reader = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    try:
        produce(events[:600], env)
        reader.until(lambda ms: len(ms) >= 300, 60, engine.alive)
        own_redis.stop()  # mid-stream: the engine is still working through the first half
        produce(events[600:900], env)
        time.sleep(4)  # their decisions fail to reach Redis: the sink retries with backoff, the worker waits
        produce(events[900:], env)
        time.sleep(2)
        assert engine.alive(), engine.log_tail()
        stalled_at = len(reader.poll())  # the waiting worker decides nothing more until Redis is back
        own_redis = start_redis(own_redis.port, tmp_path / "redis")
        reader.until(lambda ms: valid <= decided_ids(ms), 90, engine.alive)
        store = redis.Redis.from_url(env["REDIS_URL"])
        deadline = time.monotonic() + 30
        while not _latest_matches_log(store, env["PULSE_REDIS_PREFIX"], decisions(reader.messages)):
            assert time.monotonic() < deadline, "Redis did not catch up with the decision log"
            time.sleep(0.5)
        assert engine.alive(), engine.log_tail()
    finally:
        engine.stop()
        reader.close()
        own_redis.stop()
    print(f"\n{stalled_at} of {len(valid)} decisions logged while Redis was down; all {len(valid)} after it came back")
    before_outage = {e.event["event_id"] for e in events[:900]}
    assert stalled_at <= len(valid & before_outage), "the worker went on during the outage"
    assert "retrying" in engine.log_tail(200_000), "the Redis sink did not report its retries"


def test_broker_unavailable_at_start_gives_a_clear_error(redis_server: LocalServer, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
               PULSE_STARTUP_RETRY_S="8", PULSE_RECOVERY_DIR=str(tmp_path / "r"),
               PYTHONPATH=str(ROOT))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "run"], env=env, cwd=ROOT, capture_output=True,
                            timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    stderr = result.stderr.decode()
    assert f"Kafka at 127.0.0.1:{port} is unreachable" in stderr and "retrying" in stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("pulse: Kafka at")
    assert 8 <= elapsed < 30


def test_broker_starting_late_is_waited_for(redis_server: LocalServer, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
               PULSE_STARTUP_RETRY_S="60", PULSE_RECOVERY_DIR=str(tmp_path / "r"), PYTHONPATH=str(ROOT))
    engine = Engine(env, tmp_path / "engine.log").start()
    broker = None
    try:
        deadline = time.monotonic() + 60  # one connection attempt takes 5 s: then the engine must retry
        while "retrying" not in engine.log_tail(100_000) and engine.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "retrying" in engine.log_tail(100_000), "the engine did not retry the unreachable broker"
        assert engine.alive(), engine.log_tail()
        broker = start_tansu(port)  # a broker of its own: the default topic names are free
        event = {"event_id": "late-1", "user_id": "u1", "type": "page_view", "ts": int(time.time() * 1000)}
        deadline = time.monotonic() + 30
        while "created topic" not in engine.log_tail(100_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        produce([encode_event(event)], env)
        reader = TopicReader(env["KAFKA_BOOTSTRAP"], "decisions")
        try:
            reader.until(lambda ms: "late-1" in decided_ids(ms), 60, engine.alive)
        finally:
            reader.close()
    finally:
        engine.stop()
        if broker is not None:
            broker.stop()


class ReconnectingClient(threading.Thread):
    """A real WebSocket client that reconnects (with backoff) and resubscribes whenever the connection drops."""

    def __init__(self, port: int, user_id: str) -> None:
        super().__init__(daemon=True)
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.user_id = user_id
        self.frames: list[dict] = []
        self.connections = 0
        self.running = True

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        backoff = 0.1
        while self.running:
            try:
                async with websockets.connect(self.url) as ws:
                    self.connections += 1
                    backoff = 0.1
                    await ws.send(orjson.dumps({"subscribe": self.user_id}).decode())
                    while self.running:
                        try:
                            self.frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 0.3)))
                        except TimeoutError:
                            continue
            except (OSError, websockets.WebSocketException):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def wait_for(self, predicate, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(predicate(f) for f in list(self.frames)):
            assert time.monotonic() < deadline, f"no matching frame in {self.frames[-5:]}"
            time.sleep(0.1)


def test_gateway_restart_clients_reconnect_and_get_the_latest_decision(
    kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path
) -> None:
    env = stack_env(kafka_server.port, redis_server.port, tmp_path, PULSE_GATEWAY_PORT=str(free_port()),
                    PULSE_GATEWAY_INSECURE="1", PULSE_HTTP_PORT="0")
    port = int(env["PULSE_GATEWAY_PORT"])
    now = int(time.time() * 1000)
    first, second = ({"event_id": f"gw-{i}", "user_id": "gw-user", "type": "page_view", "ts": now + i} for i in (1, 2))
    engine = Engine(env, tmp_path / "engine.log").start()

    def gateway() -> subprocess.Popen:
        log = open(tmp_path / "gateway.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "pulse.cli", "gateway"], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)

    process = gateway()
    client = ReconnectingClient(port, "gw-user")
    try:
        wait_for_port(port, 30)
        client.start()
        produce(retarget([encode_event(first)], env), env)
        client.wait_for(lambda f: f.get("type") == "decision" and f["decision"]["event_id"] == "gw-1")
        process.terminate()
        process.wait(10)
        connections = client.connections
        process = gateway()
        # The client reconnects on its own and is sent the stored latest decision, then live ones again.
        client.wait_for(lambda f: f.get("latest") and f["decision"]["event_id"] == "gw-1"
                        and client.connections > connections)
        produce(retarget([encode_event(second)], env), env)
        client.wait_for(lambda f: f.get("type") == "decision" and not f.get("latest")
                        and f["decision"]["event_id"] == "gw-2")
    finally:
        client.running = False
        process.terminate()
        process.wait(10)
        engine.stop()
