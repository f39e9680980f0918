"""`pulse evaluate --dataset sentiment`: VADER's four human-rated text sets as labelled chat messages.

Each set (evaluation.datasets.vader_sets: tweets, movie review snippets, amazon review sentences,
nyt editorial sentences; label = sign of the mean human rating) is shuffled with the run's seed and
replayed message by message: each text becomes a `chat_message` with its `label`, sent in turn by one
of `--chat-users` synthetic users (message i by user i mod N), and goes through the real parser and
per-user step (evaluation.replay.Replay) of a fresh engine. The decision's message sentiment is the
score the engine gave *before* the label taught it (progressive validation). The baselines
(evaluation.datasets.sentiment_baselines) see the same messages in the same order, each predicting
before learning. Accuracy and macro-F1 over all messages and the last 50%, with bootstrap 95%
intervals resampling the synthetic users; Pulse's messages/s over the first and last 10% of each set.

A throughput run then feeds `--throughput-messages` messages through one more fresh engine: the
selected sets' messages pooled and cycled, each cycle in a fresh shuffle, so the vocabulary grows
through the first cycle and the cost per message at the end can be compared with the start.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from river.utils.math import sigmoid

from evaluation.bootstrap import GroupResampler
from evaluation.datasets.sentiment_baselines import BASELINES
from evaluation.datasets.vader_sets import SETS, LabelledText, load_sets
from evaluation.progress import progress_bar
from evaluation.replay import Replay
from operators.engine import EngineConfig, PersonalizationEngine

__all__ = ["DESCRIPTION", "PULSE", "add_arguments", "evaluate", "replay_set", "throughput_run"]

DESCRIPTION = ("VADER's human-rated texts (vaderSentiment 3.3.2 sdist: tweets, movie, amazon, nyt) replayed as "
               "labelled chat messages; Pulse vs majority, lexicon, naive Bayes and TF-IDF + logistic regression")
PULSE = "Pulse"
START_TS = 1_400_000_000_000  # 2014-05-13, the year of the ratings; one message a second from there
WINDOW = 0.1  # share of a stream whose messages/s are compared (first and last)


@dataclass
class SetRun:
    """What one set's replay recorded, message by message, in stream order."""

    name: str
    labels: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    predictions: dict[str, list[str]] = field(default_factory=dict)  # method -> predicted labels
    pulse_wall_s: list[float] = field(default_factory=list)  # Pulse's step per message
    pulse_cpu_s: list[float] = field(default_factory=list)
    explanation_errors: dict[str, float] = field(default_factory=lambda: {"sum": 0.0, "score": 0.0})
    rejected: int = 0
    model_state: dict[str, float] = field(default_factory=dict)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Options of `--dataset sentiment`."""
    group.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="sets to replay (default all)")
    group.add_argument("--chat-users", type=int, default=200,
                       help="synthetic users who send a set's messages in turn (default 200); bootstrap groups")
    group.add_argument("--throughput-messages", type=int, default=50_000,
                       help="messages of the throughput run, the sets cycled in fresh shuffles "
                            "(default 50000; 0: skip)")


def evaluate(args: argparse.Namespace) -> int:
    """Replay every set with the baselines, then the throughput run; write the report."""
    from evaluation.datasets.sentiment_report import summarize, write_report

    if args.chat_users < 1 or args.throughput_messages < 0 or args.bootstrap < 10:
        print("pulse evaluate: --chat-users must be >= 1, --throughput-messages >= 0, --bootstrap >= 10",
              file=sys.stderr)
        return 2
    out = Path(args.out or Path("reports") / "sentiment")
    started = time.perf_counter()
    data = load_sets(args.sets, quiet=args.no_progress)
    runs = {name: replay_set(name, rows, args.seed, args.chat_users, args.limit, not args.no_progress)
            for name, rows in data.items()}
    throughput = (throughput_run(data, args.seed, args.chat_users, args.throughput_messages, not args.no_progress)
                  if args.throughput_messages else None)
    summary = summarize(runs, throughput, vars(args), n_boot=args.bootstrap)
    summary["elapsed_s"] = time.perf_counter() - started
    write_report(summary, runs, throughput, out)
    acceptance = summary["acceptance"]
    print(f"report: {out / 'report.md'} ({summary['elapsed_s']:.0f} s); last-50% accuracy, mean of the sets: "
          f"{PULSE} {acceptance['pulse_mean']:.3f} vs better of lexicon / naive Bayes {acceptance['better_mean']:.3f}")
    return 0


def shuffled(rows: list[LabelledText], seed: int) -> list[LabelledText]:
    """The set's texts in the order of the run: a fixed-seed shuffle."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    return order


