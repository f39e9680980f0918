"""What a user's churn model needs over months: visits, served probability and held labels, and the compact
record an idle user becomes when the full profile expires.

`ChurnMemory` lives in every profile (`UserFeatures.memory`). It counts visits (a `session_start`, or an
event more than `VISIT_GAP_MS` after the previous one, starts a new one), remembers the churn probability
served at the user's latest behavioural event (what the quality metric scores a label against) and holds
"not churned" labels until their horizon has passed (see `ChurnLabels`).

`LongTermRecord` is the compact form of an idle profile: every churn-relevant aggregate (recency,
frequency, monetary, tenure, the counts behind the behavioural ratios, recent sentiment, the last
offer and win-back, consent) packed into one `bytes` value, plus the held labels. The dataflow keeps
it in Bytewax state in place of the full profile once the user has been idle for the TTL, so it is
saved by the recovery snapshots and erased with the state (`forget_user`); `restore()` gives back a
profile whose churn features are exactly the ones served at the user's latest event.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from operators.history import InteractionHistory

if TYPE_CHECKING:
    from operators.features import UserFeatures

VISIT_GAP_MS = 30 * 60_000  # without a session_start, a gap longer than this starts a visit (web analytics' timeout)
MAX_HELD_LABELS = 16  # per user; beyond this the oldest held label is learned at once
MS_PER_HOUR = 3_600_000.0
MS_PER_DAY = 86_400_000.0
VISIT_FEATURES = ("visits_log", "tenure_days_log", "visit_gap_hours_log", "mean_visit_gap_hours_log")
"""The churn features `ChurnMemory` adds to the profile's, in this order."""

HeldLabel = tuple[int, bool, bytes]  # (learn at ms, churned, the served feature values packed as float64)


class ChurnMemory:
    """Per-user visit counts, the served churn probability and the held labels.

    >>> m = ChurnMemory()
    >>> m.observe(0, last_ts=0, n_events=0)
    >>> m.observe(3 * 86_400_000, last_ts=0, n_events=1)  # back after three days: a second visit
    >>> m.n_visits, m.visit_gap_ms == 3 * 86_400_000
    (2, True)
    >>> m.observe(3 * 86_400_000 + 60_000, last_ts=3 * 86_400_000, n_events=2, session_start=True)  # its own session
    >>> m.n_visits
    3
    """

    __slots__ = ("held", "n_visits", "served_probability", "visit_gap_ms", "visit_start_ms", "winback_for_ms")

    def __init__(self) -> None:
        self.n_visits = 0
        self.visit_start_ms = 0
        self.visit_gap_ms = 0  # the time between the previous visit's last event and this visit's first
        self.served_probability: float | None = None  # churn probability of the latest behavioural event's decision
        self.held: tuple[HeldLabel, ...] = ()
        self.winback_for_ms: int | None = None  # `last_ts` of the quiet stretch a win-back was sent in

    def __reduce__(self) -> tuple[Callable[..., ChurnMemory], tuple[Any, ...]]:
        return _restore_memory, tuple([getattr(self, name) for name in ChurnMemory.__slots__])

    def observe(self, ts: int, last_ts: int, n_events: int, session_start: bool = False) -> None:
        """Count a behavioural event at `ts`; `last_ts` and `n_events` describe the profile before it.

        A `session_start` starts a visit however soon it follows the previous event (a stream that marks
        sessions defines its visits); the `VISIT_GAP_MS` timeout splits streams without session events
        (CDNOW's purchases) and sessions left idle for longer.
        """
        if n_events == 0:
            self.n_visits, self.visit_start_ms, self.visit_gap_ms = 1, ts, 0
        elif session_start or ts - last_ts > VISIT_GAP_MS:
            self.n_visits += 1
            self.visit_start_ms, self.visit_gap_ms = ts, ts - last_ts

    def visit_features(self, first_ts: int, last_ts: int, now_ms: int) -> dict[str, float]:
        """Frequency, tenure and visit gaps at `now_ms`: at an event, the gap before its visit; later, time since."""
        idle = now_ms - last_ts
        gap = idle if idle > VISIT_GAP_MS else self.visit_gap_ms
        mean_gap = (self.visit_start_ms - first_ts) / (self.n_visits - 1) if self.n_visits > 1 else 0.0
        return {
            "visits_log": math.log(self.n_visits) if self.n_visits else 0.0,
            "tenure_days_log": math.log1p(max(now_ms - first_ts, 0) / MS_PER_DAY),
            "visit_gap_hours_log": math.log1p(max(gap, 0) / MS_PER_HOUR),
            "mean_visit_gap_hours_log": math.log1p(max(mean_gap, 0.0) / MS_PER_HOUR),
        }


