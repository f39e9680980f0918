"""Event producer helper: validate an event and send it to its topic, keyed by user id.

>>> producer = PulseProducer("127.0.0.1:9092")                      # doctest: +SKIP
>>> producer.send({"event_id": "e1", "user_id": "u1", "type": "page_view", "ts": 1763900000000})  # doctest: +SKIP
>>> producer.close()                                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from operators.contracts import TOPIC_KIND_OF_TYPE, InvalidEvent, validate_event
from pulse.config import Settings

PRODUCER_CONFIG = {"linger.ms": "2", "compression.type": "lz4", "acks": "all", "enable.idempotence": "false"}
DeliveryCallback = Callable[[KafkaError | None, Message], None]


def check_event(event: Any, max_bytes: int) -> tuple[str, bytes]:
    """Validate `event` against the contract; return its topic kind and JSON encoding, or raise InvalidEvent."""
    event_type = event.get("type") if isinstance(event, dict) else None
    kind = TOPIC_KIND_OF_TYPE.get(event_type, "clickstream") if isinstance(event_type, str) else "clickstream"
    validate_event(event, kind)
    payload = orjson.dumps(event)
    if len(payload) > max_bytes:
        raise InvalidEvent(f"oversize event: {len(payload)} bytes > limit {max_bytes}")
    return kind, payload


class PulseProducer:
    """Sends valid events to the clickstream, chat or control topic chosen by their type (key: user id)."""

    def __init__(self, bootstrap: str | None = None, settings: Settings | None = None) -> None:
        settings = settings or Settings.from_env()
        self._topics = {"clickstream": settings.topic_clickstream, "chat": settings.topic_chat,
                        "control": settings.topic_control}
        self._max_bytes = settings.max_event_bytes
        self._producer = Producer({"bootstrap.servers": bootstrap or settings.kafka_bootstrap, **PRODUCER_CONFIG})

    def send(self, event: dict[str, Any], on_delivery: DeliveryCallback | None = None) -> str:
        """Validate and enqueue one event (raises InvalidEvent); return the topic it goes to."""
        kind, payload = check_event(event, self._max_bytes)
        topic = self._topics[kind]
        while True:
            try:
                self._producer.produce(topic, payload, key=event["user_id"].encode(), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)
        return topic

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait for outstanding deliveries; return how many are still pending."""
        return self._producer.flush(timeout_s)

    def close(self) -> None:
        """Deliver what is queued."""
        self.flush()
