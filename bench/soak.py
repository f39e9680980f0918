"""Soak test: steady simulated load on the real engine for minutes, with periodic faults, on loopback only.

    .venv/bin/python bench/soak.py --duration 180 --rate 300 --fault-every 30

Starts a Tansu broker, a durable redis-server (append-only file) and `pulse run` (recovery on) on free
loopback ports, sends simulated events at a steady rate and, every `--fault-every` seconds, alternately
kills the engine with SIGKILL (then restarts it) or stops redis-server for `--redis-down` seconds.
Afterwards it waits for the engine to catch up and reports events sent, decisions made (distinct events
and duplicates), dead-lettered records, lost events (valid events without a decision: must be 0), Redis
consistency, the engine's memory (RSS) per run, and Redis's memory every `--sample-every` seconds (flat
after warm-up: Redis keeps at most PULSE_EXPLANATIONS_PER_USER + 1 decisions per user). `--fault-every 0`
injects no faults; `--bounded-broker` keeps the broker's records in pulse.objectstore, as `pulse demo`
does (it deletes what was read, so use it without engine kills). Exit code 0 when nothing was lost.

    .venv/bin/python bench/soak.py --duration 600 --rate 500 --users 1000 --fault-every 0 --bounded-broker
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import redis
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.kafka_io import ensure_topics  # noqa: E402
from pulse.config import Settings  # noqa: E402
from pulse.localservers import (  # noqa: E402
    Retention,
    free_port,
    start_redis,
    start_tansu,
    stop_processes,
)
from simulator import EventGenerator, KafkaEventSink, SimEvent, SimulationConfig, World  # noqa: E402


class TopicCounter(threading.Thread):
    """Counts a topic's records in the background; for decisions, how often each event id was decided."""

    def __init__(self, bootstrap: str, topic: str, decisions: bool) -> None:
        super().__init__(daemon=True)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-{uuid.uuid4().hex}"})
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self._decisions = decisions
        self.count = 0
        self.decided: Counter[str] = Counter()
        self.last_of_user: dict[str, tuple[str, bool]] = {}
        self.running = True

    def run(self) -> None:
        while self.running:
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is not None:
                    continue
                self.count += 1
                if self._decisions:
                    decision = orjson.loads(message.value())
                    self.decided[decision["event_id"]] += 1
                    stored = decision["personalized"] and not decision.get("forgotten")  # else Redis holds nothing
                    self.last_of_user[decision["user_id"]] = (decision["event_id"], stored)
        self._consumer.close()


class Engine:
    """`pulse run` as a child process; records its RSS per run."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self.process: subprocess.Popen | None = None
        self.runs: list[dict[str, float]] = []

    def start(self) -> None:
        with open(self._log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "pulse.cli", "run", "-w", "1"], env=self._env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.runs.append({"started": time.monotonic()})

    def sample_rss(self) -> None:
        """Record the current RSS (MiB) of the running engine."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
        run = self.runs[-1]
        if time.monotonic() - run["started"] >= 15:  # after start-up and catch-up
            run.setdefault("rss_first_mib", rss)
            run["rss_last_mib"] = rss
            run["rss_peak_mib"] = max(run.get("rss_peak_mib", 0.0), rss)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_processes(self.process)


def send(events: list[SimEvent], sink: KafkaEventSink, rate: float, stop: threading.Event,
         sent: list[SimEvent]) -> None:
    """Send at `rate` events/s until the events run out or `stop` is set."""
    start = time.monotonic()
    for index, event in enumerate(events):
        if stop.is_set():
            break
        if index % 20 == 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sink.send(event)
        sent.append(event)
    sink.flush()


def _redis_agrees(raw: bytes | None, event_id: str, stored: bool) -> bool:
    """Redis holds the user's last decision if it was personalized, and nothing otherwise."""
    return raw is not None and orjson.loads(raw)["event_id"] == event_id if stored else raw is None


