"""`pulse demo`: the whole engine on one machine, driven by the simulator, with a live status line.

Starts (unless KAFKA_BOOTSTRAP / REDIS_URL are set) a Tansu broker and a redis-server on free loopback
ports, then the dataflow and the gateway as child processes, then sends simulated events. Ctrl-C, or
the end of --duration/--events, stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import takewhile
from pathlib import Path

from connectors.auth import mint_token
from connectors.kafka_io import ensure_topics
from connectors.model_control import ModelCommandChannel
from pulse.config import Settings
from pulse.localservers import (
    LocalServer,
    Retention,
    dying_with_parent,
    free_port,
    kcat_library_dir,
    start_redis,
    start_tansu,
    stop_processes,
    wait_for_port,
)
from pulse.simulate import on_configured_topics, simulation_config
from simulator import DecisionLatencyMonitor, EventGenerator, KafkaEventSink, SimEvent, World, send_events

LOG_DIR = Path(".pulse/logs")
DEMO_RECOVERY_DIR = Path(".pulse/demo-recovery")
DRAIN_S = 3.0
ENGINE_START_S = 60.0
STOP_WAIT_S = 10.0  # at shutdown, longest wait for the simulator thread, and for a child before it is killed
# The bundled Tansu broker keeps its records in pulse.objectstore, which deletes what the engine has read and
# caps each partition (the decision log included), so the broker's memory and the cost of its fetches stay
# bounded however long the demo runs (docs/operations.md: The demo's broker). The catalog is kept whole.
DEMO_RETENTION_WINDOW_S = 2.0
DEMO_PARTITION_BYTES = 16 * 1024 * 1024
# Each record batch costs the broker a few object-store requests: the simulator's events linger 5 ms (its default
# is 2 ms) so that a batch carries a few events at 500/s.
DEMO_PRODUCER_CONFIG = {"linger.ms": 5}


class CountingSink:
    """Wraps an event sink and counts what passes through (for the events/s figure)."""

    def __init__(self, inner: KafkaEventSink) -> None:
        self.inner = inner
        self.count = 0

    def send(self, event: SimEvent) -> None:
        """Forward one event."""
        self.inner.send(event)
        self.count += 1

    def flush(self) -> None:
        """Deliver what the wrapped sink buffers."""
        self.inner.flush()

    def close(self) -> None:
        """Flush and close the wrapped sink."""
        self.inner.close()


@contextlib.contextmanager
def _servers(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at running servers, starting local ones for what the environment does not name."""
    started: list[LocalServer] = []
    try:
        if "KAFKA_BOOTSTRAP" not in os.environ:
            kafka = start_tansu(retention=Retention((settings.topic_items,), DEMO_RETENTION_WINDOW_S,
                                                    DEMO_PARTITION_BYTES))
            started.append(kafka)
            # A fresh broker has fresh topics: recovery state of an earlier demo would point past their ends.
            shutil.rmtree(DEMO_RECOVERY_DIR, ignore_errors=True)
            settings = replace(settings, kafka_bootstrap=f"127.0.0.1:{kafka.port}", recovery_dir=str(DEMO_RECOVERY_DIR))
        if "REDIS_URL" not in os.environ:
            redis_server = start_redis()
            started.append(redis_server)
            settings = replace(settings, redis_url=f"redis://127.0.0.1:{redis_server.port}/0")
        if "PULSE_GATEWAY_PORT" not in os.environ:
            settings = replace(settings, gateway_port=free_port())
        settings = _demo_security_and_ports(settings)
        yield settings
    finally:
        _ignore_stop_signals()
        for server in reversed(started):
            server.stop()


