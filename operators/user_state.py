"""Bytewax per-user stateful step: the user's `UserFeatures` as state, the shared engine for the work."""

from __future__ import annotations

import pickle
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterable

import orjson
from bytewax.operators import StatefulBatchLogic

from operators.audit import decision_audit
from operators.engine import PersonalizationEngine
from operators.features import UserFeatures
from operators.metrics import engine_metrics
from operators.parse import Accepted

if TYPE_CHECKING:
    from connectors.checkpoint import ModelCheckpoint
    from connectors.kafka_io import RecordLog


@dataclass(frozen=True, slots=True)
class DecisionOut:
    """An encoded decision ready for the sinks; `forget` asks them to erase what they store of the user.

    `personal` is false for decisions made without consent: sinks publish them but store nothing of the user.
    """

    user_id: str
    decision_id: str
    payload: bytes
    forget: bool
    personal: bool = True


class UserLogic(StatefulBatchLogic[Accepted, DecisionOut, bytes]):
    """Feeds each of one user's events to the engine in order and keeps the user's profile.

    The engine is shared by all keys of the process; a lock makes it safe with several worker threads.
    Decisions go out of the step for Redis. With a `records` log, each decision and each settled outcome
    is also appended to the decision/outcome logs; they are flushed when Bytewax snapshots the user (the
    close of every epoch, before it commits), and at once when the user's state is dropped (forgotten or
    expired: no snapshot follows). With recovery on, `checkpoint` saves the shared models when Bytewax
    snapshots the user (see connectors.checkpoint), and at once after a `forget_user`.
    """

    def __init__(
        self, engine: PersonalizationEngine, lock: threading.Lock, profile: UserFeatures | None,
        checkpoint: ModelCheckpoint | None = None, records: RecordLog | None = None, idle_ttl_s: float | None = None,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._profile = profile
        self._checkpoint = checkpoint
        self._records = records
        self._idle_ttl_ms = None if idle_ttl_s is None else idle_ttl_s * 1000.0
        self._last_seen_ms = _now_ms()  # wall clock of the user's latest event (restarts count as activity)

    def on_batch(self, values: list[Accepted]) -> tuple[Iterable[DecisionOut], bool]:
        """Decide for every event of the batch; discard the state once the user is forgotten."""
        self._last_seen_ms = _now_ms()
        out: list[DecisionOut] = []
        metrics, records = engine_metrics(), self._records
        with self._lock:
            for accepted in values:
                metrics.before_event(accepted.event, self._engine, self._profile)
                self._profile, decision = self._engine.handle(self._profile, accepted.event, accepted.ingest_ms)
                metrics.after_decision(decision)
                decision["audit"] = decision_audit(decision)
                user_id = decision["user_id"]
                outcomes = [orjson.dumps(attribution) for attribution in decision.pop("attributions", ())]
                payload = orjson.dumps(decision)
                if records is not None:
                    for outcome in outcomes:
                        records.outcome(user_id, outcome)
                    records.decision(user_id, payload)
                out.append(DecisionOut(user_id, decision["decision_id"], payload, self._profile is None,
                                       decision["personalized"]))
            forgotten = any(accepted.event["type"] == "forget_user" for accepted in values)
            if self._checkpoint is not None:
                if forgotten:
                    self._checkpoint.save()
                else:
                    self._checkpoint.learned()
        if records is not None:
            self._deliver(discarding=self._profile is None)
        return out, self._profile is None

    def notify_at(self) -> datetime | None:
        """When the oldest pending decision's wait window closes, or the user expires, whichever is first."""
        if self._profile is None:
            return None
        times = [self._profile.pending.next_deadline(self._engine.config.attribution_window_ms)]
        if self._idle_ttl_ms is not None:
            times.append(self._last_seen_ms + self._idle_ttl_ms)
        due = min((t for t in times if t is not None), default=None)
        return None if due is None else datetime.fromtimestamp(due / 1000.0, tz=timezone.utc)

    def on_notify(self) -> tuple[Iterable[DecisionOut], bool]:
        """Settle decisions whose window closed (to the outcome log); drop the user's state once idle longer than the TTL."""
        now_ms = _now_ms()
        idle = self._idle_ttl_ms is not None and now_ms - self._last_seen_ms >= self._idle_ttl_ms
        with self._lock:
            settled = self._engine.expire(self._profile, self._profile.user_id, now_ms, idle)
            if settled and self._checkpoint is not None:
                self._checkpoint.learned()
        if self._records is not None:
            for attribution in settled:
                self._records.outcome(attribution["user_id"], orjson.dumps(attribution))
            self._deliver(discarding=idle)
        return [], idle

    def _deliver(self, discarding: bool) -> None:
        """Serve the logs' delivery reports; wait for delivery when this state is dropped (no snapshot will)."""
        assert self._records is not None
        if discarding:
            self._records.flush()
        else:
            self._records.poll()

    def snapshot(self) -> bytes:
        """The profile, pickled (see `profile_snapshot`)."""
        assert self._profile is not None, "a forgotten user's logic is discarded before any snapshot"
        if self._records is not None:
            self._records.flush()  # only the epoch's first snapshot waits: later ones find nothing unflushed
        if self._checkpoint is not None:
            with self._lock:
                self._checkpoint.on_snapshot()
        return profile_snapshot(self._profile)


def profile_snapshot(profile: UserFeatures) -> bytes:
    """A user's Bytewax snapshot: the profile pickled at once, so no copy of it is needed to keep it immutable."""
    return pickle.dumps(profile, protocol=pickle.HIGHEST_PROTOCOL)


def user_logic_builder(
    engine: PersonalizationEngine, checkpoint: ModelCheckpoint | None = None, records: RecordLog | None = None,
    idle_ttl_s: float | None = None,
) -> Callable[[bytes | None], UserLogic]:
    """Builder for `op.stateful_batch`: resumes from a snapshot or starts an empty profile.

    `records`: the decision/outcome logs (None: decisions only leave the step). Users idle for
    `idle_ttl_s` seconds are dropped from the state (None: never).
    """
    lock = engine.lock

    def build(resume_state: bytes | None) -> UserLogic:
        profile = None if resume_state is None else pickle.loads(resume_state)  # see profile_snapshot
        return UserLogic(engine, lock, profile, checkpoint, records, idle_ttl_s)

    return build


def _now_ms() -> int:
    return int(time.time() * 1000)
