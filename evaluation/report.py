"""Summarize a run (JSON-able numbers) and write report.json, report.md and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.figures import save_figure
from evaluation.runner import ARMS, VARIANTS
from online_models.bandit import ips, snips

TRAILING_LABELS = 400  # churn AUC over time: the last this many labels at each point
TRAILING_CHATS = 200


def _phases(result: dict) -> dict[str, tuple[int, int]]:
    n, freeze = result["config"]["events"], result["freeze_step"]
    phases = {"after_freeze": (freeze, n)}
    for step, what in result["scenario"]["changes"]:
        if what == "drift":
            phases["freeze_to_drift"] = (freeze, step)
            phases["after_drift"] = (step, n)
    return phases


def _variant_phase(result: dict, name: str, lo: int, hi: int) -> dict[str, Any]:
    rec = result["records"][name]
    churn = [(y, p) for s, y, p in rec.churn if lo <= s < hi]
    reco = [(h, g, d) for s, h, g, d in rec.reco if lo <= s < hi]
    sent = [(y, p) for s, y, p in rec.sentiment if lo <= s < hi]
    size = result["bucket_size"]
    buckets = [b for b in rec.reco_items if lo <= b * size and (b + 1) * size <= hi] or list(rec.reco_items)
    items = set().union(*(rec.reco_items[b] for b in buckets)) if buckets else set()
    catalog = max((rec.reco_catalog[b] for b in buckets), default=1)
    out: dict[str, Any] = {
        "churn": M.classification_report([y for y, _ in churn], [p for _, p in churn]) if churn else {"n": 0},
        "reco": {"n": len(reco), "hit_rate@10": float(np.mean([h for h, _, _ in reco])) if reco else float("nan"),
                 "ndcg@10": float(np.mean([g for _, g, _ in reco])) if reco else float("nan"),
                 "coverage": len(items) / catalog,
                 "diversity": float(np.mean([d for _, _, d in reco])) if reco else float("nan")},
        "sentiment": M.sentiment_report([y for y, _ in sent], [p for _, p in sent]) if sent else {"n": 0},
    }
    return out


def _ab(result: dict) -> dict[str, Any]:
    users = [u for u in result["user_stats"].values() if u["sessions"] > 0]
    per_arm: dict[str, dict[str, list[float]]] = {}
    for arm in ARMS:
        arm_users = [u for u in users if u["arm"] == arm]
        per_arm[arm] = {
            "conversion": [u["converted"] / u["sessions"] for u in arm_users],
            "retention": [1.0 - u["churned"] for u in arm_users],
            "revenue": [u["revenue"] - u["cost"] for u in arm_users],
        }
    out: dict[str, Any] = {}
    for arm, values in per_arm.items():
        out[arm] = {"users": len(values["conversion"])}
        for metric, xs in values.items():
            mean, low, high = M.mean_ci(xs)
            out[arm][metric] = {"mean": mean, "ci95": [low, high]}
            if arm != "control":
                lift, l_low, l_high = M.bootstrap_lift(xs, per_arm["control"][metric], seed=result["config"]["seed"])
                out[arm][metric]["lift_vs_control"] = {"lift": lift, "ci95": [l_low, l_high]}
    return out


def _off_policy(result: dict) -> dict[str, Any]:
    logs = [d for d in result["decision_log"] if d["arm"] == "personalized+bandit"]
    if not logs:
        return {}
    rewards = [d["reward"] for d in logs]
    props = [d["propensity"] for d in logs]
    targets = {
        "rules (engine RuleBasedPolicy)": [1.0 if d["action"] == d["rules_action"] else 0.0 for d in logs],
        "bandit greedy (its learned choice, no exploration)": [1.0 if d["action"] == d["greedy_action"] else 0.0
                                                               for d in logs],
        "always recommend": [1.0 if d["action"] == "recommend" else 0.0 for d in logs],
        "always retention_offer": [1.0 if d["action"] == "retention_offer" else 0.0 for d in logs],
        "logged bandit (sanity: = on-policy mean)": [1.0] * len(logs),
    }
    on_policy = {arm: float(np.mean([d["reward"] for d in result["decision_log"] if d["arm"] == arm] or [np.nan]))
                 for arm in ARMS}
    return {
        "decisions": len(logs),
        "estimates": {name: ({"ips": float(np.mean(rewards)), "snips": float(np.mean(rewards))}
                             if name.startswith("logged")
                             else {"ips": ips(rewards, props, t), "snips": snips(rewards, props, t)})
                      for name, t in targets.items()},
        "on_policy_mean_reward": on_policy,
        "pulls": {arm: int(n) for arm, n in result["bandit"]._counts.items()},
    }


def summarize(result: dict) -> dict[str, Any]:
    """Every figure of the report as plain JSON-able values."""
    phases = _phases(result)
    variants = result["variants"]
    confidence = result["confidence"]
    conf_summary: dict[str, Any] = {}
    if confidence:
        c = np.array([x[0] for x in confidence])
        correct = np.array([(p >= 0.5) == y for _, y, p in confidence], dtype=float)
        median = float(np.median(c))
        conf_summary = {"median_confidence": median,
                        "accuracy_high_confidence": float(correct[c > median].mean()) if (c > median).any() else None,
                        "accuracy_low_confidence": float(correct[c <= median].mean())}
    segments = {}
    for seg, rows in sorted(result["segments"].items()):
        segments[str(seg)] = {"decisions": len(rows), "mean_hidden_engagement": float(np.mean([r[1] for r in rows])),
                              "mean_hidden_churn_risk": float(np.mean([r[2] for r in rows]))}
    sel = result["selection"]
    churn_sel = [(y, p) for s, y, p in sel["churn"]["selected"] if s >= result["freeze_step"]]
    return {
        "config": result["config"],
        "scenario": result["scenario"],
        "elapsed_s": result["elapsed_s"],
        "phases": {name: {"events": list(span), **{v: _variant_phase(result, v, *span) for v in VARIANTS}}
                   for name, span in phases.items()},
        "drift": {
            "adaptations": {task: {"count": len(steps), "steps": steps}
                            for task, steps in variants["online+adwin"].drift_steps.items()},
            "periodic_retrains": len(variants["periodic"].retrains),
        },
        "ab_test": _ab(result),
        "bandit": _off_policy(result),
        "selection": {
            "churn": {"champion": sel["churn"]["champion"], "switches": sel["churn"]["switches"],
                      "selected_after_freeze": M.classification_report([y for y, _ in churn_sel],
                                                                       [p for _, p in churn_sel]) if churn_sel else {}},
            "sentiment": {"champion": sel["sentiment"]["champion"], "switches": sel["sentiment"]["switches"]},
            "reco": {"champion": sel["reco"]["champion"], "switches": sel["reco"]["switches"],
                     "selected_hit_rate@10": float(np.mean(sel["reco"]["selected_hits"]))
                     if sel["reco"]["selected_hits"] else None},
        },
        "segments": segments,
        "explanations": {"decisions_checked": result["explanations_checked"],
                         "max_abs_error": result["explanation_max_error"]},
        "confidence": conf_summary,
    }


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _marks(ax, result: dict, summary: dict, task: str | None) -> None:
    ax.axvline(result["freeze_step"], color="grey", linestyle=":", label="static frozen")
    for step, what in result["scenario"]["changes"]:
        ax.axvline(step, color="black", linestyle="--", label=f"scenario {what}")
    if task is not None:
        steps = summary["drift"]["adaptations"][task]["steps"]
        if steps:
            ax.plot(steps, [ax.get_ylim()[0]] * len(steps), "v", color="red", markersize=9, clip_on=False,
                    label=f"ADWIN drift ({len(steps)})")


def _trailing(records: list, value, n: int, points: np.ndarray) -> list[float]:
    steps = np.array([r[0] for r in records])
    out = []
    for end in points:
        hi = int(np.searchsorted(steps, end, side="right"))
        window = records[max(0, hi - n):hi]
        out.append(value(window) if len(window) >= min(n, 30) else float("nan"))
    return out


def write_plots(result: dict, summary: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, size = result["config"]["events"], result["bucket_size"]
    points = np.arange(size, n + 1, size)
    colors = {"online": "tab:blue", "static": "tab:orange", "periodic": "tab:green", "online+adwin": "tab:purple"}
    files = []
    title = f"scenario {result['config']['scenario']} (seed {result['config']['seed']}, {n:,} events)"

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for v in VARIANTS:
        recs = result["records"][v].churn
        ys = _trailing(recs, lambda w: M.roc_auc([r[1] for r in w], [r[2] for r in w]), TRAILING_LABELS, points)
        ax.plot(points, ys, label=v, color=colors[v])
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.set(title=f"Churn ROC AUC (last {TRAILING_LABELS} labels) — {title}", xlabel="event", ylabel="ROC AUC")
    _marks(ax, result, summary, "churn")
    ax.legend(loc="lower left", fontsize=8)
    files.append(save_figure(fig, out, "churn_auc.png"))

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for v in VARIANTS:
        rec = result["records"][v]
        steps = np.array([r[0] for r in rec.reco])
        bucket = steps // size
        for ax, col in ((axes[0], 1), (axes[1], 2)):
            vals = np.array([r[col] for r in rec.reco])
            means = [vals[bucket == b].mean() if (bucket == b).any() else np.nan for b in range(len(points))]
            ax.plot(points, means, label=v, color=colors[v])
        cov = [len(rec.reco_items.get(b, ())) / max(rec.reco_catalog.get(b, 1), 1) for b in range(len(points))]
        axes[2].plot(points, cov, label=v, color=colors[v])
    axes[0].set(title=f"Recommendations — {title}", ylabel="hit-rate@10")
    axes[1].set(ylabel="NDCG@10")
    axes[2].set(ylabel="catalog coverage", xlabel="event")
    for ax in axes:
        _marks(ax, result, summary, "reco" if ax is axes[0] else None)
    axes[0].legend(loc="lower right", fontsize=8)
    files.append(save_figure(fig, out, "recommendations.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for v in VARIANTS:
        recs = result["records"][v].sentiment
        ys = _trailing(recs, lambda w: float(np.mean([r[1] == r[2] for r in w])), TRAILING_CHATS, points)
        ax.plot(points, ys, label=v, color=colors[v])
    ax.set(title=f"Sentiment accuracy (last {TRAILING_CHATS} labelled chats) — {title}", xlabel="event",
           ylabel="accuracy")
    _marks(ax, result, summary, "sentiment")
    ax.legend(loc="lower right", fontsize=8)
    files.append(save_figure(fig, out, "sentiment.png"))

    ab = summary["ab_test"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, metric, label in zip(axes, ("conversion", "retention", "revenue"),
                                 ("conversion (decision purchases / session)", "retention (share not churned)",
                                  "net revenue per user")):
        means = [ab[a][metric]["mean"] for a in ARMS]
        errs = np.array([[m - ab[a][metric]["ci95"][0], ab[a][metric]["ci95"][1] - m] for a, m in zip(ARMS, means)]).T
        ax.bar(range(len(ARMS)), means, yerr=errs, capsize=6, color=["grey", "tab:blue", "tab:purple"])
        ax.set_xticks(range(len(ARMS)), [a.replace("+", "+\n") for a in ARMS], fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"A/B test, 95% CI — {title}", fontsize=10)
    files.append(save_figure(fig, out, "ab_test.png"))
    return files


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(d: dict, digits: int = 3, pct: bool = False) -> str:
    scale, suffix = (100.0, "%") if pct else (1.0, "")
    return (f"{d['mean'] * scale:.{digits}f}{suffix} [{d['ci95'][0] * scale:.{digits}f}, "
            f"{d['ci95'][1] * scale:.{digits}f}]")


def markdown(summary: dict, files: list[str]) -> str:
    cfg = summary["config"]
    lines = [
        f"# Pulse evaluation — scenario `{cfg['scenario']}`",
        "",
        f"`pulse evaluate --scenario {cfg['scenario']} --events {cfg['events']} --seed {cfg['seed']}` — "
        f"{summary['scenario']['description']}. {cfg['users']} initial users ({summary['scenario']['users_total']} "
        f"in total), {summary['scenario']['items_total']} items at the end. Static is frozen after "
        f"{cfg['freeze_at']:.0%} of the stream; periodic retrains every {cfg['retrain_every']:,} events on the last "
        f"{cfg['window']:,}. Run time {summary['elapsed_s']:.0f} s. All metrics are progressive (predict, then learn).",
        "",
    ]
    for phase, data in summary["phases"].items():
        lo, hi = data["events"]
        lines += [f"## Model quality, events {lo:,}–{hi:,} ({phase.replace('_', ' ')})", "",
                  "| variant | churn AUC | churn log loss | churn F1 | hit-rate@10 | NDCG@10 | coverage | diversity | "
                  "sentiment acc | sentiment macro F1 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for v in VARIANTS:
            d = data[v]
            lines.append(
                f"| {v} | {_f(d['churn'].get('roc_auc'))} | {_f(d['churn'].get('log_loss'))} | "
                f"{_f(d['churn'].get('f1'))} "
                f"| {_f(d['reco']['hit_rate@10'])} | {_f(d['reco']['ndcg@10'])} | {_f(d['reco']['coverage'])} "
                f"| {_f(d['reco']['diversity'])} | {_f(d['sentiment'].get('accuracy'))} "
                f"| {_f(d['sentiment'].get('macro_f1'))} |")
        n = data["online"]
        lines += ["", f"n: {n['churn']['n']} churn labels, {n['reco']['n']:,} organic page views, "
                      f"{n['sentiment']['n']} labelled chats.", ""]
        on, st, pe = data["online"], data["static"], data["periodic"]
        if st["churn"].get("roc_auc") and on["churn"].get("roc_auc"):
            lines.append(f"Online vs static: churn AUC {on['churn']['roc_auc'] - st['churn']['roc_auc']:+.3f}, "
                         f"hit-rate@10 {_rel(on['reco']['hit_rate@10'], st['reco']['hit_rate@10'])}; "
                         f"online vs periodic: hit-rate@10 "
                         f"{_rel(on['reco']['hit_rate@10'], pe['reco']['hit_rate@10'])}, "
                         f"churn AUC {on['churn']['roc_auc'] - pe['churn']['roc_auc']:+.3f}.")
            lines.append("")
    drift = summary["drift"]
    lines += ["## Drift handling (online+adwin)", "",
              "ADWIN (delta 0.002) watches each model's progressive error (churn: log loss / 4; recommendations: "
              "1 − hit@10; sentiment: 0/1 error); an *increase* rebuilds the model from the examples since the "
              "change.", "",
              "| model | drifts detected | at events |", "|---|---|---|"]
    for task, d in drift["adaptations"].items():
        lines.append(f"| {task} | {d['count']} | {', '.join(f'{s:,}' for s in d['steps'][:12]) or '–'} |")
    lines += ["", f"Periodic variant: {drift['periodic_retrains']} retrainings.", ""]
    ab = summary["ab_test"]
    lines += ["## Personalized vs control (A/B, stratified randomization, simulated users react)", "",
              "| arm | users | conversion / session | retention | net revenue per user |", "|---|---|---|---|---|"]
    for arm in ARMS:
        a = ab[arm]
        lines.append(f"| {arm} | {a['users']} | {_ci(a['conversion'])} | {_ci(a['retention'])} | "
                     f"{_ci(a['revenue'], 1)} |")
    lines += ["", "| arm vs control | conversion lift | retention lift | revenue lift |", "|---|---|---|---|"]
    for arm in ARMS[1:]:
        a = ab[arm]
        cells = []
        for metric in ("conversion", "retention", "revenue"):
            lf = a[metric]["lift_vs_control"]
            cells.append(f"{lf['lift'] * 100:+.1f}% [{lf['ci95'][0] * 100:+.1f}%, {lf['ci95'][1] * 100:+.1f}%]")
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    lines += ["", "Control users go through the engine's non-personalized path (popularity ranking, action "
              "`recommend`, no offers); 95% CIs: normal approximation for means, percentile bootstrap (2,000 "
              "resamples) for lifts.", ""]
    bandit = summary["bandit"]
    if bandit:
        lines += ["## Next-best-action bandit and off-policy evaluation", "",
                  f"Epsilon-greedy ({cfg['bandit_epsilon']}) over {', '.join(bandit['pulls'])}; "
                  f"pulls {bandit['pulls']}. Reward per decision: (decision revenue − action cost) / median price "
                  f"− 3 if the user churns after it.", "",
                  "| policy (estimated from the bandit arm's logs) | IPS | SNIPS |", "|---|---|---|"]
        for name, e in bandit["estimates"].items():
            lines.append(f"| {name} | {_f(e['ips'])} | {_f(e['snips'])} |")
        lines += ["", "On-policy mean reward per decision: " + ", ".join(
            f"{arm} {_f(v)}" for arm, v in bandit["on_policy_mean_reward"].items()) + ".", ""]
    sel = summary["selection"]
    lines += ["## Online model selection (champion/challenger, progressive validation)", ""]
    for task, s in sel.items():
        sw = "; ".join(f"event {x['step']:,}: {x['from']} ({x['from_score']:.3f}) → {x['to']} ({x['to_score']:.3f})"
                       for x in s["switches"][:6]) or "no switch"
        lines.append(f"- {task}: final champion `{s['champion']}`; switches: {sw}.")
    lines += ["", "## Segments (online k-means on behaviour), explanations, confidence", "",
              "| segment | decisions | mean hidden engagement | mean hidden churn risk |", "|---|---|---|---|"]
    for seg, d in summary["segments"].items():
        lines.append(f"| {seg} | {d['decisions']} | {d['mean_hidden_engagement']:.2f} | "
                     f"{d['mean_hidden_churn_risk']:.2f} |")
    ex = summary["explanations"]
    lines += ["", f"Explanations checked on {ex['decisions_checked']:,} personalized engine decisions; max |error|: "
              + ", ".join(f"{k} {v:.1e}" for k, v in ex["max_abs_error"].items()) + ".", ""]
    conf = summary["confidence"]
    if conf:
        lines += [f"Churn confidence (online model, churn labels): accuracy "
                  f"{_f(conf['accuracy_high_confidence'])} when confidence > median "
                  f"({conf['median_confidence']:.2f}), {_f(conf['accuracy_low_confidence'])} otherwise.", ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in files] + [""]
    return "\n".join(lines)


def _rel(a: float, b: float) -> str:
    if not b:
        return "–"
    return f"{(a / b - 1) * 100:+.1f}% ({a:.3f} vs {b:.3f})"


def write_report(result: dict, out: Path) -> dict:
    """Write report.json, report.md and the PNGs into `out`; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    files = write_plots(result, summary, out)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=float, allow_nan=True))
    (out / "report.md").write_text(markdown(summary, files))
    return summary
