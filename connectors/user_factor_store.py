"""Per-user collaborative factors (MF latent vector + bias) on disk, written incrementally.

The shared model checkpoint would otherwise pickle every user's latents at every epoch: a cost that
grows with all users even when few of them were active. This SQLite table is upserted with the users
that changed since the last write, and erased users are deleted with `secure_delete` on (their bytes
are overwritten, not left in free pages).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

Factors = tuple[np.ndarray, float]


class UserFactorStore:
    """A SQLite file of (user_id, bias, latent) rows.

    >>> import tempfile
    >>> store = UserFactorStore(Path(tempfile.mkdtemp()) / "users.db")
    >>> store.write({"ann": (np.array([0.5, -1.0]), 0.25), "bob": None})
    >>> [(user, latent.tolist(), bias) for user, latent, bias in store.rows()]
    [('ann', [0.5, -1.0], 0.25)]
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA secure_delete = ON")
        self._db.execute("CREATE TABLE IF NOT EXISTS user_factors (user_id TEXT PRIMARY KEY, bias REAL NOT NULL, "
                         "latent BLOB NOT NULL) WITHOUT ROWID")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    def write(self, changes: Mapping[str, Factors | None], replace_all: bool = False) -> None:
        """Upsert the users with factors, delete those mapped to None; with `replace_all`, drop every other row first.

        One transaction, synced to disk before it returns.
        """
        upserts = [(user, float(factors[1]), np.asarray(factors[0], dtype=np.float64).tobytes())
                   for user, factors in changes.items() if factors is not None]
        deletes = [(user,) for user, factors in changes.items() if factors is None]
        with self._transaction():
            if replace_all:
                self._db.execute("DELETE FROM user_factors")
            self._db.executemany("INSERT OR REPLACE INTO user_factors VALUES (?, ?, ?)", upserts)
            self._db.executemany("DELETE FROM user_factors WHERE user_id = ?", deletes)

    def rows(self) -> Iterator[tuple[str, np.ndarray, float]]:
        """Every stored (user_id, latent, bias)."""
        for user, bias, latent in self._db.execute("SELECT user_id, bias, latent FROM user_factors"):
            yield user, np.frombuffer(latent, dtype=np.float64).copy(), bias

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
