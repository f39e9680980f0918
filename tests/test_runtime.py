"""Process tuning of the garbage collector: thresholds, and freezing the survivors of full passes."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from pulse.config import ConfigError, Settings
from pulse.runtime import OLDER_GENERATIONS, PROCESS_FREEZER, SurvivorFreezer, tune_garbage_collector


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def freezer() -> Iterator[SurvivorFreezer]:
    """A freezer of its own, with the process's one suspended meanwhile in case anything installed it, and only
    the test's own full passes (automatic collection off)."""
    suspended = PROCESS_FREEZER.installed
    PROCESS_FREEZER.uninstall()
    gc.collect()
    freezer = SurvivorFreezer(reclaim_floor=10_000)
    freezer.install()
    gc.disable()
    try:
        yield freezer
    finally:
        gc.enable()
        freezer.uninstall()
        if suspended:
            PROCESS_FREEZER.install()


def test_gc_thresholds_are_set_or_left_alone() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector(0, False)
        assert gc.get_threshold() == before
        tune_garbage_collector(12_345, False)
        assert gc.get_threshold() == (12_345, *OLDER_GENERATIONS)
    finally:
        gc.set_threshold(*before)


def test_survivors_of_a_full_pass_leave_later_passes_and_are_still_freed_by_reference_counting(
        freezer: SurvivorFreezer) -> None:
    marker: list[int] = []
    held = [marker, *([] for _ in range(50_000))]
    assert any(o is marker for o in gc.get_objects())
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= 50_000
    assert not any(o is marker for o in gc.get_objects())  # no generation holds it: full passes skip it
    later: list[int] = []
    assert any(o is later for o in gc.get_objects())  # objects made since are scanned as usual
    del held, marker
    assert gc.get_freeze_count() <= frozen - 50_000  # freed at once by reference counting, though frozen
    freezer.uninstall()
    assert gc.get_freeze_count() == 0


def test_cycles_that_became_garbage_while_frozen_are_reclaimed_once_memory_doubles(freezer: SurvivorFreezer) -> None:
    gc.collect()  # a pass over everything: the memory in use after it is the reference
    reference = sys.getallocatedblocks()
    cycles = []
    for _ in range(1_000):
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        cycles.append(a)
    probe = weakref.ref(cycles[0])
    gc.collect()  # freezes the cycles
    del cycles, a, b
    gc.collect()
    assert probe() is not None  # garbage now, but frozen: kept
    live = [[] for _ in range(2 * reference)]  # one memory block each
    gc.collect()  # freezes them; the memory at the previous pass had not doubled
    assert freezer.reclaims == 0
    gc.collect()  # it had now: every frozen object is handed back
    assert freezer.reclaims == 1 and gc.get_freeze_count() == 0
    gc.collect()  # scans everything once, reclaims the cycles, and freezes what lives
    assert probe() is None
    assert gc.get_freeze_count() >= len(live)


def test_freezing_is_on_by_default_and_takes_0_or_1() -> None:
    assert Settings.from_env({}).gc_freeze == 1
    assert Settings.from_env({"PULSE_GC_FREEZE": "0"}).gc_freeze == 0
    with pytest.raises(ConfigError, match="PULSE_GC_FREEZE must be 0 or 1"):
        Settings.from_env({"PULSE_GC_FREEZE": "2"})
