"""Checkpoints of the shared online models next to Bytewax's recovery partitions.

Per-user features live in Bytewax state, but the models are shared by every user of a process, so
Bytewax snapshots do not cover them. `ModelCheckpoint` pickles them atomically (temp file, fsync,
rename) into `DIR/models-p<process>.pkl` whenever the dataflow snapshots a user that was handled since
the last write. Bytewax calls those snapshots at the close of every epoch, before the epoch is
committed, so the file always holds at least everything learned up to the epoch a restart resumes
from: on restart the models never lose learning; events replayed after the resume epoch are learned a
second time (at-least-once learning). `forget_user` rewrites the file at once so a forgotten user's
latents never come back from an old checkpoint.

The per-user part of the models (each user's MF latent vector and bias) is not in the pickle: it goes
to `DIR/models-p<process>.users.db` (connectors.user_factor_store), where each write upserts only
the users that changed since the previous one, so a checkpoint costs what changed plus the bounded
shared models, not all users. The store is written before the pickle.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bytewax.recovery import init_db_dir

from connectors.user_factor_store import UserFactorStore
from online_models.recommender import HybridRecommender
from operators.engine import PersonalizationEngine

log = logging.getLogger("pulse.checkpoint")

# 5: the recommender learns neighbours and blend weights (online_models.recommender); 4: per-partition Kafka state
FORMAT = 5


def bytewax_run_argv() -> list[str]:
    """This process's arguments when it runs `python -m bytewax.run`, else [] (e.g. when imported by tests)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return sys.argv[1:] if spec is not None and spec.name == "bytewax.run" else []


def recovery_args(passthrough: Sequence[str], env: Mapping[str, str], default_dir: Path, snapshot_s: int,
                  backup_s: int) -> list[str]:
    """The `bytewax.run` arguments that turn recovery on (unless `passthrough`/env already choose them).

    Initializes the recovery directory with one partition when it has none (`python -m bytewax.recovery DIR 1`).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-s", "--snapshot-interval")
    parser.add_argument("-b", "--backup-interval")
    known, _ = parser.parse_known_args(list(passthrough))
    directory, _ = recovery_options(passthrough, env)
    extra: list[str] = []
    if directory is None:
        directory = default_dir
        extra += ["-r", str(directory)]
    if known.snapshot_interval is None and "BYTEWAX_SNAPSHOT_INTERVAL" not in env:
        extra += ["-s", str(snapshot_s)]
    if known.backup_interval is None and "BYTEWAX_RECOVERY_BACKUP_INTERVAL" not in env:
        extra += ["-b", str(backup_s)]
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, 1)
        log.info("initialized recovery partitions in %s", directory)
    return extra


def recovery_options(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Path | None, int]:
    """The recovery directory and process id `bytewax.run` was given (arguments first, then its env vars)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", default=env.get("BYTEWAX_RECOVERY_DIRECTORY"))
    parser.add_argument("-i", "--process-id", default=env.get("BYTEWAX_PROCESS_ID", "0"))
    known, _ = parser.parse_known_args(list(argv))
    directory = Path(known.recovery_directory) if known.recovery_directory else None
    return directory, int(known.process_id or 0)


class ModelCheckpoint:
    """Saves and restores an engine's models (a pickle + the user-factor store); callers hold the engine's lock.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "models-p0.pkl"
    >>> engine = PersonalizationEngine()
    >>> checkpoint = ModelCheckpoint(engine, path)
    >>> engine.recommender.learn_one("u1", "i1", "c1", 1.0, 0); checkpoint.learned(); checkpoint.on_snapshot()
    >>> fresh = PersonalizationEngine()
    >>> ModelCheckpoint(fresh, path).restore(), fresh.recommender.version
    (True, 'reco-hybrid@1/blend@0')
    """

    def __init__(self, engine: PersonalizationEngine, path: Path) -> None:
        self._engine = engine
        self._path = path
        # Not *.sqlite3: Bytewax counts every such file in the recovery directory as one of its partitions.
        self._users = UserFactorStore(path.with_suffix(".users.db"))
        self._dirty = False
        self._saved_recommender: HybridRecommender | None = None  # whose user factors the store holds

    @property
    def path(self) -> Path:
        """The checkpoint file (shared models; the user factors are in `user_store_path`)."""
        return self._path

    @property
    def user_store_path(self) -> Path:
        """The SQLite file of the users' collaborative factors."""
        return self._users.path

    def restore(self) -> bool:
        """Load the models from the files, if there are any; return whether they were loaded."""
        if not self._path.exists():
            return False
        with open(self._path, "rb") as file:
            state = pickle.load(file)
        if state.get("format") != FORMAT:
            raise RuntimeError(f"{self._path} has checkpoint format {state.get('format')!r}, expected {FORMAT}: "
                               "it was written by another Pulse version; start from a new recovery directory")
        self._engine.restore_models(state["models"], state["snapshot_hash"])
        self._engine.catalog = state["catalog"]
        recommender = self._engine.recommender
        recommender.load_user_factors(self._users.rows())
        recommender.take_changed_users()  # what was just loaded is what the store holds
        self._saved_recommender = recommender
        log.info("restored models from %s (%s)", self._path, recommender.version)
        return True

    def learned(self) -> None:
        """Note that the models may have changed."""
        self._dirty = True

    def on_snapshot(self) -> None:
        """Called when Bytewax snapshots a user: write the models if they changed since the last write."""
        if self._dirty:
            self.save()

    def save(self) -> None:
        """Write the changed user factors, then the shared models atomically, now."""
        engine = self._engine
        recommender = engine.recommender
        recommender.flush()  # its pending batch holds users' factors for the blend: learned now, not pickled
        changes = recommender.take_changed_users()
        if recommender is self._saved_recommender:
            self._users.write(changes)
        else:  # first write, or the models were rolled back: the store must hold exactly this model's users
            self._users.write({user: (latent, bias) for user, latent, bias in recommender.user_factors()},
                              replace_all=True)
            self._saved_recommender = recommender
        with recommender.without_user_factors():
            blob = pickle.dumps({"format": FORMAT, "models": engine.models(), "snapshot_hash": engine.snapshot_hash,
                                 "catalog": engine.catalog}, protocol=pickle.HIGHEST_PROTOCOL)
        self._dirty = False
        temporary = self._path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)


def checkpoint_for(engine: PersonalizationEngine, argv: Sequence[str],
                   env: Mapping[str, str]) -> ModelCheckpoint | None:
    """The process's model checkpoint when `bytewax.run` runs with recovery (restored if present), else None."""
    directory, process_id = recovery_options(argv, env)
    if directory is None:
        return None
    checkpoint = ModelCheckpoint(engine, directory / f"models-p{process_id}.pkl")
    checkpoint.restore()
    return checkpoint
