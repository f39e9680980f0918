"""Model snapshots on disk: save, list and restore a set of models, each snapshot named and content-hashed.

Layout: `DIR/p<process>/<name>-<hash>.pkl` plus one JSON line per snapshot in `DIR/index.jsonl`.
A snapshot's `hash` (sha256 of its bytes, 12 hex digits) identifies exactly which models decided;
decisions record it as the `snapshot` model version of the models that descend from it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SnapshotNotFound(LookupError):
    """No snapshot of that name exists for this process."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One saved snapshot of one process's models."""

    name: str
    process: int
    hash: str
    created_ms: int
    versions: dict[str, str]
    path: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


class ModelRegistry:
    """Snapshots of models in a directory shared by the engine processes and the CLI.

    >>> import tempfile
    >>> registry = ModelRegistry(tempfile.mkdtemp())
    >>> info = registry.save({"m": [1, 2]}, "s1", process=0, created_ms=0, versions={"m": "m@2"})
    >>> registry.load("s1", process=0)
    {'m': [1, 2]}
    >>> [s.name for s in registry.list()]
    ['s1']
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def save(
        self, models: dict[str, Any], name: str, process: int, created_ms: int, versions: dict[str, str]
    ) -> SnapshotInfo:
        """Write the models atomically and index them under `name`."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"snapshot name {name!r} must match {NAME_PATTERN.pattern}")
        data = pickle.dumps(models, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.sha256(data).hexdigest()[:12]
        path = self.directory / f"p{process}" / f"{name}-{digest}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        info = SnapshotInfo(name, process, digest, created_ms, versions, str(path))
        with open(self.directory / "index.jsonl", "ab") as index:
            index.write(orjson.dumps(info.to_dict()) + b"\n")
        return info

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot whose file still exists, oldest first."""
        index = self.directory / "index.jsonl"
        if not index.exists():
            return []
        infos = [SnapshotInfo(**orjson.loads(line)) for line in index.read_bytes().splitlines() if line.strip()]
        return [info for info in infos if Path(info.path).exists()]

    def find(self, name: str, process: int) -> SnapshotInfo:
        """The newest snapshot called `name` of `process`."""
        matches = [info for info in self.list() if info.name == name and info.process == process]
        if not matches:
            raise SnapshotNotFound(f"no snapshot {name!r} for process {process} in {self.directory}")
        return matches[-1]

    def load(self, name: str, process: int) -> dict[str, Any]:
        """The models of snapshot `name` (verified against its hash)."""
        info = self.find(name, process)
        data = Path(info.path).read_bytes()
        if hashlib.sha256(data).hexdigest()[:12] != info.hash:
            raise ValueError(f"snapshot file {info.path} does not match its hash {info.hash}")
        return pickle.loads(data)
