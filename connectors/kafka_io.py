"""Kafka plumbing: topic creation, the dataflow's source and sinks, and dead-letter records."""

from __future__ import annotations

import functools
import logging
import time
import weakref

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.backoff import Backoff
from connectors.kafka_source import PartitionGroupSource
from operators.parse import Rejected
from pulse.config import Settings

log = logging.getLogger("pulse.kafka")

DEAD_LETTER_REASON_HEADER = "pulse-error"
DEAD_LETTER_SOURCE_HEADER = "pulse-source"
# Producer settings for the sinks: batch a little, keep ordering per partition, survive broker blips.
PRODUCER_CONFIG = {"linger.ms": "5", "compression.type": "lz4", "enable.idempotence": "false", "acks": "all"}
# The logs: nothing waits for a record until the epoch's flush (which sends at once, whatever the linger), so
# records linger 50 ms to go in fewer, larger requests (less broker CPU); bound what may wait in memory
# meanwhile (then appending waits); report deliveries only when they fail (no Python call per record).
LOG_PRODUCER_CONFIG = {**PRODUCER_CONFIG, "linger.ms": "50", "queue.buffering.max.kbytes": "65536",
                       "delivery.report.only.error": True}
EXIT_FLUSH_S = 5.0


class BrokerUnavailable(RuntimeError):
    """The Kafka bootstrap servers did not answer."""


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create the input and output topics that do not exist yet; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        # Release the client now: held by the traceback's frame, it would go on reconnecting (and logging) until exit.
        del admin
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
    backoff = Backoff(0.5, cap=5.0)
    while True:
        try:
            return ensure_topics(settings, timeout_s=5.0)
        except BrokerUnavailable as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            delay = min(backoff.next(), remaining)
            log.warning("%s; retrying in %.1fs (giving up in %.0fs)", exc, delay, remaining)
            time.sleep(delay)


def event_source(settings: Settings) -> PartitionGroupSource:
    """The input topics' source; consumer errors are emitted as items (routed to dead letters), never raised."""
    offset = OFFSET_BEGINNING if settings.starting_offset == "earliest" else OFFSET_END
    return PartitionGroupSource(settings.kafka_bootstrap, settings.input_topics, offset,
                                {"fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)})


def _log_kafka_error(error: KafkaError) -> None:
    log.warning("kafka producer: %s", error)


class RecordLog:
    """The decision and outcome logs (Kafka topics, keyed by user id): records are produced without waiting.

    The dataflow's `decide` step appends each decision and settled outcome as it is made, and calls
    `flush` when Bytewax snapshots a user (the close of every epoch, before the epoch commits: see
    operators.user_state). So no batch waits for the broker, yet an epoch commits only once its records
    are in Kafka: after a crash the events of uncommitted epochs are replayed and their records produced
    again (at-least-once; records keep their `decision_id`). One producer per process, shared by its
    workers (librdkafka producers are thread-safe); a full local queue makes `append` wait (backpressure).
    """

    def __init__(self, bootstrap: str, decisions_topic: str, outcomes_topic: str) -> None:
        # Failed deliveries; the producer's callback holds this list, not self (no cycle keeps self alive).
        self._failures: list[KafkaError] = []
        self._producer = Producer({"bootstrap.servers": bootstrap, **LOG_PRODUCER_CONFIG,
                                   "on_delivery": functools.partial(_keep_failure, self._failures),
                                   "error_cb": _log_kafka_error})
        self._decisions, self._outcomes = decisions_topic, outcomes_topic
        self._unflushed = False
        # At exit (or when dropped), deliver what is still queued; bounded: the broker may be gone.
        weakref.finalize(self, self._producer.flush, EXIT_FLUSH_S)

    def decision(self, user_id: str, payload: bytes) -> None:
        """Append a decision record."""
        self._append(self._decisions, user_id, payload)

    def outcome(self, user_id: str, payload: bytes) -> None:
        """Append an outcome (attribution) record."""
        self._append(self._outcomes, user_id, payload)

    def _append(self, topic: str, user_id: str, payload: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, payload, user_id.encode())
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
        self._unflushed = True  # set after the produce: a flush that clears it covers this record

    def pending(self) -> int:
        """Records appended and not yet delivered (or failed)."""
        return len(self._producer)

    def poll(self) -> None:
        """Serve delivery reports without waiting; raises KafkaException if a record could not be delivered."""
        self._producer.poll(0)
        self._raise_failure()

    def flush(self) -> None:
        """Wait until every record appended so far is delivered.

        Raises KafkaException if one could not be (after librdkafka's retries): the dataflow stops and,
        with recovery, resumes from the last committed epoch without losing records.
        """
        if self._unflushed:
            self._unflushed = False
            self._producer.flush()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failures:
            raise KafkaException(self._failures[0])


def _keep_failure(failures: list[KafkaError], error: KafkaError | None, _message: object) -> None:
    if error is not None and not failures:  # the first failure is the one raised
        failures.append(error)


def record_log(settings: Settings) -> RecordLog:
    """The process's decision and outcome logs."""
    return RecordLog(settings.kafka_bootstrap, settings.topic_decisions, settings.topic_outcomes)


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
