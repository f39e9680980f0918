"""Fan-out benchmark: many concurrent WebSocket subscribers, decisions/s delivered and delivery latency.

    .venv/bin/python -m bench.fanout [--subscribers 2000] [--rate 2000] [--duration 10] [--runs 1] [--json]
    (--subscribers 10000 for the issue's 10k point)

Starts a redis-server and `pulse gateway` (tokens on), opens `--subscribers` WebSocket connections,
each subscribed to its own user with a minted token, then publishes decisions on the users' Redis
channels (as the engine's sink does) at `--rate` per second, round-robin over the users, for
`--duration` s. Each payload carries its publish time; every client records publish -> WebSocket
receive. Baseline in the same run: a plain Redis pub/sub subscriber (pattern-subscribed, like the
gateway) timing the same messages -- what Redis alone costs. Percentiles are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, add_json_option, fmt, median, percentiles, print_table, run_env, servers, write_json

SECRET = "bench-secret"


def _sent_ms(payload: bytes) -> float:
    start = payload.find(b'"sent_ms":') + 10
    end = payload.find(b"}", start)
    return float(payload[start:end])


def measure(subscribers: int, rate: int, duration: float, redis_url: str, workdir: Path) -> dict:
    import redis
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
    ws_latency: list[float] = []
    redis_latency: list[float] = []
    users = [f"fan-{i:06d}" for i in range(subscribers)]
    try:
        wait_for_port(port, 30)

        def redis_baseline(stop: threading.Event) -> None:
            pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(f"{prefix}:decisions:*")
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    redis_latency.append(time.time() * 1000.0 - _sent_ms(message["data"]))
            pubsub.close()

        def publisher() -> int:
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
                    user = users[sent % subscribers]
                    pipe.publish(f"{prefix}:decisions:{user}",
                                 b'{"decision_id":"d-%d","user_id":"%s","sent_ms":%.3f}' % (sent, user.encode(), time.time() * 1000.0))
                    sent += 1
                pipe.execute()
            client.close()
            return sent

        async def session() -> tuple[int, float, int]:
            stop = asyncio.Event()
            ready = 0

            async def client(user: str) -> None:
                nonlocal ready
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
                    ready += 1
                    while not stop.is_set():
                        try:
                            frame = await asyncio.wait_for(ws.recv(), 1.0)
                        except asyncio.TimeoutError:
                            continue
                        now = time.time() * 1000.0
                        if isinstance(frame, str):
                            frame = frame.encode()
                        if b'"sent_ms":' in frame:
                            ws_latency.append(now - _sent_ms(frame))

            tasks = []
            for i, user in enumerate(users):
                tasks.append(asyncio.create_task(client(user)))
                if i % 200 == 199:
                    await asyncio.sleep(0.05)
            deadline = time.monotonic() + 120
            while ready < subscribers and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            connected = ready
            stop_baseline = threading.Event()
            baseline = threading.Thread(target=redis_baseline, args=(stop_baseline,), daemon=True)
            baseline.start()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            sent = await asyncio.to_thread(publisher)
            await asyncio.sleep(2.0)  # stragglers
            elapsed = time.monotonic() - started - 2.0
            stop.set()
            stop_baseline.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            baseline.join(2)
            return sent, elapsed, connected

        sent, elapsed, connected = asyncio.run(session())
    finally:
        stop_processes(gateway)
        log.close()
    return {"subscribers": subscribers, "connected": connected, "offered_per_s": rate, "published": sent,
            "delivered": len(ws_latency), "delivered_per_s": len(ws_latency) / elapsed,
            "websocket": percentiles(ws_latency), "redis_only": percentiles(redis_latency)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[2000])
    parser.add_argument("--rate", type=int, default=2000, help="decisions published per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    add_json_option(parser, "fanout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    results: dict[int, list[dict]] = {}
    try:
        with servers(need_kafka=False) as (_, redis_url):
            for run in range(args.runs):
                for n in args.subscribers:
                    r = measure(n, args.rate, args.duration, redis_url, workdir)
                    results.setdefault(n, []).append(r)
                    print(f"run {run + 1}: {r['connected']}/{n} connected, published {r['published']}, delivered "
                          f"{r['delivered']} ({r['delivered_per_s']:,.0f}/s), p99 {r['websocket']['p99']:.1f} ms "
                          f"(Redis alone p99 {r['redis_only']['p99']:.1f} ms)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for n, rs in results.items():
        ws_p99 = median(r["websocket"]["p99"] for r in rs)
        redis_p99 = median(r["redis_only"]["p99"] for r in rs)
        rows.append([fmt(n), fmt(median(r["connected"] for r in rs)), fmt(args.rate),
                     fmt(median(r["delivered_per_s"] for r in rs)),
                     f"{median(r['websocket']['p50'] for r in rs):.1f}", f"{ws_p99:.1f}",
                     f"{median(r['websocket']['max'] for r in rs):.1f}", f"{redis_p99:.1f}",
                     f"{ws_p99 / redis_p99:.1f}" if redis_p99 > 0 else "-"])
    print_table(f"Fan-out: publish -> WebSocket receive (ms), median of {args.runs} run(s)",
                ["subscribers", "connected", "published/s", "delivered/s", "p50", "p99", "max",
                 "Redis-only p99", "p99 vs Redis"], rows)
    data = {"rate": args.rate, "duration_s": args.duration, "results": {str(k): v for k, v in results.items()}}
    if args.json is not None:
        write_json("fanout", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
