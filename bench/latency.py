"""Latency benchmark: event produced -> decision received by a WebSocket client, at fixed rates and at saturation.

    .venv/bin/python -m bench.latency [--rates 1000 5000 10000 0] [--duration 10] [--runs 1] [--json]

For each rate (0 = unpaced: saturation), on a fresh local Tansu broker topic set and redis-server prefix:
starts `pulse run` and `pulse gateway` (tokens on: PULSE_GATEWAY_SECRET), opens WebSocket connections
subscribed (with minted user tokens, 16 users per connection) to every simulated user, waits until a
warm-up event is decided, then the simulator (bench/sender.py) produces events at R/s for D s (each `ts`
stamped at send). Every decision frame received is timed against its event's `ts`, and its stages are
split with the decision's own stamps plus a Redis pub/sub listener (a process of its own, so that the
clients' work does not delay its clock):

    Kafka     = ingest_ts - event_ts   (producer -> broker -> dataflow source, parse)
    dataflow  = decided_ts - ingest_ts (queueing in the dataflow + learn/decide/explain)
    redis     = Redis pub/sub receive - decided_ts (encode, sink batch, SET+PUBLISH)
    gateway   = WebSocket receive - Redis pub/sub receive (gateway fan-out + WebSocket)

Percentiles are exact (numpy over all samples; timestamps have 1 ms resolution); each run also keeps the
whole distribution as an HDR histogram prints it (`spectrum`: percentile -> ms, drawn by bench.plot into
docs/img/latency-percentiles.png). The baseline in the
same run is the lowest rate: ratios show how latency grows with load. The achieved decision rate is
reported next to the offered rate: above the engine's throughput the queue grows for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import (
    ROOT,
    PubSubListener,
    add_json_option,
    fmt,
    median,
    percentile_spectrum,
    percentiles,
    print_table,
    run_env,
    servers,
    write_json,
)

SECRET = "bench-secret"
PER_CONNECTION = 16


async def ws_clients(port: int, users: list[str], received: list, stop: asyncio.Event) -> None:
    """Subscribe to every user (16 per connection) and record (receive ms, decision_id, event_ts, ingest_ts,
    decided_ts) of each live decision."""
    import websockets

    from connectors.auth import mint_token

    async def one(group: list[str]) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            for user in group:
                await ws.send(orjson.dumps({"subscribe": user, "token": mint_token(SECRET, user, 3600)}).decode())
            while not stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time() * 1000.0
                message = orjson.loads(frame)
                if message.get("type") == "decision" and not message.get("latest"):
                    # Only atomic fields: a tuple of them is not tracked by the garbage collector. Keeping the
                    # decision dicts made its full passes scan 10k decisions, pausing these clients 80-240 ms.
                    d = message["decision"]
                    received.append((now, d["decision_id"], d["event_ts"], d["ingest_ts"], d["decided_ts"]))

    groups = [users[i: i + PER_CONNECTION] for i in range(0, len(users), PER_CONNECTION)]
    tasks = []
    for group in groups:
        tasks.append(asyncio.create_task(one(group)))
        await asyncio.sleep(0.06)  # stay under the gateway's per-connection message rate while subscribing
    await asyncio.gather(*tasks)


def measure(rate: int, duration: float, users: int, items: int, bootstrap: str, redis_url: str, workdir: Path) -> dict:
    """One rate: fresh topics, engine, gateway and clients; returns the latency samples' summary."""
    from connectors.kafka_io import ensure_topics
    from pulse.config import Settings
    from pulse.localservers import free_port, stop_processes, wait_for_port

    gateway_port = free_port()
    env = run_env(bootstrap, redis_url, workdir, PULSE_GATEWAY_SECRET=SECRET, PULSE_GATEWAY_PORT=str(gateway_port),
                  PULSE_HTTP_PORT="0", PULSE_GATEWAY_RATE="1000", PULSE_GATEWAY_QUEUE="4096",
                  PULSE_STARTING_OFFSET="earliest")
    ensure_topics(Settings.from_env(env))
    log = open(workdir / f"latency-{rate}.log", "wb")
    engine = subprocess.Popen([sys.executable, "-m", "pulse.cli", "run", "-w", "1"], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    gateway = subprocess.Popen([sys.executable, "-m", "pulse.cli", "gateway"], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    listener = PubSubListener(redis_url, env["PULSE_REDIS_PREFIX"], workdir / f"pubsub-{rate}.txt", duration + 300)
    received: list = []
    user_ids = [f"user-{n:05d}" for n in range(1, int(users * 1.5) + 1)]  # + replacements of churned users
    try:
        wait_for_port(gateway_port, 30)

        async def session() -> dict:
            stop = asyncio.Event()
            clients = asyncio.create_task(ws_clients(gateway_port, user_ids, received, stop))
            # warm-up: small paced batches until decisions arrive (the engine is up and reading)
            deadline = time.monotonic() + 60
            while not received:
                if time.monotonic() > deadline:
                    log = (workdir / f"latency-{rate}.log").read_text()
                    raise TimeoutError("no decision within 60 s: " + log[-1500:])
                await asyncio.to_thread(simulate, env, 50, 0.5, users, items, 1)
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)
            received.clear()
            started = time.monotonic()
            report = await asyncio.to_thread(simulate, env, rate, duration, users, items, 2)
            send_s = time.monotonic() - started
            drain_deadline = time.monotonic() + max(10.0, duration)
            last = -1
            while time.monotonic() < drain_deadline and len(received) != last:  # until nothing more arrives
                last = len(received)
                await asyncio.sleep(1.0)
            stop.set()
            await clients
            return {"sent": report, "send_s": send_s}

        outcome = asyncio.run(session())
    finally:
        listener.stop()
        stop_processes(engine, gateway)
        log.close()
    heard = {d["decision_id"]: received for received, d in listener.decisions()}
    total, kafka, dataflow, redis_stage, gateway_stage = [], [], [], [], []
    first = min((sample[0] for sample in received), default=0.0)
    last = max((sample[0] for sample in received), default=0.0)
    for now, decision_id, event_ts, ingest_ts, decided_ts in received:
        total.append(now - event_ts)
        kafka.append(ingest_ts - event_ts)
        dataflow.append(decided_ts - ingest_ts)
        at_redis = heard.get(decision_id)
        if at_redis is not None:
            redis_stage.append(at_redis - decided_ts)
            gateway_stage.append(now - at_redis)
    return {"rate": rate, "received": len(received), "sent": outcome["sent"],
            "delivered_per_s": len(received) / ((last - first) / 1000.0) if last > first else float("nan"),
            "total": percentiles(total), "spectrum": percentile_spectrum(total),
            "stages": {"kafka": percentiles(kafka), "dataflow": percentiles(dataflow),
                       "redis": percentiles(redis_stage), "gateway": percentiles(gateway_stage)}}


def simulate(env: dict[str, str], rate: int, duration: float, users: int, items: int, seed_offset: int) -> int:
    """bench.sender (the simulator, paced) as a child process; returns the number of events sent."""
    args = [sys.executable, "-m", "bench.sender", str(rate), str(duration), str(users), str(items),
            str(41 + seed_offset)]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=duration + 120)
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"bench.sender failed: {done.stderr[-1500:]}") from None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 5000, 10000, 0],
                        help="offered events/s (0: unpaced, saturation)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--runs", type=int, default=1, help="runs per rate (median of the percentiles)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
    add_json_option(parser, "latency")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    results: dict[int, list[dict]] = {}
    try:
        with servers() as (bootstrap, redis_url):
            for run in range(args.runs):
                for rate in args.rates:
                    r = measure(rate, args.duration, args.users, args.items, bootstrap, redis_url, workdir)
                    results.setdefault(rate, []).append(r)
                    t = r["total"]
                    print(f"run {run + 1}: rate {rate or 'max'}: sent {r['sent']}, received {r['received']} over "
                          f"WebSocket ({r['delivered_per_s']:,.0f}/s), p50 {t['p50']:.1f} p99 {t['p99']:.1f} "
                          f"max {t['max']:.1f} ms", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def med(rate: int, *path: str) -> float:
        values = []
        for r in results[rate]:
            value = r
            for key in path:
                value = value[key]
            values.append(value)
        return median(values)

    base = args.rates[0]
    rows, stage_rows, summary = [], [], []
    for rate in args.rates:
        p99 = med(rate, "total", "p99")
        rows.append([fmt(rate) if rate else "max (unpaced)", fmt(med(rate, "sent") / args.duration),
                     fmt(med(rate, "delivered_per_s")), f"{med(rate, 'total', 'p50'):.1f}",
                     f"{med(rate, 'total', 'p95'):.1f}", f"{p99:.1f}", f"{med(rate, 'total', 'p99.9'):.1f}",
                     f"{med(rate, 'total', 'max'):.1f}",
                     f"{p99 / med(base, 'total', 'p99'):.1f}"])
        stage_rows.append([fmt(rate) if rate else "max"] + [
            f"{med(rate, 'stages', s, 'p50'):.1f} / {med(rate, 'stages', s, 'p99'):.1f}"
            for s in ("kafka", "dataflow", "redis", "gateway")])
        summary.append({"rate": rate, "runs": results[rate]})
    print_table(f"Latency event -> WebSocket client (ms, exact percentiles, median of {args.runs} run(s))",
                ["offered events/s", "sent/s", "delivered/s", "p50", "p95", "p99", "p99.9", "max",
                 f"p99 vs {fmt(base)}/s"], rows)
    print_table("Per-stage latency p50 / p99 (ms)", ["offered events/s", "Kafka", "dataflow", "Redis", "gateway"],
                stage_rows)
    targets = {}
    if 5000 in results:
        targets["p99_le_20ms_at_5k"] = med(5000, "total", "p99") <= 20.0
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    data = {"duration_s": args.duration, "users": args.users, "results": summary, "targets": targets}
    if args.json is not None:
        write_json("latency", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
