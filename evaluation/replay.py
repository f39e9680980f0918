"""Replay recorded events through the same code the dataflow runs: the parser, then the per-user step.

`Replay` is what `pulse evaluate --dataset` drives: each event is encoded as a Kafka record would be,
parsed and validated (`EventParser`, with historical timestamps accepted), and handed to the user's
`UserLogic` (the Bytewax stateful step, with the shared `PersonalizationEngine`), which returns the
encoded decision. Catalog events go through `CatalogUpdater` like the dataflow's catalog step.
Only Kafka, Redis and Bytewax's scheduling are left out.
"""

from __future__ import annotations

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

    def __init__(self, engine: PersonalizationEngine, idle_ttl_s: float | None = None) -> None:
        self.engine = engine
        kinds = {kind: kind for kind in set(TOPIC_KIND_OF_TYPE.values())}
        self._parser = EventParser(kinds, MAX_EVENT_BYTES, replay=True)
        self._catalog = CatalogUpdater(engine, self._parser)
        self._build = user_logic_builder(engine, idle_ttl_s=idle_ttl_s)
        self.logics: dict[str, UserLogic] = {}  # the dataflow's per-user state, by user id
        self._offsets = itertools.count()
        self.rejected: list[Rejected] = []

    def item(self, event: dict[str, Any]) -> None:
        """Apply one catalog event (`item_upsert` / `item_delete`); an invalid one is kept in `rejected`."""
        offset = next(self._offsets)
        applied = self._catalog.apply(CatalogRecord(True, orjson.dumps(event), None, "items", 0, offset))
        if isinstance(applied, Rejected):
            self.rejected.append(applied)

    def event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The decision the dataflow makes for one user event (None: invalid, kept in `rejected`)."""
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
        logic = self.logics.get(user_id)
        if logic is None:
            logic = self.logics[user_id] = self._build(None)
        out, discard = logic.on_batch([accepted])
        if discard:
            del self.logics[user_id]
        return orjson.loads(out[-1].payload)
