"""The `pulse` command line: run the dataflow, the gateway, the simulator, or the whole demo."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pulse.config import ConfigError, Settings, settings_table
from pulse.logs import configure_logging

FLOW = "flows.personalization:flow"
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line. `pulse evaluate`'s options import every data set's module (and River, SciPy): they are
    added only when `argv` mentions that command (or is None), so that other commands start fast."""
    parser = argparse.ArgumentParser(
        prog="pulse",
        description="Pulse: real-time personalization (Kafka -> Bytewax -> River -> Redis + WebSocket). "
        "Configuration comes from environment variables: see `pulse config`.",
    )
    parser.add_argument("--log-level", default=os.environ.get("PULSE_LOG_LEVEL", "INFO"),
                        help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the personalization dataflow",
        description="Create missing topics, then run the dataflow with bytewax.run. Every other option passes through "
        "to bytewax.run, e.g. `pulse run -w 2`, a cluster `pulse run -i 0 -a 'h1:2101;h2:2101'`, recovery "
        "`pulse run -r DIR -s 10 -b 30`.",
    )
    run.add_argument("--no-create-topics", action="store_true", help="do not create missing topics first")
    run.add_argument("--no-recovery", action="store_true",
                     help="run without Bytewax recovery "
                          "(default: recovery in PULSE_RECOVERY_DIR, see docs/operations.md)")

    commands.add_parser("gateway", help="run the WebSocket gateway (decisions fan-out from Redis)")

    simulate = commands.add_parser("simulate", help="generate synthetic users' events into Kafka (or stdout)")
    _add_simulation_options(simulate)
    simulate.add_argument("--stdout", action="store_true", help="print JSON lines instead of producing to Kafka")
    simulate.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    demo = commands.add_parser(
        "demo",
        help="start local broker + redis-server, the dataflow, the gateway and the simulator, with a live status line",
        description="Starts everything on free loopback ports (or uses KAFKA_BOOTSTRAP / REDIS_URL when set), "
        "drives it with the simulator, and prints a live status line. Ctrl-C stops every process it started.",
    )
    _add_simulation_options(demo)
    demo.add_argument("--workers", type=int, default=1, help="Bytewax worker threads of the dataflow (default 1)")

    commands.add_parser("config", help="print every configuration variable with its default and meaning")

    audit = commands.add_parser(
        "audit", help="bias audit: actions and offers across segments and simulator groups, with flagged disparities",
        description="Reads the decisions topic (or --file, JSON lines) and reports each group's share of every action; "
        "flags actions whose lowest/highest group rate is below --threshold.",
    )
    audit.add_argument("--file", type=Path, help="JSON-lines file of decisions (default: the decisions topic)")
    audit.add_argument("--threshold", type=float, default=0.8,
                       help="flag below this lowest/highest rate ratio (default 0.8)")
    audit.add_argument("--min-decisions", type=int, default=30, help="ignore groups with fewer decisions (default 30)")
    audit.add_argument("--min-gap", type=float, default=0.02, help="ignore rate differences below this (default 0.02)")
    audit.add_argument("--sim-users", type=int, help="with --sim-seed: add the simulation's hidden user groups")
    audit.add_argument("--sim-seed", type=int, default=42, help="seed of the simulation (default 42)")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")

    evaluate = commands.add_parser(
        "evaluate", help="replay a simulator scenario or a real public data set through the real models, with "
                         "baselines in the same run, and write a report (tables + plots)")
    if argv is None or "evaluate" in argv:
        from evaluation.cli import add_arguments as _add_evaluate_arguments

        _add_evaluate_arguments(evaluate)

    token = commands.add_parser(
        "token", help="print a user token for WebSocket subscriptions and browser ingest",
        description="Signs USER with PULSE_GATEWAY_SECRET (HMAC-SHA256); format in docs/security.md.",
    )
    token.add_argument("user", metavar="USER", help="the user id the token grants")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")

    models = commands.add_parser(
        "models", help="snapshot, list or roll back the running engine's models",
        description="Snapshots live in PULSE_MODEL_DIR; snapshot and rollback are carried out by the running "
        "engine processes (via Redis) without stopping them.",
    )
    model_commands = models.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    snapshot = model_commands.add_parser("snapshot", help="save every engine process's models now")
    snapshot.add_argument("--name", default=None, help="snapshot name (default manual-<epoch seconds>)")
    model_commands.add_parser("list", help="list the saved snapshots")
    rollback = model_commands.add_parser("rollback", help="restore every engine process's models from a snapshot")
    rollback.add_argument("name", help="snapshot name")
    for action in (snapshot, rollback):
        action.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the engine (default 15)")

    catalog = commands.add_parser("catalog", help="show an item's catalog record as the engine holds it")
    catalog.add_argument("item", metavar="ITEM", help="item id")
    return parser


