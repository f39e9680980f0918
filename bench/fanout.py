"""Fan-out benchmark: many concurrent WebSocket subscribers, decisions/s delivered and delivery latency.

    .venv/bin/python -m bench.fanout [--subscribers 2000] [--rates 2000] [--duration 10] [--runs 1] [--json]
    (--subscribers 10000 for the issue's 10k point; --rates 2000 5000 10000 to find the gateway's limit)

Starts a redis-server and `pulse gateway` (tokens on), opens `--subscribers` WebSocket connections,
each subscribed to its own user with a minted token, then, for each rate in turn on the same
connections, publishes decisions on the users' Redis channels (as the engine's sink does) at that rate,
round-robin over the users, for `--duration` s. Each payload carries its publish time; every client
records publish -> WebSocket receive. Baseline in the same run: a plain Redis pub/sub subscriber
(pattern-subscribed, like the gateway) timing the same messages -- what Redis alone costs. Percentiles
are exact. The gateway's CPU over each rate's window is reported in cores.

The clients' process must not be what is measured. Its clients wait on their sockets without timeouts
(they are cancelled at the end): a receive with a 1 s timeout in each of 10k clients times out 10k times
a second, which kept the process at a full core (p99 0.7-2.4 s at 10k subscribers before). And once
connected, their objects are frozen out of the garbage collector's full passes (gc.freeze).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    ROOT, CpuMeter, add_json_option, fmt, median, percentiles, print_table, run_env, servers, write_json,
)

SECRET = "bench-secret"
STRAGGLERS_S = 2.0  # after publishing, how long frames still in flight are waited for


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
                         b'{"decision_id":"d-%d","user_id":"%s","sent_ms":%.3f}' % (sent, user.encode(), time.time() * 1000.0))
            sent += 1
        pipe.execute()
    client.close()
    return sent


def measure(subscribers: int, rates: list[int], duration: float, redis_url: str, workdir: Path) -> list[dict]:
    """One gateway and `subscribers` connections, loaded at each of `rates` in turn; a summary per rate."""
    import websockets

    from connectors.auth import mint_token
    from pulse.localservers import free_port, stop_processes, wait_for_port

    port = free_port()
    env = run_env("127.0.0.1:1", redis_url, workdir, PULSE_GATEWAY_SECRET=SECRET, PULSE_GATEWAY_PORT=str(port),
                  PULSE_HTTP_PORT="0", PULSE_GATEWAY_IDLE_S="600")
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
                except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
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

        async def load(rate: int) -> dict:
            samples.reset()
            stop_baseline = threading.Event()
            baseline = threading.Thread(target=_redis_baseline, daemon=True,
                                        args=(redis_url, f"{prefix}:decisions:*", samples, stop_baseline))
            baseline.start()
            await asyncio.sleep(0.5)
            gateway_cpu.sample()
            started_ms, started = time.time() * 1000.0, time.monotonic()
            sent = await asyncio.to_thread(_publish, redis_url, prefix, users, rate, duration)
            published_ms, elapsed = time.time() * 1000.0, time.monotonic() - started
            gateway_cpu.sample()
            await asyncio.sleep(STRAGGLERS_S)
            stop_baseline.set()
            await asyncio.to_thread(baseline.join, 2)
            return {"offered_per_s": rate, "published": sent, "delivered": len(samples.websocket),
                    "delivered_per_s": len(samples.websocket) / elapsed,
                    "gateway_cores": gateway_cpu.between(started_ms, published_ms)["process_cores"],
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
                return [{"subscribers": subscribers, "connected": len(ready), **await load(rate)} for rate in rates]
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
    parser.add_argument("--runs", type=int, default=1)
    add_json_option(parser, "fanout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    results: dict[tuple[int, int], list[dict]] = {}
    try:
        with servers(need_kafka=False) as (_, redis_url):
            for run in range(args.runs):
                for n in args.subscribers:
                    for r in measure(n, args.rates, args.duration, redis_url, workdir):
                        results.setdefault((n, r["offered_per_s"]), []).append(r)
                        print(f"run {run + 1}: {r['connected']}/{n} connected, {fmt(r['offered_per_s'])}/s offered, "
                              f"published {r['published']}, delivered {r['delivered']} "
                              f"({r['delivered_per_s']:,.0f}/s), p99 {r['websocket']['p99']:.1f} ms "
                              f"(Redis alone p99 {r['redis_only']['p99']:.1f} ms), gateway "
                              f"{r['gateway_cores']:.2f} cores", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for (n, rate), rs in results.items():
        ws_p99 = median(r["websocket"]["p99"] for r in rs)
        redis_p99 = median(r["redis_only"]["p99"] for r in rs)
        rows.append([fmt(n), fmt(median(r["connected"] for r in rs)), fmt(rate),
                     fmt(median(r["delivered_per_s"] for r in rs)),
                     f"{median(r['websocket']['p50'] for r in rs):.1f}", f"{ws_p99:.1f}",
                     f"{median(r['websocket']['max'] for r in rs):.1f}", f"{redis_p99:.1f}",
                     f"{ws_p99 / redis_p99:.1f}" if redis_p99 > 0 else "-",
                     f"{median(r['gateway_cores'] for r in rs):.2f}"])
    print_table(f"Fan-out: publish -> WebSocket receive (ms), median of {args.runs} run(s)",
                ["subscribers", "connected", "published/s", "delivered/s", "p50", "p99", "max",
                 "Redis-only p99", "p99 vs Redis", "gateway cores"], rows)
    data = {"rates": args.rates, "duration_s": args.duration,
            "results": {f"{n}@{rate}": rs for (n, rate), rs in results.items()}}
    if args.json is not None:
        write_json("fanout", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
