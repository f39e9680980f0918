"""Baseline pipelines of the throughput benchmark, doing the engine's exact per-event work without Bytewax.

    python -m bench.pipelines plain EXPECTED      # plain confluent-kafka consumer loop
    python -m bench.pipelines quix EXPECTED       # Quix Streams application (needs the quixstreams package)

Both read the run's configuration from the environment (pulse.config, like `pulse run`), consume the
input topics from the beginning, and per event do what the dataflow does: parse + validate, the same
`UserLogic` (per-user state, engine.handle = learn + decide + explain, metrics, audit, orjson encoding),
then write every decision to Redis with the same pipeline as the engine's Redis sink (SET latest, SET
explanation, PUBLISH) and to the decisions log topic (the plain loop with the engine's `RecordLog`,
Quix Streams with its own producer). They exit after EXPECTED valid events.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connectors.kafka_io import PRODUCER_CONFIG, RecordLog, record_log  # noqa: E402
from connectors.redis_sink import RedisDecisionWriter  # noqa: E402
from operators.engine import EngineConfig, PersonalizationEngine  # noqa: E402
from operators.parse import Accepted, EventParser  # noqa: E402
from operators.user_state import user_logic_builder  # noqa: E402
from pulse.config import Settings  # noqa: E402


class Work:
    """The engine's per-event work, shared by both baselines."""

    def __init__(self, settings: Settings, records: RecordLog | None = None) -> None:
        self.settings = settings
        self.parser = EventParser(
            {settings.topic_clickstream: "clickstream", settings.topic_chat: "chat", settings.topic_control: "control"},
            settings.max_event_bytes,
        )
        engine = PersonalizationEngine(EngineConfig(settings.top_k, settings.churn_threshold,
                                                    settings.escalation_threshold, settings.seed,
                                                    recommender=settings.recommender_config()))
        self.build = user_logic_builder(engine, None, records, idle_ttl_s=settings.decision_ttl_s)
        self.logics: dict = {}

    def decide(self, accepted: Accepted) -> list:
        """Decisions/outcomes of one valid event."""
        user_id = accepted.event["user_id"]
        logic = self.logics.get(user_id)
        if logic is None:
            logic = self.logics[user_id] = self.build(None)
        out, discard = logic.on_batch([accepted])
        if discard:
            del self.logics[user_id]
        return out


def plain(expected: int) -> None:
    """A plain confluent-kafka loop: consume batches, decide (appending to the logs), pipeline the batch to Redis."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    settings = Settings.from_env()
    records = record_log(settings)
    work = Work(settings, records)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-plain",
                         "enable.auto.commit": False, "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)})
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic in settings.input_topics
                     for p in metadata.topics[topic].partitions])
    redis_out = RedisDecisionWriter(settings)
    done = 0
    while done < expected:
        messages = consumer.consume(1000, 0.5)
        decisions = []
        for message in messages:
            if message.error() is not None:
                continue
            parsed = work.parser.parse(message.value(), message.key(), message.topic(), message.partition(),
                                       message.offset())
            if not isinstance(parsed, Accepted):
                continue
            done += 1
            decisions.extend(work.decide(parsed))
        if decisions:
            redis_out.write_batch(decisions)
    records.flush()
    consumer.close()


def quix(expected: int) -> None:
    """The same pipeline as a Quix Streams application: one StreamingDataFrame per input topic."""
    from quixstreams import Application
    from quixstreams.models.topics import TopicConfig
    from quixstreams.sinks import BatchingSink

    settings = Settings.from_env()
    work = Work(settings)
    state = {"done": 0}

    class RedisSink(BatchingSink):
        def __init__(self) -> None:
            super().__init__()
            self._redis = RedisDecisionWriter(settings)

        def write(self, batch) -> None:
            self._redis.write_batch([item.value for item in batch])

    app = Application(
        broker_address=settings.kafka_bootstrap, consumer_group=f"bench-quix-{os.getpid()}",
        auto_offset_reset="earliest", auto_create_topics=False, use_changelog_topics=False,
        consumer_extra_config={"fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)},
        producer_extra_config={k: v for k, v in PRODUCER_CONFIG.items() if k != "enable.idempotence"},
        state_dir=os.environ.get("BENCH_QUIX_STATE_DIR", "/tmp/bench-quix-state"),
    )
    config = TopicConfig(num_partitions=settings.topic_partitions, replication_factor=1,
                         extra_config={"retention.ms": "3600000", "retention.bytes": "-1"})
    decisions_topic = app.topic(settings.topic_decisions, value_serializer="bytes", key_serializer="bytes",
                                config=config)
    redis_sink = RedisSink()

    for topic_name in settings.input_topics:
        topic = app.topic(topic_name, value_deserializer="bytes", key_deserializer="bytes", config=config)
        sdf = app.dataframe(topic)

        def handle(value: bytes, key: bytes, timestamp: int, headers, topic_name: str = topic_name) -> list:
            parsed = work.parser.parse(value, key, topic_name, None, None)
            if not isinstance(parsed, Accepted):
                return []
            state["done"] += 1
            if state["done"] >= expected:
                app.stop()
            return work.decide(parsed)

        decided = sdf.apply(handle, metadata=True, expand=True)
        decided.apply(lambda out: out.payload).to_topic(decisions_topic)
        decided.sink(redis_sink)
    app.run()


if __name__ == "__main__":
    kind, expected = sys.argv[1], int(sys.argv[2])
    started = time.perf_counter()
    {"plain": plain, "quix": quix}[kind](expected)
    print(f"{kind}: {expected} events in {time.perf_counter() - started:.1f}s", file=sys.stderr)
