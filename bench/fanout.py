"""Fan-out benchmark: many concurrent WebSocket subscribers, decisions/s delivered and delivery latency.

    .venv/bin/python -m bench.fanout [--subscribers 2000] [--rates 2000] [--duration 10] [--churn 0]
                                     [--settle 0] [--gc-freeze 1] [--runs 1] [--json [PATH]]
    (--subscribers 10000 for the issue's 10k point; --rates 2000 5000 10000 to find the gateway's limit;
    --churn 200 for browsers that come and go; --settle 30 to measure after the collector's passes that
    follow the connections; --gc-freeze 0 1 to compare the gateway without and with PULSE_GC_FREEZE)

Starts a redis-server and `pulse gateway` (tokens on), opens `--subscribers` WebSocket connections,
each subscribed to its own user with a minted token, then, for each rate in turn on the same
connections, publishes decisions on the users' Redis channels (as the engine's sink does) at that rate,
round-robin over the users, for `--duration` s. Each payload carries its publish time; every client
records publish -> WebSocket receive. Baseline in the same run: a plain Redis pub/sub subscriber
(pattern-subscribed, like the gateway) timing the same messages -- what Redis alone costs. Percentiles
are exact. The gateway's CPU over each rate's window is reported in cores, and its full garbage-collector
passes in the window (count and total pause, from its /metrics). With `--churn N`, N more connections a
second open during each window, subscribe to users of their own, stay 3 s and close, as page views do.

The clients' process must not be what is measured. Its clients wait on their sockets without timeouts
(they are cancelled at the end): a receive with a 1 s timeout in each of 10k clients times out 10k times
a second, which kept the process at a full core (p99 0.7-2.4 s at 10k subscribers before). And once
connected, their objects are frozen out of the garbage collector's full passes (gc.freeze).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    ROOT,
    CpuMeter,
    add_json_option,
    fmt,
    median,
    percentiles,
    print_table,
    run_env,
    servers,
    write_json,
)

SECRET = "bench-secret"
OPERATOR_TOKEN = "bench-operator"
STRAGGLERS_S = 2.0  # after publishing, how long frames still in flight are waited for
VISIT_S = 3.0  # how long each connection of the churn stays open


def _sent_ms(payload: bytes) -> float:
    start = payload.find(b'"sent_ms":') + 10
    end = payload.find(b"}", start)
    return float(payload[start:end])


class _Samples:
    """The latency samples (ms) of the rate being measured: WebSocket clients' and the Redis-only baseline's."""

    def __init__(self) -> None:
        self.websocket: list[float] = []
        self.redis: list[float] = []

    def reset(self) -> None:
        """Start the next rate's samples."""
        self.websocket, self.redis = [], []


def _redis_baseline(redis_url: str, pattern: str, samples: _Samples, stop: threading.Event) -> None:
    """A plain pattern subscriber timing every published message until `stop`."""
    import redis

    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(pattern)
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            samples.redis.append(time.time() * 1000.0 - _sent_ms(message["data"]))
    pubsub.close()


