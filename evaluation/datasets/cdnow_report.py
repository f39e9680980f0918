"""Summary (JSON-able), report.md and plots of `pulse evaluate --dataset cdnow`.

Every figure has a bootstrap 95% interval that resamples customers (evaluation.bootstrap). Besides
pooled AUC, AUC within the labels that arrive on the same day: pooled AUC also rewards knowing *when*
labels arrive ("churned" ones all come H + 1 days after their purchase), so per-day AUCs are combined
as a mean weighted by each day's labels, over the days that have both classes.

Grouping or splitting labels by when they *arrive* selects them by their outcome: a "not churned"
arrives at the customer's return, a "churned" H + 1 days after the purchase, so the churned labels
arriving on a day (or in the last 50% of arrivals) come from older purchases than the "not churned"
ones. Scores that fall as a customer's history grows (such as purchases counted so far) gain from that.
The report therefore adds figures grouped and split by the *purchase* a label refers to: AUC within the
labels of purchases made on the same day (scored at the same moment by the same model) and the last
50% of labels by purchase date.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bootstrap import GroupResampler, weighted_auc, weighted_log_loss
from evaluation.datasets.cdnow import PULSE, Run
from evaluation.datasets.cdnow_baselines import (
    FREQUENCY,
    PROBABILISTIC,
    RFM,
    RFM_LOG,
    RFM_LOG_HORIZON,
)
from evaluation.figures import save_figure

__all__ = ["TUNING", "same_day_auc", "summarize", "write_report"]

COMPARED = (RFM, RFM_LOG)  # the RFM logistic baselines that learn each label on arrival: Pulse must beat both
TUNING = (
    "Tuned on the H = 90 replay (all labels and both halves) and on the first 50% of the H = 180 labels, with the "
    "simulator's four scenarios; the last 50% of H = 180 was not used to choose. Issue 22 chose learning at the "
    "horizon, SGD 0.05 / sqrt(1 + labels / 500), intercept step 0.01, no L2, clip 3 and the visit features, drifts "
    "only counted with a horizon (compared then: constant, shrinking and AdaGrad, Adam and RMSProp steps, intercept "
    "steps, L2, clipping, the visit features, retraining on drifts, a steady and a fast model). Then added and "
    "compared: a fixed frequency prior -k log(visits) in the logit with k = 0 / 0.5 / 1 / 1.5 (kept 1); constant "
    "SGD steps 0.001 / 0.002 / 0.003 / 0.005 / 0.01 / 0.02, the shrinking 0.05 one and AdaGrad 0.05 (kept 0.002 with "
    "a horizon: best here; without one, see below: the simulator's drift scenario needs faster steps); "
    "intercept steps 0.001 / 0.003 / 0.01 (kept 0.01); weights served as a running average over 100 / 300 / 1000 / "
    "3000 labels (dropped: too slow for the drift scenario, no better here than a small step); the feature sets "
    "frequency only, without tenure, without the per-session counts, with a first-visit flag, with a smoothed visit "
    "rate (kept all features, per-session ratios counting visits as sessions). Then, with the simulator's drift "
    "scenario below its pre-issue-22 figures, on H = 90 and the simulator's scenarios at seeds 11 and 12 (not the "
    "seeds reported): the model's inputs with or without tenure and the visit gaps (withheld: better on both), and "
    "steps 0.01 / 0.02 / 0.03 / 0.05 without a horizon (kept 0.02). The baselines were not tuned."
)


def same_day_auc(y: np.ndarray, scores: np.ndarray, days: np.ndarray) -> Callable[[np.ndarray], float]:
    """A statistic of record weights: AUC within each day's labels (ties count one half), averaged over the days
    with both classes, weighted by each day's labels.

    >>> y = np.array([True, False, True, False, True])
    >>> s = np.array([0.9, 0.1, 0.2, 0.8, 0.5])
    >>> d = np.array([1, 1, 2, 2, 3])
    >>> same_day_auc(y, s, d)(np.ones(5))  # day 1: AUC 1, day 2: AUC 0, day 3: one class
    0.5
    >>> same_day_auc(y, s, d)(np.array([3.0, 3.0, 1.0, 1.0, 1.0]))
    0.75
    """
    order = np.lexsort((scores, days))
    day_sorted, score_sorted = days[order], scores[order]
    positive = y[order].astype(bool)
    new_group = np.r_[True, (day_sorted[1:] != day_sorted[:-1]) | (score_sorted[1:] != score_sorted[:-1])]
    group_starts = np.flatnonzero(new_group)
    group_day = day_sorted[group_starts]
    day_group_starts = np.flatnonzero(np.r_[True, group_day[1:] != group_day[:-1]])
    group_of_day_start = np.repeat(day_group_starts, np.diff(np.r_[day_group_starts, len(group_starts)]))

    def statistic(weights: np.ndarray) -> float:
        w = weights[order]
        pos = np.add.reduceat(w * positive, group_starts)
        neg = np.add.reduceat(w * ~positive, group_starts)
        below = np.cumsum(neg) - neg  # negatives in earlier groups, across days
        below -= below[group_of_day_start]  # ... of the same day only
        numerator = np.add.reduceat(pos * (below + 0.5 * neg), day_group_starts)
        day_pos, day_neg = np.add.reduceat(pos, day_group_starts), np.add.reduceat(neg, day_group_starts)
        both = (day_pos > 0) & (day_neg > 0)
        if not both.any():
            return float("nan")
        aucs = numerator[both] / (day_pos[both] * day_neg[both])
        size = day_pos[both] + day_neg[both]
        return float(aucs @ size / size.sum())

    return statistic


CELLS = (("auc", "all"), ("auc", "last_50"), ("same_day_auc", "all"), ("same_day_auc", "last_50"),
         ("log_loss", "all"), ("log_loss", "last_50"))
PURCHASE_CELLS = (("auc", "last_50_purchases"), ("purchase_day_auc", "all"), ("purchase_day_auc", "last_50_purchases"),
                  ("log_loss", "last_50_purchases"))  # grouped and split by purchase, not by label arrival
DIFFERENCES = (FREQUENCY, RFM_LOG_HORIZON)  # the strongest ranking and the strongest probability


def summarize(run: Run, config: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the report, JSON-able."""
    y = np.asarray(run.churned, dtype=bool)
    days = np.asarray(run.label_days)
    purchase_days = np.asarray(run.purchase_days)
    n = len(y)
    resampler = GroupResampler(run.customers, n_boot=config.get("bootstrap", 1000), seed=config.get("seed", 0))
    by_purchase = np.empty(n, dtype=int)
    by_purchase[np.argsort(purchase_days, kind="stable")] = np.arange(n)
    masks = {"all": None, "last_50": (np.arange(n) >= n // 2).astype(float),
             "last_50_purchases": (by_purchase >= n // 2).astype(float)}
    statistics: dict[str, dict[str, Callable[[np.ndarray], float]]] = {}
    methods: dict[str, Any] = {}
    for method, values in run.scores.items():
        scores = np.asarray(values, dtype=float)
        statistics[method] = {"auc": weighted_auc(y, scores), "same_day_auc": same_day_auc(y, scores, days),
                              "purchase_day_auc": same_day_auc(y, scores, purchase_days)}
        if method == PULSE or method in PROBABILISTIC:
            statistics[method]["log_loss"] = weighted_log_loss(y, scores)
        methods[method] = {f"{measure}_{part}": resampler.interval(statistics[method][measure], masks[part])
                           for measure, part in CELLS + PURCHASE_CELLS if measure in statistics[method]}
    differences = {}
    for baseline in DIFFERENCES:
        differences[baseline] = {}
        for measure, part in CELLS + PURCHASE_CELLS:
            if measure not in statistics[baseline]:
                continue
            mine, theirs = statistics[PULSE][measure], statistics[baseline][measure]
            differences[baseline][f"{measure}_{part}"] = resampler.interval(
                lambda w, mine=mine, theirs=theirs: mine(w) - theirs(w), masks[part])
    return {
        "config": config, "labels": n, "labels_sent": run.labels, "labels_unscored": run.unscored,
        "churned_share": float(y.mean()) if n else float("nan"),
        "customers_labelled": len(set(run.customers)), "purchases": run.purchases,
        "label_days": len(np.unique(days)), "rejected": run.rejected,
        "labels_on_served_features": run.labels_on_served_features, "events_meeting_long_term_record": run.restored,
        "win_backs": run.win_backs, "replay_s": run.elapsed_s, "engine": run.engine,
        "methods": methods, "pulse_minus": differences, "acceptance": _acceptance(methods),
        "strongest": _acceptance(methods, {"auc": (FREQUENCY,), "same_day_auc": (FREQUENCY,),
                                           "log_loss": (RFM_LOG_HORIZON,)}),
        "tuning": TUNING,
    }


def _acceptance(methods: dict[str, Any], against: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Per cell: Pulse's AUC at least, and log-loss at most, the better of the baselines `against` names for the
    measure (default: the RFM logistic baselines learning on arrival, issue 22's target); point estimates."""
    cells = {}
    for measure, part in CELLS:
        key = f"{measure}_{part}"
        mine = methods[PULSE][key][0]
        pick = min if measure == "log_loss" else max
        best = pick((against or {}).get(measure, COMPARED), key=lambda m: methods[m][key][0])
        theirs = methods[best][key][0]
        met = mine <= theirs if measure == "log_loss" else mine >= theirs
        cells[key] = {"pulse": mine, "better_baseline": best, "baseline": theirs, "met": bool(met)}
    return {"cells": len(cells), "met": sum(c["met"] for c in cells.values()), "by_cell": cells}


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ci(triple: tuple[float, float, float] | None, digits: int = 3, sign: bool = False) -> str:
    if triple is None:
        return "–"
    point, low, high = triple
    fmt = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
    if not math.isfinite(point):
        return "–"
    return f"{fmt.format(point)} [{fmt.format(low)}, {fmt.format(high)}]"


def markdown(summary: dict[str, Any], files: list[str]) -> str:
    """report.md."""
    cfg = summary["config"]
    h = cfg["horizon_days"]
    rows, purchases, customers = cfg["rows_purchases_customers"]
    model = summary["engine"]["churn_model"]
    lines = [
        f"# Churn on real purchase histories: CDNOW, horizon {h} days", "",
        (f"`pulse evaluate --dataset cdnow --horizon-days {h}`{' --limit ' + str(cfg['limit']) if cfg['limit'] else ''}"
         f" — {cfg['source']}: {rows:,} rows, {purchases:,} purchases (rows of one customer and day summed) of "
        f"{customers:,} customers. Each purchase is a `purchase` event; its label is a `churn_outcome` sent when known "
        f"(a purchase within {h} days: not churned, sent at that purchase; none: churned, sent on day {h + 1}); "
        f"{summary['labels_sent']:,} labels sent, of which {summary['labels_unscored']:,} not scored (a purchase whose "
        f"{h} days pass the data's end can only be labelled 'not churned': outcome-selected), leaving "
        f"{summary['labels']:,} scored labels ({summary['churned_share']:.1%} churned) of "
        f"{summary['customers_labelled']:,} customers on {summary['label_days']} days. Replayed in time order "
        f"through the dataflow's parser and per-user step in {summary['replay_s']:.0f} s (timers in event time; "
        f"idle TTL {summary['engine']['idle_ttl_s']:,} s, "
         f"long-term record kept {summary['engine']['long_term_retention_s']:,} s)."), "",
        ("A label is scored with the churn probability of the decision served at the customer's last purchase before "
         "it; the baselines score the same purchase with what they knew then. 95% intervals: bootstrap over customers "
         f"({cfg['bootstrap']} resamples). Same-day AUC: AUC within the labels that arrive on one day, averaged over "
         "days with both classes, weighted by labels."), "",
        ("| method | AUC all | AUC last 50% | same-day AUC all | same-day AUC last 50% | log-loss all "
         "| log-loss last 50% |"),
        "|---|---|---|---|---|---|---|",
    ]
    for method, m in summary["methods"].items():
        cells = [_ci(m.get(f"{measure}_{part}")) for measure, part in CELLS]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    purchase_header = ("| method | AUC last 50% of purchases | purchase-day AUC all | purchase-day AUC last 50% of "
                       "purchases | log-loss last 50% of purchases |")
    lines += ["", ("Grouped and split by the purchase a label refers to, not by when the label arrives (which selects "
                   "labels by outcome: a day's 'churned' labels come from older purchases than its 'not churned' "
                   "ones). Purchase-day AUC: AUC within the labels of purchases made on one day, scored at the same "
                   "moment, averaged over days with both classes, weighted by labels."), "",
              purchase_header, "|---|---|---|---|---|"]
    for method, m in summary["methods"].items():
        row = [_ci(m.get(f"{measure}_{part}")) for measure, part in PURCHASE_CELLS]
        lines.append(f"| {method} | {' | '.join(row)} |")
    cells = CELLS + PURCHASE_CELLS
    names = ["AUC all", "AUC last 50%", "same-day AUC all", "same-day AUC last 50%", "log-loss all",
             "log-loss last 50%", "AUC last 50% of purchases", "purchase-day AUC all",
             "purchase-day AUC last 50% of purchases", "log-loss last 50% of purchases"]
    lines += ["", ("Pulse minus the strongest baselines (paired, same resamples; AUC: higher is better, log-loss: "
                   "lower is better):"), "", f"| baseline | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for baseline, d in summary["pulse_minus"].items():
        row = [_ci(d.get(f"{measure}_{part}"), sign=True) for measure, part in cells]
        lines.append(f"| {baseline} | {' | '.join(row)} |")
    acceptance, strongest = summary["acceptance"], summary["strongest"]
    missed = [key for key, cell in acceptance["by_cell"].items() if not cell["met"]]
    missed_strongest = [key for key, cell in strongest["by_cell"].items() if not cell["met"]]
    lines += ["", (f"Target (issue 22): Pulse's AUC at least and log-loss at most the better of "
                   f"{' and '.join(COMPARED)} in every cell: **{acceptance['met']} of {acceptance['cells']} met**"
                   + (f" (missed: {', '.join(missed)})" if missed else "") + "."),
              "", (f"Against the strongest baselines (AUC and same-day AUC at least {FREQUENCY}'s, log-loss at most "
                   f"{RFM_LOG_HORIZON}'s): **{strongest['met']} of {strongest['cells']} met**"
                   + (f" (missed: {', '.join(missed_strongest)})" if missed_strongest else "") + "."), "",
              (f"Churn model at the end: {model['version']} (generation {model['generation']}), frequency prior "
               f"{model['frequency_prior']}, {model['optimizer']} step {model['learning_rate']}"
               f"{' decaying over ' + str(model['decay_steps']) + ' labels' if model['decay_steps'] else ''}, "
               f"intercept step {model['intercept_lr']}, L2 {model['l2']}, clip {model['bound']}; features: "
               f"{', '.join(summary['engine']['features'])}."), "",
              (f"Labels learned on exactly the features served at their purchase: "
               f"{summary['labels_on_served_features']:,} of {summary['labels_sent']:,}. 'Not churned' labels "
               f"learned before their horizon (a customer holding more than 16): "
               f"{summary['engine']['labels_learned_before_their_horizon']:,}. Events that met an idle customer's "
               f"long-term record (restored): {summary['events_meeting_long_term_record']:,}. Win-back decisions sent "
               f"by the engine on its own: {summary['win_backs']:,}. Rejected events: {summary['rejected']}."),
              "", "## Tuning", "", summary["tuning"], "", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in files] + [""]
    return "\n".join(lines)


def write_plots(run: Run, out: Path) -> list[str]:
    """AUC by month of label arrival, and calibration over the last 50% of labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(run.churned, dtype=bool)
    days = np.asarray(run.label_days)
    if not len(y):
        return []
    months = (days - days.min()) // 30
    shown = [PULSE, RFM, RFM_LOG, RFM_LOG_HORIZON, "frequency (purchases, negated)"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for method in shown:
        scores = np.asarray(run.scores[method])
        xs, aucs = [], []
        for month in np.unique(months):
            mask = months == month
            if y[mask].any() and (~y[mask]).any():
                xs.append(month)
                aucs.append(weighted_auc(y[mask], scores[mask])(np.ones(int(mask.sum()))))
        ax.plot(xs, aucs, marker="o", ms=3, label=method)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(xlabel="month of label arrival", ylabel="AUC within the month", title=f"CDNOW, H = {run.horizon_days} days")
    ax.legend(fontsize=7)
    files = [save_figure(fig, out, "auc_by_month.png")]

    last = np.arange(len(y)) >= len(y) // 2
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, 11)
    for method in (PULSE, RFM, RFM_LOG, RFM_LOG_HORIZON):
        p = np.asarray(run.scores[method])[last]
        bins = np.clip(np.digitize(p, edges) - 1, 0, 9)
        xs = [p[bins == b].mean() for b in range(10) if (bins == b).sum() >= 20]
        ys = [y[last][bins == b].mean() for b in range(10) if (bins == b).sum() >= 20]
        ax.plot(xs, ys, marker="o", ms=3, label=method)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(xlabel="predicted churn probability", ylabel="churned share", title="calibration, last 50% of labels")
    ax.legend(fontsize=7)
    files.append(save_figure(fig, out, "calibration.png"))
    return files


def write_report(run: Run, config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write report.json, report.md and the PNGs into `out`; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run, config)
    files = write_plots(run, out)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=float, allow_nan=True))
    (out / "report.md").write_text(markdown(summary, files))
    return summary
