"""Interleaved event stream of many concurrent users in simulated time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import numpy as np

from simulator.events import SimEvent, encode_event
from simulator.malformed import MALFORMED_KINDS, malformed_event
from simulator.sessions import simulate_session
from simulator.world import UserProfile, World

INITIAL_SPREAD_MS = 5 * 60_000
"""First sessions of the initial users start uniformly within this span."""
SESSION_GAP_MS = 20 * 60_000
"""Mean gap between sessions of a user of engagement 0.5 (more engaged users return sooner)."""
NEW_USER_DELAY_MS = 60_000
"""Mean delay before a churned user's replacement starts its first session."""


@dataclass(eq=False)
class _Slot:
    user: UserProfile
    sessions: int = 0
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    churned: bool = False


class EventGenerator:
    """Simulates the users of `world` and yields their events in timestamp order.

    Deterministic given `world.config.seed` and `start_ms`. Each output event is malformed
    with probability `malformed_ratio` (kinds cycle through `MALFORMED_KINDS`); malformed events
    use their own random stream, so the valid events are the same whatever the ratio.
    A churned user stops and a brand-new user (new id, recorded in `world.users`) takes its place.
    Use one generator per world.

    >>> from simulator.world import SimulationConfig
    >>> gen = EventGenerator(World(SimulationConfig(users=5, items=30, categories=3, start_ms=0)))
    >>> [e.event["type"] for e in gen.events(2)]
    ['session_start', 'page_view']
    """

    def __init__(self, world: World) -> None:
        cfg = world.config
        self.world = world
        self.start_ms = cfg.start_ms if cfg.start_ms is not None else time.time_ns() // 1_000_000
        self._rng = np.random.default_rng([cfg.seed, 1])
        self._bad_rng = np.random.default_rng([cfg.seed, 2])
        self._id_prefix = f"ev-{cfg.seed}-{self.start_ms}"
        self._heap: list[tuple[int, int, _Slot]] = []
        self._seq = 0
        self._valid_count = 0
        self._malformed_count = 0
        self._lookahead: dict[str, Any] | None = None
        for user in world.users[: cfg.users]:
            self._schedule(_Slot(user), self.start_ms + int(self._rng.uniform(0, INITIAL_SPREAD_MS)))


    @property
    def id_prefix(self) -> str:
        """The prefix of every event id this generator makes (unique per run: seed and start time)."""
        return self._id_prefix
    def events(self, n: int | None = None) -> Iterator[SimEvent]:
        """Yield the next `n` events (valid and malformed; endless when None), from where the last call stopped."""
        ratio = self.world.config.malformed_ratio
        kinds = list(MALFORMED_KINDS)
        produced = 0
        while n is None or produced < n:
            if self._lookahead is None:
                self._lookahead = self._next_valid()
            if ratio > 0 and self._bad_rng.random() < ratio:
                kind = kinds[self._malformed_count % len(kinds)]
                self._malformed_count += 1
                template = {**self._lookahead, "event_id": f"{self._id_prefix}-bad-{self._malformed_count}"}
                item = self.world.items[int(self._bad_rng.integers(len(self.world.items)))]
                yield malformed_event(kind, template, item)
            else:
                yield encode_event(self._lookahead)
                self._lookahead = None
            produced += 1

    def _schedule(self, slot: _Slot, ts: int) -> None:
        self._seq += 1
        heappush(self._heap, (ts, self._seq, slot))

    def _next_valid(self) -> dict[str, Any]:
        ts, _, slot = heappop(self._heap)
        if not slot.pending:
            session = simulate_session(self.world, slot.user, slot.sessions, ts, self._rng)
            slot.sessions += 1
            slot.pending.extend(session.events)
            slot.churned = session.churned
        event = slot.pending.popleft()
        if slot.pending:
            self._schedule(slot, slot.pending[0]["ts"])
        elif slot.churned:
            replacement = _Slot(self.world.spawn_user(self._rng))
            self._schedule(replacement, event["ts"] + int(self._rng.exponential(NEW_USER_DELAY_MS)))
        else:
            gap = self._rng.exponential(SESSION_GAP_MS / (0.5 + slot.user.engagement))
            self._schedule(slot, event["ts"] + int(gap))
        self._valid_count += 1
        return {"event_id": f"{self._id_prefix}-{self._valid_count}", **event}
