"""Helpers of the recovery, fault, fuzz and privacy tests: the real engine as a child process on real servers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import websockets
from confluent_kafka import Consumer, Message, TopicPartition

from connectors.kafka_io import ensure_topics
from pulse.config import Settings
from pulse.localservers import PROJECT_ROOT as ROOT
from pulse.localservers import free_port, isolated_env, stop_processes, wait_for_port
from pulse.simulate import on_configured_topics
from simulator import KafkaEventSink, SimEvent


def stack_env(kafka_port: int, redis_port: int, workdir: Path, **overrides: str) -> dict[str, str]:
    """Environment with unique topics, Redis prefix and recovery directory; creates the topics."""
    env = isolated_env(f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", workdir / "recovery", "pulse",
                       PULSE_SNAPSHOT_S="1", PULSE_BACKUP_S="0", **overrides)
    ensure_topics(Settings.from_env(env))
    return env


@contextlib.contextmanager
def engine_and_gateway(kafka_port: int, redis_port: int, workdir: Path, **overrides: str) -> Iterator[dict[str, str]]:
    """`pulse run -w 1` and `pulse gateway` as child processes on a `stack_env` with free gateway and HTTP ports
    and a fresh gateway secret (logs: workdir/NAME.log); yields the environment, then checks that neither died
    and stops both."""
    env = stack_env(kafka_port, redis_port, workdir, PULSE_GATEWAY_PORT=str(free_port()),
                    PULSE_HTTP_PORT=str(free_port()), PULSE_GATEWAY_SECRET=f"secret-{uuid.uuid4().hex[:8]}",
                    **overrides)
    processes: list[subprocess.Popen] = []
    with contextlib.ExitStack() as logs:
        try:
            for name, argv in (("engine", ["run", "-w", "1"]), ("gateway", ["gateway"])):
                log = logs.enter_context(open(workdir / f"{name}.log", "wb"))
                processes.append(subprocess.Popen([sys.executable, "-m", "pulse.cli", *argv], env=env, cwd=ROOT,
                                                  stdout=log, stderr=subprocess.STDOUT))
            wait_for_port(int(env["PULSE_GATEWAY_PORT"]))
            yield env
            for process, name in zip(processes, ("engine", "gateway")):
                assert process.poll() is None, f"{name} died: {(workdir / f'{name}.log').read_text()[-3000:]}"
        finally:
            stop_processes(*processes, timeout_s=10)


class Engine:
    """`pulse run` as a child process, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args or ("-w", "1")
        self.process: subprocess.Popen | None = None

    def start(self) -> Engine:
        """Start (or restart) the engine."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "pulse.cli", "run", *self.args], env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Terminate (kill after 10 s)."""
        if self.alive():
            assert self.process is not None
            stop_processes(self.process, timeout_s=10)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the engine's log."""
        return self.log_path.read_text(errors="replace")[-chars:]


class TopicReader:
    """Reads a whole topic from offset 0, incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                                   "enable.auto.commit": False})
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.messages: list[Message] = []

    def poll(self, seconds: float = 0.2) -> list[Message]:
        """Fetch what arrived; return all messages so far."""
        deadline = time.monotonic() + seconds
        while True:
            self.messages += [m for m in self._consumer.consume(1000, 0.1) if m.error() is None]
            if time.monotonic() >= deadline:
                return self.messages

    def until(self, done: Callable[[list[Message]], bool], timeout_s: float,
              alive: Callable[[], bool] = lambda: True, grace_s: float = 1.0) -> list[Message]:
        """Poll until `done(messages)`, then `grace_s` more for stragglers (duplicates, records that should not
        come: 0 when only the awaited record matters); raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.poll()):
                return self.poll(grace_s)
            if not alive():
                raise RuntimeError("the engine died")
        raise TimeoutError(f"only {len(self.messages)} messages after {timeout_s}s")

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def decisions(messages: Iterable[Message]) -> list[dict]:
    """Decoded decision records."""
    return [orjson.loads(m.value()) for m in messages]


def decided_ids(messages: Iterable[Message]) -> set[str]:
    """Event ids that have a decision."""
    return {d["event_id"] for d in decisions(messages)}


def duplicates(messages: Iterable[Message]) -> int:
    """Decisions beyond the first for the same event."""
    counts = Counter(d["event_id"] for d in decisions(messages))
    return sum(n - 1 for n in counts.values())


def retarget(events: Iterable[SimEvent], env: dict[str, str]) -> list[SimEvent]:
    """Point the simulator's events at this test's topic names."""
    return list(on_configured_topics(events, Settings.from_env(env)))


def produce(events: Iterable[SimEvent], env: dict[str, str], rate: float | None = None) -> None:
    """Send the events in order (optionally paced at `rate` per second) and flush."""
    sink = KafkaEventSink(env["KAFKA_BOOTSTRAP"])
    start = time.monotonic()
    for index, event in enumerate(events):
        if rate and index % 50 == 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sink.send(event)
    sink.close()


class WebSocketWatcher(threading.Thread):
    """A real WebSocket client subscribed to one user, collecting the decision frames it is sent (for `timeout_s`,
    or until `stop_at` is set to 0)."""

    def __init__(self, port: int, user_id: str, token: str, timeout_s: float = 120) -> None:
        super().__init__(daemon=True)
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.user_id = user_id
        self.token = token
        self.frames: list[dict] = []
        self.subscribed = threading.Event()
        self.stop_at = time.monotonic() + timeout_s

    @property
    def live_decisions(self) -> list[dict]:
        """The decisions pushed as they were made (not the stored latest one sent on subscribing)."""
        return [frame["decision"] for frame in self.frames if not frame.get("latest")]

    def run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        async with websockets.connect(self.url) as ws:
            await ws.send(orjson.dumps({"subscribe": self.user_id, "token": self.token}).decode())
            while time.monotonic() < self.stop_at:
                try:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                except websockets.ConnectionClosed:
                    return
                if frame["type"] == "subscribed":
                    self.subscribed.set()
                elif frame["type"] == "decision":
                    self.frames.append(frame)
