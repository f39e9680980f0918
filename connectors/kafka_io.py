"""Kafka plumbing: topic creation, the dataflow's source and sinks, and dead-letter records."""

from __future__ import annotations

import logging
import time

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from operators.parse import Rejected
from operators.user_state import DecisionOut, OutcomeOut
from pulse.config import Settings

log = logging.getLogger("pulse.kafka")

DEAD_LETTER_REASON_HEADER = "pulse-error"
DEAD_LETTER_SOURCE_HEADER = "pulse-source"
# Producer settings for the sinks: batch a little, keep ordering per partition, survive broker blips.
PRODUCER_CONFIG = {"linger.ms": "5", "compression.type": "lz4", "enable.idempotence": "false", "acks": "all"}


class BrokerUnavailable(RuntimeError):
    """The Kafka bootstrap servers did not answer."""


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create the input and output topics that do not exist yet; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from None
    wanted = [*settings.input_topics, settings.topic_items, settings.topic_decisions, settings.topic_outcomes,
              settings.topic_dead_letter]
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics([NewTopic(name, settings.topic_partitions, 1) for name in missing])
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        log.info("created topic %s with %d partitions", name, settings.topic_partitions)
    return missing


def ensure_topics_retrying(settings: Settings, budget_s: float) -> list[str]:
    """`ensure_topics`, retrying an unreachable broker with exponential backoff for up to `budget_s` seconds."""
    deadline = time.monotonic() + budget_s
    backoff = 0.5
    while True:
        try:
            return ensure_topics(settings, timeout_s=5.0)
        except BrokerUnavailable as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            log.warning("%s; retrying in %.1fs (giving up in %.0fs)", exc, min(backoff, remaining), remaining)
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 5.0)


def event_source(settings: Settings) -> KafkaSource:
    """KafkaSource over the input topics; errors are emitted as items (routed to dead letters), never raised."""
    offset = OFFSET_BEGINNING if settings.starting_offset == "earliest" else OFFSET_END
    return KafkaSource(
        [settings.kafka_bootstrap], settings.input_topics, tail=True, starting_offset=offset,
        batch_size=1000, raise_on_errors=False, add_config={"fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)},
    )


def decision_log_sink(settings: Settings) -> KafkaSink:
    """Sink of the decisions topic (every decision with its explanation)."""
    return KafkaSink([settings.kafka_bootstrap], settings.topic_decisions, add_config=PRODUCER_CONFIG)


def outcome_log_sink(settings: Settings) -> KafkaSink:
    """Sink of the outcomes topic (attribution join results)."""
    return KafkaSink([settings.kafka_bootstrap], settings.topic_outcomes, add_config=PRODUCER_CONFIG)


def dead_letter_sink(settings: Settings) -> KafkaSink:
    """Sink of the dead-letter topic."""
    return KafkaSink([settings.kafka_bootstrap], settings.topic_dead_letter, add_config=PRODUCER_CONFIG)


def to_log_message(record: DecisionOut | OutcomeOut) -> KafkaSinkMessage[bytes, bytes]:
    """Decision or outcome record keyed by user id (per-user order is kept within a partition)."""
    return KafkaSinkMessage(record.user_id.encode(), record.payload)


def to_dead_letter_message(rejected: Rejected) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The raw record unchanged, with the reason and its source position in headers."""
    source = f"{rejected.topic}/{rejected.partition}/{rejected.offset}"
    log.warning("dead-lettered %s: %s", source, rejected.reason)
    return KafkaSinkMessage(
        rejected.key,
        rejected.raw,
        headers=[(DEAD_LETTER_REASON_HEADER, rejected.reason.encode()), (DEAD_LETTER_SOURCE_HEADER, source.encode())],
    )
