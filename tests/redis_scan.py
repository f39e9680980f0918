"""A full dump of a Redis database, keys and values of every type, to search for what must not be stored."""

from __future__ import annotations

import redis


def redis_contents(client: redis.Redis) -> list[tuple[bytes, bytes]]:
    """Every key of the database (a full SCAN, no pattern) with its value flattened to bytes."""
    contents = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key) or b""
        elif kind == b"hash":
            value = b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == b"list":
            value = b"\n".join(client.lrange(key, 0, -1))
        elif kind == b"set":
            value = b"\n".join(client.smembers(key))
        elif kind == b"zset":
            value = b"\n".join(client.zrange(key, 0, -1))
        elif kind == b"none":  # expired or deleted during the scan
            continue
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} of {key!r}")
        contents.append((key, value))
    return contents


def holding(client: redis.Redis, needles: list[str]) -> list[str]:
    """The keys whose name or value contains any of `needles` (case-insensitive), with the needle found."""
    found = []
    for key, value in redis_contents(client):
        text = (key + b"\n" + value).lower()
        found += [f"{key.decode(errors='replace')}: {needle!r}"
                  for needle in needles if needle.lower().encode() in text]
    return found
