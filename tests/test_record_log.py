"""Decision and outcome logs (connectors.kafka_io.RecordLog) driven by the per-user logic, against a real broker.

Records are produced without waiting; they must all be delivered by the time Bytewax snapshots a user
(before the epoch commits), and at once when a user's state is dropped (no snapshot follows).
"""

from __future__ import annotations

import time
import uuid
import weakref

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import kafka_io
from connectors.kafka_io import RecordLog
from operators.engine import EngineConfig, PersonalizationEngine
from operators.parse import Accepted
from operators.user_state import user_logic_builder
from pulse.localservers import free_port

NOW = 1_763_900_000_000
WINDOW_MS = 60_000


@pytest.fixture()
def logs(kafka_server) -> tuple[str, str, str]:
    """(bootstrap, decisions topic, outcomes topic), fresh."""
    bootstrap = f"127.0.0.1:{kafka_server.port}"
    names = [f"log-{uuid.uuid4().hex[:8]}-{kind}" for kind in ("decisions", "outcomes")]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in names]).values():
        future.result(15)
    return bootstrap, names[0], names[1]


def _event(n: int, user: str, kind: str = "click", ts: int | None = None) -> Accepted:
    event = {"event_id": f"{user}-e{n}", "user_id": user, "type": kind, "ts": NOW + n if ts is None else ts,
             "item_id": f"i{n % 3}", "category": "c"}
    return Accepted(event, event["ts"])


def _read(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        records += [orjson.loads(m.value()) for m in consumer.consume(100, 0.2) if m.error() is None]
    consumer.close()
    return records


def test_records_are_delivered_by_the_snapshot_not_before_the_batch_returns(logs) -> None:
    bootstrap, decisions, outcomes = logs
    records = RecordLog(bootstrap, decisions, outcomes)
    engine = PersonalizationEngine(EngineConfig(attribution_window_ms=WINDOW_MS))
    build = user_logic_builder(engine, None, records)
    ann, bob = build(None), build(None)
    ann.on_batch([_event(n, "ann") for n in range(3)])
    bob.on_batch([_event(0, "bob")])
    out, discard = ann.on_batch([_event(3, "ann", ts=NOW + 2 * WINDOW_MS)])  # settles the earlier decisions
    assert [d.decision_id for d in out] == ["d-ann-e3"] and not discard
    assert records.pending() > 0, "appending does not wait for the broker"
    bob.snapshot()  # the epoch's first snapshot flushes everything the process appended
    assert records.pending() == 0
    logged = _read(bootstrap, decisions, 5)
    assert sorted(d["decision_id"] for d in logged) == ["d-ann-e0", "d-ann-e1", "d-ann-e2", "d-ann-e3", "d-bob-e0"]
    settled = _read(bootstrap, outcomes, 3)
    assert sorted(a["decision_id"] for a in settled) == ["d-ann-e0", "d-ann-e1", "d-ann-e2"]


def test_a_forgotten_users_records_are_delivered_at_once(logs) -> None:
    bootstrap, decisions, outcomes = logs
    records = RecordLog(bootstrap, decisions, outcomes)
    logic = user_logic_builder(PersonalizationEngine(), None, records)(None)
    out, discard = logic.on_batch([_event(0, "cy"), _event(1, "cy", "forget_user")])
    assert discard and out[-1].forget
    assert records.pending() == 0, "no snapshot follows a discarded state: the batch itself waits for delivery"
    assert [d["decision_id"] for d in _read(bootstrap, decisions, 2)] == ["d-cy-e0", "d-cy-e1"]


def test_a_record_that_cannot_be_delivered_fails_the_flush(monkeypatch) -> None:
    """Delivery reports come only for failures: the failure must still reach flush (and stop the dataflow)."""
    monkeypatch.setitem(kafka_io.LOG_PRODUCER_CONFIG, "message.timeout.ms", "500")
    records = RecordLog(f"127.0.0.1:{free_port()}", "decisions", "outcomes")  # no broker listens there
    records.decision("dee", b'{"decision_id": "d-dee-e0"}')
    with pytest.raises(KafkaException) as failure:
        records.flush()
    assert failure.value.args[0].code() == KafkaError._MSG_TIMED_OUT


def test_a_dropped_log_is_freed_at_once() -> None:
    """No reference cycle keeps a dropped log (and its producer, reconnecting to a broker maybe gone) alive."""
    records = RecordLog(f"127.0.0.1:{free_port()}", "decisions", "outcomes")
    dropped = weakref.ref(records)
    del records
    assert dropped() is None
