"""Plot bench/results/*.json into docs/img/bench-summary.png (matplotlib, Agg).

    .venv/bin/python -m bench.plot
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.common import RESULTS_DIR, ROOT  # noqa: E402

OUT = ROOT / "docs" / "img" / "bench-summary.png"


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    throughput, latency, ranking, state = load("throughput"), load("latency"), load("ranking"), load("state")
    engine_latency = load("engine_latency")
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
            ax.plot(xs, [sorted(x["total"][q] for x in r["runs"])[len(r["runs"]) // 2] for r in rows], marker="o", label=q)
        if engine_latency:  # the engine alone, on the same x positions (its rates are among the offered ones)
            alone = {str(r["rate"]): r["total"] for r in engine_latency["results"] if str(r["rate"]) in xs}
            for q in ("p50", "p99"):
                ax.plot(list(alone), [t[q] for t in alone.values()], marker="s", linestyle=":",
                        label=f"{q}, engine alone (to Redis)")
        ax.axhline(20, color="grey", linestyle="--", label="target p99 at 5k/s")
        ax.set_yscale("log")
        ax.set_xlabel("offered events/s")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
        ax.set_title("Latency: event -> WebSocket client")
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
        ax.set_xlabel("users")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
        ax.set_title("State: snapshot / restart vs users")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
