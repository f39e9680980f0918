"""Process-level tuning of the garbage collector, for the engine and the gateway."""

from __future__ import annotations

import gc
import sys

OLDER_GENERATIONS = (20, 100)  # collections of the generation below between two of the next one
RECLAIM_FLOOR_BLOCKS = 250_000  # memory blocks (a few tens of MB) below twice which nothing frozen is handed back


def tune_garbage_collector(gen0_threshold: int, freeze_survivors: bool) -> None:
    """Collect the youngest generation every `gen0_threshold` allocations (0: leave Python's defaults), and
    with `freeze_survivors` keep full passes short (`SurvivorFreezer`, once per process).

    The engine keeps every active user's profile and pending decisions alive: with Python's default
    thresholds (700, 10, 10) the full collections that rescan all of them come every few seconds, and
    restoring many users from a snapshot spends most of its time in them.
    """
    if gen0_threshold > 0:
        gc.set_threshold(gen0_threshold, *OLDER_GENERATIONS)
    if freeze_survivors:
        PROCESS_FREEZER.install()


class SurvivorFreezer:
    """Keeps the garbage collector's full passes short in a process that holds many long-lived objects.

    A full pass scans every tracked object: at 10k WebSocket connections (about 100 objects each) the
    gateway stopped for 0.35-0.85 s, again each time the survivors grew by a quarter. Installed, this
    moves the survivors of every full pass out of the collector's sight (`gc.freeze`), so later passes
    scan only what survived since. Frozen objects are still freed by reference counting; only a reference
    cycle that became garbage after being frozen stays. When the memory in use at the previous full pass
    (`sys.getallocatedblocks`, which costs about 1 ms, where counting the frozen objects walks them all)
    is twice what it was after the last pass over everything, every frozen object is handed back
    (`gc.unfreeze`): the next full pass scans everything once and reclaims such cycles. So memory stays
    within about twice the live heap, and the long pass comes once per doubling instead of once per
    quarter of growth. The previous pass's memory, not the current one, is compared: objects made since
    then were never frozen, this pass has just scanned them.
    """

    def __init__(self, reclaim_floor: int = RECLAIM_FLOOR_BLOCKS) -> None:
        self.reclaims = 0  # passes over everything started, to reclaim frozen cycles
        self._after_reclaim = 0  # memory blocks in use after the last pass over everything
        self._at_last_pass = 0  # memory blocks in use after the previous full pass
        self._reclaiming = True  # the next full pass scans everything (nothing is frozen yet)
        self._reclaim_floor = reclaim_floor

    @property
    def installed(self) -> bool:
        """Whether it is freezing survivors."""
        return self._on_gc in gc.callbacks

    def install(self) -> None:
        """Start freezing the survivors of each full pass (idempotent)."""
        if not self.installed:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        """Stop, and hand every frozen object back to the collector."""
        if self.installed:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        if not self._reclaiming and self._at_last_pass >= 2 * max(self._after_reclaim, self._reclaim_floor):
            gc.unfreeze()  # the next full pass scans everything: frozen cycles that became garbage go
            self._reclaiming = True
            self.reclaims += 1
            return
        gc.freeze()
        self._at_last_pass = sys.getallocatedblocks()
        if self._reclaiming:
            self._after_reclaim = self._at_last_pass
            self._reclaiming = False


PROCESS_FREEZER = SurvivorFreezer()  # what `tune_garbage_collector` installs
