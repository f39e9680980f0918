"""Summary, report.md, report.json and plots of a recommendation replay (evaluation.reco_replay).

Intervals are bootstrap 95% intervals resampling users (evaluation.bootstrap.GroupResampler); Pulse's
ratio to the best baseline (the baseline with the highest point estimate of that metric on those
positives) is a paired ratio of means over the same resamples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bootstrap import GroupResampler
from evaluation.figures import save_figure
from evaluation.reco_replay import PULSE, ReplayResult

__all__ = ["METRICS", "markdown", "summarize", "write_plots", "write_report"]

METRICS = ("hit", "ndcg", "mrr")
LABELS = {"hit": "hit@10", "ndcg": "NDCG@10", "mrr": "MRR@10"}
SUBSETS = ("all", "last_50")


def summarize(result: ReplayResult, n_boot: int = 1000, seed: int = 7) -> dict[str, Any]:
    """Every figure of the report as plain JSON-able values."""
    steps = np.asarray(result.steps)
    masks = {"all": None, "last_50": (steps >= result.n_events // 2).astype(float)}
    resampler = GroupResampler(result.users, n_boot=n_boot, seed=seed)
    baselines = [name for name in result.methods if name != PULSE]
    subsets: dict[str, Any] = {}
    for subset, mask in masks.items():
        n_positives = len(steps) if mask is None else int(mask.sum())
        table: dict[str, Any] = {"positives": n_positives, "methods": {}, "pulse_vs_best": {}}
        for metric in METRICS:
            columns = {name: getattr(records, metric) for name, records in result.methods.items()}
            for name, values in columns.items():
                table["methods"].setdefault(name, {})[metric] = list(resampler.mean(values, mask))
            best = max(baselines, key=lambda name: table["methods"][name][metric][0]) if baselines else None
            if best is not None:
                ratio = resampler.ratio_of_means(columns[PULSE], columns[best], mask)
                table["pulse_vs_best"][metric] = {"baseline": best, "ratio": list(ratio)}
        subsets[subset] = table
    return {
        "events": result.n_events, "items": result.n_items, "users": result.n_users,
        "scored_positives": len(steps), "bootstrap_resamples": n_boot, "elapsed_s": result.elapsed_s,
        "subsets": subsets,
        "coverage": {name: {"all": len(r.shown) / result.n_items, "last_50": len(r.shown_second_half) / result.n_items}
                     for name, r in result.methods.items()},
        "consumed_slot_share": {name: {"all": _share(r.consumed_slots[0], r.slots[0]),
                                       "last_50": _share(r.consumed_slots[1], r.slots[1])}
                                for name, r in result.methods.items()},
        "pulse_blend_weights": result.pulse_weights,
        "pulse_model_version": result.pulse_version,
        "pulse_blend_weights_trace": [[step, weights] for step, weights in result.pulse_weights_trace],
    }


def markdown(summary: dict[str, Any], title: str, notes: list[str], files: list[str]) -> str:
    """report.md: the tables (all and last 50%, with intervals and ratios), notes and figures."""
    lines = [f"# {title}", ""] + notes + [""]
    for subset, heading in (("all", "All positives"), ("last_50", "Last 50% of the stream")):
        table = summary["subsets"][subset]
        lines += [f"## {heading} ({table['positives']:,} positives)", "",
                  "| method | " + " | ".join(LABELS[m] for m in METRICS) + " | catalog coverage | consumed slots |",
                  "|---|" + "---|" * (len(METRICS) + 2)]
        for name, values in table["methods"].items():
            cells = [_ci(values[m]) for m in METRICS]
            lines.append(f"| {'**' + name + '**' if name == PULSE else name} | " + " | ".join(cells)
                         + f" | {summary['coverage'][name][subset]:.1%} | "
                           f"{summary['consumed_slot_share'][name][subset]:.1%} |")
        ratios = table["pulse_vs_best"]
        if ratios:
            lines.append("| Pulse / best baseline | " + " | ".join(
                f"**{ratios[m]['ratio'][0]:.3f}×** [{ratios[m]['ratio'][1]:.3f}, {ratios[m]['ratio'][2]:.3f}] "
                f"({ratios[m]['baseline']})" for m in METRICS) + " | | |")
        lines.append("")
    weights = ", ".join(f"{name} {value:.3f}" for name, value in summary["pulse_blend_weights"].items())
    lines += [(f"Pulse's learned blend weights at the end: {weights} (model version "
               f"`{summary['pulse_model_version']}`)."), ""]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in files] + [""]
    return "\n".join(lines)


def write_plots(result: ReplayResult, summary: dict[str, Any], out: Path, buckets: int = 20) -> list[str]:
    """hit@10 over the stream per method, and Pulse's blend weights over the stream (PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    steps = np.asarray(result.steps)
    edges = np.linspace(0, result.n_events, buckets + 1)
    which = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, buckets - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, records in result.methods.items():
        hits = np.asarray(records.hit)
        means = [hits[which == b].mean() if (which == b).any() else np.nan for b in range(buckets)]
        ax.plot(centres, means, marker="o" if name == PULSE else None, linewidth=2.5 if name == PULSE else 1.2,
                label=name)
    ax.axvline(result.n_events / 2, color="grey", linestyle=":", label="last 50% starts")
    ax.set_xlabel("event"), ax.set_ylabel("hit@10 of the positives in the bucket"), ax.legend(fontsize=8)
    ax.set_title("hit@10 over the stream (previous decision of the user)")
    files.append(save_figure(fig, out, "hit_over_stream.png"))
    trace = result.pulse_weights_trace
    if trace:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name in trace[0][1]:
            ax.plot([step for step, _ in trace], [weights[name] for _, weights in trace], label=name)
        ax.set_xlabel("event"), ax.set_ylabel("weight"), ax.legend(fontsize=8)
        ax.set_title("Pulse's blend weights, learned online")
        files.append(save_figure(fig, out, "blend_weights.png"))
    return files


def write_report(result: ReplayResult, out: Path, title: str, notes: list[str], extra: dict[str, Any],
                 n_boot: int = 1000, seed: int = 7) -> dict[str, Any]:
    """Write report.json, report.md and the PNGs into `out`; return the summary (with `extra` merged in)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {**extra, **summarize(result, n_boot, seed)}
    files = write_plots(result, summary, out)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.md").write_text(markdown(summary, title, notes, files))
    return summary


def _ci(values: list[float]) -> str:
    mean, low, high = values
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
