"""Outcome attribution: join clicks, carts and purchases to the decision that preceded them.

An outcome event joins the decision named by its `decision_id`, or else the user's most recent
decision within the wait window. A decision is settled when its window closes: its reward is the
best outcome joined (default 0 when none was), and the join result is logged and fed to learning.
All times are event times (epoch ms), so replays and in-process evaluation attribute identically.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

OUTCOME_REWARD: dict[str, float] = {"click": 0.3, "add_to_cart": 0.6, "purchase": 1.0}
DEFAULT_REWARD = 0.0
MAX_PENDING = 32  # per user; the oldest is settled early beyond this


class OutcomeLabels(NamedTuple):
    """What a settled decision's outcome record says about it besides the reward (one shared tuple per combination).

    `personalized` is False for a holdout's decisions: the policy did not choose them, so it does not learn
    from their rewards.
    """

    experiment: str
    arm: str
    personalized: bool
    event_type: str


class PendingDecision:
    """A decision waiting for its outcomes.

    A user keeps up to MAX_PENDING of these in state, so the policy context they were made in is kept
    packed: its names as one tuple shared by every decision with the same names, its values as bytes
    (one object instead of a dict and a float per feature: about a third of the memory per user).

    `labels` (experiment, arm, ...) is one tuple shared by every decision with the same labels, and `revenue`
    sums the prices of the purchases joined.

    >>> PendingDecision("d-1", 0, "recommend", 1.0, ("i1",), {"churn": 0.25}).context
    {'churn': 0.25}
    """

    __slots__ = ("decision_id", "decided_ms", "action", "propensity", "items", "_context_names", "_context_values",
                 "reward", "outcomes", "joined_by", "labels", "revenue")

    def __init__(self, decision_id: str, decided_ms: int, action: str, propensity: float, items: tuple[str, ...],
                 context: Mapping[str, float], reward: float = DEFAULT_REWARD, outcomes: tuple[str, ...] = (),
                 joined_by: str = "none", labels: OutcomeLabels | None = None, revenue: float = 0) -> None:
        self.decision_id = decision_id
        self.decided_ms = decided_ms
        self.action = action
        self.propensity = propensity
        self.items = items
        names = tuple(context)
        self._context_names = _SHARED_NAMES.setdefault(names, names)
        self._context_values = array("d", context.values()).tobytes()
        self.reward = reward
        self.outcomes = outcomes  # ids of the outcome events joined (a tuple: most decisions get none)
        self.joined_by = joined_by
        self.labels = None if labels is None else _SHARED_LABELS.setdefault(labels, labels)
        self.revenue = revenue

    @property
    def context(self) -> dict[str, float]:
        """The policy context the decision was made in (feature name -> value)."""
        values = array("d")
        values.frombytes(self._context_values)
        return dict(zip(self._context_names, values))

    def __reduce__(self) -> tuple[Callable[..., PendingDecision], tuple[Any, ...]]:
        return _restore_pending, self._state()

    def _state(self) -> tuple[Any, ...]:
        return (self.decision_id, self.decided_ms, self.action, self.propensity, self.items, self._context_names,
                self._context_values, self.reward, self.outcomes, self.joined_by, self.labels, self.revenue)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PendingDecision) and self._state() == other._state()

    def __repr__(self) -> str:
        return (f"PendingDecision({self.decision_id!r}, {self.decided_ms}, {self.action!r}, {self.propensity}, "
                f"{self.items!r}, {self.context!r}, {self.reward}, {self.outcomes!r}, {self.joined_by!r}, "
                f"{self.labels!r}, {self.revenue})")


_SHARED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct set of context names
_SHARED_LABELS: dict[OutcomeLabels, OutcomeLabels] = {}  # one tuple per distinct experiment, arm and event type


def _restore_pending(decision_id: str, decided_ms: int, action: str, propensity: float, items: tuple[str, ...],
                     names: tuple[str, ...], values: bytes, reward: float, outcomes: tuple[str, ...],
                     joined_by: str, labels: OutcomeLabels | None = None, revenue: float = 0) -> PendingDecision:
    """Unpickle a `PendingDecision` (see `PendingDecision.__reduce__`): no repacking, names and labels shared again.

    Snapshots from before experiments (10 fields) restore without labels.
    """
    pending = PendingDecision.__new__(PendingDecision)
    pending.decision_id, pending.decided_ms = decision_id, decided_ms
    pending.action, pending.propensity, pending.items = action, propensity, items
    pending._context_names, pending._context_values = _SHARED_NAMES.setdefault(names, names), values
    pending.reward, pending.outcomes, pending.joined_by = reward, outcomes, joined_by
    pending.labels = None if labels is None else _SHARED_LABELS.setdefault(labels, labels)
    pending.revenue = revenue
    return pending


def _restore_pending_columns(decision_ids: tuple[str, ...], decided: tuple[int, ...], actions: tuple[str, ...],
                             propensities: tuple[float, ...], items: tuple[tuple[str, ...], ...],
                             names: tuple[tuple[str, ...], ...], values: bytes, rewards: tuple[float, ...],
                             outcomes: tuple[tuple[str, ...], ...], joined_by: tuple[str, ...],
                             labels: tuple[OutcomeLabels | None, ...], revenues: tuple[float, ...]) -> PendingDecisions:
    """Unpickle `PendingDecisions` from its columns (see `PendingDecisions.__reduce__`)."""
    entries, start = [], 0
    for row, context_names in enumerate(names):
        end = start + 8 * len(context_names)
        entries.append(_restore_pending(decision_ids[row], decided[row], actions[row], propensities[row], items[row],
                                        context_names, values[start:end], rewards[row], outcomes[row], joined_by[row],
                                        labels[row], revenues[row]))
        start = end
    return PendingDecisions(entries)


@dataclass(frozen=True, slots=True)
class Attribution:
    """A settled decision: the reward it earned and which outcome events earned it."""

    user_id: str
    decision: PendingDecision
    settled_ms: int
    reason: str  # "window closed" or "evicted" (too many pending decisions)

    def to_dict(self) -> dict[str, Any]:
        """The join result as logged to the outcomes topic."""
        d, labels = self.decision, self.decision.labels
        return {
            "schema": "pulse.outcome/1", "decision_id": d.decision_id, "user_id": self.user_id,
            "action": d.action, "propensity": d.propensity, "reward": d.reward, "outcome_event_ids": list(d.outcomes),
            "joined_by": d.joined_by, "decided_ts": d.decided_ms, "settled_ts": self.settled_ms, "reason": self.reason,
            "revenue": float(d.revenue),
            "event_type": None if labels is None else labels.event_type,
            "experiment": None if labels is None else {"name": labels.experiment, "arm": labels.arm},
        }


class PendingDecisions:
    """A user's decisions awaiting outcomes, oldest first (bounded).

    >>> p = PendingDecisions()
    >>> p.add(PendingDecision("d-1", 0, "recommend", 1.0, ("i1",), {}), "u")
    []
    >>> p.join({"type": "click", "event_id": "e2", "item_id": "i1", "ts": 10}, window_ms=100)
    'd-1'
    >>> [a.decision.reward for a in p.settle_expired(200, window_ms=100, user_id="u")]
    [0.3]
    """

    __slots__ = ("entries",)

    def __init__(self, entries: list[PendingDecision] | None = None) -> None:
        self.entries: list[PendingDecision] = [] if entries is None else entries

    def __reduce__(self) -> tuple[Callable[..., PendingDecisions], tuple[Any, ...]]:
        """Pickled as columns (one tuple per field, the contexts' values as one bytes): a user's snapshot is taken at
        every epoch, and one reduction instead of one per decision pickles about 2.5x faster."""
        entries = self.entries
        return _restore_pending_columns, (
            tuple([p.decision_id for p in entries]), tuple([p.decided_ms for p in entries]),
            tuple([p.action for p in entries]), tuple([p.propensity for p in entries]),
            tuple([p.items for p in entries]), tuple([p._context_names for p in entries]),
            b"".join([p._context_values for p in entries]), tuple([p.reward for p in entries]),
            tuple([p.outcomes for p in entries]), tuple([p.joined_by for p in entries]),
            tuple([p.labels for p in entries]), tuple([p.revenue for p in entries]),
        )

    def add(self, pending: PendingDecision, user_id: str) -> list[Attribution]:
        """Start waiting for a decision's outcomes; returns decisions settled early to stay bounded."""
        self.entries.append(pending)
        evicted = []
        while len(self.entries) > MAX_PENDING:
            evicted.append(Attribution(user_id, self.entries.pop(0), pending.decided_ms, "evicted"))
        return evicted

    def join(self, event: dict[str, Any], window_ms: int) -> str | None:
        """Join an outcome event to a pending decision; returns the decision id it joined, if any."""
        reward = OUTCOME_REWARD.get(event["type"])
        if reward is None:
            return None
        target, how = None, ""
        wanted = event.get("decision_id")
        if wanted is not None:
            target = next((p for p in self.entries if p.decision_id == wanted), None)
            how = "decision_id"
        if target is None:
            ts = event["ts"]  # the latest decision (in list order) whose window holds the event
            target = next((p for p in reversed(self.entries) if 0 <= ts - p.decided_ms <= window_ms), None)
            how = "window" if target is not None else ""
        if target is None:
            return None
        target.reward = max(target.reward, reward)
        if event["type"] == "purchase":
            target.revenue += event.get("price") or 0
        target.outcomes = (*target.outcomes, event["event_id"])
        target.joined_by = how if target.joined_by in ("none", how) else "decision_id+window"
        return target.decision_id

    def settle_expired(self, now_ms: int, window_ms: int, user_id: str) -> list[Attribution]:
        """Settle every decision whose window closed before `now_ms`."""
        settled = []
        while self.entries and now_ms - self.entries[0].decided_ms > window_ms:
            settled.append(Attribution(user_id, self.entries.pop(0), now_ms, "window closed"))
        return settled

    def settle_all(self, now_ms: int, user_id: str, reason: str) -> list[Attribution]:
        """Settle everything still pending (the user expires or is forgotten)."""
        settled = [Attribution(user_id, p, now_ms, reason) for p in self.entries]
        self.entries = []
        return settled

    def next_deadline(self, window_ms: int) -> int | None:
        """Event time at which the oldest pending decision's window closes."""
        return self.entries[0].decided_ms + window_ms + 1 if self.entries else None
