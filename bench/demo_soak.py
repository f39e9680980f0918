"""`pulse demo` for a while, measured: its status line and its processes' CPU and memory, minute by minute.

    .venv/bin/python -m bench.demo_soak --duration 1800 [--json bench/results/demo-soak.json]

Runs `pulse demo --duration D` (its own broker, object store and redis-server on loopback, the default
500 events/s), reads the status line it prints every second (p50/p99 event -> decision over the last 5 s,
decisions/s, sent and decided), and samples every process the demo started every 10 s (CPU share of a
core, resident memory). Prints one row per minute (medians of the status lines of that minute; memory at
the minute's end) and the targets of issue 24: p99 of every later minute within 2x of the first minute's,
the broker's memory bounded, p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
STATUS = re.compile(r"events/s\s+([\d,]+) \| decisions/s\s+([\d,]+) \| latency p50\s+([\d.na]+) ms p99\s+([\d.na]+) ms"
                    r" \| sent ([\d,]+) decided ([\d,]+)")
ROLES = (("tansu", "broker"), ("pulse.objectstore", "store"), ("redis-server", "redis"), ("engine_run", "engine"),
         ("pulse.cli gateway", "gateway"))
TICKS = 100  # clock ticks per second (os.sysconf("SC_CLK_TCK") on Linux)


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with the role it plays in the demo (setpriv wrappers skipped)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            role = next((name for marker, name in ROLES if marker in cmdline and "setpriv" not in cmdline.split()[0]),
                        None)
            if role is not None:
                found[child] = role
    return found


def cpu_and_rss(pid: int) -> tuple[float, float] | None:
    """CPU seconds used so far and resident memory (MiB), or None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS, rss_kib / 1024


def run(duration_s: float, extra: list[str]) -> dict:
    """Run the demo and collect its status lines and process samples."""
    started = time.monotonic()
    demo = subprocess.Popen([sys.executable, "-m", "pulse.cli", "demo", "--duration", str(duration_s), *extra],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    lines: list[dict] = []
    banner: list[str] = []

    def read() -> None:
        assert demo.stderr is not None
        buffer = b""
        while chunk := demo.stderr.read1(4096):
            buffer += chunk
            *complete, buffer = re.split(rb"[\r\n]", buffer)
            for raw in complete:
                text = raw.decode(errors="replace")
                match = STATUS.search(text)
                if match:
                    p50, p99 = (float(x) if x != "nan" else None for x in match.group(3, 4))
                    lines.append({"t_s": time.monotonic() - started, "events_s": int(match[1].replace(",", "")),
                                  "decisions_s": int(match[2].replace(",", "")), "p50_ms": p50, "p99_ms": p99,
                                  "sent": int(match[5].replace(",", "")), "decided": int(match[6].replace(",", ""))})
                elif text.strip():
                    banner.append(text)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples: list[dict] = []
    previous: dict[int, float] = {}
    while demo.poll() is None:
        time.sleep(10)
        now = time.monotonic() - started
        sample: dict[str, dict[str, float]] = {}
        for pid, role in descendants(demo.pid).items():
            measured = cpu_and_rss(pid)
            if measured is None:
                continue
            cpu, rss = measured
            share = (cpu - previous[pid]) / 10 if pid in previous else None
            previous[pid] = cpu
            sample[role] = {"cpu": share, "rss_mib": rss}
        samples.append({"t_s": now, **sample})
    reader.join(10)
    return {"duration_s": duration_s, "exit_code": demo.returncode, "status": lines, "samples": samples,
            "log": banner[-20:]}


def per_minute(result: dict) -> list[dict]:
    """One row per minute: medians of the status lines, CPU shares and memory at the minute's end."""
    rows = []
    minutes = int(max((line["t_s"] for line in result["status"]), default=0) // 60) + 1
    for minute in range(minutes):
        status = [s for s in result["status"] if minute * 60 <= s["t_s"] < (minute + 1) * 60 and s["events_s"] > 0]
        samples = [s for s in result["samples"] if minute * 60 <= s["t_s"] < (minute + 1) * 60]
        if not status:
            continue

        def median(key: str, rows: list[dict] = status) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.median(values) if values else None

        row = {"minute": minute + 1, "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"),
               "p99_max_ms": max((s["p99_ms"] for s in status if s["p99_ms"] is not None), default=None),
               "decisions_s": median("decisions_s"), "sent": status[-1]["sent"], "decided": status[-1]["decided"]}
        for role in ("broker", "store", "redis", "engine"):
            cpus = [s[role]["cpu"] for s in samples if role in s and s[role]["cpu"] is not None]
            row[f"{role}_cpu"] = statistics.mean(cpus) if cpus else None
            rss = [s[role]["rss_mib"] for s in samples if role in s]
            row[f"{role}_mib"] = rss[-1] if rss else None
        rows.append(row)
    return rows


def render(rows: list[dict], duration_s: float) -> str:
    """The per-minute table and the targets (over the minutes the simulator sent throughout)."""
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    out = ["min | p50 ms | p99 ms (max) | decisions/s | sent / decided | broker cpu, MiB | store cpu, MiB "
           "| redis MiB | engine cpu",
           "---|---|---|---|---|---|---|---|---"]
    for r in rows:
        out.append(f"{r['minute']} | {fmt(r['p50_ms'], '.1f')} | {fmt(r['p99_ms'], '.1f')} "
                   f"({fmt(r['p99_max_ms'], '.0f')}) | "
                   f"{fmt(r['decisions_s'], '.0f')} | {r['sent']:,} / {r['decided']:,} | "
                   f"{fmt(r['broker_cpu'], '.0%')}, {fmt(r['broker_mib'], '.0f')} | {fmt(r['store_cpu'], '.0%')}, "
                   f"{fmt(r['store_mib'], '.0f')} | {fmt(r['redis_mib'], '.0f')} | {fmt(r['engine_cpu'], '.0%')}")
    if rows:
        first = rows[0]["p99_ms"]
        full = [r for r in rows if r["minute"] <= duration_s // 60]  # not the last, partial minute of draining
        later = [r["p99_ms"] for r in full[1:] if r["p99_ms"] is not None]
        worst = max(later, default=None)
        out.append("")
        out.append(f"p99 first minute {fmt(first, '.1f')} ms; worst later minute {fmt(worst, '.1f')} ms "
                   f"({fmt(worst / first if worst and first else None, '.2f')}x; target <= 2x)")
        p50 = [r["p50_ms"] for r in full if r["p50_ms"] is not None]
        out.append(f"p50 per minute {fmt(min(p50, default=None), '.1f')}–{fmt(max(p50, default=None), '.1f')} ms "
                   "(target <= 20 ms)")
        broker = [(r["broker_mib"] or 0) + (r["store_mib"] or 0) for r in rows]
        out.append(f"broker + store memory {broker[0]:.0f} MiB at minute 1, {max(broker):.0f} MiB at most, "
                   f"{broker[-1]:.0f} MiB at the end")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds of demo (default 1800)")
    parser.add_argument("--json", type=Path, help="write the status lines, samples and table here")
    parser.add_argument("demo_args", nargs="*", help="more `pulse demo` options, after --")
    args = parser.parse_args(argv)
    result = run(args.duration, args.demo_args)
    rows = per_minute(result)
    print(render(rows, args.duration))
    if args.json:
        args.json.write_bytes(orjson.dumps({**result, "minutes": rows}, option=orjson.OPT_INDENT_2))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
