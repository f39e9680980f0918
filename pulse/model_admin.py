"""`pulse models snapshot|list|rollback` and `pulse catalog ITEM`: operate a running engine."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import orjson
import redis

from connectors.model_control import ModelCommandChannel
from online_models.registry import ModelRegistry
from pulse.config import Settings

EXIT_NO_ANSWER = 4


def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch the admin command; print results for people, errors on stderr."""
    try:
        if args.command == "catalog":
            return _show_item(settings, args.item)
        if args.model_command == "list":
            return _list(settings)
        name = args.name or f"manual-{int(time.time())}"
        return _command(settings, args.model_command, name, args.timeout)
    except redis.ConnectionError as exc:
        print(f"pulse: Redis at {settings.redis_url} is unreachable: {exc}", file=sys.stderr)
        return 3


def _list(settings: Settings) -> int:
    snapshots = ModelRegistry(settings.model_dir).list()
    if not snapshots:
        print(f"no snapshots in {settings.model_dir}")
        return 0
    print(f"{'NAME':<24} {'PROCESS':>7} {'HASH':<12} {'CREATED (UTC)':<19}  VERSIONS")
    for info in snapshots:
        created = datetime.fromtimestamp(info.created_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        versions = " ".join(f"{k}={v}" for k, v in info.versions.items() if k in ("recommender", "churn", "sentiment"))
        print(f"{info.name:<24} {info.process:>7} {info.hash:<12} {created:<19}  {versions}")
    return 0


def _command(settings: Settings, op: str, name: str, timeout_s: float) -> int:
    channel = ModelCommandChannel(settings)
    try:
        seq = channel.submit(op, name)
        results = channel.wait_acks(seq, timeout_s)
    finally:
        channel.close()
    if not results:
        print(f"pulse: no engine answered within {timeout_s:.0f}s (is `pulse run` running against "
              f"{settings.redis_url}?)",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    failed = False
    for result in sorted(results, key=lambda r: r["process"]):
        if result["ok"]:
            print(f"process {result['process']}: {op} {name} ok (hash {result['hash']}, "
                  f"recommender {result['versions']['recommender']}, churn {result['versions']['churn']})")
        else:
            failed = True
            print(f"process {result['process']}: {op} {name} failed: {result['error']}", file=sys.stderr)
    return 1 if failed else 0


def _show_item(settings: Settings, item_id: str) -> int:
    raw = redis.Redis.from_url(settings.redis_url).get(settings.item_key(item_id))
    if raw is None:
        print(f"pulse: item {item_id!r} is not in the catalog", file=sys.stderr)
        return 1
    print(orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode())
    return 0
