"""`pulse run`'s own log lines carry a time and a level, like every other Pulse process (bytewax.run sets up none)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from enginestack import Engine, produce, stack_env

from pulse.localservers import LocalServer
from simulator import SimEvent

pytestmark = pytest.mark.e2e
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING pulse\.kafka: dead-lettered \S+: invalid JSON",
                  re.MULTILINE)


def test_engine_log_lines_have_time_and_level(kafka_server: LocalServer, redis_server: LocalServer,
                                              tmp_path: Path) -> None:
    env = stack_env(kafka_server.port, redis_server.port, tmp_path)
    engine = Engine(env, tmp_path / "engine.log").start()
    try:
        produce([SimEvent(env["PULSE_TOPIC_CLICKSTREAM"], b"u1", b"{not json", False, None, "invalid JSON")], env)
        deadline = time.monotonic() + 60
        while "dead-lettered" not in engine.log_tail(100_000):
            assert engine.alive() and time.monotonic() < deadline, engine.log_tail()
            time.sleep(0.2)
    finally:
        engine.stop()
    assert LINE.search(engine.log_tail(100_000)), engine.log_tail()
