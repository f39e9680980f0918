"""Dataflow step applying catalog events to the process's engine (new items rank at once, deleted ones leave)."""

from __future__ import annotations

from typing import Any

from connectors.catalog import CatalogRecord
from operators.engine import PersonalizationEngine
from operators.parse import EventParser, Rejected


class CatalogUpdater:
    """Parses item records and applies them to the engine's catalog.

    Every worker applies every record; only the primary worker's results (the item record, or the
    rejection) go on to the outputs, so Redis and the dead-letter topic see each record once.
    """

    def __init__(self, engine: PersonalizationEngine, parser: EventParser) -> None:
        self._engine = engine
        self._parser = parser

    def apply(self, record: CatalogRecord) -> dict[str, Any] | Rejected | None:
        """The item's catalog record, a Rejected for invalid input, or None on non-primary workers."""
        parsed = self._parser.parse(record.value, record.key, record.topic, record.partition, record.offset)
        if isinstance(parsed, Rejected):
            return parsed if record.primary else None
        with self._engine.lock:
            item = self._engine.apply_item(parsed.event)
        return item if record.primary else None
