"""Bytewax per-user stateful step: the user's `UserFeatures` as state, the shared engine for the work.

An active user's state is the full profile; once idle for the TTL it shrinks to the compact
`LongTermRecord` (operators.long_term) for the retention period, whose timers release held churn
labels and check for a win-back (operators.winback).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import orjson
from bytewax.operators import StatefulBatchLogic

from operators.decision import Decision
from operators.engine import PersonalizationEngine
from operators.features import UserFeatures
from operators.long_term import LongTermRecord, next_release
from operators.metrics import engine_metrics
from operators.parse import Accepted
from operators.winback import due_check_ms, win_back

if TYPE_CHECKING:
    from connectors.checkpoint import ModelCheckpoint


class DecisionLog(Protocol):
    """Where the step appends decisions and settled outcomes (connectors.kafka_io.RecordLog: Kafka topics)."""

    def decision(self, user_id: str, payload: bytes) -> None:
        """Append a decision record (not waiting for delivery)."""

    def outcome(self, user_id: str, payload: bytes) -> None:
        """Append an outcome record (not waiting for delivery)."""

    def poll(self) -> None:
        """Serve delivery reports; raise if a record could not be delivered."""

    def flush(self) -> None:
        """Wait until every record appended so far is delivered; raise if one could not be."""


@dataclass(frozen=True, slots=True)
class DecisionOut:
    """An encoded decision ready for the sinks; `forget` asks them to erase what they store of the user.

    `personal` is false for decisions made without consent: sinks publish them but store nothing of the user
    (a holdout user's non-personalized decisions are stored: the user consented).
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

    A user idle for `idle_ttl_s` keeps a `LongTermRecord` for `retention_s` after their latest event
    (None: the state is dropped at once), restored as their profile when they come back. `clock` gives
    the time in epoch ms: the wall clock in the dataflow, the replayed events' time in evaluations.
    """

    def __init__(
        self, engine: PersonalizationEngine, lock: threading.Lock, state: UserFeatures | LongTermRecord | None,
        checkpoint: ModelCheckpoint | None = None, records: DecisionLog | None = None, idle_ttl_s: float | None = None,
        retention_s: float | None = None, clock: Callable[[], int] | None = None,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._profile = state if isinstance(state, UserFeatures) else None
        self._record = state if isinstance(state, LongTermRecord) else None
        self._checkpoint = checkpoint
        self._records = records
        self._idle_ttl_ms = None if idle_ttl_s is None else idle_ttl_s * 1000.0
        self._retention_ms = None if not retention_s else retention_s * 1000.0
        self._clock = clock or _now_ms
        self._last_seen_ms = self._clock()  # time of the user's latest event (restarts count as activity)

    @property
    def long_term(self) -> bool:
        """Whether the user is idle and only their long-term record is kept."""
        return self._record is not None

    def on_batch(self, values: list[Accepted]) -> tuple[Iterable[DecisionOut], bool]:
        """Decide for every event of the batch; discard the state once the user is forgotten."""
        self._last_seen_ms = self._clock()
        out: list[DecisionOut] = []
        metrics, records = engine_metrics(), self._records
        with self._lock:
            if self._record is not None:  # back after the TTL: the long-term aggregates become the profile
                self._profile, self._record = self._record.restore(), None
            for accepted in values:
                metrics.before_event(accepted.event, self._engine, self._profile)
                self._profile, decision, outcomes = self._engine.handle_with_outcomes(
                    self._profile, accepted.event, accepted.ingest_ms)
                metrics.after_decision(decision)
                user_id = decision["user_id"]
                payload = orjson.dumps(decision)
                if records is not None:
                    for outcome in outcomes:
                        records.outcome(user_id, orjson.dumps(outcome))
                    records.decision(user_id, payload)
                consented = self._profile is not None and self._profile.personalization  # a holdout's too
                out.append(DecisionOut(user_id, decision["decision_id"], payload, self._profile is None, consented))
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
        """The next of `notify_at_ms`, as Bytewax wants it."""
        due = self.notify_at_ms()
        return None if due is None else datetime.fromtimestamp(due / 1000.0, tz=UTC)

    def notify_at_ms(self) -> int | None:
        """When the oldest pending decision's window closes, the user expires, a held churn label is due, a
        win-back check is due or the long-term record ends, whichever is first (epoch ms)."""
        engine, profile, record = self._engine, self._profile, self._record
        now = self._clock()
        if profile is not None:
            times = [profile.pending.next_deadline(engine.config.attribution_window_ms), next_release(profile.memory),
                     due_check_ms(engine, profile.last_ts, profile.memory.winback_for_ms, profile.personalization, now)]
            if self._idle_ttl_ms is not None:
                times.append(int(self._last_seen_ms + self._idle_ttl_ms))
        elif record is not None:
            last_ts = record.last_ts
            end = now if self._retention_ms is None else int(last_ts + self._retention_ms)  # retention turned off: now
            times = [next_release(record),
                     due_check_ms(engine, last_ts, record.winback_for_ms, record.personalization, now), end]
        else:
            return None
        return min((t for t in times if t is not None), default=None)

    def on_notify(self) -> tuple[Iterable[DecisionOut], bool]:
        """Settle decisions whose window closed (to the outcome log), learn held churn labels that are due, send a
        win-back when one is due; once idle longer than the TTL keep only the long-term record (or nothing), and
        drop that at the end of the retention period."""
        now_ms = self._clock()
        engine, settled, decision = self._engine, [], None
        with self._lock:
            if self._profile is not None:
                profile = self._profile
                idle = self._idle_ttl_ms is not None and now_ms - self._last_seen_ms >= self._idle_ttl_ms
                settled = engine.expire(profile, profile.user_id, now_ms, idle)
                learned = engine.churn_labels.release(profile.memory, now_ms)
                decision = win_back(engine, profile, now_ms)
                if idle:
                    self._profile = None
                    if self._retention_ms is not None:
                        self._record = LongTermRecord.from_profile(profile)
            else:
                record = self._record
                learned = engine.churn_labels.release(record, now_ms)
                if self._retention_ms is None or now_ms >= record.last_ts + self._retention_ms:
                    self._record = None
                else:
                    profile = record.restore()
                    decision = win_back(engine, profile, now_ms)
                    if decision is not None:  # remember the offer and the stretch it was sent in
                        self._record = LongTermRecord.from_profile(profile)
            if (settled or learned) and self._checkpoint is not None:
                self._checkpoint.learned()
            out = [] if decision is None else [self._win_back_out(decision)]
        discard = self._profile is None and self._record is None
        if self._records is not None:
            for attribution in settled:
                self._records.outcome(attribution["user_id"], orjson.dumps(attribution))
            self._deliver(discarding=discard)
        return out, discard

    def _win_back_out(self, decision: Decision) -> DecisionOut:
        """Count, encode and log a win-back decision."""
        engine_metrics().decisions.counts.add((decision["action"]["name"],))
        payload = orjson.dumps(decision)
        if self._records is not None:
            self._records.decision(decision["user_id"], payload)
        return DecisionOut(decision["user_id"], decision["decision_id"], payload, False)

    def _deliver(self, discarding: bool) -> None:
        """Serve the logs' delivery reports; wait for delivery when this state is dropped (no snapshot will)."""
        assert self._records is not None
        if discarding:
            self._records.flush()
        else:
            self._records.poll()

    def snapshot(self) -> bytes:
        """The profile, or an idle user's long-term record, pickled (see `profile_snapshot`)."""
        assert self._profile is not None or self._record is not None, "a dropped user's logic is discarded first"
        if self._records is not None:
            self._records.flush()  # only the epoch's first snapshot waits: later ones find nothing unflushed
        if self._checkpoint is not None:
            with self._lock:
                self._checkpoint.on_snapshot()
        if self._profile is None:
            return pickle.dumps(self._record, protocol=pickle.HIGHEST_PROTOCOL)
        return profile_snapshot(self._profile)


def profile_snapshot(profile: UserFeatures) -> bytes:
    """A user's Bytewax snapshot: the profile pickled at once, so no copy of it is needed to keep it immutable."""
    return pickle.dumps(profile, protocol=pickle.HIGHEST_PROTOCOL)


def user_logic_builder(
    engine: PersonalizationEngine, checkpoint: ModelCheckpoint | None = None, records: DecisionLog | None = None,
    idle_ttl_s: float | None = None, retention_s: float | None = None, clock: Callable[[], int] | None = None,
) -> Callable[[bytes | None], UserLogic]:
    """Builder for `op.stateful_batch`: resumes from a snapshot or starts an empty profile.

    `records`: the decision/outcome logs (None: decisions only leave the step). Users idle for
    `idle_ttl_s` seconds (None: never) keep only their long-term record for `retention_s` seconds after
    their latest event (None or 0: nothing). `clock`: epoch ms now (default: the wall clock).
    """
    lock = engine.lock

    def build(resume_state: bytes | None) -> UserLogic:
        state = None if resume_state is None else pickle.loads(resume_state)  # see UserLogic.snapshot
        return UserLogic(engine, lock, state, checkpoint, records, idle_ttl_s, retention_s, clock)

    return build


def _now_ms() -> int:
    return int(time.time() * 1000)