def _full_gc_passes(http_port: int) -> tuple[int, float]:
    """(count, total seconds) of the gateway's full garbage-collector passes so far, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/metrics",
                                     headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    full = {sample.name: sample.value for family in text_string_to_metric_families(text)
            if family.name == "pulse_gc_pause_seconds" for sample in family.samples
            if sample.labels.get("generation") == "2"}
    return int(full.get("pulse_gc_pause_seconds_count", 0)), full.get("pulse_gc_pause_seconds_sum", 0.0)


def _publish(redis_url: str, prefix: str, users: list[str], rate: int, duration: float) -> int:
    """Publish decisions round-robin over `users` at `rate`/s for `duration` s (pipelined every 5 ms); the count."""
    import redis

    client = redis.Redis.from_url(redis_url)
    sent, start = 0, time.perf_counter()
    batch = max(1, rate // 200)
    while time.perf_counter() - start < duration:
        due = start + sent / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        pipe = client.pipeline(transaction=False)
        for _ in range(batch):
            user = users[sent % len(users)]
            pipe.publish(f"{prefix}:decisions:{user}",
                         b'{"decision_id":"d-%d","user_id":"%s","sent_ms":%.3f}' % (sent, user.encode(),
                                                                                    time.time() * 1000.0))
            sent += 1
        pipe.execute()
    client.close()
    return sent


@dataclass(frozen=True)
class Load:
    """What the subscribers go through: each rate for `duration` s in turn, `churn` visiting connections a
    second meanwhile, after `settle` s of the first rate and the churn that are not measured."""

    rates: list[int]
    duration: float
    churn: int = 0
    settle: float = 0.0


def measure(subscribers: int, plan: Load, gc_freeze: int, redis_url: str, workdir: Path) -> list[dict]:
    """One gateway (PULSE_GC_FREEZE=`gc_freeze`) and `subscribers` connections put through `plan`; a summary
    per rate."""
    import websockets

    from connectors.auth import mint_token
    from pulse.localservers import free_port, stop_processes, wait_for_port

    port, http_port = free_port(), free_port()
    env = run_env("127.0.0.1:1", redis_url, workdir, PULSE_GATEWAY_SECRET=SECRET, PULSE_GATEWAY_PORT=str(port),
                  PULSE_HTTP_PORT=str(http_port), PULSE_OPERATOR_TOKEN=OPERATOR_TOKEN, PULSE_GATEWAY_IDLE_S="600",
                  PULSE_GC_FREEZE=str(gc_freeze))
    prefix = env["PULSE_REDIS_PREFIX"]
    log = open(workdir / "gateway.log", "wb")
    gateway = subprocess.Popen([sys.executable, "-m", "pulse.cli", "gateway"], env=env, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    gateway_cpu = CpuMeter([gateway.pid])
    users = [f"fan-{i:06d}" for i in range(subscribers)]
    samples = _Samples()
    try:
        wait_for_port(port, 30)

        async def client(user: str, ready: list[str]) -> None:
            uri = f"ws://127.0.0.1:{port}/ws?user_id={user}&token={mint_token(SECRET, user, 3600)}"
            for attempt in range(20):
                try:
                    ws = await websockets.connect(uri, max_size=None, open_timeout=30, ping_interval=None)
                    break
                except (TimeoutError, OSError, websockets.InvalidHandshake):
                    await asyncio.sleep(0.2 * (attempt + 1))
            else:
                return
            async with ws:
                await ws.recv()  # {"type": "subscribed"}
                ready.append(user)
                async for frame in ws:  # until the session cancels this task
                    now = time.time() * 1000.0
                    if isinstance(frame, str):
                        frame = frame.encode()
                    if b'"sent_ms":' in frame:
                        samples.websocket.append(now - _sent_ms(frame))

        async def visit(i: int, visited: list[int]) -> None:
            """One short-lived connection: subscribes to a user of its own, stays VISIT_S, leaves."""
            user = f"visitor-{i:07d}"
            uri = f"ws://127.0.0.1:{port}/ws?user_id={user}&token={mint_token(SECRET, user, 3600)}"
            try:
                async with websockets.connect(uri, open_timeout=30, ping_interval=None) as ws:
                    await ws.recv()  # {"type": "subscribed"}
                    visited.append(i)
                    await asyncio.sleep(VISIT_S)
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass

        async def churn_until(stop: asyncio.Event, visited: list[int]) -> None:
            """Open `plan.churn` visiting connections a second (in tenths of a second) until `stop`."""
            visits: set[asyncio.Task[None]] = set()
            i = 0
            while plan.churn and not stop.is_set():
                for _ in range(max(1, plan.churn // 10)):
                    task = asyncio.create_task(visit(i, visited))
                    visits.add(task)
                    task.add_done_callback(visits.discard)
                    i += 1
                await asyncio.sleep(0.1)
            await asyncio.gather(*visits, return_exceptions=True)

        async def load(rate: int, duration: float) -> dict:
            samples.reset()
            stop_baseline = threading.Event()
            baseline = threading.Thread(target=_redis_baseline, daemon=True,
                                        args=(redis_url, f"{prefix}:decisions:*", samples, stop_baseline))
            baseline.start()
            await asyncio.sleep(0.5)
            passes_before = await asyncio.to_thread(_full_gc_passes, http_port)
            gateway_cpu.sample()
            stop_churn, visited = asyncio.Event(), []
            churning = asyncio.create_task(churn_until(stop_churn, visited))
            started_ms, started = time.time() * 1000.0, time.monotonic()
            sent = await asyncio.to_thread(_publish, redis_url, prefix, users, rate, duration)
            published_ms, elapsed = time.time() * 1000.0, time.monotonic() - started
            gateway_cpu.sample()
            stop_churn.set()
            await asyncio.sleep(STRAGGLERS_S)
            await churning
            passes, pause_s = (after - before for after, before in
                               zip(await asyncio.to_thread(_full_gc_passes, http_port), passes_before))
            stop_baseline.set()
            await asyncio.to_thread(baseline.join, 2)
            return {"offered_per_s": rate, "published": sent, "delivered": len(samples.websocket),
                    "delivered_per_s": len(samples.websocket) / elapsed,
                    "gateway_cores": gateway_cpu.between(started_ms, published_ms)["process_cores"],
                    "gateway_full_gc_passes": passes, "gateway_full_gc_s": pause_s,
                    "visits_per_s": len(visited) / elapsed,
                    "websocket": percentiles(samples.websocket), "redis_only": percentiles(samples.redis)}

        async def session() -> list[dict]:
            ready: list[str] = []
            tasks = []
            for i, user in enumerate(users):
                tasks.append(asyncio.create_task(client(user, ready)))
                if i % 200 == 199:
                    await asyncio.sleep(0.05)
            deadline = time.monotonic() + 120
            while len(ready) < subscribers and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            # The connections live until the end: left to the collector, its full passes over 10k clients'
            # objects stalled every client for 0.5-0.65 s every ~20 s under load.
            gc.collect()
            gc.freeze()
            try:
                if plan.settle:
                    await load(plan.rates[0], plan.settle)
                return [{"subscribers": subscribers, "gc_freeze": gc_freeze, "connected": len(ready),
                         **await load(rate, plan.duration)} for rate in plan.rates]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        return asyncio.run(session())
    finally:
        stop_processes(gateway)
        log.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[2000])
    parser.add_argument("--rates", type=int, nargs="+", default=[2000], help="decisions published per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--churn", type=int, default=0,
                        help="connections a second that open, subscribe, stay 3 s and close during each rate's window")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds of the first rate and the churn before the measured windows, not measured")
    parser.add_argument("--gc-freeze", type=int, nargs="+", choices=(0, 1), default=[1],
                        help="the gateway's PULSE_GC_FREEZE; `0 1` alternates both in each run (baseline: 0)")
    parser.add_argument("--runs", type=int, default=1)
    add_json_option(parser, "fanout")
    args = parser.parse_args(argv)
    plan = Load(args.rates, args.duration, args.churn, args.settle)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    results: dict[tuple[int, int, int], list[dict]] = {}
    try:
        with servers(need_kafka=False) as (_, redis_url):
            for run in range(args.runs):
                for n, freeze in itertools.product(args.subscribers, args.gc_freeze):
                    for r in measure(n, plan, freeze, redis_url, workdir):
                        results.setdefault((n, freeze, r["offered_per_s"]), []).append(r)
                        print(f"run {run + 1}: {r['connected']}/{n} connected, PULSE_GC_FREEZE={freeze}, "
                              f"{fmt(r['offered_per_s'])}/s offered, "
                              f"published {r['published']}, delivered {r['delivered']} "
                              f"({r['delivered_per_s']:,.0f}/s), p99 {r['websocket']['p99']:.1f} ms "
                              f"(Redis alone p99 {r['redis_only']['p99']:.1f} ms), gateway "
                              f"{r['gateway_cores']:.2f} cores, {r['visits_per_s']:,.0f} visits/s, "
                              f"{r['gateway_full_gc_passes']} full GC passes "
                              f"({1000 * r['gateway_full_gc_s']:.0f} ms)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for (n, freeze, rate), rs in sorted(results.items()):
        ws_p99 = median(r["websocket"]["p99"] for r in rs)
        redis_p99 = median(r["redis_only"]["p99"] for r in rs)
        rows.append([fmt(n), fmt(median(r["connected"] for r in rs)), freeze, fmt(rate),
                     fmt(median(r["delivered_per_s"] for r in rs)),
                     f"{median(r['websocket']['p50'] for r in rs):.1f}", f"{ws_p99:.1f}",
                     f"{median(r['websocket']['max'] for r in rs):.1f}", f"{redis_p99:.1f}",
                     f"{ws_p99 / redis_p99:.1f}" if redis_p99 > 0 else "-",
                     f"{median(r['gateway_cores'] for r in rs):.2f}",
                     f"{median(1000 * r['gateway_full_gc_s'] for r in rs):.0f}"])
    churn = f", {fmt(args.churn)} connections/s coming and going" if args.churn else ""
    print_table(f"Fan-out: publish -> WebSocket receive (ms), median of {args.runs} run(s){churn}",
                ["subscribers", "connected", "GC freeze", "published/s", "delivered/s", "p50", "p99", "max",
                 "Redis-only p99", "p99 vs Redis", "gateway cores", "gateway full GC ms"], rows)
    for n, freeze, rate in sorted(results):
        if freeze and (n, 0, rate) in results:  # the baseline of the same run: the gateway without freezing
            with_p99, without_p99 = (median(r["websocket"]["p99"] for r in results[key])
                                     for key in ((n, 1, rate), (n, 0, rate)))
            print(f"{fmt(n)} subscribers at {fmt(rate)}/s: p99 {with_p99:.1f} ms with PULSE_GC_FREEZE=1, "
                  f"{without_p99:.1f} ms without (without / with: {without_p99 / with_p99:.1f}x)")
    data = {"rates": args.rates, "duration_s": args.duration, "churn_per_s": args.churn, "settle_s": args.settle,
            "results": {f"{n}@{rate}" + ("" if freeze else "/no-gc-freeze"): rs
                        for (n, freeze, rate), rs in results.items()}}
    if args.json is not None:
        write_json("fanout", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
