"""`pulse demo` end to end: it starts its own servers, shows decisions flowing, and Ctrl-C, SIGTERM or kill -9
stops everything."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive, survivors_after

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
DECIDED = re.compile(rb"decided [1-9]")  # the status line counts decisions of the simulator's events


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def ignore_sigint() -> None:
    """What a shell without job control does to a background command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(("stop_signal", "repeated"),
                         [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True),
                          (signal.SIGKILL, False)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-pressed-again-during-shutdown", "kill-9"])
def test_demo_runs_and_a_stop_signal_stops_every_process(tmp_path: Path, stop_signal: int, repeated: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL", "PULSE_GATEWAY_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    # Started with SIGINT ignored, as from a background job: Ctrl-C must work all the same.
    demo = subprocess.Popen([sys.executable, "-m", "pulse.cli", "demo", "--rate", "300", "--users", "100"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=ignore_sigint)
    output = b""
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        os.set_blocking(demo.stdout.fileno(), False)
        while time.monotonic() < deadline and not DECIDED.search(output):
            output += demo.stdout.read() or b""
            assert demo.poll() is None, output.decode(errors="replace")
            time.sleep(0.2)
        text = output.decode(errors="replace")
        assert DECIDED.search(output), f"no decision within 60 s:\n{text[-3000:]}"
        assert "WebSocket  ws://127.0.0.1:" in text and "Ctrl-C stops everything" in text
        assert "decisions/s" in text and "latency p50" in text
        started = children_of(demo.pid)
        assert len(started) >= 4, f"expected broker, redis-server, engine and gateway, got {started}"
        demo.send_signal(stop_signal)
        deadline = time.monotonic() + 30
        while demo.poll() is None and time.monotonic() < deadline:  # keep draining: a full pipe would block it
            output += demo.stdout.read() or b""
            time.sleep(0.1)
            if repeated and demo.poll() is None:  # an impatient user: every wait of the shutdown gets interrupted
                demo.send_signal(stop_signal)
        if stop_signal == signal.SIGKILL:  # no shutdown runs: the children get the kernel's parent-death signal
            assert demo.poll() == -signal.SIGKILL
            assert not survivors_after(started, 15), "a process started by the demo survived kill -9"
            return
        if demo.poll() is None:
            demo.send_signal(signal.SIGUSR1)  # every thread's stack, to see where it hangs
            time.sleep(1.0)
            output += demo.stdout.read() or b""
        assert demo.poll() == 0, (f"the demo did not stop cleanly within 30 s of {signal.Signals(stop_signal).name}:\n"
                                  + output.decode(errors="replace")[-6000:])
        assert not survivors_after(started, 10), "a process started by the demo survived the stop signal"
        output += demo.stdout.read() or b""
        after_stop = output.rpartition(b"stopped;")[2]
        assert b"rdkafka" not in after_stop, ("a Kafka client outlived the broker:\n"
                                              + after_stop.decode(errors="replace"))
    finally:
        started |= children_of(demo.pid)
        if demo.poll() is None:
            demo.kill()
        for pid in started:  # children run in sessions of their own: a killed demo would leave them running
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_the_banner_tells_how_to_mint_tokens_for_other_users() -> None:
    import shlex

    from connectors.auth import verify_token
    from pulse.config import Settings
    from pulse.demo import banner

    settings = Settings.from_env({"PULSE_GATEWAY_SECRET": "demo secret'with quotes", "PULSE_OPERATOR_TOKEN": "op"})
    text = banner(settings, Path("/x/librdkafka"))
    line = next(line.strip() for line in text.splitlines() if "token USER" in line)
    assignment, *command = shlex.split(line.replace("USER", "user-00042"))
    name, _, secret = assignment.partition("=")
    minted = subprocess.run(command, env={**os.environ, name: secret, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert verify_token(settings.gateway_secret, minted) == "user-00042"
    assert "LD_LIBRARY_PATH=/x/librdkafka kcat -b 127.0.0.1:9092" in text
