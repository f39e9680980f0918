"""Shared fixtures: real local servers for the whole session, always stopped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from pulse.localservers import LocalServer, start_redis, start_tansu


def _serving(server: LocalServer) -> Iterator[LocalServer]:
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalServer]:
    """A throwaway redis-server."""
    yield from _serving(start_redis())


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[LocalServer]:
    """A memory-backed Tansu broker (Kafka protocol)."""
    yield from _serving(start_tansu())


CASES_TRIED: Counter[str] = Counter()


@pytest.fixture(scope="session")
def cases_tried() -> Counter[str]:
    """Counts of generated cases per test family, reported at the end of the run."""
    return CASES_TRIED


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its counts to the controller, which reports them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["cases_tried"] = dict(CASES_TRIED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist: add up the counts of a worker that finished."""
    CASES_TRIED.update(getattr(node, "workeroutput", {}).get("cases_tried", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how many bad-input / property cases the fuzz tests tried."""
    if CASES_TRIED:
        terminalreporter.section("cases tried")
        for name, count in sorted(CASES_TRIED.items()):
            terminalreporter.write_line(f"{name}: {count}")
