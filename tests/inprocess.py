"""The real dataflow in this process: `flows.personalization.build_flow` with `bytewax.testing` sources and sinks.

`run_flow` builds the deployed flow with a `FlowIO` of `TestingSource`s (events as the confluent-kafka
`Message`s the Kafka source yields, catalog records, model commands) and `TestingSink`s, runs it with
`bytewax.testing.run_main` and returns what every output received. With a recovery directory it runs as
`pulse run` does with recovery (Bytewax snapshots, the models checkpointed in the directory), so a run
that aborts can be resumed by the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Message

from connectors.catalog import CatalogRecord
from connectors.model_control import ModelCommand
from flows.personalization import FlowIO, build_flow
from operators.contracts import TOPIC_KIND_OF_TYPE
from operators.engine import PersonalizationEngine
from pulse.config import Settings

ABORT, EOF, PAUSE = TestingSource.ABORT, TestingSource.EOF, TestingSource.PAUSE
TOPIC = {"clickstream": "clickstream", "chat": "chat", "control": "control", "items": "items"}
_offsets = itertools.count()


def settings(tmp_path: Path, **env: str) -> Settings:
    """Settings of an in-process run: default topic names, the model registry in `tmp_path`."""
    return Settings.from_env({"PULSE_MODEL_DIR": str(tmp_path / "models"), "PULSE_HOLDOUT_SHARE": "0", **env})


def record(event: dict[str, Any] | bytes, topic: str | None = None) -> Message:
    """A consumed Kafka record holding `event` (JSON-encoded unless bytes), on the topic of its type."""
    if topic is None:
        topic = TOPIC[TOPIC_KIND_OF_TYPE[event["type"]]]  # type: ignore[index]
    value = event if isinstance(event, bytes) else orjson.dumps(event)
    key = None if isinstance(event, bytes) else str(event.get("user_id", "")).encode()
    return Message(topic=topic, partition=0, offset=next(_offsets), key=key, value=value)


def item_record(event: dict[str, Any] | bytes) -> CatalogRecord:
    """A record of the items topic, as the catalog source yields it on the primary worker."""
    value = event if isinstance(event, bytes) else orjson.dumps(event)
    return CatalogRecord(True, value, None, "items", 0, next(_offsets))


@dataclass
class ListLog:
    """The decision and outcome logs kept in lists (operators.user_state.DecisionLog)."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    flushes: int = 0

    def decision(self, user_id: str, payload: bytes) -> None:
        self.decisions.append(orjson.loads(payload))

    def outcome(self, user_id: str, payload: bytes) -> None:
        self.outcomes.append(orjson.loads(payload))

    def poll(self) -> None:
        pass

    def flush(self) -> None:
        self.flushes += 1


@dataclass
class Outputs:
    """What each output of one run received."""

    decisions: list[Any] = field(default_factory=list)  # DecisionOut, as redis_out gets them
    catalog_items: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Any] = field(default_factory=list)  # KafkaSinkMessage
    model_acks: list[dict[str, Any]] = field(default_factory=list)
    log: ListLog = field(default_factory=ListLog)

    def decoded(self) -> list[dict[str, Any]]:
        """The decisions redis_out received, decoded."""
        return [orjson.loads(out.payload) for out in self.decisions]


def run_flow(events: Iterable[Any], run_settings: Settings, *, catalog: Iterable[Any] = (),
             commands: Iterable[ModelCommand | Any] = (), engine: PersonalizationEngine | None = None,
             recovery_dir: Path | None = None, epoch: timedelta = timedelta(seconds=0),
             outputs: Outputs | None = None) -> Outputs:
    """Run the dataflow over `events` (Messages and TestingSource sentinels) until every input ends.

    `catalog` and `commands` feed the catalog and model-command inputs; `outputs` collects into an earlier
    run's lists (a resumed run). An ABORT sentinel stops the run there, as a crash would.
    """
    outputs = Outputs() if outputs is None else outputs
    io = FlowIO(events=TestingSource(list(events)), catalog=TestingSource(list(catalog)),
                model_commands=TestingSource(list(commands)), decisions=TestingSink(outputs.decisions),
                catalog_items=TestingSink(outputs.catalog_items), dead_letters=TestingSink(outputs.dead_letters),
                model_acks=TestingSink(outputs.model_acks), records=outputs.log)
    recovery = None
    argv: list[str] = []
    if recovery_dir is not None:
        if not any(recovery_dir.glob("*.sqlite3")):
            init_db_dir(recovery_dir, 1)
        recovery, argv = RecoveryConfig(str(recovery_dir)), ["-r", str(recovery_dir)]
    flow = build_flow(run_settings, argv, io=io, engine=engine)
    run_main(flow, epoch_interval=epoch, recovery_config=recovery)
    return outputs