def redis_sample(url: str, elapsed_s: float, settings: Settings) -> dict[str, float]:
    """Redis's memory in use (MiB), its keys, the users it holds decisions of and the memory per user (KiB)
    now; -1 while it is down."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        used = client.info("memory")["used_memory"]
        users = sum(1 for _ in client.scan_iter(settings.decision_key("*"), count=1000))
        return {"t_s": round(elapsed_s), "used_mib": round(used / 2**20, 1), "keys": client.dbsize(), "users": users,
                "kib_per_user": round(used / 1024 / users, 1) if users else 0.0}
    except redis.RedisError:
        return {"t_s": round(elapsed_s), "used_mib": -1, "keys": -1}
    finally:
        client.close()


def soak(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="pulse-soak-"))
    kafka = start_tansu(retention=Retention(("items",)) if args.bounded_broker else None)
    redis_port = free_port()
    redis_server = start_redis(redis_port, workdir / "redis")
    run = uuid.uuid4().hex[:6]
    env = dict(os.environ, KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka.port}", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               PULSE_RECOVERY_DIR=str(workdir / "recovery"), PULSE_SNAPSHOT_S=str(args.snapshot_s), PULSE_BACKUP_S="0",
               PULSE_REDIS_PREFIX=f"soak-{run}", PULSE_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    settings = Settings.from_env(env)
    ensure_topics(settings)
    config = SimulationConfig(users=args.users, items=args.items, seed=args.seed, malformed_ratio=args.malformed)
    events = list(EventGenerator(World(config)).events(int(args.rate * args.duration)))
    engine = Engine(env, workdir / "engine.log")
    decisions = TopicCounter(settings.kafka_bootstrap, settings.topic_decisions, decisions=True)
    dead = TopicCounter(settings.kafka_bootstrap, settings.topic_dead_letter, decisions=False)
    sent: list[SimEvent] = []
    stop = threading.Event()
    faults: list[str] = []
    redis_memory: list[dict[str, float]] = []
    try:
        engine.start()
        decisions.start()
        dead.start()
        sink = KafkaEventSink(settings.kafka_bootstrap)
        sender = threading.Thread(target=send, args=(events, sink, args.rate, stop, sent), daemon=True)
        started = time.monotonic()
        sender.start()
        next_fault = started + args.fault_every if args.fault_every > 0 else float("inf")
        next_sample = started
        while sender.is_alive() and time.monotonic() - started < args.duration + 5:
            engine.sample_rss()
            if time.monotonic() >= next_sample:
                redis_memory.append(redis_sample(settings.redis_url, time.monotonic() - started, settings))
                next_sample += args.sample_every
            if time.monotonic() >= next_fault:
                if len(faults) % 2 == 0:
                    engine.kill9()
                    faults.append(f"{time.monotonic() - started:.0f}s engine kill -9")
                    time.sleep(1)
                    engine.start()
                else:
                    redis_server.stop()
                    faults.append(f"{time.monotonic() - started:.0f}s redis down {args.redis_down:.0f}s")
                    time.sleep(args.redis_down)
                    redis_server = start_redis(redis_port, workdir / "redis")
                next_fault += args.fault_every
            time.sleep(0.5)
        stop.set()
        sender.join()
        valid = {e.event["event_id"] for e in sent if e.valid}
        deadline = time.monotonic() + args.drain_s
        while time.monotonic() < deadline and not valid <= decisions.decided.keys():
            engine.sample_rss()
            time.sleep(0.5)
        time.sleep(2)
        engine.sample_rss()
        redis_memory.append(redis_sample(settings.redis_url, time.monotonic() - started, settings))
        store = redis.Redis.from_url(settings.redis_url)
        stale = sum(1 for user, (event_id, stored) in decisions.last_of_user.items()
                    if not _redis_agrees(store.get(settings.decision_key(user)), event_id, stored))
        alive = engine.process is not None and engine.process.poll() is None
    finally:
        decisions.running = dead.running = False
        engine.stop()
        redis_server.stop()
        kafka.stop()
    lost = valid - decisions.decided.keys()
    report = {
        "duration_s": args.duration, "rate": args.rate, "faults": faults,
        "events_sent": len(sent), "valid": len(valid), "malformed": len(sent) - len(valid),
        "decided_events": len(valid & decisions.decided.keys()), "decision_records": decisions.count,
        "duplicates": sum(n - 1 for n in decisions.decided.values()), "dead_lettered": dead.count,
        "lost": len(lost), "redis_stale_users": stale, "engine_alive_at_end": alive,
        "engine_runs": [{k: round(v, 1) for k, v in r.items() if k != "started"} for r in engine.runs],
        "redis_memory": redis_memory,
        "workdir": str(workdir),
    }
    if not lost and not stale:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    parser.add_argument("--rate", type=float, default=300, help="events per second (default 300)")
    parser.add_argument("--fault-every", type=float, default=30, help="seconds between faults (default 30; 0: none)")
    parser.add_argument("--sample-every", type=float, default=30,
                        help="seconds between Redis memory samples (default 30)")
    parser.add_argument("--bounded-broker", action="store_true",
                        help="the broker keeps its records in pulse.objectstore, as the demo's does (no engine kills)")
    parser.add_argument("--redis-down", type=float, default=5, help="seconds redis-server stays down (default 5)")
    parser.add_argument("--snapshot-s", type=int, default=2, help="recovery snapshot interval (default 2)")
    parser.add_argument("--drain-s", type=float, default=120,
                        help="longest wait for the engine to catch up (default 120)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    report = soak(parser.parse_args(argv))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    complete = report["lost"] == 0 and report["redis_stale_users"] == 0
    return 0 if complete and report["dead_lettered"] >= report["malformed"] else 1


if __name__ == "__main__":
    sys.exit(main())
