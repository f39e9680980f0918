"""Process checks the tests share: is a PID still running, and waiting for a set of them to be gone."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an exited orphan may wait to be reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def survivors_after(pids: set[int] | list[int], timeout_s: float) -> list[int]:
    """Wait up to `timeout_s` for every process of `pids` to be gone; return those still running."""
    deadline = time.monotonic() + timeout_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]
