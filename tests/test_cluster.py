"""A two-process Bytewax cluster (`pulse run -i 0|1 -a ...`) with recovery on, against real servers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from pulse.localservers import LocalServer, free_port
from simulator import EventGenerator, SimulationConfig, World
from tests.enginestack import Engine, TopicReader, decisions, produce, retarget, stack_env

pytestmark = pytest.mark.e2e


def test_two_processes_decide_every_event_once_and_checkpoint_their_models(
    kafka_server: LocalServer, redis_server: LocalServer, tmp_path: Path
) -> None:
    env = stack_env(kafka_server.port, redis_server.port, tmp_path)
    recovery = Path(env["PULSE_RECOVERY_DIR"])
    recovery.mkdir(parents=True, exist_ok=True)
    init_db_dir(recovery, 1)  # once, before both processes start
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    engines = [Engine(env, tmp_path / f"engine-{i}.log", "-w", "1", "-i", str(i), "-a", addresses).start()
               for i in range(2)]
    events = [e for e in EventGenerator(World(SimulationConfig(users=60, items=40, seed=11))).events(1500) if e.valid]
    reader = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    try:
        produce(retarget(events, env), env)
        wanted = {e.event["event_id"] for e in events}
        alive = lambda: all(engine.alive() for engine in engines)  # noqa: E731
        try:
            messages = reader.until(lambda ms: wanted <= {d["event_id"] for d in decisions(ms)}, 120, alive)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError("\n".join(engine.log_tail() for engine in engines)) from exc
        per_event = Counter(d["event_id"] for d in decisions(messages))
        assert set(per_event) == wanted and max(per_event.values()) == 1
        # Both processes checkpointed the models they learned (each keeps its own users' factors).
        for process in range(2):
            assert (recovery / f"models-p{process}.pkl").exists()
            assert (recovery / f"models-p{process}.users.db").exists()
        assert sorted(path.name for path in recovery.glob("*.sqlite3")) == ["part-0.sqlite3"]
        assert alive(), "\n".join(engine.log_tail() for engine in engines)
    finally:
        reader.close()
        for engine in engines:
            engine.stop()
