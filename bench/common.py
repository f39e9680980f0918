"""Shared helpers of the benchmarks: local servers, simulated events, statistics, tables and JSON results.

Every benchmark prints medians over several runs and ratios against a baseline measured in the same
run (the machines are noisy: compare ratios, not absolute numbers across machines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"
# The simulated clock starts at this run's wall-clock minute: the same events in every run up to a time shift,
# and in real time as in production (year-old events would close every attribution window at once, a replay
# load that the baselines, which never run the engine's timers, would not share).
START_MS = int(time.time() // 60 * 60_000)


def median(values: Iterable[float]) -> float:
    """Median (NaN for no values)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    """Number with thousands separators."""
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("| " + " | ".join(padded) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {"python": platform.python_version(), "python_base_prefix": sys.base_prefix,  # which interpreter build
            "python_build": " ".join(platform.python_build()), "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def code_version() -> str:
    """The git commit the benchmark ran (with "+changes" when the working tree differs), or "unknown"."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results", ":!docs/img")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+changes" if commit and changed else commit or "unknown"


def add_json_option(parser: argparse.ArgumentParser, name: str) -> None:
    """The benchmarks' `--json [PATH]` option (no PATH: bench/results/NAME.json; see `write_json`)."""
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                        help=f"write results as JSON (default path bench/results/{name}.json)")


def write_json(name: str, data: dict[str, Any], path: str | None = None) -> Path:
    """Write the results as JSON (default bench/results/NAME.json); returns the path."""
    target = Path(path) if path else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "code": code_version(),
               "machine": machine(), **data}
    target.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"\nresults written to {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return target


def simulated_events(n: int, users: int = 2000, items: int = 1000, seed: int = 42, valid_only: bool = True) -> list:
    """`n` simulated events (SimEvent) with a fixed clock: identical in every run and every process."""
    from simulator import EventGenerator, SimulationConfig, World

    gen = EventGenerator(World(SimulationConfig(users=users, items=items, seed=seed, start_ms=START_MS)))
    events = [e for e in gen.events(n) if e.valid or not valid_only]
    return events


@contextlib.contextmanager
def servers(need_kafka: bool = True, need_redis: bool = True) -> Iterator[tuple[str | None, str | None]]:
    """(kafka bootstrap, redis url): a fresh Tansu broker and redis-server on free loopback ports, stopped afterwards.

    Uses BENCH_KAFKA_BOOTSTRAP / BENCH_REDIS_URL instead when set.
    """
    from pulse.localservers import start_redis, start_tansu

    started = []
    try:
        bootstrap = os.environ.get("BENCH_KAFKA_BOOTSTRAP")
        if need_kafka and not bootstrap:
            kafka = start_tansu()
            started.append(kafka)
            bootstrap = f"127.0.0.1:{kafka.port}"
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if need_redis and not redis_url:
            redis_server = start_redis()
            started.append(redis_server)
            redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
        yield bootstrap, redis_url
    finally:
        for server in reversed(started):
            server.stop()


def run_env(bootstrap: str, redis_url: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """Environment of one engine run: unique topics, Redis prefix, recovery and model dirs, on the given servers."""
    from pulse.localservers import isolated_env

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    # No holdout: every user gets the personalized decision (a holdout's is cheaper), as before experiments existed.
    overrides = {"PULSE_HOLDOUT_SHARE": "0", **overrides}
    return isolated_env(bootstrap, redis_url, run_dir / "recovery", "bench", PULSE_MODEL_DIR=str(run_dir / "models"),
                        PULSE_LOG_LEVEL="WARNING", **overrides)


def on_run_topics(env: dict[str, str], events: Iterable) -> list:
    """The simulator's events addressed to the run's topic names."""
    from pulse.config import Settings
    from pulse.simulate import on_configured_topics

    return list(on_configured_topics(events, Settings.from_env(env)))


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """Exact p50/p95/p99/p99.9/max of latency samples (ms)."""
    import numpy as np

    if len(samples_ms) == 0:
        return {"n": 0, **{key: float("nan") for key in ("p50", "p95", "p99", "p99.9", "max")}}
    a = np.asarray(samples_ms, dtype=float)
    p50, p95, p99, p999 = np.percentile(a, [50, 95, 99, 99.9])
    return {"n": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99), "p99.9": float(p999),
            "max": float(a.max())}


