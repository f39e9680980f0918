"""The decisions of the benchmark stream, to check that a change leaves them as they were.

    .venv/bin/python -m bench.decisions [--events 60000] [--out FILE]
    .venv/bin/python -m bench.decisions --compare A.jsonl B.jsonl [--tolerance 1e-12]

Feeds the throughput benchmark's fixed-seed stream (bench.common.simulated_events), on a fixed clock
(`STREAM_START_MS`: the benchmark's own starts at the current minute), through `bench.throughput`'s engine
step (the parser and the per-user step), and writes every decision as a line of JSON without its wall-clock
fields (`ingest_ts`, `decided_ts`, `latency_ms`), then prints the digest of the file. Run it on two commits'
code (`git worktree add DIR COMMIT`, then `cd DIR && PYTHONPATH=DIR python /path/to/this/file ...`) and
`--compare` the files: it counts the decisions that differ and shows the first difference, field by field.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson

WALL_CLOCK_FIELDS = ("ingest_ts", "decided_ts", "latency_ms")
STREAM_START_MS = 1_763_900_000_000  # the stream's first event time: runs at any time see the same events


def decisions(n_events: int) -> list[dict[str, Any]]:
    """The stream's decisions, in order, without wall-clock fields."""
    from bench.throughput import engine_step
    from simulator import EventGenerator, SimulationConfig, World

    world = World(SimulationConfig(users=2000, items=1000, seed=42, start_ms=STREAM_START_MS))
    events = [event for event in EventGenerator(world).events(n_events) if event.valid]
    out: list[dict[str, Any]] = []
    for decision_out in engine_step(events, warmup=0)[1]:
        decision = orjson.loads(decision_out.payload)
        for field in WALL_CLOCK_FIELDS:
            decision.pop(field, None)
        out.append(decision)
    return out


def first_difference(a: Any, b: Any, tolerance: float = 0.0, path: str = "") -> str | None:
    """Where two decoded decisions first differ, as `path: a != b` (None when equal); numbers within
    `tolerance` (relative) count as equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), tolerance, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, tolerance, f"{path}[{i}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        if abs(a - b) <= tolerance * max(abs(a), abs(b)):
            return None
    return None if a == b else f"{path or '.'}: {a!r} != {b!r}"


def compare(a_path: Path, b_path: Path, tolerance: float = 0.0) -> int:
    """Print how many decisions differ (beyond `tolerance`) and the first difference; exit code 1 when any does."""
    a_lines, b_lines = a_path.read_bytes().splitlines(), b_path.read_bytes().splitlines()
    differ = [i for i, (x, y) in enumerate(zip(a_lines, b_lines))
              if x != y and first_difference(orjson.loads(x), orjson.loads(y), tolerance)]
    print(f"{len(a_lines):,} and {len(b_lines):,} decisions; {len(differ):,} differ"
          + (f" by more than a relative {tolerance:g}" if tolerance else ""))
    if differ:
        i = differ[0]
        print(f"first at line {i + 1}: "
              f"{first_difference(orjson.loads(a_lines[i]), orjson.loads(b_lines[i]), tolerance)}")
    return int(bool(differ) or len(a_lines) != len(b_lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000, help="events of the stream (default 60000)")
    parser.add_argument("--out", type=Path, default=Path("decisions.jsonl"), help="where to write the decisions")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two written files")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="with --compare: numbers within this relative difference count as equal (default 0)")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, tolerance=args.tolerance)
    lines = b"".join(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) + b"\n" for d in decisions(args.events))
    args.out.write_bytes(lines)
    count = lines.count(b"\n")
    print(f"{args.out}: {count:,} decisions, sha256 {hashlib.sha256(lines).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
