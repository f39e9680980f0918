"""Local servers: they stop with `stop()`, and die with the process that started them when it is killed outright."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulse.localservers import PROJECT_ROOT

STARTER = """
import json, sys, time
from pulse.localservers import start_redis, start_tansu
servers = [start_redis(), start_tansu()]
print(json.dumps([s.process.pid for s in servers]), flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an exited orphan may wait to be reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="parent-death signals come from util-linux setpriv")
def test_servers_die_with_a_starter_killed_outright() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    pids: list[int] = []
    try:
        pids = json.loads(starter.stdout.readline())
        assert all(_running(pid) for pid in pids)
        starter.send_signal(signal.SIGKILL)  # no finalizer runs: only the kernel's parent-death signal can stop them
        starter.wait(10)
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _running(pid)], "servers outlived the process that started them"
    finally:
        starter.kill()
        starter.wait(10)
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
