"""Destinations for simulated events: a Kafka producer and a JSON-lines stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from confluent_kafka import KafkaError, Producer

from simulator.events import SimEvent

POLL_EVERY = 1000


class EventSink(Protocol):
    """Anything that accepts events; `flush` waits until they are delivered, `close` flushes and releases."""

    def send(self, event: SimEvent) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class DeliveryErrors:
    """A producer's delivery callback: counts failed deliveries and keeps the last error.

    The producer holds this object rather than a bound method of its owner: a bound method would make a
    reference cycle that keeps a dropped sink, and its producer reconnecting to a broker maybe gone, alive.
    """

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.count += 1
            self.last = err


class KafkaEventSink:
    """Produces each event to its topic with key = user_id; delivery errors are counted in `delivery_errors`."""

    def __init__(self, bootstrap: str, config: Mapping[str, Any] | None = None, flush_timeout_s: float = 30.0) -> None:
        self._errors = DeliveryErrors()
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "linger.ms": 2,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "delivery.report.only.error": True,
            "on_delivery": self._errors,
        }
        conf.update(config or {})
        self._producer = Producer(conf)
        self._flush_timeout_s = flush_timeout_s
        self._unpolled = 0

    @property
    def delivery_errors(self) -> int:
        """How many events could not be delivered."""
        return self._errors.count

    @property
    def last_error(self) -> KafkaError | None:
        """The last delivery error, if any."""
        return self._errors.last

    def send(self, event: SimEvent) -> None:
        """Queue one event; when the local queue is full, serve delivery reports until there is room."""
        while True:
            try:
                self._producer.produce(event.topic, value=event.value, key=event.key)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._producer.poll(0)
            self._unpolled = 0

    def flush(self) -> None:
        """Wait for outstanding messages; raise if some are still undelivered after the timeout."""
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise TimeoutError(f"{remaining} messages still undelivered after {self._flush_timeout_s} s")

    def close(self) -> None:
        """Flush outstanding messages, then release the producer; the sink cannot send after this.

        A producer kept by whoever still holds the closed sink would stay connected and log the broker's
        going away.
        """
        try:
            self.flush()
        finally:
            del self._producer


class JsonLinesSink:
    """Writes one line per event: the JSON value, or for malformed events their raw text (undecodable bytes escaped)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def send(self, event: SimEvent) -> None:
        """Write the event's value as one line."""
        self._stream.write(event.value.decode("utf-8", errors="backslashreplace") + "\n")

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._stream.flush()

    def close(self) -> None:
        """Flush; the stream itself belongs to the caller and stays open."""
        self.flush()
