"""Plot bench/results/*.json into docs/img/bench-summary.png and docs/img/latency-percentiles.png (matplotlib, Agg).

    .venv/bin/python -m bench.plot
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.common import RESULTS_DIR, ROOT, median  # noqa: E402

OUT = ROOT / "docs" / "img" / "bench-summary.png"
SPECTRUM_OUT = ROOT / "docs" / "img" / "latency-percentiles.png"


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    fig, axes = plt.subplots(2, 3, figsize=(18, 8))
    throughput, latency, ranking, state = load("throughput"), load("latency"), load("ranking"), load("state")
    engine_latency, fanout, churn = load("engine_latency"), load("fanout"), load("fanout-churn")
    ax = axes[0][0]
    if throughput:
        labels = {"kafka consume": "Kafka consume", "engine step (parse+decide+encode)": "engine step",
                  "engine step, 2 copies at once (each)": "engine step, 2 at once (each)",
                  "redis pipelined writes": "Redis writes", "decision log produce": "log produce",
                  "sum of parts (1 core)": "sum of parts", "plain": "plain loop", "engine1": "engine 1 proc",
                  "engine2": "engine 2 procs", "quix": "Quix Streams"}
        med = {k: v for k, v in throughput["median_events_per_s"].items() if k != "models: engine.handle"}
        names = [k for k in labels if k in med]
        ax.barh([labels[k] for k in names], [med[k] for k in names], color="tab:blue")
        ax.axvline(30_000, color="grey", linestyle="--", label="target, 1 process")
        ax.set_xscale("log")
        ax.set_xlabel("events/s (median, log scale)")
        ax.legend(fontsize=8)
        ax.set_title("Throughput: Kafka in -> Redis + decision log"
                     + (" (after warm-up)" if throughput.get("warmup_events") else ""))
    ax = axes[0][1]
    if latency:
        rows = [r for r in latency["results"]]
        xs = [str(r["rate"]) if r["rate"] else "max" for r in rows]
        for q in ("p50", "p99"):
            ax.plot(xs, [sorted(x["total"][q] for x in r["runs"])[len(r["runs"]) // 2] for r in rows], marker="o",
                    label=q)
        if engine_latency:  # the engine alone, on the same x positions (its rates are among the offered ones)
            alone = {str(r["rate"]): r["total"] for r in engine_latency["results"] if str(r["rate"]) in xs}
            for q in ("p50", "p99"):
                ax.plot(list(alone), [t[q] for t in alone.values()], marker="s", linestyle=":",
                        label=f"{q}, engine alone (to Redis)")
        ax.axhline(20, color="grey", linestyle="--", label="target p99 at 5k/s")
        ax.set_yscale("log")
        _label(ax, "Latency: event -> WebSocket client", "offered events/s", "ms")
    ax = axes[1][0]
    if ranking:
        items = [r["items"] for r in ranking["results"]]
        ax.loglog(items, [r["engine_ms"] for r in ranking["results"]], marker="o", label="engine rank() (numpy)")
        ax.loglog(items, [r["river_rank_ms"] for r in ranking["results"]], marker="o", label="River rank()")
        ax.set_xlabel("catalog items")
        ax.set_ylabel("ms per top-10")
        ax.legend()
        ax.set_title("Ranking top-10")
    ax = axes[1][1]
    if state:
        users = [r["users"] for r in state["results"]]
        for key, label in (("snapshot_all_s", "epoch snapshot, all users changed"),
                           ("snapshot_1pct_s", "epoch snapshot, 1% changed"),
                           ("model_checkpoint_full_s", "model checkpoint, full"),
                           ("model_checkpoint_1pct_s", "model checkpoint, 1% changed"), ("restart_s", "restart")):
            ax.loglog(users, [r[key] * 1e3 for r in state["results"]], marker="o", label=label)
        _label(ax, "State: snapshot / restart vs users", "users", "ms")
    ax = axes[0][2]
    if fanout:
        for label, points in _fanout_p99(fanout).items():
            ax.plot([str(rate) for rate, _ in points], [p99 for _, p99 in points], marker="o", label=label)
        ax.set_yscale("log")
        _label(ax, "Fan-out through the gateway", "decisions published per second",
               "p99 ms, publish -> WebSocket (median of runs)")
    ax = axes[1][2]
    if churn:
        bars = _fanout_p99(churn)
        width = 0.8 / max(1, len(bars))
        for i, (label, points) in enumerate(bars.items()):
            ax.bar([j + i * width for j in range(len(points))], [p99 for _, p99 in points], width, label=label)
            ax.set_xticks([j + width * (len(bars) - 1) / 2 for j in range(len(points))],
                          [f"{rate:,}/s" for rate, _ in points])
        _label(ax, f"Fan-out, {churn['churn_per_s']} connections/s coming and going:\n"
               "gateway without / with PULSE_GC_FREEZE", "decisions published per second", "p99 ms (median of runs)")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT.relative_to(ROOT)}")
    if latency or engine_latency:
        plot_spectra(latency, engine_latency)


def plot_spectra(latency: dict | None, engine_latency: dict | None) -> None:
    """Latency by percentile, as HDR histograms are drawn: the x axis spreads the tail (1 / (1 - percentile))."""
    fig, ax = plt.subplots(figsize=(9, 5))
    series = []
    if latency:  # per rate, the run with the median p99
        for row in latency["results"]:
            runs = sorted((r for r in row["runs"] if r.get("spectrum")), key=lambda r: r["total"]["p99"])
            if runs:
                rate = f"{row['rate']:,}/s" if row["rate"] else "unpaced"
                series.append((f"event -> WebSocket, {rate}", runs[len(runs) // 2]["spectrum"], "-"))
    if engine_latency:
        series += [(f"engine alone (to Redis), {r['rate']:,}/s", r["spectrum"], ":")
                   for r in engine_latency["results"] if r.get("spectrum")]
    for label, spectrum, style in series:
        below_max = [(p, ms) for p, ms in spectrum if p < 100.0]
        ax.plot([1.0 / (1.0 - p / 100.0) for p, _ in below_max], [ms for _, ms in below_max], style, label=label)
    ticks = [50, 90, 99, 99.9, 99.99]
    ax.set_xscale("log")
    ax.set_xticks([1.0 / (1.0 - t / 100.0) for t in ticks], [f"p{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.axhline(20, color="grey", linestyle="--", label="target p99 at 5k/s (20 ms)")
    _label(ax, "Latency by percentile (exact, from every sample)", "percentile", "ms")
    fig.tight_layout()
    fig.savefig(SPECTRUM_OUT, dpi=90)
    print(f"wrote {SPECTRUM_OUT.relative_to(ROOT)}")


def _label(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and a small legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _fanout_p99(data: dict) -> dict:
    """{series label: [(rate, median p99 ms)]} of a bench.fanout result, one series per subscribers and GC setting."""
    series: dict = {}
    for runs in data["results"].values():
        first = runs[0]
        freeze = {None: "", 0: ", no GC freeze", 1: ", GC freeze"}[first.get("gc_freeze")]
        label = f"{first['subscribers']:,} subscribers{freeze}"
        series.setdefault(label, []).append((first["offered_per_s"], median(r["websocket"]["p99"] for r in runs)))
    return {label: sorted(points) for label, points in sorted(series.items(), key=lambda kv: "no GC" not in kv[0])}


if __name__ == "__main__":
    main()
