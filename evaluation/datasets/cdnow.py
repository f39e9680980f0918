"""`pulse evaluate --dataset cdnow`: churn on real purchase histories (CDNOW, 23,570 customers, 1997-98).

The data: `lifetimes/datasets/CDNOW_master.txt` of the `lifetimes` 0.11.3 wheel (customer, date, CDs, dollars;
69,659 rows), fetched into the cache at evaluation time (evaluation.fetch), never committed. Rows of one
customer and day are one purchase (67,591 purchases).

The protocol (issue 22): each purchase is a `purchase` event; each purchase's churn label is a
`churn_outcome` sent when it becomes known: a next purchase within H days makes it "not churned", sent at
that purchase (just before it); none makes it "churned", sent on day H + 1. A purchase whose H days reach
past the data's last day can only get a "not churned" label (a return is seen, a churn is not): such labels
are sent, as a live site would, but not scored, since keeping only the returns would select labels by their
outcome (every one of them "not churned"). Everything is replayed in time order through the dataflow's
parser and per-user step (evaluation.replay: idle users shrink to their long-term record after the TTL,
timers fire in event time), with the engine told the labels' horizon (`PULSE_CHURN_HORIZON_S` = H days).

A label is scored with the probability of the decision served at the customer's last purchase before it
(what a site would have acted on). Baselines in the same run score the same purchases with what they knew
then: recency (days since the previous purchase), frequency (purchases so far, negated) and online logistic
regressions on recency, frequency and monetary value (`cdnow_baselines`).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.datasets.cdnow_baselines import Baselines
from evaluation.fetch import PackageFile, package_file
from evaluation.progress import progress_bar
from evaluation.replay import Replay
from operators.engine import EngineConfig, PersonalizationEngine
from operators.features import CHURN_FEATURES
from pulse.config import Settings

__all__ = ["DESCRIPTION", "Purchase", "add_arguments", "churn_events", "evaluate", "read_purchases", "replay"]

DESCRIPTION = ("CDNOW purchase histories (lifetimes 0.11.3; 23,570 customers, 1997-98) as purchases and churn labels "
               "H days later")
SOURCE = PackageFile("lifetimes", "0.11.3", "lifetimes/datasets/CDNOW_master.txt")
MS_PER_DAY = 86_400_000
EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()
ITEM, CATEGORY = "cdnow-cd", "music"  # CDNOW names no items: every purchase is of one catalogue item


@dataclass(frozen=True, slots=True)
class Purchase:
    """One customer's purchases of one day (the data's rows of that day summed)."""

    customer: str
    day: int  # proleptic Gregorian ordinal
    dollars: float
    cds: int


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Options of `--dataset cdnow`."""
    group.add_argument("--horizon-days", type=int, default=180,
                       help="cdnow: a purchase is 'churned' when no purchase follows within this many days "
                            "(default 180)")


def read_purchases(path: Path, limit: int | None = None) -> list[Purchase]:
    """The first `limit` rows (all by default) of CDNOW_master.txt, one `Purchase` per customer and day.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "cdnow.txt"
    >>> _ = f.write_text(" 00002 19970112  1   12.00\\n 00002 19970112  5   77.00\\n 00003 19970102  2   20.76\\n")
    >>> [(p.customer, p.cds, p.dollars) for p in read_purchases(f)]
    [('00002', 6, 89.0), ('00003', 2, 20.76)]
    """
    totals: dict[tuple[str, int], list[float]] = {}
    with open(path) as rows:
        for number, row in enumerate(rows):
            if limit is not None and number >= limit:
                break
            fields = row.split()
            if len(fields) != 4 or not fields[1].isdigit():
                continue  # the header
            customer, date, cds, dollars = fields
            day = datetime.date(int(date[:4]), int(date[4:6]), int(date[6:])).toordinal()
            total = totals.setdefault((customer, day), [0.0, 0.0])
            total[0] += float(dollars)
            total[1] += int(cds)
    return [Purchase(customer, day, round(dollars, 2), int(cds)) for (customer, day), (dollars, cds) in totals.items()]


