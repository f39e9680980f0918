"""How many offers new users get in their first session: the demo's simulated stream through the engine.

`python -m evaluation.first_offers [--events 60000 --users 1000 --seed 42]` feeds the simulator's stream (the
one `pulse demo` sends, with its defaults) to `PersonalizationEngine.handle` and prints, over the users whose
first session ended in the stream: the share whose first decision was an offer, the share of first-session
decisions that were offers, and the share of users offered anything in their first session. It imports only
what every version of the engine has, so the same file measures an older checkout too
(`PYTHONPATH=/path/to/checkout python evaluation/first_offers.py`).
"""

from __future__ import annotations

import argparse
import json

OFFERS = frozenset({"retention_offer", "discount", "win_back_offer"})


def first_session_offers(events: int, users: int, seed: int) -> dict[str, float]:
    """The three shares (and their counts) over users whose first session ended within `events` events."""
    from operators.engine import EngineConfig, PersonalizationEngine
    from simulator import EventGenerator, SimulationConfig, World

    engine = PersonalizationEngine(EngineConfig())
    world = World(SimulationConfig(users=users, seed=seed, start_ms=1_763_900_000_000))
    profiles: dict = {}
    first_action: dict[str, str] = {}
    session: dict[str, list[str]] = {}  # user -> actions of their first session, while it lasts
    finished: dict[str, list[str]] = {}
    for sim in EventGenerator(world).events(events):
        event = sim.event
        user = event["user_id"]
        profiles[user], decision = engine.handle(profiles.get(user), event, event["ts"])
        action = decision["action"]["name"]
        first_action.setdefault(user, action)
        if user not in finished:
            session.setdefault(user, []).append(action)
            if event["type"] == "session_end":
                finished[user] = session.pop(user)
    decisions = [action for actions in finished.values() for action in actions]
    n = len(finished)
    return {
        "users_with_a_first_session": n,
        "first_decision_an_offer": sum(first_action[u] in OFFERS for u in finished) / n if n else float("nan"),
        "first_session_decisions_offers": (sum(a in OFFERS for a in decisions) / len(decisions) if decisions
                                           else float("nan")),
        "users_offered_in_first_session": sum(any(a in OFFERS for a in acts) for acts in finished.values()) / n
        if n else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    print(json.dumps(first_session_offers(args.events, args.users, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
