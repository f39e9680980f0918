"""Live uplift per experiment arm, aggregated from the outcome log with bounded memory.

Every settled decision's outcome record (`pulse.outcome/1`, operators/attribution.py) names its
experiment and arm. `UpliftAggregator.add` folds each into its arm's sums, kept in `BUCKETS` hash buckets
of users (a bucket is a deterministic hash of the user id, independent of the arm), from which the
report derives each metric with a per-user-clustered 95% interval (operators/uplift_stats.py):

- `click_rate`, `cart_rate`, `purchase_rate` (conversion per decision): decisions acted on (an outcome event
  named the decision) with at least a click / an add-to-cart / a purchase, per decision;
- `attributed_rate` (what the policy learns from): decisions with any outcome joined, by `decision_id` or
  within the wait window (reward > 0), per decision;
- `revenue_per_user`: purchase revenue joined to decisions (either way), per user;
- `offer_acceptance` (offers accepted): offer decisions (`retention_offer`, `discount`) followed by a click or
  more, per offer;
- `offers_per_user`: offer decisions per user;
- `sessions_per_user` (retention proxy: how often users come back): decisions on `session_start` events, per
  user.

Users are counted once per experiment and arm: a table of 64-bit fingerprints (a keyed hash whose key is
drawn at random when the process starts and never stored, so the table names nobody), 8 bytes a slot at a
load of at most 1/2. It stops growing at `max_users` users per experiment: later users' outcomes are left
out of the analysis (assignment is random, so the first `max_users` users are a random sample of every
arm). Memory is therefore bounded by `max_users` (16 MB per million users) plus `BUCKETS` x 9 floats per
arm; at most `MAX_EXPERIMENTS` experiments are kept (the least recently updated one is dropped).
Outcomes redelivered after an engine's recovery (the outcome log is at-least-once) are skipped when
their decision was seen among the last `DEDUP_WINDOW` outcomes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_models.actions import OFFER_ACTIONS
from operators.attribution import OUTCOME_REWARD
from operators.experiments import Experiment
from operators.uplift_stats import (
    Estimate,
    difference,
    ratio_estimate,
    relative_lift,
    sample_ratio_check,
)

BUCKETS = 1024
MAX_EXPERIMENTS = 4
DEDUP_WINDOW = 100_000
_BUCKET_KEY = hashlib.sha256(b"pulse uplift buckets").digest()
# Columns of an arm's per-bucket sums.
DECISIONS, CLICKED, CARTED, PURCHASED, ATTRIBUTED, REVENUE, OFFERS, ACCEPTED, SESSIONS, USERS = range(10)
COLUMNS = 10
CLICK, CART, PURCHASE = OUTCOME_REWARD["click"], OUTCOME_REWARD["add_to_cart"], OUTCOME_REWARD["purchase"]
# name: (numerator column, denominator column, what it measures)
METRICS: dict[str, tuple[int, int, str]] = {
    "click_rate": (CLICKED, DECISIONS, ("decisions acted on with a click (or a cart or purchase) naming the decision, "
                                        "per decision")),
    "cart_rate": (CARTED, DECISIONS, "decisions acted on with an add-to-cart (or a purchase), per decision"),
    "purchase_rate": (PURCHASED, DECISIONS, "decisions acted on with a purchase, per decision"),
    "attributed_rate": (ATTRIBUTED, DECISIONS, ("decisions with any outcome joined (by decision_id or within the "
                                                 "wait window), per decision")),
    "revenue_per_user": (REVENUE, USERS, "revenue of the purchases joined to decisions, per user"),
    "offer_acceptance": (ACCEPTED, OFFERS, "offers (retention_offer, discount) followed by a click or more, per offer"),
    "offers_per_user": (OFFERS, USERS, "offers made, per user"),
    "sessions_per_user": (SESSIONS, USERS, "sessions (decisions on session_start), per user: retention proxy"),
}


class FingerprintSet:
    """A set of non-zero 64-bit integers in one array (open addressing, linear probing), growing to `max_size`.

    >>> seen = FingerprintSet(max_size=2)
    >>> seen.add(7), seen.add(7), seen.add(9), seen.add(11), len(seen), seen.full, 11 in seen, 9 in seen
    (True, False, True, False, 2, True, False, True)
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._slots = array("Q", bytes(8 * 64))
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        """Whether it holds `max_size` values (new ones are refused)."""
        return self._size >= self.max_size

    @property
    def nbytes(self) -> int:
        """Memory of the table."""
        return len(self._slots) * 8

    def __contains__(self, value: int) -> bool:
        return self._slots[self._find(value)] == value

    def add(self, value: int) -> bool:
        """Insert `value`; True if it was new and fitted, False if present already or the set is full."""
        index = self._find(value)
        if self._slots[index] == value or self._size >= self.max_size:
            return False
        self._slots[index] = value
        self._size += 1
        if 2 * self._size > len(self._slots):
            self._grow()
        return True

    def _find(self, value: int) -> int:
        """The slot holding `value`, or the empty slot where it would go."""
        slots = self._slots
        mask = len(slots) - 1
        index = value & mask
        while True:
            current = slots[index]
            if current == value or current == 0:
                return index
            index = (index + 1) & mask

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        mask = len(self._slots) - 1
        for value in old:
            if value:
                index = value & mask
                while self._slots[index]:
                    index = (index + 1) & mask
                self._slots[index] = value


