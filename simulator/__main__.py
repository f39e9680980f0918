"""Command line: `python -m simulator --bootstrap HOST:PORT --rate 5000 --duration 60` (or `--stdout`)."""

from __future__ import annotations

import argparse
import sys

from simulator.generator import EventGenerator
from simulator.producer import send_events
from simulator.sinks import EventSink, JsonLinesSink, KafkaEventSink
from simulator.world import SimulationConfig, World


def main(argv: list[str] | None = None) -> int:
    """Generate simulated events and send them to Kafka or stdout; print a summary to stderr."""
    defaults = SimulationConfig()
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--bootstrap", help="Kafka bootstrap servers")
    target.add_argument("--stdout", action="store_true", help="print JSON lines instead")
    parser.add_argument("--rate", type=float, help="events/s (default: as fast as possible)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--events", type=int, help="stop after this many events")
    parser.add_argument("--progress", action="store_true")
    for name in ("users", "items", "categories", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("label_share", "chat_share", "malformed_ratio", "churn_outcome_prob", "consent_off_share"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    config = SimulationConfig(
        users=args.users, items=args.items, categories=args.categories, seed=args.seed,
        label_share=args.label_share, chat_share=args.chat_share, malformed_ratio=args.malformed_ratio,
        churn_outcome_prob=args.churn_outcome_prob, consent_off_share=args.consent_off_share,
    )
    sink: EventSink = KafkaEventSink(args.bootstrap) if args.bootstrap else JsonLinesSink(sys.stdout)
    try:
        events = EventGenerator(World(config)).events(args.events)
        report = send_events(events, sink, args.rate, args.duration, args.progress, keep_ids=False)
    finally:
        sink.close()
    print(
        f"sent {report.sent} ({report.valid} valid, {report.malformed} malformed) in {report.elapsed_s:.2f} s "
        f"= {report.rate:.0f} events/s; by type: {dict(report.by_type)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
