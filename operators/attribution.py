"""Outcome attribution: join clicks, carts and purchases to the decision that preceded them.

An outcome event joins the decision named by its `decision_id`, or else the user's most recent
decision within the wait window. A decision is settled when its window closes: its reward is the
best outcome joined (default 0 when none was), and the join result is logged and fed to learning.
All times are event times (epoch ms), so replays and in-process evaluation attribute identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OUTCOME_REWARD: dict[str, float] = {"click": 0.3, "add_to_cart": 0.6, "purchase": 1.0}
DEFAULT_REWARD = 0.0
MAX_PENDING = 32  # per user; the oldest is settled early beyond this


@dataclass(slots=True)
class PendingDecision:
    """A decision waiting for its outcomes."""

    decision_id: str
    decided_ms: int
    action: str
    propensity: float
    items: tuple[str, ...]
    context: dict[str, float]
    reward: float = DEFAULT_REWARD
    outcomes: list[str] = field(default_factory=list)
    joined_by: str = "none"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # By constructor arguments: several times faster to pickle than the slots' default state protocol.
        return PendingDecision, (self.decision_id, self.decided_ms, self.action, self.propensity, self.items,
                                 self.context, self.reward, self.outcomes, self.joined_by)


@dataclass(frozen=True, slots=True)
class Attribution:
    """A settled decision: the reward it earned and which outcome events earned it."""

    user_id: str
    decision: PendingDecision
    settled_ms: int
    reason: str  # "window closed" or "evicted" (too many pending decisions)

    def to_dict(self) -> dict[str, Any]:
        """The join result as logged to the outcomes topic."""
        d = self.decision
        return {
            "schema": "pulse.outcome/1", "decision_id": d.decision_id, "user_id": self.user_id,
            "action": d.action, "propensity": d.propensity, "reward": d.reward, "outcome_event_ids": d.outcomes,
            "joined_by": d.joined_by, "decided_ts": d.decided_ms, "settled_ts": self.settled_ms, "reason": self.reason,
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

    def __reduce__(self) -> tuple[type, tuple[list[PendingDecision]]]:
        return PendingDecisions, (self.entries,)

    def copy(self) -> "PendingDecisions":
        """An independent copy (pending decisions are mutated as outcomes join)."""
        clone = PendingDecisions()
        clone.entries = [
            PendingDecision(p.decision_id, p.decided_ms, p.action, p.propensity, p.items, p.context, p.reward,
                            list(p.outcomes), p.joined_by)
            for p in self.entries
        ]
        return clone

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
            in_window = [p for p in self.entries if 0 <= event["ts"] - p.decided_ms <= window_ms]
            target, how = (in_window[-1], "window") if in_window else (None, "")
        if target is None:
            return None
        target.reward = max(target.reward, reward)
        target.outcomes.append(event["event_id"])
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
