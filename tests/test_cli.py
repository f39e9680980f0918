"""The `pulse` CLI: help for every command, helpful errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulse.cli import main
from pulse.localservers import free_port

ROOT = Path(__file__).resolve().parents[1]


def pulse(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pulse.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize("command", [[], ["run"], ["gateway"], ["simulate"], ["demo"], ["config"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # In this process (argparse prints and exits): the other tests run `python -m pulse.cli` itself.
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0 and "usage: pulse" in capsys.readouterr().out


def test_config_table_lists_every_variable() -> None:
    result = pulse("config")
    assert result.returncode == 0
    for var in ("KAFKA_BOOTSTRAP", "REDIS_URL", "PULSE_TOP_K", "PULSE_STARTING_OFFSET"):
        assert f"`{var}`" in result.stdout


def test_bad_configuration_is_explained() -> None:
    result = pulse("config", env={"PULSE_TOP_K": "many"})
    assert result.returncode == 2
    assert "PULSE_TOP_K='many' is not a valid int" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_broker_is_explained() -> None:
    result = pulse("run", env={"KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, timeout=90)
    assert result.returncode == 3
    assert "unreachable" in result.stderr and "Traceback" not in result.stderr


def test_simulate_prints_json_lines() -> None:
    result = pulse("simulate", "--stdout", "--events", "50", "--rate", "0", "--malformed", "0")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 50 and all(line.startswith("{") for line in lines)


def test_simulate_produces_to_the_configured_topics(kafka_server) -> None:
    from confluent_kafka import Consumer, TopicPartition

    bootstrap = f"127.0.0.1:{kafka_server.port}"
    topic = f"clicks-{os.getpid()}"
    result = pulse("simulate", "--events", "40", "--rate", "0", "--malformed", "0", "--no-progress",
                   env={"KAFKA_BOOTSTRAP": bootstrap, "PULSE_TOPIC_CLICKSTREAM": topic})
    assert result.returncode == 0, result.stderr
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    received: list = []
    deadline = time.monotonic() + 10
    while len(received) <= 20 and time.monotonic() < deadline:
        received += [m for m in consumer.consume(100, 0.2) if m.error() is None]
    consumer.close()
    assert len(received) > 20, "clickstream events must go to PULSE_TOPIC_CLICKSTREAM"


def test_the_configuration_table_is_current() -> None:
    from pulse.config import settings_table

    operations = (ROOT / "docs" / "operations.md").read_text()
    assert settings_table() in operations, "regenerate docs/operations.md's table from `pulse config`"
