"""Evaluation scenarios: a World whose ground truth changes over the stream, and users who react to decisions.

`ScenarioStream` yields valid events (dicts) in timestamp order like `EventGenerator`, reusing the
same session behaviour model (`simulate_session`), plus what a scenario changes over time:

- `stationary`: nothing changes.
- `drift`: at `drift_at` of the stream every user's category preferences rotate (new favourites
  too) and the churn drivers change: before, low engagement and bad mood drive churn; after,
  *engaged, price-sensitive* users churn (a competitor undercuts prices) and mood no longer matters.
- `cold-start`: new users keep arriving (besides replacements of churned users) and new, trending
  items keep being added to the catalog.
- `seasonal`: the session arrival rate follows a sine wave in simulated time (peaks 4x the
  troughs, drawn by Poisson thinning) and at the peaks users' views shift towards a seasonal category.

Churn is drawn by the stream itself (`SCENARIO_CHURN_OUTCOME_PROB` of sessions end with a
`churn_outcome`), so a decision can change it: after yielding a `session_start`, call
`react(user_id, decision)` and the user reacts (`simulator.reactions`): the reaction's events are
emitted next and its churn factor applies to this session's churn outcome.

>>> stream = ScenarioStream(SCENARIOS["stationary"], n_events=5, users=3, items=20, seed=1)
>>> [e["type"] for e in stream]
['session_start', 'page_view', 'page_view', 'click', 'add_to_cart']
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import numpy as np

from simulator.generator import INITIAL_SPREAD_MS, NEW_USER_DELAY_MS, SESSION_GAP_MS
from simulator.reactions import Reaction, react
from simulator.sessions import simulate_session
from simulator.world import SimulationConfig, UserProfile, World, _cdf, churn_risk, sigmoid

SCENARIO_CHURN_OUTCOME_PROB = 0.5
SEASONAL_CATEGORY = 0  # index of the category that peaks with the season


@dataclass(frozen=True)
class Scenario:
    """How the world changes over a stream of `n_events` (positions are fractions of the stream)."""

    name: str
    description: str
    drift_at: float | None = None
    new_user_every: int = 0
    new_item_every: int = 0
    season_period_ms: int = 0
    season_amplitude: float = 0.0
    season_shift: float = 0.0


SCENARIOS: dict[str, Scenario] = {
    "stationary": Scenario("stationary", "ground truth fixed for the whole stream"),
    "drift": Scenario(
        "drift",
        "at 50% of the stream users' category preferences rotate (new favourites) and churn drivers flip "
        "(engaged, price-sensitive users churn; mood stops mattering)",
        drift_at=0.5,
    ),
    "cold-start": Scenario(
        "cold-start",
        "a new user arrives every 40 events and a new trending item every 150 events",
        new_user_every=40,
        new_item_every=150,
    ),
    "seasonal": Scenario(
        "seasonal",
        "30-minute seasons: session arrival rate x(1 + 0.6 sin) and at peaks up to 50% of views go to cat-01",
        season_period_ms=30 * 60_000,
        season_amplitude=0.6,
        season_shift=0.5,
    ),
}


def drifted_churn_risk(engagement: float, price_sensitivity: float) -> float:
    """Churn probability after the drift: engaged, price-sensitive users leave."""
    return sigmoid(-1.2 + 4.0 * (engagement - 0.5) + 1.5 * (price_sensitivity - 1.1))


@dataclass(eq=False)
class _Slot:
    user_id: str
    sessions: int = 0
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    churn_factor: float = 1.0
    session_id: str = ""
    churned: bool = False


class ScenarioStream:
    """Events of a scenario's world in timestamp order, with ground-truth reactions to decisions."""

    def __init__(
        self,
        scenario: Scenario,
        n_events: int,
        users: int = 800,
        items: int = 400,
        categories: int = 12,
        seed: int = 42,
        start_ms: int = 1_763_900_000_000,
    ) -> None:
        self.scenario = scenario
        self.n_events = n_events
        # The session model never draws churn itself (probability 0): this stream does, after reactions.
        self.world = World(SimulationConfig(users=users, items=items, categories=categories, seed=seed,
                                            churn_outcome_prob=0.0, start_ms=start_ms))
        self._rng = np.random.default_rng([seed, 11])
        self._react_rng = np.random.default_rng([seed, 12])
        self.drifted = False
        self.profiles: dict[str, UserProfile] = {u.user_id: self._with_risk(u) for u in self.world.users}
        self.emitted = 0
        self.now_ms = self.start_ms = start_ms
        self.events_by_phase: list[tuple[int, str]] = []  # (event index, what changed)
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[int, int, _Slot]] = []
        self._seq = 0
        self._last: _Slot | None = None
        for user in self.world.users:
            self._schedule(self._slot(user.user_id), start_ms + int(self._rng.uniform(0, INITIAL_SPREAD_MS)))

    # ground truth -------------------------------------------------------------------------------------------
    def churn_risk_of(self, profile: UserProfile) -> float:
        """The hidden churn probability of a user now (depends on the phase of a drift scenario)."""
        if self.drifted:
            return drifted_churn_risk(profile.engagement, profile.price_sensitivity)
        return churn_risk(profile.engagement, profile.mood)

    def _with_risk(self, profile: UserProfile) -> UserProfile:
        return dataclasses.replace(profile, churn_risk=self.churn_risk_of(profile))

    def season_intensity(self, ts: int | None = None) -> float:
        """Seasonal sine in [-1, 1] at simulated time `ts` (default: now); 0 without seasons."""
        if not self.scenario.season_period_ms:
            return 0.0
        ts = self.now_ms if ts is None else ts
        return math.sin(2.0 * math.pi * (ts - self.start_ms) / self.scenario.season_period_ms)

    # iteration ----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self.emitted < self.n_events:
            yield self.next_event()

    def next_event(self) -> dict[str, Any]:
        """The next event (a dict following the event contract)."""
        self._reschedule_last()
        self._apply_changes()
        ts, _, slot = heappop(self._heap)
        if not slot.pending:
            self._start_session(slot, ts)
        event = slot.pending.popleft()
        if event["type"] == "churn_outcome":
            risk = self.profiles[slot.user_id].churn_risk * slot.churn_factor
            slot.churned = bool(self._rng.random() < risk)
            event["churned"] = slot.churned
        self._last = slot
        self.emitted += 1
        self.now_ms = max(self.now_ms, event["ts"])
        return {"event_id": f"sc-{self.world.config.seed}-{self.emitted}", **event}

    def react(self, user_id: str, decision: dict[str, Any]) -> Reaction:
        """The user's reaction to `decision`, shown on the `session_start` just yielded; its events come next."""
        slot = self._slots[user_id]
        profile = self.profiles[user_id]
        reaction = react(self.world, self._seasonal_view(profile), decision, self.now_ms, self._react_rng,
                         churn_risk=profile.churn_risk)
        slot.churn_factor *= reaction.churn_factor
        for event in reversed(reaction.events):
            slot.pending.appendleft({**event, "session_id": slot.session_id})
        return reaction

    # internals ----------------------------------------------------------------------------------------------
    def _slot(self, user_id: str) -> _Slot:
        slot = self._slots[user_id] = _Slot(user_id)
        return slot

    def _schedule(self, slot: _Slot, ts: int) -> None:
        self._seq += 1
        heappush(self._heap, (ts, self._seq, slot))

    def _reschedule_last(self) -> None:
        slot, self._last = self._last, None
        if slot is None:
            return
        if slot.pending:
            self._schedule(slot, slot.pending[0]["ts"])
        elif slot.churned:
            self._spawn(self.now_ms + int(self._rng.exponential(NEW_USER_DELAY_MS)))
        else:
            engagement = self.profiles[slot.user_id].engagement
            mean_gap = SESSION_GAP_MS / (0.5 + engagement)
            amplitude = self.scenario.season_amplitude
            ts = float(self.now_ms)
            while True:  # Poisson thinning: rate(t) = base * (1 + amplitude * sin) <= base * (1 + amplitude)
                ts += self._rng.exponential(mean_gap / (1.0 + amplitude))
                if self._rng.random() * (1.0 + amplitude) < 1.0 + amplitude * self.season_intensity(int(ts)):
                    break
            self._schedule(slot, int(ts))

    def _spawn(self, ts: int) -> None:
        user = self.world.spawn_user(self._rng)
        self.profiles[user.user_id] = self._with_risk(user)
        self._schedule(self._slot(user.user_id), ts)

    def _apply_changes(self) -> None:
        sc, i = self.scenario, self.emitted
        if sc.drift_at is not None and not self.drifted and i >= sc.drift_at * self.n_events:
            self.drifted = True
            self.events_by_phase.append((i, "drift"))
            shift = max(1, len(self.world.categories) // 3)
            for user_id, profile in self.profiles.items():
                self.profiles[user_id] = self._rotated(profile, shift)
        if sc.new_user_every and i and i % sc.new_user_every == 0:
            self._spawn(self.now_ms + int(self._rng.uniform(0, 10_000)))
        if sc.new_item_every and i and i % sc.new_item_every == 0:
            category = self.world.categories[int(self._rng.integers(len(self.world.categories)))]
            self.world.add_item(category, float(np.round(self._rng.lognormal(3.2, 0.7), 2)),
                                float(self._rng.normal(1.0, 0.5)))

    def _rotated(self, profile: UserProfile, shift: int) -> UserProfile:
        weights = np.roll(profile.category_weights, shift)
        cdf = _cdf(weights.tolist())
        favourites: list[str] = []
        for _ in range(len(profile.favourite_items)):
            category = self.world.categories[min(int(np.searchsorted(cdf, self._rng.random() * cdf[-1], "right")),
                                                 len(cdf) - 1)]
            item = self.world.sample_item(category, self._rng)
            if item.item_id not in favourites:
                favourites.append(item.item_id)
        rotated = dataclasses.replace(
            profile, category_weights=weights, category_cdf=cdf, favourite_items=tuple(favourites),
            top_category=self.world.categories[int(np.argmax(weights))],
        )
        return self._with_risk(rotated)

    def _seasonal_view(self, profile: UserProfile) -> UserProfile:
        share = self.scenario.season_shift * max(0.0, self.season_intensity())
        if share <= 0.0:
            return profile
        weights = (1.0 - share) * profile.category_weights
        weights[SEASONAL_CATEGORY] += share * profile.category_weights.sum()
        return dataclasses.replace(profile, category_weights=weights, category_cdf=_cdf(weights.tolist()))

    def _start_session(self, slot: _Slot, ts: int) -> None:
        profile = self._seasonal_view(self.profiles[slot.user_id])
        session = simulate_session(self.world, profile, slot.sessions, ts, self._rng)
        slot.sessions += 1
        slot.churn_factor = 1.0
        slot.churned = False
        slot.session_id = f"{slot.user_id}-s{slot.sessions - 1}"
        slot.pending.extend(session.events)
        if self._rng.random() < SCENARIO_CHURN_OUTCOME_PROB:
            end = slot.pending[-1]["ts"]
            slot.pending.append({"user_id": slot.user_id, "type": "churn_outcome", "ts": end + 300, "churned": False})