def _restore_memory(*values: Any) -> ChurnMemory:
    memory = ChurnMemory.__new__(ChurnMemory)
    for name, value in zip(ChurnMemory.__slots__, values):
        setattr(memory, name, value)
    return memory


class ChurnLabels:
    """When a churn label is learned: at once, or, for an early "not churned", once its horizon has passed.

    A `churn_outcome` says whether the user churned within `horizon_ms` of the decision it refers to
    (the one served at the user's latest behavioural event). "Churned" can only be known at the
    horizon, "not churned" as soon as the user comes back. Learning the early ones at once teaches
    the model from a stream that over-represents "not churned" (for the first horizon of a data set it
    holds nothing else), so they are held in the user's memory and learned when their horizon has
    passed: every label is then learned at the same age. `horizon_ms` 0 learns every label on arrival.

    >>> learned = []
    >>> labels = ChurnLabels(horizon_ms=100, learn=lambda x, y: learned.append((x, y)), names=("a",))
    >>> memory = ChurnMemory()
    >>> labels.on_label(memory, {"a": 1.0}, churned=False, decided_ms=0, now_ms=10)
    >>> learned, len(memory.held)
    ([], 1)
    >>> labels.release(memory, now_ms=100)
    1
    >>> learned
    [({'a': 1.0}, False)]
    """

    def __init__(self, horizon_ms: int, learn: Callable[[dict[str, float], bool], None],
                 names: tuple[str, ...]) -> None:
        self.horizon_ms = horizon_ms
        self._learn = learn
        self._names = names
        self.learned_early = 0  # held labels learned before their horizon because a user held too many

    def on_label(self, memory: ChurnMemory, x: dict[str, float], churned: bool, decided_ms: int, now_ms: int) -> None:
        """Learn the label on `x` (the served features) now, or hold it until `decided_ms + horizon_ms`."""
        due = decided_ms + self.horizon_ms
        if churned or now_ms >= due:
            self._learn(x, churned)
            return
        label = (due, churned, array("d", [x[name] for name in self._names]).tobytes())
        held = tuple(sorted(memory.held + (label,), key=lambda held_label: held_label[0]))
        if len(held) > MAX_HELD_LABELS:  # the oldest is learned early rather than the state growing
            self._learn(*self._unpack(held[0]))
            self.learned_early += 1
            held = held[1:]
        memory.held = held

    def release(self, memory: ChurnMemory, now_ms: int) -> int:
        """Learn the held labels whose horizon has passed by `now_ms`; return how many."""
        held = memory.held
        due = 0
        while due < len(held) and held[due][0] <= now_ms:
            self._learn(*self._unpack(held[due]))
            due += 1
        if due:
            memory.held = held[due:]
        return due

    def _unpack(self, label: HeldLabel) -> tuple[dict[str, float], bool]:
        values = array("d")
        values.frombytes(label[2])
        return dict(zip(self._names, values)), label[1]


def next_release(memory: ChurnMemory) -> int | None:
    """When the earliest held label is due, if any."""
    return memory.held[0][0] if memory.held else None


# ----------------------------------------------------------------------------------------------------------------
# The compact record of an idle user

_NONE = -(2**63)  # stands for None in the packed integers
# first_ts last_ts previous_ts visit_start visit_gap last_offer winback_for escalated_at_chat | 9 counts |
# monetary dwell sentiment served_probability | personalization segment
_PACKED = struct.Struct("<8q9I4d2b")


