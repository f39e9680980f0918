"""The item catalog: a broadcast Kafka source (every worker sees every item event) and a Redis sink.

Every worker's models must know every item, so unlike user events (partitioned across workers) the
items topic is read whole by each worker, from the beginning at every start: the topic is the
catalog's source of truth (configure it with compaction in production) and the catalog is rebuilt
on restart without relying on recovery state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import redis
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pulse.config import Settings

log = logging.getLogger("pulse.catalog")


@dataclass(frozen=True, slots=True)
class CatalogRecord:
    """A raw item record, flagged on the one worker (index 0) that writes the shared outputs."""

    primary: bool
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int


class _CatalogPartition(StatelessSourcePartition[CatalogRecord]):
    def __init__(self, settings: Settings, primary: bool) -> None:
        self._primary = primary
        self._consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": "pulse-catalog-unused",
            "enable.auto.commit": "false", "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms),
        })
        topic = settings.topic_items
        metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])

    def next_batch(self) -> list[CatalogRecord]:
        """Up to 500 item records (none when the topic is idle), without waiting: a blocking poll would stall the
        worker's other steps (after an empty batch Bytewax asks again 1 ms later without blocking)."""
        records = []
        for message in self._consumer.consume(500, 0):
            if message.error() is not None:
                log.warning("catalog consumer error: %s", message.error())
                continue
            records.append(CatalogRecord(self._primary, message.value(), message.key(), message.topic(),
                                         message.partition(), message.offset()))
        return records

    def close(self) -> None:
        self._consumer.close()


class CatalogSource(DynamicSource[CatalogRecord]):
    """Every worker reads the whole items topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CatalogPartition:
        """One consumer per worker over all partitions of the items topic."""
        return _CatalogPartition(self._settings, primary=worker_index == 0)


class _CatalogRedisPartition(StatelessSinkPartition[dict]):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = redis.Redis.from_url(settings.redis_url)

    def write_batch(self, items: list[dict]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for record in items:
            pipe.set(self._settings.item_key(record["item_id"]), orjson.dumps(record))
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisCatalogSink(DynamicSink[dict]):
    """Item records as JSON at `{prefix}:item:{item_id}` (queryable: `pulse catalog ITEM`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CatalogRedisPartition:
        """One Redis connection per worker."""
        return _CatalogRedisPartition(self._settings)
