"""The personalization dataflow, top to bottom.

Run it with `pulse run` (or `python -m bytewax.run flows.personalization:flow`). Configuration comes from
the environment (see pulse.config and docs/operations.md).

    model_commands_in ─ run_model_command ─ model_acks_out                     (snapshot / rollback, per process)
    catalog_in ─ apply_catalog ─ split_catalog ─(item)─ catalog_redis_out      (every worker reads every item)
                                      └─(invalid)──────────┐
    kafka_in ─ parse ─ split_valid ─(invalid)──────── all_invalid ─ to_dead_letter ─ dead_letter_out
                             └─(valid)─ key_by_user ─ decide ─ unkey ─ redis_out (latest + PUBLISH)
                                                          └─ decision and outcome logs (FlowIO.records)

`decide` appends each decision and settled outcome to the log topics itself and flushes them when Bytewax
snapshots the user, at the close of each epoch: the epoch commits only after its records are in Kafka,
and no batch waits for the broker in between (an output step can only wait for delivery on every batch).

Where the flow reads and writes is a `FlowIO`: Kafka and Redis (`kafka_redis_io`) when deployed,
`bytewax.testing` sources and sinks in the in-process tests. Building the flow has no side effects:
`pulse run` (pulse.engine_run) tunes the garbage collector and serves the metrics before Bytewax starts,
and the module's `flow` is built when Bytewax asks for it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.catalog import CatalogSource, RedisCatalogSink
from connectors.checkpoint import bytewax_run_argv, checkpoint_for, recovery_options
from connectors.kafka_io import dead_letter_sink, event_source, record_log, to_dead_letter_message
from connectors.model_control import ModelAckSink, ModelCommandSource
from connectors.redis_sink import RedisDecisionSink
from online_models.registry import ModelRegistry
from operators.catalog import CatalogUpdater
from operators.engine import EngineConfig, PersonalizationEngine
from operators.metrics import engine_metrics
from operators.model_commands import ModelCommandRunner
from operators.parse import Accepted, EventParser
from operators.privacy import Pseudonymizer
from operators.user_state import DecisionLog, user_logic_builder
from pulse.config import Settings


@dataclass(frozen=True)
class FlowIO:
    """The dataflow's inputs and outputs, by the step that uses them."""

    events: Source[Any]  # kafka_in: confluent-kafka Messages of the clickstream, chat and control topics
    catalog: Source[Any]  # catalog_in: connectors.catalog.CatalogRecord of the items topic
    model_commands: Source[Any]  # model_commands_in: connectors.model_control.ModelCommand
    decisions: Sink[Any]  # redis_out: operators.user_state.DecisionOut
    catalog_items: Sink[Any]  # catalog_redis_out: the catalog record of each applied item event
    dead_letters: Sink[Any]  # dead_letter_out: KafkaSinkMessage of each invalid record
    model_acks: Sink[Any]  # model_acks_out: the result of each model command
    records: DecisionLog | None = None  # the decision and outcome logs `decide` appends to (None: none)


def kafka_redis_io(settings: Settings) -> FlowIO:
    """The deployed flow's inputs and outputs: Kafka topics, Redis, and Redis for model commands."""
    return FlowIO(
        events=event_source(settings), catalog=CatalogSource(settings),
        model_commands=ModelCommandSource(settings, settings.model_snapshot_s),
        decisions=RedisDecisionSink(settings), catalog_items=RedisCatalogSink(settings),
        dead_letters=dead_letter_sink(settings), model_acks=ModelAckSink(settings), records=record_log(settings),
    )


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's tunables from the settings."""
    return EngineConfig(
        settings.top_k, settings.churn_threshold, settings.escalation_threshold, settings.seed,
        attribution_window_ms=int(settings.attribution_window_s * 1000), rules_file=settings.rules_file or None,
        nba_epsilon=settings.nba_epsilon, nba_warmup=settings.nba_warmup,
        experiments_file=settings.experiments_file or None, holdout_share=settings.holdout_share,
        experiment_salt=settings.experiment_salt,
        **settings.churn_config(), offer_min_confidence=settings.offer_min_confidence,
        winback_min_idle_ms=settings.winback_min_idle_s * 1000, winback_channel=settings.winback_channel,
        recommender=settings.recommender_config(),
    )


def build_flow(settings: Settings, argv: list[str] | None = None, *, io: FlowIO | None = None,
               engine: PersonalizationEngine | None = None) -> Dataflow:
    """Wire source → parse/validate → per-user decide → Redis, decision log and dead letters.

    `argv` are bytewax.run's arguments: with recovery (`-r DIR`) the models are checkpointed in DIR.
    `io` defaults to Kafka and Redis (`kafka_redis_io`); `engine` to a new one configured by `settings`.
    """
    io = kafka_redis_io(settings) if io is None else io
    engine = PersonalizationEngine(engine_config(settings)) if engine is None else engine
    parser = EventParser(
        {settings.topic_clickstream: "clickstream", settings.topic_chat: "chat", settings.topic_control: "control"},
        settings.max_event_bytes, replay=bool(settings.replay),
    )

    flow = Dataflow("pulse-personalization")
    catalog_parser = EventParser({settings.topic_items: "items"}, settings.max_event_bytes, bool(settings.replay))
    catalog = op.filter_map("apply_catalog", op.input("catalog_in", flow, io.catalog),
                            CatalogUpdater(engine, catalog_parser).apply)
    items = op.branch("split_catalog", catalog, lambda item: isinstance(item, dict))
    op.output("catalog_redis_out", items.trues, io.catalog_items)

    _, process_id = recovery_options(argv or [], os.environ)
    runner = ModelCommandRunner(engine, ModelRegistry(settings.model_dir), process_id)
    commands = op.input("model_commands_in", flow, io.model_commands)
    op.output("model_acks_out", op.filter_map("run_model_command", commands, runner.run), io.model_acks)

    records = op.input("kafka_in", flow, io.events)
    parsed = op.map("parse", records, parser.parse_message)
    engine_metrics().watch_drift(engine.drift_counts)
    op.inspect("count_parsed", parsed, lambda _step, item: engine_metrics().observe_parsed(item))
    valid = op.branch("split_valid", parsed, lambda item: isinstance(item, Accepted))

    invalid = op.merge("all_invalid", valid.falses, items.falses)
    dead_letters = op.map("to_dead_letter", invalid, to_dead_letter_message)
    op.output("dead_letter_out", dead_letters, io.dead_letters)

    accepted = valid.trues
    if settings.pseudonymize_key:  # before the events reach any state (operators.privacy)
        accepted = op.map("pseudonymize", accepted, Pseudonymizer(settings.pseudonymize_key))
    by_user = op.key_on("key_by_user", accepted, lambda accepted: accepted.event["user_id"])
    checkpoint = checkpoint_for(engine, argv or [], os.environ)
    user_logic = user_logic_builder(engine, checkpoint, io.records, idle_ttl_s=settings.decision_ttl_s,
                                    retention_s=settings.long_term_retention_s)
    decisions = op.key_rm("unkey", op.stateful_batch("decide", by_user, user_logic))
    op.output("redis_out", decisions, io.decisions)
    return flow


@functools.cache
def _deployed_flow() -> Dataflow:
    return build_flow(Settings.from_env(), bytewax_run_argv())


def __getattr__(name: str) -> Dataflow:
    """`flow`, the deployed dataflow, built from the environment when Bytewax asks for it (not at import)."""
    if name == "flow":
        return _deployed_flow()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