class LongTermRecord:
    """An idle user's churn-relevant aggregates in one packed `bytes` value (plus held labels).

    >>> from operators.features import UserFeatures
    >>> p = UserFeatures(first_ts=0, user_id="ann")
    >>> p.update({"type": "purchase", "ts": 5, "item_id": "i1", "category": "c", "price": 20.0})
    >>> record = LongTermRecord.from_profile(p)
    >>> restored = record.restore()
    >>> restored.churn_features() == p.churn_features(), restored.n_purchases, restored.category_affinity
    (True, 1, {})
    """

    __slots__ = ("held", "packed", "user_id")

    def __init__(self, user_id: str, packed: bytes, held: tuple[HeldLabel, ...] = ()) -> None:
        self.user_id = user_id
        self.packed = packed
        self.held = held

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return LongTermRecord, (self.user_id, self.packed, self.held)

    @classmethod
    def from_profile(cls, profile: UserFeatures) -> LongTermRecord:
        """Keep what churn needs of `profile`; drop category affinities, item history and pending decisions."""
        m, h = profile.memory, profile.history
        packed = _PACKED.pack(
            profile.first_ts, profile.last_ts, profile.previous_ts, m.visit_start_ms, m.visit_gap_ms,
            _int(h.last_offer_ms), _int(m.winback_for_ms), _int(h.escalated_at_chat),
            profile.n_events, profile.n_sessions, profile.n_page_views, profile.n_clicks, profile.n_carts,
            profile.n_purchases, profile.n_searches, profile.n_chats, m.n_visits,
            profile.monetary, profile.dwell_ewma, profile.sentiment_ewma,
            math.nan if m.served_probability is None else m.served_probability,
            int(profile.personalization), -1 if profile.segment is None else profile.segment,
        )
        return cls(profile.user_id, packed, m.held)

    @property
    def last_ts(self) -> int:
        """Time of the user's latest behavioural event."""
        return struct.unpack_from("<q", self.packed, 8)[0]

    @property
    def winback_for_ms(self) -> int | None:
        """`last_ts` of the quiet stretch a win-back was sent in, if any."""
        return _none(struct.unpack_from("<q", self.packed, 48)[0])

    @property
    def personalization(self) -> bool:
        """Whether the user consents to personalization."""
        return bool(self.packed[_PACKED.size - 2])

    def restore(self) -> UserFeatures:
        """A profile with these aggregates (no category affinities, item history or pending decisions)."""
        from operators.features import UserFeatures

        (first_ts, last_ts, previous_ts, visit_start, visit_gap, last_offer, winback_for, escalated,
         n_events, n_sessions, n_page_views, n_clicks, n_carts, n_purchases, n_searches, n_chats, n_visits,
         monetary, dwell, sentiment, served, personalization, segment) = _PACKED.unpack(self.packed)
        profile = UserFeatures(first_ts, self.user_id)
        profile.last_ts, profile.previous_ts = last_ts, previous_ts
        profile.n_events, profile.n_sessions, profile.n_page_views = n_events, n_sessions, n_page_views
        profile.n_clicks, profile.n_carts, profile.n_purchases = n_clicks, n_carts, n_purchases
        profile.n_searches, profile.n_chats = n_searches, n_chats
        profile.monetary, profile.dwell_ewma, profile.sentiment_ewma = monetary, dwell, sentiment
        profile.personalization = bool(personalization)
        profile.segment = None if segment < 0 else segment
        profile.history = InteractionHistory(last_offer_ms=_none(last_offer), escalated_at_chat=_none(escalated))
        m = profile.memory
        m.n_visits, m.visit_start_ms, m.visit_gap_ms = n_visits, visit_start, visit_gap
        m.served_probability = None if math.isnan(served) else served
        m.winback_for_ms, m.held = _none(winback_for), self.held
        return profile


def _int(value: int | None) -> int:
    return _NONE if value is None else value


def _none(value: int) -> int | None:
    return None if value == _NONE else value
