"""Process-level tuning of the engine process."""

from __future__ import annotations

import gc

OLDER_GENERATIONS = (20, 100)  # collections of the generation below between two of the next one


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Collect the youngest generation every `gen0_threshold` allocations (0: leave Python's defaults).

    The engine keeps every active user's profile and pending decisions alive: with Python's default
    thresholds (700, 10, 10) the full collections that rescan all of them come every few seconds and
    last tens of milliseconds at a few thousand users, and restoring 100k users from a snapshot spends
    two thirds of its time in them (bench/state.py).
    """
    if gen0_threshold > 0:
        gc.set_threshold(gen0_threshold, *OLDER_GENERATIONS)