def chat_event(set_name: str, index: int, row: LabelledText, chat_users: int) -> dict:
    """The labelled `chat_message` a text becomes (message i is sent by synthetic user i mod `chat_users`)."""
    return {"event_id": f"{set_name}-{index}", "user_id": f"{set_name}-user-{index % chat_users:04d}",
            "type": "chat_message", "ts": START_TS + 1000 * index, "text": row.text, "label": row.label}


class PulseStep:
    """A fresh engine behind the real parser and per-user step; times each message and checks its explanation."""

    def __init__(self, seed: int) -> None:
        self.replay = Replay(PersonalizationEngine(EngineConfig(seed=seed)))
        self.max_errors = {"sum": 0.0, "score": 0.0}

    def score(self, event: dict) -> tuple[float | None, float, float]:
        """(the message's sentiment before learning, or None if rejected; wall and CPU seconds of the step)."""
        wall, cpu = time.perf_counter(), time.process_time()
        decision = self.replay.event(event)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if decision is None:
            return None, wall, cpu
        message = decision["sentiment"]["message"]
        explanation = message["explanation"]
        total = math.fsum([explanation["intercept"], *explanation["contributions"].values()])
        self.max_errors["sum"] = max(self.max_errors["sum"], abs(total - explanation["score"]))
        self.max_errors["score"] = max(self.max_errors["score"],
                                       abs(2.0 * sigmoid(explanation["score"]) - 1.0 - message["score"]))
        return float(message["score"]), wall, cpu


def replay_set(name: str, rows: list[LabelledText], seed: int, chat_users: int, limit: int | None = None,
               progress: bool = False) -> SetRun:
    """Replay one set through Pulse and the baselines, each scoring a message before learning it."""
    order = shuffled(rows, seed)[:limit]
    pulse = PulseStep(seed)
    baselines = {method: factory() for method, factory in BASELINES.items()}
    run = SetRun(name, predictions={PULSE: [], **{method: [] for method in baselines}})
    for index, row in enumerate(progress_bar(order, progress, f"sentiment {name}", unit="msg")):
        event = chat_event(name, index, row, chat_users)
        score, wall, cpu = pulse.score(event)
        if score is None:
            run.rejected += 1
            continue
        run.labels.append(row.label)
        run.users.append(event["user_id"])
        run.pulse_wall_s.append(wall)
        run.pulse_cpu_s.append(cpu)
        run.predictions[PULSE].append("positive" if score >= 0 else "negative")
        for method, baseline in baselines.items():
            run.predictions[method].append(baseline.predict(row.text))
            baseline.learn(row.text, row.label)
    run.explanation_errors = dict(pulse.max_errors)
    model = pulse.replay.engine.sentiment
    run.model_state = {"intercept": model.intercept, "lexicon_coef": model.lexicon_coef,
                       "evidence_coef": model.evidence_coef, "learned": model.n_learned,
                       "buckets_used": model.counts.buckets_used}
    return run


@dataclass
class ThroughputRun:
    """Pulse's step time per message over the long run, and the paired model check."""

    messages: int
    sets: list[str]
    wall_s: list[float]
    cpu_s: list[float]
    explanation_errors: dict[str, float]
    distinct_tokens_first_cycle: int
    model_seconds: dict[str, float]  # "early" / "late": the sentiment model's time on the same messages


