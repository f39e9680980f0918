"""Debian's kcat against the bundled broker: with the wheel's librdkafka it produces and consumes.

Debian 12's kcat links librdkafka 2.0.2, which fails on the broker's ApiVersions answer ("Read underflow":
before 2.2.0, librdkafka skipped a tagged field's value one byte short; docs/operations.md, kcat). kcat_library_dir()
gives it the librdkafka that the confluent-kafka wheel bundles.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import pytest

from pulse.localservers import LocalServer, kcat_library_dir

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (make system-deps installs it)")


def kcat(server: LocalServer, *args: str, stdin: bytes = b"", libraries: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if libraries:
        env["LD_LIBRARY_PATH"] = str(kcat_library_dir())
    return subprocess.run([KCAT, "-b", f"127.0.0.1:{server.port}", *args], input=stdin, env=env,
                          capture_output=True, timeout=30, check=False)


def system_librdkafka() -> tuple[int, int]:
    text = subprocess.run([KCAT, "-V"], capture_output=True, text=True, check=False).stdout
    version = re.search(r"librdkafka (\d+)\.(\d+)", text)
    assert version, text
    return int(version[1]), int(version[2])


def test_kcat_produces_and_consumes_with_the_wheels_librdkafka(kafka_server: LocalServer) -> None:
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    lines = [b'{"event_id":"k%d","user_id":"u1","type":"page_view","ts":1763900000000}' % i for i in range(3)]
    produced = kcat(kafka_server, "-t", topic, "-P", "-K:", stdin=b"".join(b"u1:" + line + b"\n" for line in lines))
    assert produced.returncode == 0, produced.stderr.decode()
    consumed = kcat(kafka_server, "-t", topic, "-C", "-e", "-o", "beginning", "-q")
    assert consumed.returncode == 0, consumed.stderr.decode()
    assert sorted(consumed.stdout.split()) == sorted(lines)


@pytest.mark.skipif(KCAT is not None and system_librdkafka() >= (2, 2),
                    reason="the system's librdkafka reads tagged fields")
def test_kcat_with_debians_librdkafka_cannot_read_the_brokers_api_versions(kafka_server: LocalServer) -> None:
    failed = kcat(kafka_server, "-L", libraries=False)
    assert failed.returncode != 0 and b"ApiVersionRequest failed: Local: Read underflow" in failed.stderr
