"""Latency of the engine alone: event produced -> decision in Redis pub/sub, without gateway or WebSocket clients.

    .venv/bin/python -m bench.engine_latency [--rates 1000 2000] [--duration 10] [--json]

`bench.latency` measures the whole path to a browser, with the gateway, 200 WebSocket clients and the
load generator sharing the engine's 2 cores. This benchmark isolates the engine: for each rate, on fresh
topics, it starts `pulse run`, a Redis pub/sub listener in a process of its own (so its clock is not
delayed by other work) and the simulator paced at R events/s for D s. Each decision is timed with its
own stamps and the listener's receive time:

    Kafka     = ingest_ts - event_ts    (producer -> broker -> dataflow source, parse)
    dataflow  = decided_ts - ingest_ts  (queueing in the dataflow + learn/decide/explain)
    Redis     = pub/sub receive - decided_ts (encode, sink batch, SET+PUBLISH, delivery to the listener)
    total     = pub/sub receive - event_ts

The baseline in the same run is the lowest rate (ratios show how latency grows with load).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import (
    ROOT,
    PubSubListener,
    add_json_option,
    fmt,
    percentile_spectrum,
    percentiles,
    print_table,
    run_env,
    servers,
    write_json,
)
from bench.latency import simulate


def measure(rate: int, duration: float, users: int, items: int, bootstrap: str, redis_url: str, workdir: Path) -> dict:
    """One rate: fresh topics and engine; the stage percentiles of every decision of the paced load."""
    from connectors.kafka_io import ensure_topics
    from pulse.config import Settings
    from pulse.localservers import stop_processes

    env = run_env(bootstrap, redis_url, workdir, PULSE_STARTING_OFFSET="earliest")
    ensure_topics(Settings.from_env(env))
    log = open(workdir / f"engine-{rate}.log", "wb")
    engine = subprocess.Popen([sys.executable, "-m", "pulse.cli", "run", "-w", "1"], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    listener = PubSubListener(redis_url, env["PULSE_REDIS_PREFIX"], workdir / f"pubsub-{rate}.txt", duration + 90)
    try:
        deadline = time.monotonic() + 60
        while not listener.heard_any():  # warm-up: until the engine decides
            if time.monotonic() > deadline:
                raise TimeoutError("no decision within 60 s: " + (workdir / f"engine-{rate}.log").read_text()[-1500:])
            simulate(env, 50, 0.5, users, items, 1)
            time.sleep(1.0)
        time.sleep(2.0)
        started_ms = time.time() * 1000.0
        sent = simulate(env, rate, duration, users, items, 2)
        time.sleep(5.0)  # let the queue drain
    finally:
        listener.stop()
        stop_processes(engine)
        log.close()
    rows = [(d["event_ts"], d["ingest_ts"], d["decided_ts"], received)
            for received, d in listener.decisions() if d["event_ts"] >= started_ms]
    stamps = np.array(rows, dtype=float).reshape(-1, 4)
    event, ingest, decided, at_redis = stamps.T
    span_s = (at_redis.max() - at_redis.min()) / 1000.0 if len(stamps) > 1 else float("nan")
    return {"rate": rate, "sent": sent, "decided": len(stamps), "decided_per_s": len(stamps) / span_s,
            "total": percentiles(at_redis - event), "spectrum": percentile_spectrum(at_redis - event),
            "stages": {"kafka": percentiles(ingest - event), "dataflow": percentiles(decided - ingest),
                       "redis": percentiles(at_redis - decided)}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2000], help="offered events/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
    add_json_option(parser, "engine_latency")
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp, servers() as (bootstrap, redis_url):
        for rate in args.rates:
            r = measure(rate, args.duration, args.users, args.items, bootstrap, redis_url, Path(tmp))
            results.append(r)
            print(f"rate {rate}: sent {r['sent']}, decided {r['decided']} ({r['decided_per_s']:,.0f}/s), "
                  f"p50 {r['total']['p50']:.1f} p99 {r['total']['p99']:.1f} ms", flush=True)
    base = results[0]["total"]["p99"]
    rows = [[fmt(r["rate"]), fmt(r["decided_per_s"])]
            + [f"{r['total'][q]:.1f}" for q in ("p50", "p95", "p99", "p99.9", "max")]
            + [f"{r['stages'][s]['p50']:.1f} / {r['stages'][s]['p99']:.1f}" for s in ("kafka", "dataflow", "redis")]
            + [f"{r['total']['p99'] / base:.1f}"] for r in results]
    print_table("Engine alone: event -> decision in Redis pub/sub (ms, exact percentiles)",
                ["offered events/s", "decided/s", "p50", "p95", "p99", "p99.9", "max", "Kafka p50/p99",
                 "dataflow p50/p99", "Redis p50/p99", f"p99 vs {fmt(results[0]['rate'])}/s"], rows)
    data = {"duration_s": args.duration, "users": args.users, "results": results}
    if args.json is not None:
        write_json("engine_latency", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