def throughput_run(data: dict[str, list[LabelledText]], seed: int, chat_users: int, n: int,
                   progress: bool = False) -> ThroughputRun:
    """`n` messages of the pooled sets, cycled (cycle k shuffled with seed + k), through one fresh engine.

    The sentiment model is also copied (pickled) after the first and after 90% of the messages; at the end
    both copies explain and learn the last 10% of the messages, alternately in chunks, so their costs are
    compared under the same machine load (the machine is shared: wall-clock windows minutes apart are not).
    """
    import pickle

    from online_models.text import features

    pool = [row for name in data for row in data[name]]
    pulse = PulseStep(seed)
    wall_s: list[float] = []
    cpu_s: list[float] = []
    window = max(int(n * WINDOW), 1)
    copies: dict[str, bytes] = {}
    tail: list[LabelledText] = []
    for index, row in enumerate(progress_bar(_cycled(pool, seed, n), progress, "sentiment throughput", total=n,
                                             unit="msg")):
        if index in (window, n - window):
            copies["early" if index == window else "late"] = pickle.dumps(pulse.replay.engine.sentiment)
        if index >= n - window:
            tail.append(row)
        _, wall, cpu = pulse.score(chat_event("all", index, row, chat_users))
        wall_s.append(wall)
        cpu_s.append(cpu)
    distinct = {token for row in pool for token in features(row.text)}
    return ThroughputRun(n, list(data), wall_s, cpu_s, dict(pulse.max_errors), len(distinct),
                         _paired_model_seconds(copies, tail) if len(copies) == 2 else {})


def _paired_model_seconds(copies: dict[str, bytes], rows: list[LabelledText], chunks: int = 10) -> dict[str, float]:
    """CPU seconds each model copy takes to explain then learn `rows`, timed in alternating chunks."""
    import pickle

    models = {name: pickle.loads(blob) for name, blob in copies.items()}
    seconds = dict.fromkeys(models, 0.0)
    size = max(len(rows) // chunks, 1)
    for start in range(0, len(rows), size):
        for name, model in models.items():
            began = time.process_time()
            for row in rows[start:start + size]:
                model.explain_one(row.text)
                model.learn_one(row.text, row.label)
            seconds[name] += time.process_time() - began
    return seconds


def _cycled(pool: list[LabelledText], seed: int, n: int) -> Iterator[LabelledText]:
    cycle = 0
    while n > 0:
        for row in shuffled(pool, seed + cycle)[:n]:
            yield row
            n -= 1
        cycle += 1


def rates(seconds: list[float], share: float = WINDOW) -> tuple[float, float]:
    """Messages per second over the first and the last `share` of a run's per-message times.

    >>> rates([0.001] * 90 + [0.002] * 10)
    (1000.0, 500.0)
    """
    k = max(int(len(seconds) * share), 1)
    return k / math.fsum(seconds[:k]), k / math.fsum(seconds[-k:])


def accuracy_intervals(run: SetRun, resampler: GroupResampler, mask: np.ndarray | None) -> dict[str, dict]:
    """Per method: accuracy and macro-F1 with their bootstrap intervals (over `mask`'s messages)."""
    labels = np.array([label == "positive" for label in run.labels])
    out = {}
    for method, predicted in run.predictions.items():
        positive = np.array([p == "positive" for p in predicted])
        correct = (positive == labels).astype(float)
        out[method] = {"accuracy": resampler.mean(correct, mask),
                       "macro_f1": resampler.interval(weighted_macro_f1(labels, positive), mask)}
    return out


def paired_difference(run: SetRun, resampler: GroupResampler, mask: np.ndarray, a: str,
                      b: str) -> tuple[float, float, float]:
    """Accuracy of method `a` minus method `b` on the same messages, with a paired bootstrap interval."""
    labels = np.array(run.labels)
    right_a = (np.array(run.predictions[a]) == labels).astype(float)
    diff = right_a - (np.array(run.predictions[b]) == labels).astype(float)
    return resampler.mean(diff, mask)


def weighted_macro_f1(y: np.ndarray, predicted: np.ndarray) -> Callable[[np.ndarray], float]:
    """A statistic: the mean of both classes' F1 under record weights.

    >>> f1 = weighted_macro_f1(np.array([True, True, False, False]), np.array([True, False, False, False]))
    >>> round(f1(np.ones(4)), 4)
    0.7333
    """
    tp = y & predicted
    tn = ~y & ~predicted
    fp = ~y & predicted
    fn = y & ~predicted

    def statistic(weights: np.ndarray) -> float:
        scores = []
        for hits, false_alarms, misses in ((tp, fp, fn), (tn, fn, fp)):
            h = float(weights @ hits)
            denominator = 2 * h + float(weights @ false_alarms) + float(weights @ misses)
            scores.append(2 * h / denominator if denominator > 0 else 0.0)
        return float(np.mean(scores))

    return statistic