def _add_simulation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="concurrent synthetic users (default 1000)")
    parser.add_argument("--items", type=int, default=500, help="catalog size (default 500)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events per second; 0 = as fast as possible (default 500)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to run (default: until Ctrl-C / --events)")
    parser.add_argument("--events", type=int, default=None, help="stop after this many events")
    parser.add_argument("--malformed", type=float, default=0.01,
                        help="share of malformed events injected (default 0.01)")
    parser.add_argument("--seed", type=int, default=42, help="simulation seed (default 42)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pulse` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(argv)
    args, passthrough = parser.parse_known_args(argv)
    configure_logging(args.log_level)
    if sys.__stderr__ is not None:  # `kill -USR1 PID` prints every thread's stack to the process's stderr
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    if passthrough and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    try:
        settings = Settings.from_env()
        return _dispatch(args, passthrough, settings)
    except ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, passthrough: list[str], settings: Settings) -> int:
    from connectors.kafka_io import BrokerUnavailable

    try:
        if args.command == "audit":
            return _audit(settings, args)
        if args.command == "config":
            print(settings_table())
            return 0
        if args.command == "token":
            if not settings.gateway_secret:
                raise ConfigError("PULSE_GATEWAY_SECRET is not set: tokens are signed with it")
            refusal = _token_refusal(args.user, args.ttl)
            if refusal:
                print(f"pulse token: {refusal}", file=sys.stderr)
                return EXIT_CONFIG
            from connectors.auth import mint_token

            print(mint_token(settings.gateway_secret, args.user, args.ttl))
            return 0
        if args.command == "run":
            _check_experiments(settings)
            _check_redis(settings.redis_url)
            os.environ["PULSE_LOG_LEVEL"] = args.log_level  # the engine process logs at the same level
            return _run_flow(settings, passthrough, create_topics=not args.no_create_topics,
                             recovery=not args.no_recovery)
        if args.command == "gateway":
            _check_experiments(settings)
            _check_redis(settings.redis_url)
            from connectors.gateway import run_gateway

            run_gateway(settings)
            return 0
        if args.command == "evaluate":
            from evaluation.cli import evaluate

            return evaluate(args)
        if args.command in ("models", "catalog"):
            from pulse.model_admin import run_admin

            return run_admin(settings, args)
        if args.command == "simulate":
            from pulse.simulate import simulate

            return simulate(settings, args)
        from pulse.demo import run_demo

        return run_demo(settings, args)
    except BrokerUnavailable as exc:
        print(f"pulse: {exc}. Is the broker running? Set KAFKA_BOOTSTRAP.", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RedisUnavailable as exc:
        print(f"pulse: {exc}. Is redis-server running? Set REDIS_URL.", file=sys.stderr)
        return EXIT_UNREACHABLE


def _token_refusal(user: str, ttl_s: int) -> str | None:
    """Why `pulse token USER --ttl TTL` must not mint a token (None: it may).

    >>> _token_refusal("", 60), _token_refusal("u1", -60), _token_refusal("u1", 60)
    ('USER must not be empty: a token grants one user', '--ttl must be a positive number of seconds, not -60', None)
    """
    if not user.strip():
        return "USER must not be empty: a token grants one user"
    if ttl_s <= 0:
        return f"--ttl must be a positive number of seconds, not {ttl_s}"
    return None


class RedisUnavailable(RuntimeError):
    """Redis did not answer a PING at start-up."""


def _check_redis(url: str) -> None:
    """Fail fast with a clear message when Redis is misconfigured or down (later outages are retried)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL={url!r} is not a valid Redis URL: {exc}") from None
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {url} is unreachable: {exc}") from None


def _check_experiments(settings: Settings) -> None:
    """A broken experiments file (PULSE_EXPERIMENTS_FILE) at start is a configuration error, in one line."""
    from operators.experiments import ExperimentsFile, default_experiment
    from operators.hot_reload import ConfigFileError

    try:
        ExperimentsFile(settings.experiments_file or None, default_experiment(settings.holdout_share,
                                                                               settings.experiment_salt))
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    """Print the bias audit of the decisions; exit code 1 when disparities are flagged."""
    import orjson

    from pulse import bias_audit

    if args.file is not None:
        decisions = bias_audit.read_jsonl(args.file)
    else:
        from connectors.kafka_io import ensure_topics

        ensure_topics(settings)  # fails with a clear error when the broker is unreachable
        decisions = bias_audit.read_topic(settings.kafka_bootstrap, settings.topic_decisions)
    groups = bias_audit.simulator_groups(args.sim_users, args.sim_seed) if args.sim_users else None
    table = bias_audit.tabulate(decisions, groups)
    flagged = bias_audit.disparities(table, args.threshold, args.min_decisions, args.min_gap)
    if args.json:
        print(orjson.dumps(bias_audit.to_json(table, flagged), option=orjson.OPT_INDENT_2).decode())
    else:
        print(bias_audit.render(table, flagged, args.threshold))
    return 1 if flagged else 0


def _run_flow(settings: Settings, passthrough: list[str], create_topics: bool, recovery: bool) -> int:
    """Replace this process with `python -m bytewax.run FLOW ...` (through pulse.engine_run, which sets up logging),
    after creating the topics and recovery partitions."""
    if create_topics:
        from connectors.kafka_io import ensure_topics_retrying

        ensure_topics_retrying(settings, settings.startup_retry_s)
    if recovery:
        from connectors.checkpoint import recovery_args

        passthrough = [*recovery_args(passthrough, os.environ, Path(settings.recovery_dir), settings.snapshot_s,
                                      settings.backup_s), *passthrough]
    argv = [sys.executable, "-m", "pulse.engine_run", FLOW, *passthrough]
    os.execv(sys.executable, argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
