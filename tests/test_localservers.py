"""Local servers: they stop with `stop()`, and die with the process that started them when it is killed outright."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from processes import alive, survivors_after

from pulse.localservers import PROJECT_ROOT

STARTER = """
import json, sys, time
from pulse.localservers import start_redis, start_tansu
servers = [start_redis(), start_tansu()]
print(json.dumps([s.process.pid for s in servers]), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="parent-death signals come from util-linux setpriv")
def test_servers_die_with_a_starter_killed_outright() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    pids: list[int] = []
    try:
        pids = json.loads(starter.stdout.readline())
        assert all(alive(pid) for pid in pids)
        starter.send_signal(signal.SIGKILL)  # no finalizer runs: only the kernel's parent-death signal can stop them
        starter.wait(10)
        assert not survivors_after(pids, 15), "servers outlived the process that started them"
    finally:
        starter.kill()
        starter.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