@dataclass(slots=True)
class _ExperimentSums:
    """One experiment's per-arm bucket sums and its users table."""

    arms: dict[str, list[float]]
    users: FingerprintSet
    outcomes: int = 0
    left_out: int = 0  # outcomes of users beyond the users table's bound
    updated: float = 0.0


class UpliftAggregator:
    """Folds outcome records into per-arm bucket sums and reports metrics, lifts and the sample-ratio check.

    Thread-safe: one thread adds, others report.

    >>> agg = UpliftAggregator(min_users=1)
    >>> for i in range(40):
    ...     arm = "holdout" if i % 2 else "personalized"
    ...     agg.add({"decision_id": f"d-{i}", "user_id": f"u{i}", "reward": 0.3 if i % 4 == 0 else 0.0,
    ...              "joined_by": "decision_id" if i % 4 == 0 else "none",
    ...              "action": "recommend", "revenue": 0.0, "event_type": "page_view",
    ...              "experiment": {"name": "holdout", "arm": arm}})
    >>> report = agg.report()
    >>> [(arm["name"], arm["users"], arm["metrics"]["click_rate"]["value"]) for arm in report["experiments"][0]["arms"]]
    [('holdout', 20, 0.0), ('personalized', 20, 0.5)]
    """

    def __init__(self, buckets: int = BUCKETS, max_users: int = 1_000_000, min_users: int = 100,
                 srm_alpha: float = 0.001, dedup_window: int = DEDUP_WINDOW) -> None:
        self.buckets = buckets
        self.max_users = max_users
        self.min_users = min_users
        self.srm_alpha = srm_alpha
        self._experiments: OrderedDict[str, _ExperimentSums] = OrderedDict()
        self._fingerprint_key = os.urandom(32)  # never stored: the users table cannot be tied to anyone
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()
        self._dedup_window = dedup_window
        self._lock = threading.Lock()
        self.outcomes = 0
        self.duplicates = 0
        self.not_enrolled = 0  # outcomes without an experiment (from before experiments existed)

    def add(self, outcome: dict[str, Any]) -> None:
        """Fold one outcome record in."""
        experiment = outcome.get("experiment")
        with self._lock:
            self.outcomes += 1
            if not self._first_delivery(outcome.get("decision_id", "")):
                self.duplicates += 1
                return
            if not experiment:
                self.not_enrolled += 1
                return
            sums = self._sums(str(experiment["name"]))
            arm = str(experiment["arm"])
            user = str(outcome.get("user_id", "")).encode("utf-8", "surrogatepass")
            fingerprint = _hash(arm.encode() + b"\x00" + user, self._fingerprint_key) or 1
            new_user = sums.users.add(fingerprint)
            if not new_user and sums.users.full and fingerprint not in sums.users:
                sums.left_out += 1  # a user beyond the table's bound
                return
            sums.outcomes += 1
            sums.updated = time.time()
            row = sums.arms.get(arm)
            if row is None:
                row = sums.arms[arm] = [0.0] * (self.buckets * COLUMNS)
            base = (_hash(user, _BUCKET_KEY) % self.buckets) * COLUMNS
            reward = float(outcome.get("reward") or 0.0)
            offer = outcome.get("action") in OFFER_ACTIONS
            row[base + DECISIONS] += 1.0
            if reward > 0.0:
                row[base + ATTRIBUTED] += 1.0
                if "decision_id" in (outcome.get("joined_by") or ""):  # acted on: an outcome event named it
                    if reward >= CLICK:
                        row[base + CLICKED] += 1.0
                    if reward >= CART:
                        row[base + CARTED] += 1.0
                    if reward >= PURCHASE:
                        row[base + PURCHASED] += 1.0
            row[base + REVENUE] += float(outcome.get("revenue") or 0.0)
            if offer:
                row[base + OFFERS] += 1.0
                if reward > 0.0:
                    row[base + ACCEPTED] += 1.0
            if outcome.get("event_type") == "session_start":
                row[base + SESSIONS] += 1.0
            if new_user:
                row[base + USERS] += 1.0

    def report(self, configured: Experiment | None = None) -> dict[str, Any]:
        """Every experiment's arms, metrics with intervals, lifts over the control and the sample-ratio check.

        `configured` is the experiment in force: its shares are what the check compares against, its control
        arm the reference of lifts, and it is listed first (also before any outcome arrived).
        """
        with self._lock:
            snapshot = {name: ({arm: np.asarray(row).reshape(self.buckets, COLUMNS) for arm, row in sums.arms.items()},
                               sums.outcomes, sums.left_out, len(sums.users), sums.users.full, sums.updated)
                        for name, sums in self._experiments.items()}
            totals = {"outcomes": self.outcomes, "duplicates": self.duplicates, "not_enrolled": self.not_enrolled}
        names = sorted(snapshot, key=lambda name: -snapshot[name][5])
        if configured is not None:
            names = [configured.name] + [name for name in names if name != configured.name]
        experiments = []
        for name in names:
            arms, outcomes, left_out, users, full, updated = snapshot.get(name, ({}, 0, 0, 0, False, 0.0))
            experiments.append(self._experiment_report(
                name, arms, configured if configured is not None and configured.name == name else None,
                outcomes, left_out, users, full, updated))
        return {"method": self.method(), **totals, "experiments": experiments}

    def method(self) -> dict[str, Any]:
        """How the figures are computed (shown with them)."""
        return {
            "interval": f"95% Wald interval; variance by the delta method over {self.buckets} hash buckets of users "
                        "(per-user clustering: a user's decisions all fall in one bucket)",
            "lift": "relative: arm / control - 1, delta-method interval; significant when the interval excludes 0 "
                    f"and both arms have at least {self.min_users} users",
            "srm": f"chi-square test of users per arm against the configured shares; alarm when p < {self.srm_alpha:g}",
            "min_users": self.min_users, "srm_alpha": self.srm_alpha, "buckets": self.buckets,
            "max_users": self.max_users,
            "metrics": {name: meaning for name, (_, _, meaning) in METRICS.items()},
        }

    def _experiment_report(self, name: str, arms: dict[str, np.ndarray], configured: Experiment | None,
                           outcomes: int, left_out: int, users: int, full: bool, updated: float) -> dict[str, Any]:
        shares = {arm.name: arm.share for arm in configured.arms} if configured is not None else {}
        order = list(shares) + sorted(arm for arm in arms if arm not in shares)
        empty = np.zeros((self.buckets, COLUMNS))
        sums = {arm: arms.get(arm, empty) for arm in order}
        arm_users = {arm: float(table[:, USERS].sum()) for arm, table in sums.items()}
        arm_decisions = {arm: float(table[:, DECISIONS].sum()) for arm, table in sums.items()}
        total_users = sum(arm_users.values())
        decisions_per_bucket = sum((table[:, DECISIONS] for table in sums.values()), np.zeros(self.buckets))
        estimates = {arm: {metric: ratio_estimate(table[:, num], table[:, den])
                           for metric, (num, den, _) in METRICS.items()} for arm, table in sums.items()}
        control = configured.control if configured is not None else (order[0] if order else None)
        rows = []
        for arm in order:
            row: dict[str, Any] = {
                "name": arm, "control": arm == control, "configured_share": shares.get(arm),
                "users": int(arm_users[arm]), "decisions": int(arm_decisions[arm]),
                "user_share": arm_users[arm] / total_users if total_users else None,
                "decision_share": _as_dict(ratio_estimate(sums[arm][:, DECISIONS], decisions_per_bucket)),
                "metrics": {metric: _as_dict(e) for metric, e in estimates[arm].items()},
            }
            if configured is not None and configured.arm(arm) is not None:
                row.update({key: value for key, value in configured.arm(arm).to_dict().items()
                            if key not in ("name", "share")})
            if control is not None and arm != control:
                row["lift"] = self._lifts(estimates[arm], estimates[control],
                                          min(arm_users[arm], arm_users[control]) >= self.min_users)
            rows.append(row)
        srm = (sample_ratio_check(arm_users, shares, self.srm_alpha) if configured is not None
               else {"checked": False, "alarm": False, "reason": "not the experiment configured now: shares unknown"})
        return {"name": name, "configured": configured is not None,
                "version": configured.version if configured is not None else None, "control": control,
                "outcomes": outcomes, "users": users, "users_capped": full, "left_out_outcomes": left_out,
                "updated": updated or None, "arms": rows, "srm": srm}

    @staticmethod
    def _lifts(arm: dict[str, Any], control: dict[str, Any], enough: bool) -> dict[str, Any]:
        lifts = {}
        for metric in METRICS:
            treated, base = arm[metric], control[metric]
            if treated is None or base is None:
                lifts[metric] = None
                continue
            relative = relative_lift(treated, base)
            lifts[metric] = {
                "relative": None if relative is None else relative.to_dict(),
                "difference": difference(treated, base).to_dict(),
                "significant": bool(enough and relative is not None and relative.excludes_zero()),
                "enough_users": enough,
            }
        return lifts

    def _sums(self, name: str) -> _ExperimentSums:
        sums = self._experiments.get(name)
        if sums is None:
            if len(self._experiments) >= MAX_EXPERIMENTS:
                oldest = min(self._experiments, key=lambda key: self._experiments[key].updated)
                del self._experiments[oldest]
            sums = self._experiments[name] = _ExperimentSums({}, FingerprintSet(self.max_users))
        return sums

    def _first_delivery(self, decision_id: str) -> bool:
        key = hash(decision_id)
        if key in self._recent:
            return False
        self._recent.add(key)
        self._recent_order.append(key)
        if len(self._recent_order) > self._dedup_window:
            self._recent.discard(self._recent_order.popleft())
        return True


def _as_dict(estimate: Estimate | None) -> dict[str, float] | None:
    return None if estimate is None else estimate.to_dict()


def _hash(data: bytes, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, key=key, digest_size=8).digest(), "big")