def churn_events(purchases: Iterable[Purchase], horizon_days: int) -> list[dict[str, Any]]:
    """Purchase events and churn labels in replay order (time; at one time labels before purchases).

    >>> day = datetime.date(1997, 1, 1).toordinal()
    >>> events = churn_events([Purchase("1", day, 10.0, 1), Purchase("1", day + 30, 5.0, 1),
    ...                        Purchase("2", day, 8.0, 1), Purchase("2", day + 400, 8.0, 1)], horizon_days=180)
    >>> [(e["type"], e["user_id"], (e["ts"] // 86_400_000) - (day - EPOCH_DAY), e.get("churned")) for e in events]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('purchase', 'cdnow-1', 0, None), ('purchase', 'cdnow-2', 0, None), ('churn_outcome', 'cdnow-1', 30, False),
     ('purchase', 'cdnow-1', 30, None), ('churn_outcome', 'cdnow-2', 181, True),
     ('churn_outcome', 'cdnow-1', 211, True), ('purchase', 'cdnow-2', 400, None)]
    """
    by_customer: dict[str, list[Purchase]] = defaultdict(list)
    for purchase in purchases:
        by_customer[purchase.customer].append(purchase)
    last_day = max((p.day for ps in by_customer.values() for p in ps), default=0)
    keyed: list[tuple[int, int, str, dict[str, Any]]] = []
    for customer, history in by_customer.items():
        history.sort(key=lambda p: p.day)
        user = f"cdnow-{customer}"
        for index, p in enumerate(history):
            keyed.append((p.day, 1, customer, {
                "event_id": f"cdnow-p-{customer}-{p.day}", "user_id": user, "type": "purchase", "ts": _ms(p.day),
                "item_id": ITEM, "category": CATEGORY, "price": p.dollars, "quantity": p.cds}))
            following = history[index + 1] if index + 1 < len(history) else None
            if following is not None and following.day - p.day <= horizon_days:
                label_day, churned = following.day, False
            elif p.day + horizon_days <= last_day:
                label_day, churned = p.day + horizon_days + 1, True
            else:
                continue  # censored: the data ends before the label is known
            keyed.append((label_day, 0, customer, {
                "event_id": f"cdnow-l-{customer}-{p.day}", "user_id": user, "type": "churn_outcome",
                "ts": _ms(label_day), "churned": churned, "purchase_day": p.day}))
    keyed.sort(key=lambda k: k[:3])
    return [event for *_, event in keyed]


def _ms(day: int) -> int:
    return (day - EPOCH_DAY) * MS_PER_DAY


@dataclass
class Run:
    """Every label's scores and what the replay did."""

    horizon_days: int
    customers: list[str] = field(default_factory=list)  # per scored label
    label_days: list[int] = field(default_factory=list)
    purchase_days: list[int] = field(default_factory=list)
    churned: list[bool] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # method -> per label
    purchases: int = 0
    labels: int = 0  # every label sent, scored or not
    unscored: int = 0  # "not churned" labels of purchases whose horizon passes the data's end
    labels_on_served_features: int = 0  # labels whose learned features equal the served decision's
    win_backs: int = 0
    rejected: int = 0
    restored: int = 0  # events that met an idle customer's long-term record
    elapsed_s: float = 0.0
    engine: dict[str, Any] = field(default_factory=dict)


PULSE = "Pulse (served probability)"


