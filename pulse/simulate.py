"""`pulse simulate`: drive the engine with synthetic users whose ground truth is known."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Iterator

from pulse.config import Settings
from simulator import EventGenerator, JsonLinesSink, KafkaEventSink, SimEvent, SimulationConfig, World, send_events


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The simulator configuration named by the CLI options."""
    return SimulationConfig(users=args.users, items=args.items, seed=args.seed, malformed_ratio=args.malformed)


def on_configured_topics(events: Iterable[SimEvent], settings: Settings) -> Iterator[SimEvent]:
    """The simulator's events addressed to the topic names configured by PULSE_TOPIC_* (it names topic kinds)."""
    topics = {"clickstream": settings.topic_clickstream, "chat": settings.topic_chat, "control": settings.topic_control}
    for event in events:
        yield dataclasses.replace(event, topic=topics[event.topic])


def simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Send events to Kafka (creating topics first) or to stdout; print a summary at the end."""
    generator = EventGenerator(World(simulation_config(args)))
    if args.stdout:
        sink = JsonLinesSink(sys.stdout)
    else:
        from connectors.kafka_io import ensure_topics

        ensure_topics(settings)
        sink = KafkaEventSink(settings.kafka_bootstrap)
    try:
        report = send_events(
            on_configured_topics(generator.events(args.events), settings), sink, rate=args.rate or None,
            duration_s=args.duration,
            progress=not args.no_progress and not args.stdout,
        )
    finally:
        sink.close()
    print(
        f"sent {report.sent} events ({report.valid} valid, {report.malformed} malformed) in {report.elapsed_s:.1f}s "
        f"= {report.sent / max(report.elapsed_s, 1e-9):,.0f} events/s",
        file=sys.stderr,
    )
    return 0
