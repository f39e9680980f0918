"""Kafka plumbing: topic creation, the dataflow's source and sinks, and dead-letter records."""

from __future__ import annotations

import logging
import time

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka_source import PartitionGroupSource
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


def event_source(settings: Settings) -> PartitionGroupSource:
    """The input topics' source; consumer errors are emitted as items (routed to dead letters), never raised."""
    offset = OFFSET_BEGINNING if settings.starting_offset == "earliest" else OFFSET_END
    return PartitionGroupSource(settings.kafka_bootstrap, settings.input_topics, offset,
                                {"fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)})


def _log_kafka_error(error: KafkaError) -> None:
    log.warning("kafka producer: %s", error)


class _RecordLogPartition(StatelessSinkPartition[DecisionOut | OutcomeOut]):
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG, "error_cb": _log_kafka_error})
        self._failure: KafkaError | None = None

    def write_batch(self, items: list[DecisionOut | OutcomeOut]) -> None:
        """Produce the batch and wait for its delivery (Bytewax commits the epoch only after the sinks return).

        Raises KafkaException if a record could not be delivered (after librdkafka's retries): the
        dataflow stops and, with recovery, resumes from the last committed epoch without losing records.
        """
        produce, topic, delivered = self._producer.produce, self._topic, self._on_delivery
        for record in items:
            while True:
                try:
                    produce(topic, record.payload, record.user_id.encode(), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.1)
        self._producer.flush()
        if self._failure is not None:
            raise KafkaException(self._failure)

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None and self._failure is None:
            self._failure = error

    def close(self) -> None:
        self._producer.flush()


class RecordLogSink(DynamicSink[DecisionOut | OutcomeOut]):
    """Appends decision or outcome records to a topic, keyed by user id (per-user order kept within a partition).

    Like Bytewax's KafkaSink, but takes the records themselves: no message object per record.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RecordLogPartition:
        """One producer per worker."""
        return _RecordLogPartition(self._bootstrap, self._topic)


def decision_log_sink(settings: Settings) -> RecordLogSink:
    """Sink of the decisions topic (every decision with its explanation)."""
    return RecordLogSink(settings.kafka_bootstrap, settings.topic_decisions)


def outcome_log_sink(settings: Settings) -> RecordLogSink:
    """Sink of the outcomes topic (attribution join results)."""
    return RecordLogSink(settings.kafka_bootstrap, settings.topic_outcomes)


def dead_letter_sink(settings: Settings) -> KafkaSink:
    """Sink of the dead-letter topic."""
    return KafkaSink([settings.kafka_bootstrap], settings.topic_dead_letter, add_config=PRODUCER_CONFIG)


def to_dead_letter_message(rejected: Rejected) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The raw record unchanged, with the reason and its source position in headers."""
    source = f"{rejected.topic}/{rejected.partition}/{rejected.offset}"
    log.warning("dead-lettered %s: %s", source, rejected.reason)
    return KafkaSinkMessage(
        rejected.key,
        rejected.raw,
        headers=[(DEAD_LETTER_REASON_HEADER, rejected.reason.encode()), (DEAD_LETTER_SOURCE_HEADER, source.encode())],
    )
