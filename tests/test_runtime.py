"""Process tuning of the engine."""

from __future__ import annotations

import gc

from pulse.runtime import OLDER_GENERATIONS, tune_garbage_collector


def test_gc_thresholds_are_set_or_left_alone() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector(0)
        assert gc.get_threshold() == before
        tune_garbage_collector(12_345)
        assert gc.get_threshold() == (12_345, *OLDER_GENERATIONS)
    finally:
        gc.set_threshold(*before)
