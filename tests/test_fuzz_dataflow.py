"""Fuzz run through the real dataflow: bad input lands in the dead-letter topic with a reason, and neither
crashes the engine nor changes the state of a user whose valid events surround it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from badinput import NOW_MS, corpus
from enginestack import Engine, TopicReader, decided_ids, decisions, produce, stack_env

from operators.parse import Accepted, EventParser
from pulse.localservers import LocalServer
from simulator import SimEvent

pytestmark = pytest.mark.e2e
MAX_BYTES = 4096
N_CASES = 600


def _page_views(env: dict[str, str], first: int, count: int) -> list[SimEvent]:
    events = [{"event_id": f"victim-{i}", "user_id": "victim", "type": "page_view", "ts": NOW_MS + i,
               "item_id": f"i{i % 3}", "category": "c1"} for i in range(first, first + count)]
    return [SimEvent(env["PULSE_TOPIC_CLICKSTREAM"], b"victim", orjson.dumps(e), True, e) for e in events]


def test_bad_input_is_dead_lettered_and_harmless(kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path,
                                                 cases_tried: Counter) -> None:
    env = stack_env(kafka_server.port, redis_server.port, tmp_path, PULSE_MAX_EVENT_BYTES=str(MAX_BYTES))
    cases = corpus(seed=6, n=N_CASES, max_bytes=MAX_BYTES, user_of=lambda i: f"fuzz-{i % 20}")
    topics = {kind: env[f"PULSE_TOPIC_{kind.upper()}"] for kind in ("clickstream", "chat", "control")}
    parser = EventParser({topic: kind for kind, topic in topics.items()}, MAX_BYTES)
    fuzz = [SimEvent(topics[c.kind], b"fuzz", c.raw, False, None, c.name) for c in cases]
    outcome = [parser.parse(c.raw, None, topics[c.kind], 0, 0) for c in cases]
    rejected = [c.raw for c, result in zip(cases, outcome) if not isinstance(result, Accepted)]
    accepted = {result.event["event_id"] for result in outcome if isinstance(result, Accepted)}
    assert all(not isinstance(r, Accepted) for c, r in zip(cases, outcome) if c.must_reject)
    victim = _page_views(env, 0, 5) + _page_views(env, 5, 5)

    engine = Engine(env, tmp_path / "engine.log").start()
    decided = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    dead = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DEAD_LETTER"])
    try:
        produce(victim[:5] + fuzz + victim[5:], env)
        expected = accepted | {e.event["event_id"] for e in victim}
        decided.until(lambda ms: expected <= decided_ids(ms), 90, engine.alive)
        dead.until(lambda ms: len(ms) >= len(rejected), 60, engine.alive)
        assert engine.alive(), engine.log_tail()
    finally:
        engine.stop()
        decided.close()
        dead.close()
    cases_tried["dataflow: bad-input cases sent"] += len(cases)
    cases_tried["dataflow: dead-lettered"] += len(dead.messages)

    assert sorted(m.value() or b"" for m in dead.messages) == sorted(rejected)
    reasons = Counter()
    for message in dead.messages:
        headers = dict(message.headers())
        assert headers["pulse-error"], "dead letter without a reason"
        reasons[headers["pulse-error"].decode().split(":")[0][:30]] += 1
    assert len(reasons) >= 8, reasons
    assert decided_ids(decided.messages) == expected
    last = [d for d in decisions(decided.messages) if d["user_id"] == "victim"][-1]
    assert last["event_id"] == "victim-9"
    assert last["features"]["events_per_session"] == 10, "bad input changed the victim's profile"