def replay(events: list[dict[str, Any]], horizon_days: int, settings: Settings, progress: bool = True) -> Run:
    """Replay `events` through the engine's parser and per-user step, with the baselines beside it."""
    started = time.perf_counter()
    engine = PersonalizationEngine(EngineConfig(
        settings.top_k, settings.churn_threshold, settings.escalation_threshold, settings.seed,
        attribution_window_ms=int(settings.attribution_window_s * 1000), nba_epsilon=settings.nba_epsilon,
        nba_warmup=settings.nba_warmup, **{**settings.churn_config(), "churn_horizon_ms": horizon_days * MS_PER_DAY},
        offer_min_confidence=settings.offer_min_confidence, winback_min_idle_ms=settings.winback_min_idle_s * 1000,
        winback_channel=settings.winback_channel))
    pulse = Replay(engine, idle_ttl_s=settings.decision_ttl_s, retention_s=settings.long_term_retention_s)
    pulse.item({"event_id": "cdnow-item", "type": "item_upsert", "item_id": ITEM, "category": CATEGORY,
                "ts": events[0]["ts"] if events else 0})
    baselines = Baselines(horizon_days)
    run = Run(horizon_days)
    served: dict[str, tuple[float, dict[str, float]]] = {}  # customer -> the last purchase's decision
    last_day = max((e["ts"] // MS_PER_DAY + EPOCH_DAY for e in events if e["type"] == "purchase"), default=0)
    for event in progress_bar(events, progress, f"cdnow H={horizon_days}"):
        user = event["user_id"]
        customer = user.removeprefix("cdnow-")
        day = event["ts"] // MS_PER_DAY + EPOCH_DAY
        baselines.advance(day)
        run.restored += user in pulse.logics and pulse.logics[user].long_term
        decision = pulse.event(event)
        if decision is None:
            run.rejected += 1
            continue
        if event["type"] == "purchase":
            run.purchases += 1
            features = decision["features"]
            served[customer] = (decision["churn"]["probability"], {name: features[name] for name in CHURN_FEATURES})
            baselines.purchase(customer, day, event["price"])
            continue
        probability, served_features = served[customer]
        learned = {name: decision["features"][name] for name in CHURN_FEATURES}
        run.labels += 1
        run.labels_on_served_features += learned == served_features
        scores = baselines.label(customer, event["churned"], event["purchase_day"])
        if event["purchase_day"] + horizon_days > last_day:  # only a return could be known: outcome-selected
            run.unscored += 1
            continue
        run.customers.append(customer)
        run.label_days.append(day)
        run.purchase_days.append(event["purchase_day"])
        run.churned.append(event["churned"])
        run.scores[PULSE].append(probability)
        for method, score in scores.items():
            run.scores[method].append(score)
    pulse.advance(pulse.now_ms)
    run.win_backs = sum(d["action"]["name"] == "win_back_offer" for d in pulse.timer_decisions)
    run.rejected += len(pulse.rejected)
    model = engine.churn
    run.engine = {"churn_model": {"version": model.version, "optimizer": model.optimizer,
                                  "learning_rate": model.learning_rate,
                                  "l2": model.l2, "intercept_lr": model.intercept_lr, "bound": model.bound,
                                  "decay_steps": model.decay_steps, "frequency_prior": model.frequency_prior,
                                  "generation": len(engine.churn_adaptive.adaptations)},
                  "labels_learned_before_their_horizon": engine.churn_labels.learned_early,
                  "idle_ttl_s": settings.decision_ttl_s, "long_term_retention_s": settings.long_term_retention_s,
                  "features": list(CHURN_FEATURES)}
    run.elapsed_s = time.perf_counter() - started
    return run


def evaluate(args: argparse.Namespace) -> int:
    """Fetch CDNOW, replay it with the baselines, write report.md, report.json and plots; print the headline."""
    from evaluation.datasets.cdnow_report import write_report

    if args.horizon_days < 1:
        print("pulse evaluate: --horizon-days must be >= 1", file=sys.stderr)
        return 2
    path = package_file(SOURCE, quiet=args.no_progress)
    purchases = read_purchases(path, args.limit)
    events = churn_events(purchases, args.horizon_days)
    run = replay(events, args.horizon_days, Settings.from_env(), progress=not args.no_progress)
    out = Path(args.out or Path("reports") / f"cdnow-h{args.horizon_days}")
    with open(path) as rows:
        n_rows = sum(1 for _ in rows) - 1  # less the header
    config = {"horizon_days": args.horizon_days, "limit": args.limit, "seed": args.seed, "bootstrap": args.bootstrap,
              "source": f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}",
              "rows_purchases_customers": [n_rows if args.limit is None else min(args.limit, n_rows),
                                           len(purchases), len({p.customer for p in purchases})]}
    summary = write_report(run, config, out)
    headline = summary["acceptance"]
    print(f"report: {out / 'report.md'} ({run.elapsed_s:.0f} s replay); {len(run.churned):,} labels; "
          f"Pulse vs RFM logistic: {headline['met']} of {headline['cells']} cells met")
    return 0