def _demo_security_and_ports(settings: Settings) -> Settings:
    """Free ports for the HTTP API and the engine's metrics, and per-run credentials, unless configured."""
    http_port = settings.http_port if "PULSE_HTTP_PORT" in os.environ else free_port()
    metrics_port = settings.metrics_port or free_port()
    return replace(
        settings, http_port=http_port, metrics_port=metrics_port,
        gateway_secret=settings.gateway_secret or ("" if settings.gateway_insecure else secrets.token_urlsafe(24)),
        operator_token=settings.operator_token or secrets.token_urlsafe(16),
        engine_metrics=settings.engine_metrics or f"http://127.0.0.1:{metrics_port}/metrics",
    )


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        REDIS_URL=settings.redis_url,
        PULSE_GATEWAY_HOST=settings.gateway_host,
        PULSE_GATEWAY_PORT=str(settings.gateway_port),
        PULSE_RECOVERY_DIR=settings.recovery_dir,
        PULSE_HTTP_PORT=str(settings.http_port),
        PULSE_METRICS_PORT=str(settings.metrics_port),
        PULSE_GATEWAY_SECRET=settings.gateway_secret,
        PULSE_OPERATOR_TOKEN=settings.operator_token,
        PULSE_ENGINE_METRICS=settings.engine_metrics,
    )
    return env


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM both stop the demo and every process it started (they run in sessions of their own).

    SIGINT is set explicitly: a shell without job control starts background commands with SIGINT ignored,
    and Python then leaves it ignored.
    """
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def _ignore_stop_signals() -> None:
    """From here on SIGINT and SIGTERM are ignored, so that shutdown runs to its end.

    The children run in sessions of their own and get no signal from the terminal: a second Ctrl-C that
    interrupted the shutdown would leave them running. Every wait of the shutdown is bounded.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "wb")
    return subprocess.Popen(dying_with_parent(argv), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (SIGINT), SIGTERM or the simulation's end; return the exit code."""
    _stop_on_signals()
    with _servers(settings) as settings:
        ensure_topics(settings)
        env = _child_env(settings)
        children: list[subprocess.Popen] = []
        stop_sending = threading.Event()
        sender: threading.Thread | None = None
        monitor: DecisionLatencyMonitor | None = None
        sink: CountingSink | None = None
        try:
            children.append(_spawn("engine", [sys.executable, "-m", "pulse.cli", "run", "--no-create-topics",
                                              "-w", str(args.workers)], env))
            children.append(_spawn("gateway", [sys.executable, "-m", "pulse.cli", "gateway"], env))
            generator = EventGenerator(World(simulation_config(args)))
            monitor = DecisionLatencyMonitor(settings.redis_url, f"{settings.redis_prefix}:decisions:*",
                                             event_id_prefix=generator.id_prefix)  # the simulator's events only
            sink = CountingSink(KafkaEventSink(settings.kafka_bootstrap, config=DEMO_PRODUCER_CONFIG))
            sender = threading.Thread(target=_send, args=(args, settings, generator, sink, stop_sending),
                                      name="simulator", daemon=True)
            wait_for_port(settings.gateway_port, host=settings.gateway_host)
            _await_engine(settings, children[0])
            _print_banner(settings)
            sender.start()
            return _status_loop(sender, sink, monitor, children)
        except KeyboardInterrupt:
            print("\nstopping...", file=sys.stderr)
            return 0
        finally:
            _ignore_stop_signals()
            # The simulator stops first, so that nothing is produced after the final flush below.
            stop_sending.set()
            if sender is not None and sender.ident is not None:
                sender.join(STOP_WAIT_S)
            if monitor is not None:
                monitor.stop()
            stop_processes(*children, timeout_s=STOP_WAIT_S)
            if sink is not None:
                sink.close()
            print(f"stopped; logs in {LOG_DIR}/", file=sys.stderr)


def _await_engine(settings: Settings, engine: subprocess.Popen, timeout_s: float = ENGINE_START_S) -> None:
    """Wait for the dataflow's first heartbeat, so the load does not queue up behind the engine's start."""
    channel = ModelCommandChannel(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while not channel.alive_workers():
            if engine.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine did not start; see {LOG_DIR}/engine.log")
            time.sleep(0.2)
    finally:
        channel.close()


def _send(args: argparse.Namespace, settings: Settings, generator: EventGenerator, sink: CountingSink,
          stop: threading.Event) -> None:
    """Send the simulated events until they run out, the duration ends or `stop` is set; then flush."""
    events = takewhile(lambda _event: not stop.is_set(), on_configured_topics(generator.events(args.events), settings))
    send_events(events, sink, rate=args.rate or None, duration_s=args.duration, progress=False)


def _print_banner(settings: Settings) -> None:
    print(banner(settings, kcat_library_dir()), file=sys.stderr)


def banner(settings: Settings, kcat_libraries: Path | None) -> str:
    """Where to connect, with tokens, and how to mint tokens for other users of this demo.

    `kcat_libraries`: a directory holding a librdkafka that Debian's kcat can use with the bundled broker.
    """
    ws = f"ws://{settings.gateway_host}:{settings.gateway_port}/ws?user_id=user-00001"
    http = f"http://{settings.gateway_host}:{settings.http_port}"
    shop_token = mint_token(settings.gateway_secret, "user-00001", 86400) if settings.gateway_secret else ""
    tokens = (f"PULSE_GATEWAY_SECRET={shlex.quote(settings.gateway_secret)} {sys.executable} -m pulse.cli token "
              "USER --ttl 86400" if settings.gateway_secret else "none needed (PULSE_GATEWAY_INSECURE=1)")
    kcat = f"kcat -b {settings.kafka_bootstrap} -t {settings.topic_decisions} -C -o end"
    if kcat_libraries is not None:
        kcat = f"LD_LIBRARY_PATH={kcat_libraries} {kcat}"
    return (
        f"Pulse demo\n  Kafka      {settings.kafka_bootstrap}  (topics {', '.join(settings.input_topics)} -> "
        f"{settings.topic_decisions}, {settings.topic_dead_letter})\n  Redis      {settings.redis_url}\n"
        f"  WebSocket  {ws}&token={shop_token}\n  Dashboard  {http}/?token={settings.operator_token}\n"
        f"  Shop       {http}/shop.html?user_id=user-00001&token={shop_token}\n"
        f"  Tokens     for any other user U of this demo (shop: /shop.html?user_id=U&token=...):\n"
        f"             {tokens}\n"
        f"  kcat       {kcat}\n"
        f"  Logs       {LOG_DIR}/\nCtrl-C stops everything."
    )


def _status_loop(
    sender: threading.Thread, sink: CountingSink, monitor: DecisionLatencyMonitor, children: list[subprocess.Popen]
) -> int:
    last_sent, last_decided, last_time = 0, 0, time.monotonic()
    drain_until = None
    while True:
        time.sleep(1.0)
        for child in children:
            if child.poll() is not None:
                print(f"\nchild process {child.args} exited with {child.returncode}; see {LOG_DIR}/", file=sys.stderr)
                return 1
        stats = monitor.snapshot()
        now = time.monotonic()
        elapsed = now - last_time
        line = (
            f"events/s {(sink.count - last_sent) / elapsed:8,.0f} "
            f"| decisions/s {(stats.count - last_decided) / elapsed:8,.0f}"
            f" | latency p50 {stats.p50_ms:6.1f} ms p99 {stats.p99_ms:6.1f} ms"
            f" | sent {sink.count:,} decided {stats.count:,}"
        )
        if stats.others:  # decisions of events from other producers (the shop, kcat, curl), not counted above
            line += f" (+{stats.others:,} other)"
        print("\r" + line, end="", file=sys.stderr, flush=True)
        last_sent, last_decided, last_time = sink.count, stats.count, now
        if not sender.is_alive():
            drain_until = drain_until or now + DRAIN_S
            if now >= drain_until:
                print("\nsimulation finished", file=sys.stderr)
                return 0
