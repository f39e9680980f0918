"""Replay recorded events through the same code the dataflow runs: the parser, then the per-user step.

`Replay` is what `pulse evaluate --dataset` drives: each event is encoded as a Kafka record would be,
parsed and validated (`EventParser`, with historical timestamps accepted), and handed to the user's
`UserLogic` (the Bytewax stateful step, with the shared `PersonalizationEngine`), which returns the
encoded decision. Catalog events go through `CatalogUpdater` like the dataflow's catalog step.
Time is the replayed events' time: each step's clock reads it, and before each event the timers that
are due by then fire in time order (`on_notify`, as Bytewax calls it when a step's `notify_at` has
passed), so attribution windows close, idle users shrink to their long-term record, held churn labels
are learned and win-backs go out when they would have live. Their decisions collect in `timer_decisions`.
Only Kafka, Redis and Bytewax's scheduling are left out.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import orjson

from connectors.catalog import CatalogRecord
from operators.catalog import CatalogUpdater
from operators.contracts import TOPIC_KIND_OF_TYPE
from operators.engine import PersonalizationEngine
from operators.parse import Accepted, EventParser, Rejected
from operators.user_state import UserLogic, user_logic_builder

__all__ = ["Replay"]

MAX_EVENT_BYTES = 65_536


class Replay:
    """Feeds events, in the order given, through the parser and each user's dataflow step.

    >>> from operators.engine import PersonalizationEngine
    >>> replay = Replay(PersonalizationEngine())
    >>> replay.item({"event_id": "c1", "type": "item_upsert", "item_id": "i1", "category": "drama", "ts": 874965758000})
    >>> replay.item({"event_id": "c2", "type": "item_upsert", "item_id": "i2", "category": "drama", "ts": 874965758000})
    >>> decision = replay.event({"event_id": "e1", "user_id": "u1", "type": "page_view", "item_id": "i1",
    ...                          "category": "drama", "ts": 874965758000})
    >>> decision["decision_id"], [r["item_id"] for r in decision["recommendations"]], replay.rejected
    ('d-e1', ['i1', 'i2'], [])
    """

    def __init__(self, engine: PersonalizationEngine, idle_ttl_s: float | None = None,
                 retention_s: float | None = None) -> None:
        self.engine = engine
        kinds = {kind: kind for kind in set(TOPIC_KIND_OF_TYPE.values())}
        self._parser = EventParser(kinds, MAX_EVENT_BYTES, replay=True)
        self._catalog = CatalogUpdater(engine, self._parser)
        self.now_ms = 0  # the replay's clock: the time of the event being replayed, or of the timer firing
        self._build = user_logic_builder(engine, idle_ttl_s=idle_ttl_s, retention_s=retention_s, clock=self._clock)
        self.logics: dict[str, UserLogic] = {}  # the dataflow's per-user state, by user id
        self._timers: list[tuple[int, int, str]] = []  # (due ms, sequence, user id); stale entries are skipped
        self._due: dict[str, int] = {}  # each step's notify time, read after its latest activation (as Bytewax does)
        self._sequence = itertools.count()
        self._offsets = itertools.count()
        self.rejected: list[Rejected] = []
        self.timer_decisions: list[dict[str, Any]] = []  # decisions made by timers (win-backs), in time order

    def item(self, event: dict[str, Any]) -> None:
        """Apply one catalog event (`item_upsert` / `item_delete`); an invalid one is kept in `rejected`."""
        offset = next(self._offsets)
        applied = self._catalog.apply(CatalogRecord(True, orjson.dumps(event), None, "items", 0, offset))
        if isinstance(applied, Rejected):
            self.rejected.append(applied)

    def _clock(self) -> int:
        return self.now_ms

    def event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The decision the dataflow makes for one user event (None: invalid, kept in `rejected`)."""
        if isinstance(event.get("ts"), int):
            self.advance(event["ts"])
        parsed = self.parse(event)
        if isinstance(parsed, Rejected):
            self.rejected.append(parsed)
            return None
        return self.decide(parsed)

    def parse(self, event: dict[str, Any]) -> Accepted | Rejected:
        """The event as the dataflow's parse step sees it: encoded, decoded and validated."""
        kind = TOPIC_KIND_OF_TYPE.get(event.get("type"), "clickstream")  # type: ignore[arg-type]
        key = str(event.get("user_id", "")).encode()
        return self._parser.parse(orjson.dumps(event), key, kind, 0, next(self._offsets))

    def decide(self, accepted: Accepted) -> dict[str, Any]:
        """Run the user's step on one accepted event; a user whose state the step discards starts afresh."""
        user_id = accepted.event["user_id"]
        self.now_ms = max(self.now_ms, accepted.event["ts"])
        logic = self.logics.get(user_id)
        if logic is None:
            logic = self.logics[user_id] = self._build(None)
        out, discard = logic.on_batch([accepted])
        self._after(user_id, logic, discard)
        return orjson.loads(out[-1].payload)

    def advance(self, until_ms: int) -> None:
        """Fire, in time order, every timer due by `until_ms` (the clock reads each one's due time)."""
        timers = self._timers
        while timers and timers[0][0] <= until_ms:
            due, _, user_id = heapq.heappop(timers)
            logic = self.logics.get(user_id)
            if logic is None or self._due.get(user_id) != due:
                continue  # the user's step was rescheduled or dropped since
            self.now_ms = max(self.now_ms, due)
            out, discard = logic.on_notify()
            self.timer_decisions += [orjson.loads(decision.payload) for decision in out]
            self._after(user_id, logic, discard)
        self.now_ms = max(self.now_ms, until_ms)

    def _after(self, user_id: str, logic: UserLogic, discard: bool) -> None:
        """Drop a discarded step, or schedule its next timer (Bytewax asks `notify_at` after every call)."""
        if discard:
            del self.logics[user_id]
            self._due.pop(user_id, None)
            return
        due = logic.notify_at_ms()
        if due is None:
            self._due.pop(user_id, None)
        else:
            self._due[user_id] = due
            heapq.heappush(self._timers, (due, next(self._sequence), user_id))
