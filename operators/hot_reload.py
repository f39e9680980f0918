"""A configuration file re-read within a second of a change, keeping the last good version on a broken edit.

The business rules (operators/rules.py) and the experiments (operators/experiments.py) are such files. An
invalid file at start is an error (the process must not run on a configuration nobody wrote); an edit that
breaks it later is logged and the previous version stays in force, so a typo cannot take a running engine down.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("pulse.config")

RELOAD_CHECK_S = 1.0
T = TypeVar("T")


class ConfigFileError(ValueError):
    """The file cannot be read or does not parse."""


class HotReloadedFile(Generic[T]):
    """The parsed content of a file, re-read when its modification time changes (checked at most once a second).

    `parse(text, version)` builds the value or raises `ValueError`; `version` is `NAME@HASH` (the file's
    name and the first 12 hex digits of its content's SHA-256). Without a path, `default` is served.
    A file that cannot be read or parsed raises `error` (subclasses may name their own).

    >>> HotReloadedFile(None, int, default=3, what="threshold").current()
    3
    """

    error: type[ConfigFileError] = ConfigFileError

    def __init__(self, path: str | os.PathLike | None, parse: Callable[[str, str], T], default: T,
                 what: str = "configuration") -> None:
        self._path = Path(path) if path else None
        self._parse = parse
        self._what = what
        self._value = default
        self._mtime: float | None = None
        self._checked = time.monotonic()
        if self._path is not None:
            self._value = self._load()  # an invalid file at start is an error, not a warning

    @property
    def loaded(self) -> T:
        """The value in force, without checking the file."""
        return self._value

    def current(self) -> T:
        """The value in force now (re-read first when the file changed and a second has passed since the last check)."""
        if self._path is None:
            return self._value
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_S:
            self._checked = now
            try:
                if self._path.stat().st_mtime != self._mtime:
                    self._value = self._load()
                    log.info("reloaded %s from %s", self._what, self._path)
            except (OSError, ValueError) as exc:
                log.error("keeping the previous %s: %s", self._what, exc)
        return self._value

    def _load(self) -> T:
        assert self._path is not None
        try:
            stat = self._path.stat()
            text = self._path.read_text()
        except OSError as exc:
            raise self.error(f"cannot read {self._what} file {self._path}: {exc}") from None
        self._mtime = stat.st_mtime
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        try:
            return self._parse(text, f"{self._path.name}@{digest}")
        except ValueError as exc:
            raise self.error(f"{self._what} file {self._path}: {exc}") from None
