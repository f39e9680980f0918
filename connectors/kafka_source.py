"""The dataflow's Kafka source: partition i of every input topic is one Bytewax partition; a worker reads all of its
partitions with one consumer.

Bytewax's `KafkaSource` runs one consumer per topic partition and lets each poll block for a
millisecond when it has nothing, so with three input topics a worker waits in empty polls while
messages queue in the other consumers. Here partition `i` of every input topic is one Bytewax
partition, read with non-blocking polls; Bytewax waits 1 ms before polling an empty partition
again, without holding up the rest of the worker.

The Bytewax partitions of one worker share one consumer (`_WorkerConsumer`), which deals what it
fetches to each partition's buffer. One consumer per partition made one fetch loop per partition:
a broker answered each of them every `fetch.wait.max.ms` even when idle, and on a small machine
that broker work competes with the engine for the CPU.

Items are confluent-kafka `Message`s as consumed (a consumer error is a message whose `error()`
is set: the parse step turns it into a dead letter). The recovery state of a partition is the
next offset to read of each topic partition in it, so a resumed dataflow re-reads exactly what
its last committed epoch had not finished.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

PART_PREFIX = "partition-"
LAG_EVERY_S = 1.0  # how often each partition reports its consumer lag (bytewax_kafka_consumer_lag)

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


class PartitionGroupSource(FixedPartitionedSource[Message, Offsets]):
    """Reads `topics`; Bytewax partition `partition-<i>` is partition i of each topic that has one.

    Without recovery state a topic partition starts at `starting_offset` (OFFSET_BEGINNING or
    OFFSET_END). `config` adds librdkafka consumer settings (e.g. `fetch.wait.max.ms`).
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], starting_offset: int,
                 config: Mapping[str, str] | None = None, batch_size: int = 1000) -> None:
        if isinstance(topics, str):
            raise TypeError("topics must be a sequence of names, not a string")
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._starting_offset = starting_offset
        self._config = dict(config or {})
        self._batch_size = batch_size
        self._worker_consumers: dict[int, _WorkerConsumer] = {}  # by worker thread: Bytewax builds and polls on it

    def list_parts(self) -> list[str]:
        """One partition per partition index found in any of the topics."""
        return [f"{PART_PREFIX}{index}" for index in sorted({p for _topic, p in self._topic_partitions})]

    def build_part(self, step_id: str, for_part: str, resume_state: Offsets | None) -> _PartitionGroup:
        """Partition i of every topic, at its resume offsets, read by the calling worker's consumer."""
        index = int(for_part.removeprefix(PART_PREFIX))
        resume = resume_state or {}
        offsets = {(topic, p): resume.get((topic, p), self._starting_offset)
                   for topic, p in self._topic_partitions if p == index}
        worker = threading.get_ident()
        consumer = self._worker_consumers.get(worker)
        if consumer is None:
            consumer = self._worker_consumers[worker] = _WorkerConsumer(
                self._new_consumer(), self._batch_size, on_close=lambda: self._worker_consumers.pop(worker))
        return _PartitionGroup(consumer, index, offsets, step_id)

    def _new_consumer(self) -> Consumer:
        config = {"bootstrap.servers": self._bootstrap, "group.id": "pulse-unused",  # offsets live in recovery state
                  "enable.auto.commit": "false", "enable.auto.offset.store": "false", **self._config}
        return Consumer(config)

    @cached_property
    def _topic_partitions(self) -> list[tuple[str, int]]:
        """(topic, partition) of every input topic partition, asked of the broker once per process (at start)."""
        admin = AdminClient({"bootstrap.servers": self._bootstrap})
        found = []
        for topic in self._topics:  # one by one: a broker that auto-creates topics creates them here
            metadata = admin.list_topics(topic, timeout=30).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot list the partitions of Kafka topic {topic!r}: {metadata.error.str()}")
            found += [(topic, p) for p in metadata.partitions]
        return found


class _WorkerConsumer:
    """The one consumer of a worker's partition groups: deals each fetched message to its group's buffer.

    A group takes its own buffer and fetches more only when that is empty, so at most about a batch per
    group waits in the buffers. Messages keep their order within a topic partition.
    """

    def __init__(self, consumer: Consumer, batch_size: int, on_close: Callable[[], object]) -> None:
        self.consumer = consumer
        self._batch_size = batch_size
        self._on_close = on_close
        self._buffers: dict[int, list[Message]] = {}  # partition index -> messages fetched, not yet taken

    def join(self, index: int, offsets: Offsets) -> None:
        """Start reading group `index`: its topic partitions from `offsets`."""
        self._buffers[index] = []
        self.consumer.incremental_assign([TopicPartition(topic, p, offset) for (topic, p), offset in offsets.items()])

    def take(self, index: int) -> list[Message]:
        """Group `index`'s fetched messages, fetching without waiting if it has none buffered.

        A consumer error not tied to a partition goes to the group that asked.
        """
        buffers = self._buffers
        own = buffers[index]
        if not own:
            for message in self.consumer.consume(self._batch_size, 0):
                buffers.get(message.partition(), own).append(message)
        buffers[index] = []
        return own

    def leave(self, index: int, offsets: Offsets) -> None:
        """Stop reading group `index`; after the last group, close the consumer and call `on_close`."""
        del self._buffers[index]
        if self._buffers:
            self.consumer.incremental_unassign([TopicPartition(topic, p) for topic, p in offsets])
        else:
            self.consumer.close()
            self._on_close()


class _PartitionGroup(StatefulSourcePartition[Message, Offsets]):
    def __init__(self, worker: _WorkerConsumer, index: int, offsets: Offsets, step_id: str) -> None:
        self._worker = worker
        self._index = index
        self._offsets = offsets
        self._step_id = step_id
        self._lag_due = 0.0
        worker.join(index, offsets)

    def next_batch(self) -> list[Message]:
        """What the worker's consumer has fetched for this group, without waiting (on an empty batch Bytewax waits
        1 ms)."""
        messages = self._worker.take(self._index)
        offsets = self._offsets
        for message in messages:
            if message.error() is None:
                offsets[(message.topic(), message.partition())] = message.offset() + 1
        now = time.monotonic()
        if now >= self._lag_due:
            self._lag_due = now + LAG_EVERY_S
            self._report_lag()
        return messages

    def _report_lag(self) -> None:
        consumer = self._worker.consumer
        for (topic, p), offset in self._offsets.items():
            if offset >= 0:  # a real offset, not "beginning"/"end" before the first message
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high >= 0:
                    BYTEWAX_CONSUMER_LAG_GAUGE.labels(step_id=self._step_id, topic=topic,
                                                      partition=p).set(max(high - offset, 0))

    def snapshot(self) -> Offsets:
        """The next offset to read of each topic partition."""
        return dict(self._offsets)

    def close(self) -> None:
        """Stop reading; the worker's consumer leaves the broker with its last group."""
        self._worker.leave(self._index, self._offsets)