def percentile_spectrum(samples_ms: Sequence[float], ticks_per_half: int = 4) -> list[tuple[float, float]]:
    """[(percentile, ms)] from 0 to 100 as an HDR histogram's percentile distribution prints it: `ticks_per_half`
    steps each time the remaining share halves (50, 75, 87.5, ... with 1), up to the last one with at least one
    sample above it, then the maximum. Exact: computed from all the samples.

    >>> [p for p, _ in percentile_spectrum(list(range(8)), ticks_per_half=1)]
    [0.0, 50.0, 75.0, 87.5, 100.0]
    """
    import numpy as np

    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        return []
    shares, k = [], 0
    while (remaining := 0.5 ** (k / ticks_per_half)) * a.size >= 1.0:
        shares.append(100.0 * (1.0 - remaining))
        k += 1
    values = np.percentile(a, shares) if shares else []
    return [(round(p, 6), float(v)) for p, v in zip(shares, values)] + [(100.0, float(a.max()))]


class CpuMeter:
    """CPU time used by some processes, and the whole machine's busy time, sampled against wall-clock ms (Linux /proc).

    `between(start_ms, end_ms)` interpolates the samples: how many cores the processes kept busy on
    average, and which share of all cores was busy, e.g. over a pipeline's steady window.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float, float, float]] = []  # (wall ms, processes' CPU s, busy s, all s)

    def sample(self) -> None:
        """Record the counters now."""
        self.samples.append((time.time() * 1000.0, self._process_seconds(), *self._machine_seconds()))

    def between(self, start_ms: float, end_ms: float) -> dict[str, float]:
        """{"process_cores": mean cores used by the processes, "machine_busy": busy share of all cores}."""
        import numpy as np

        if len(self.samples) < 2 or end_ms <= start_ms:
            return {"process_cores": float("nan"), "machine_busy": float("nan")}
        columns = np.array(self.samples).T
        (process0, busy0, all0), (process1, busy1, all1) = (
            [float(np.interp(t, columns[0], column)) for column in columns[1:]] for t in (start_ms, end_ms))
        return {"process_cores": (process1 - process0) / ((end_ms - start_ms) / 1000.0),
                "machine_busy": (busy1 - busy0) / (all1 - all0) if all1 > all0 else float("nan")}

    def _process_seconds(self) -> float:
        ticks = 0
        for pid in self._pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of proc(5) stat)
        return ticks * self._tick_s

    def _machine_seconds(self) -> tuple[float, float]:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        everything = user + nice + system + idle + iowait + irq + softirq + steal
        return (everything - idle - iowait) * self._tick_s, everything * self._tick_s


_LISTENER = """
import sys, time, redis
pubsub = redis.Redis.from_url(sys.argv[1]).pubsub(ignore_subscribe_messages=True)
pubsub.psubscribe(sys.argv[2] + ":decisions:*")
end = time.time() + float(sys.argv[4])
with open(sys.argv[3], "wb", buffering=0) as out:
    while time.time() < end:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            out.write(b"%.3f " % (time.time() * 1000.0) + message["data"] + b"\\n")
"""


class PubSubListener:
    """Receive time (wall-clock ms) of every decision published on Redis pub/sub, taken in a process of its own
    (so its clock is not delayed by the benchmark's other work) and written to `path`."""

    def __init__(self, redis_url: str, prefix: str, path: Path, seconds: float) -> None:
        self._path = path
        self._process = subprocess.Popen([sys.executable, "-c", _LISTENER, redis_url, prefix, str(path), str(seconds)])

    def heard_any(self) -> bool:
        """Whether a decision was received yet."""
        return self._path.exists() and self._path.stat().st_size > 0

    def stop(self) -> None:
        """Stop listening."""
        from pulse.localservers import stop_processes

        stop_processes(self._process)

    def decisions(self) -> Iterator[tuple[float, dict[str, Any]]]:
        """(receive ms, decision) of every decision received, in order (after `stop`)."""
        import orjson

        for line in self._path.read_bytes().splitlines():
            received, payload = line.split(b" ", 1)
            yield float(received), orjson.loads(payload)
