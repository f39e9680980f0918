"""Dataflow step running model commands (snapshot, rollback) on the process's engine without stopping it."""

from __future__ import annotations

import logging
import time
from typing import Any

from connectors.model_control import ModelCommand
from online_models.registry import ModelRegistry, SnapshotNotFound
from operators.engine import PersonalizationEngine

log = logging.getLogger("pulse.models")


class ModelCommandRunner:
    """Runs each command once per process (several workers of a process share one engine)."""

    def __init__(self, engine: PersonalizationEngine, registry: ModelRegistry, process: int) -> None:
        self._engine = engine
        self._registry = registry
        self._process = process
        self._done: set[int | str] = set()

    def run(self, command: ModelCommand) -> dict[str, Any] | None:
        """The command's result (None when another worker of this process already ran it)."""
        with self._engine.lock:
            key = command.seq if command.seq is not None else command.name
            if key in self._done:
                return None
            self._done.add(key)
            result: dict[str, Any] = {"seq": command.seq, "op": command.op, "name": command.name,
                                      "process": self._process, "ok": True}
            try:
                if command.op == "snapshot":
                    info = self._registry.save(self._engine.models(), command.name, self._process,
                                               int(time.time() * 1000), self._engine.model_versions())
                    result.update(hash=info.hash, versions=info.versions)
                else:
                    info = self._registry.find(command.name, self._process)
                    self._engine.restore_models(self._registry.load(command.name, self._process), info.hash)
                    result.update(hash=info.hash, versions=self._engine.model_versions())
            except (SnapshotNotFound, ValueError, OSError) as exc:
                result.update(ok=False, error=str(exc))
            log.info("model command %s %s: %s", command.op, command.name, result)
            return result
