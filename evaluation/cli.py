"""`pulse evaluate`: run one scenario in-process through the real models and write its report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from simulator.scenarios import SCENARIOS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pulse evaluate`."""
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS), help="simulator scenario")
    parser.add_argument("--events", type=int, default=60_000, help="events in the stream (default 60000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the world, the stream and the models (default 7)")
    parser.add_argument("--users", type=int, default=800, help="initial users (default 800)")
    parser.add_argument("--out", default=None, help="report directory (default reports/<scenario>/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def evaluate(args: argparse.Namespace) -> int:
    """Run the scenario, write report.md, report.json and PNGs; print where."""
    from evaluation.report import write_report
    from evaluation.runner import EvalConfig, run

    try:
        cfg = EvalConfig(scenario=args.scenario, events=args.events, seed=args.seed, users=args.users)
    except ValueError as exc:
        print(f"pulse evaluate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("reports") / args.scenario)
    started = time.perf_counter()
    result = run(cfg, progress=not args.no_progress)
    summary = write_report(result, out)
    after = summary["phases"].get("after_drift") or summary["phases"]["after_freeze"]
    on, st = after["online"], after["static"]
    print(f"report: {out / 'report.md'} ({time.perf_counter() - started:.0f} s); "
          f"churn AUC online {on['churn'].get('roc_auc', float('nan')):.3f} vs static {st['churn'].get('roc_auc', float('nan')):.3f}; "
          f"hit-rate@10 online {on['reco']['hit_rate@10']:.3f} vs static {st['reco']['hit_rate@10']:.3f} "
          f"vs periodic {after['periodic']['reco']['hit_rate@10']:.3f}")
    return 0
