"""Model checkpoints (connectors.checkpoint) and how the per-user Bytewax logic drives them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from connectors.checkpoint import ModelCheckpoint, recovery_args, recovery_options
from connectors.user_factor_store import UserFactorStore
from operators.engine import MODEL_NAMES, PersonalizationEngine
from operators.parse import Accepted
from operators.user_state import user_logic_builder

NOW = 1_763_900_000_000


def _event(n: int, user: str = "u1", kind: str = "click") -> Accepted:
    return Accepted({"event_id": f"e{n}", "user_id": user, "type": kind, "ts": NOW + n, "item_id": f"i{n % 3}",
                     "category": "c"}, NOW + n)


def test_checkpoint_round_trip_restores_every_model(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    build = user_logic_builder(engine, ModelCheckpoint(engine, tmp_path / "models-p0.pkl"))
    logic = build(None)
    logic.on_batch([_event(n) for n in range(5)])
    assert not (tmp_path / "models-p0.pkl").exists(), "nothing is written before Bytewax snapshots"
    logic.snapshot()
    fresh = PersonalizationEngine()
    assert ModelCheckpoint(fresh, tmp_path / "models-p0.pkl").restore()
    assert fresh.model_versions() == engine.model_versions()
    assert set(fresh.models()) == set(MODEL_NAMES)
    assert "u1" in fresh.recommender._mf.u_latents
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed into place"


def test_snapshots_write_only_after_new_learning(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    path = tmp_path / "models-p0.pkl"
    build = user_logic_builder(engine, ModelCheckpoint(engine, path))
    first, second = build(None), build(None)
    first.on_batch([_event(1)])
    second.on_batch([_event(2, "u2")])
    first.snapshot()
    assert path.exists()
    path.unlink()
    second.snapshot()  # same epoch, no learning since the write: no second write
    assert not path.exists()
    second.on_batch([_event(3, "u2")])
    second.snapshot()
    assert path.exists()


def test_forget_user_rewrites_the_checkpoint_at_once(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    path = tmp_path / "models-p0.pkl"
    build = user_logic_builder(engine, ModelCheckpoint(engine, path))
    logic = build(None)
    logic.on_batch([_event(1, "gone"), _event(2, "gone")])
    logic.snapshot()
    forget = {"event_id": "f", "user_id": "gone", "type": "forget_user", "ts": NOW}
    out, discard = logic.on_batch([Accepted(forget, NOW)])
    assert discard is True
    fresh = PersonalizationEngine()
    ModelCheckpoint(fresh, path).restore()
    assert "gone" not in fresh.recommender._mf.u_latents


def test_recovery_args_default_directory_and_passthrough(tmp_path: Path) -> None:
    default = ["-r", str(tmp_path / "rec"), "-s", "5", "-b", "30"]
    assert recovery_args(["-w", "2"], {}, tmp_path / "rec", 5, 30) == default
    assert (tmp_path / "rec" / "part-0.sqlite3").exists()
    assert recovery_args(["-r", str(tmp_path / "x"), "-s", "9", "-b", "60"], {}, tmp_path / "rec", 5, 30) == []
    from_env = {"BYTEWAX_RECOVERY_DIRECTORY": str(tmp_path / "y")}
    assert recovery_args([], from_env, tmp_path / "rec", 5, 30) == ["-s", "5", "-b", "30"]
    assert (tmp_path / "y" / "part-0.sqlite3").exists()
    assert recovery_options(["-i", "1", "-a", "h:1;h:2"], {}) == (None, 1)
    assert recovery_options([], {"BYTEWAX_PROCESS_ID": "2", "BYTEWAX_RECOVERY_DIRECTORY": "/d"}) == (Path("/d"), 2)


def test_checkpoints_write_only_the_users_that_changed(tmp_path: Path) -> None:
    engine = PersonalizationEngine()  # (clicks train the collaborative factors: strength 2)
    checkpoint = ModelCheckpoint(engine, tmp_path / "models-p0.pkl")
    for n in range(200):
        engine.recommender.learn_one(f"user{n}", f"i{n % 7}", "c", 2.0, NOW + n)
    checkpoint.save()
    pickled = (tmp_path / "models-p0.pkl").stat().st_size
    stored = {user: latent.copy() for user, latent, _ in UserFactorStore(checkpoint.user_store_path).rows()}
    assert len(stored) == 200 and not engine.recommender.take_changed_users()

    engine.recommender.learn_one("user3", "i1", "c", 2.0, NOW + 500)
    engine.recommender.learn_one("newcomer", "i2", "c", 2.0, NOW + 501)
    engine.recommender.forget_user("user4")
    assert set(engine.recommender.take_changed_users()) == {"user3", "newcomer", "user4"}
    engine.recommender.learn_one("user3", "i2", "c", 2.0, NOW + 502)
    engine.recommender.learn_one("newcomer", "i3", "c", 2.0, NOW + 503)
    engine.recommender.forget_user("user4")
    checkpoint.save()
    assert (tmp_path / "models-p0.pkl").stat().st_size == pytest.approx(pickled, rel=0.05), "no user latents pickled"
    after = {user: latent for user, latent, _ in UserFactorStore(checkpoint.user_store_path).rows()}
    assert set(after) == set(stored) - {"user4"} | {"newcomer"}
    assert not np.array_equal(after["user3"], stored["user3"])
    assert all(np.array_equal(after[u], stored[u]) for u in stored if u not in {"user3", "user4"})

    fresh = PersonalizationEngine()
    assert ModelCheckpoint(fresh, tmp_path / "models-p0.pkl").restore()
    for user in ("user3", "newcomer", "user150"):
        assert fresh.recommender.rank(user, 5, {}, NOW + 600) == engine.recommender.rank(user, 5, {}, NOW + 600)
    assert "user4" not in fresh.recommender._mf.u_latents


def test_a_rollback_rewrites_the_whole_user_store(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    checkpoint = ModelCheckpoint(engine, tmp_path / "models-p0.pkl")
    engine.recommender.learn_one("before", "i1", "c", 2.0, NOW)
    older = {name: copy.deepcopy(model) for name, model in engine.models().items()}
    engine.recommender.learn_one("after", "i2", "c", 2.0, NOW + 1)
    checkpoint.save()
    engine.restore_models(older, "snap-1")
    checkpoint.save()
    assert {user for user, _, _ in UserFactorStore(checkpoint.user_store_path).rows()} == {"before"}
