"""Paced event producer of the benchmarks: `pulse simulate` onto the run's topic names (PULSE_TOPIC_*).

    python -m bench.sender RATE DURATION USERS ITEMS [SEED]     (RATE 0: unpaced)

Prints the number of events sent. (`pulse simulate` itself produces to the simulator's default topic
names, whatever PULSE_TOPIC_* say.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import EventGenerator, KafkaEventSink, SimEvent, SimulationConfig, World, send_events  # noqa: E402


class RetargetingSink(KafkaEventSink):
    """Sends each event to the run's topic of its kind."""

    def send(self, event: SimEvent) -> None:
        topic = os.environ.get(f"PULSE_TOPIC_{event.topic.upper()}", event.topic)
        super().send(SimEvent(topic, event.key, event.value, event.valid, event.event, event.reason))


def main() -> None:
    rate, duration, users, items = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 42
    generator = EventGenerator(World(SimulationConfig(users=users, items=items, seed=seed)))
    sink = RetargetingSink(os.environ["KAFKA_BOOTSTRAP"])
    report = send_events(generator.events(), sink, rate=rate or None, duration_s=duration, keep_ids=False)
    sink.close()
    print(report.sent)


if __name__ == "__main__":
    main()
