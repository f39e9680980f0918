"""`pulse audit`: how actions and offers are distributed across segments and simulator groups.

Reads decisions (the decisions topic, or a JSON-lines file of decisions), keeps one per `decision_id`
(replays after a restart repeat decisions), and for every grouping — the engine's behaviour `segment`,
`personalized`, and, given the simulation's `--sim-users/--sim-seed`, the simulated users' hidden
engagement, price sensitivity, mood and churn risk — tabulates each group's share of every action.
An action is flagged when, among groups with at least `min_decisions` decisions, the lowest group rate
divided by the highest is below `threshold` (0.8 is the "four-fifths rule") and the rates differ by at
least `min_gap` (so rare actions with tiny rates do not flag on noise).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from online_models.actions import OFFER_ACTIONS


@dataclass
class GroupStats:
    """Decisions of one group and how many took each action."""

    decisions: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def rate(self, action: str) -> float:
        """Share of this group's decisions that took `action`."""
        return self.actions[action] / self.decisions if self.decisions else 0.0


@dataclass(frozen=True, slots=True)
class Disparity:
    """An action whose rate differs too much between the groups of one dimension."""

    dimension: str
    action: str
    low_group: str
    low_rate: float
    high_group: str
    high_rate: float

    @property
    def ratio(self) -> float:
        """Lowest over highest group rate."""
        return self.low_rate / self.high_rate if self.high_rate else 1.0


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Decisions from a JSON-lines file (blank lines skipped)."""
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                yield orjson.loads(line)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> Iterator[dict[str, Any]]:
    """Every decision now in `topic` (each partition up to its end offset at start; gives up after `timeout_s`)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"pulse-audit-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in partitions}
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    yield orjson.loads(message.value())
                    if message.offset() + 1 >= ends[message.partition()]:
                        pending.discard(message.partition())
        if pending:
            raise TimeoutError(f"partitions {sorted(pending)} of {topic} not read to their end in {timeout_s:.0f}s")
    finally:
        consumer.close()


def simulator_groups(users: int, seed: int, items: int = 500) -> dict[str, dict[str, str]]:
    """Hidden-truth groups of the simulation's initial users: user_id -> {dimension: group}."""
    from simulator import SimulationConfig, World

    world = World(SimulationConfig(users=users, items=items, seed=seed))
    return {
        user.user_id: {
            "sim:engagement": "low" if user.engagement < 1 / 3 else "medium" if user.engagement < 2 / 3 else "high",
            "sim:price_sensitivity": "low" if user.price_sensitivity < 1.1 else "high",
            "sim:mood": "negative" if user.mood < 0 else "positive",
            "sim:churn_risk": "high" if user.churn_risk >= 0.5 else "low",
        }
        for user in world.users
    }


def tabulate(decisions: Iterable[dict[str, Any]],
             groups: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, dict[str, GroupStats]]:
    """dimension -> group -> stats, over distinct, non-erasure decisions."""
    table: dict[str, dict[str, GroupStats]] = defaultdict(lambda: defaultdict(GroupStats))
    seen: set[str] = set()
    for decision in decisions:
        if decision.get("forgotten") or decision["decision_id"] in seen:
            continue
        seen.add(decision["decision_id"])
        action = decision["action"]["name"]
        labels = {"segment": str(decision.get("segment", "none")) if decision["personalized"] else "non-personalized",
                  "personalized": str(decision["personalized"]).lower()}
        if groups is not None:
            labels.update(groups.get(decision["user_id"], {}))
        for dimension, group in labels.items():
            stats = table[dimension][group]
            stats.decisions += 1
            stats.actions[action] += 1
            stats.actions["any offer"] += action in OFFER_ACTIONS
    return table


def disparities(table: Mapping[str, Mapping[str, GroupStats]], threshold: float, min_decisions: int,
                min_gap: float) -> list[Disparity]:
    """Actions whose lowest/highest group rate falls below `threshold` within a dimension."""
    found = []
    for dimension, by_group in table.items():
        eligible = {name: stats for name, stats in by_group.items() if stats.decisions >= min_decisions}
        if len(eligible) < 2:
            continue
        for action in sorted({a for stats in eligible.values() for a in stats.actions}):
            rates = {name: stats.rate(action) for name, stats in eligible.items()}
            low, high = min(rates, key=rates.__getitem__), max(rates, key=rates.__getitem__)
            item = Disparity(dimension, action, low, rates[low], high, rates[high])
            if item.ratio < threshold and item.high_rate - item.low_rate >= min_gap:
                found.append(item)
    return found


def render(table: Mapping[str, Mapping[str, GroupStats]], flagged: list[Disparity], threshold: float) -> str:
    """A plain-text report."""
    lines = []
    for dimension in sorted(table):
        by_group = table[dimension]
        actions = sorted({a for stats in by_group.values() for a in stats.actions})
        lines.append(f"\n{dimension}")
        lines.append(f"  {'group':<18}{'decisions':>10}" + "".join(f"{a[:16]:>18}" for a in actions))
        for group in sorted(by_group):
            stats = by_group[group]
            rates = "".join(f"{stats.rate(a):>18.3f}" for a in actions)
            lines.append(f"  {group[:18]:<18}{stats.decisions:>10}{rates}")
    lines.append(f"\n{len(flagged)} disparities (lowest/highest group rate < {threshold}):")
    for item in flagged:
        lines.append(f"  {item.dimension}: '{item.action}' {item.low_group} {item.low_rate:.3f} vs {item.high_group} "
                     f"{item.high_rate:.3f} (ratio {item.ratio:.2f})")
    return "\n".join(lines)


def to_json(table: Mapping[str, Mapping[str, GroupStats]], flagged: list[Disparity]) -> dict[str, Any]:
    """The report as JSON-able data."""
    return {
        "groups": {d: {g: {"decisions": s.decisions, "rates": {a: s.rate(a) for a in s.actions}} for g, s in by.items()}
                   for d, by in table.items()},
        "disparities": [{"dimension": i.dimension, "action": i.action, "low_group": i.low_group, "low_rate": i.low_rate,
                         "high_group": i.high_group, "high_rate": i.high_rate,
                         "ratio": i.ratio if math.isfinite(i.ratio) else None} for i in flagged],
    }
