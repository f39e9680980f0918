"""The deployed dataflow in-process (bytewax.testing): decide, expiry, forget, catalog, model commands, recovery.

No servers: the flow is `flows.personalization.build_flow` with testing sources and sinks (tests/inprocess.py).
The end-to-end tests run the same flow against a real broker and redis-server.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from connectors.model_control import ModelCommand
from operators.engine import PersonalizationEngine
from tests.inprocess import ABORT, EOF, PAUSE, Outputs, item_record, record, run_flow, settings

T0 = 1_763_900_000_000


def event(n: int, user: str = "u1", kind: str = "page_view", **fields) -> dict:
    base = {"event_id": f"{user}-{n}", "user_id": user, "type": kind, "ts": T0 + n * 1000}
    if kind in ("page_view", "click", "add_to_cart", "purchase"):
        base.update(item_id=f"i{n % 4}", category=f"c{n % 2}")
    if kind == "purchase":
        base["price"] = 10.0
    return {**base, **fields}


def test_every_valid_event_is_decided_once_and_every_invalid_one_dead_lettered(tmp_path: Path) -> None:
    events = [record(event(n, f"u{n % 3}")) for n in range(12)]
    events += [record(event(20, "u1", "chat_message", text="late again, awful", label="negative"))]
    bad = [record(b"{oops", "clickstream"), record({"event_id": "x", "type": "click", "ts": T0}),
           record(event(21, kind="chat_message", text="hi"), "clickstream")]
    out = run_flow(events + bad, settings(tmp_path))

    decided = sorted(d["event_id"] for d in out.decoded())
    assert decided == sorted(orjson.loads(m.value())["event_id"] for m in events)
    assert [d["decision_id"] for d in out.log.decisions] == [d["decision_id"] for d in out.decoded()]
    for decision in out.decoded():
        churn = decision["churn"]["explanation"]
        assert math.fsum([churn["intercept"], *churn["contributions"].values()]) == pytest.approx(churn["score"])
        for rec in decision["recommendations"]:
            assert math.fsum(rec["components"].values()) == pytest.approx(rec["score"])
    reasons = sorted(dict(m.headers)["pulse-error"].decode() for m in out.dead_letters)
    assert len(reasons) == 3 and any("invalid JSON" in r for r in reasons)
    assert any("missing field 'user_id'" in r for r in reasons)
    assert any("belongs on the chat topic" in r for r in reasons)
    assert sorted(m.value for m in out.dead_letters) == sorted(m.value() for m in bad), "dead letters are verbatim"
    assert out.log.flushes > 0, "the decision log is flushed when users are snapshotted"


def test_an_idle_users_pending_decisions_settle_and_the_profile_leaves_the_state(tmp_path: Path) -> None:
    """PULSE_DECISION_TTL_S after a user's latest event (Bytewax's timer, wall clock), their decisions are settled
    to the outcome log and, without a long-term record, the state is dropped: the next event starts afresh."""
    run_settings = settings(tmp_path, PULSE_DECISION_TTL_S="1", PULSE_LONG_TERM_RETENTION_S="0")
    now = int(time.time() * 1000)  # live events: their attribution windows (30 minutes) are still open
    events = [record(event(n, ts=now + n)) for n in range(3)]
    events += [PAUSE(timedelta(seconds=2.5)), record(event(9, ts=now + 3000))]
    out = run_flow(events, run_settings)

    expired = [o for o in out.log.outcomes if o["reason"] == "user expired"]
    assert {o["decision_id"] for o in expired} == {f"d-u1-{n}" for n in range(3)}
    last = out.decoded()[-1]
    assert last["event_id"] == "u1-9" and last["features"]["events_per_session"] == 1.0, "a fresh profile"


def test_forget_user_erases_the_user_and_a_later_event_starts_afresh(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    events = [record(event(n, kind="click")) for n in range(4)]
    events += [record({"event_id": "f1", "user_id": "u1", "type": "forget_user", "ts": T0 + 10_000}),
               record(event(11, kind="click"))]
    out = run_flow(events, settings(tmp_path), engine=engine)

    forgotten = next(o for o in out.decisions if o.decision_id == "d-f1")
    assert forgotten.forget, "the sinks are asked to erase what they store of the user"
    decision = orjson.loads(forgotten.payload)
    assert decision["forgotten"] is True and decision["recommendations"] == []
    after = out.decoded()[-1]
    assert after["event_id"] == "u1-11" and after["features"]["purchases_per_session"] == 0.0
    assert after["features"]["sessions"] == 0 and after["features"]["events_per_session"] == 1.0


def test_catalog_items_rank_at_once_and_invalid_ones_are_dead_lettered(tmp_path: Path) -> None:
    catalog = [item_record({"event_id": "c1", "type": "item_upsert", "item_id": "new-tent", "category": "c0",
                            "ts": T0, "price": 99.0}),
               item_record({"event_id": "c2", "type": "item_upsert", "item_id": "no-category", "ts": T0})]
    # The catalog input is read before the events arrive (a pause gives it the time the flow needs).
    events = [PAUSE(timedelta(milliseconds=300))] + [record(event(n)) for n in range(3)]
    out = run_flow(events, settings(tmp_path), catalog=catalog)

    assert [item["item_id"] for item in out.catalog_items] == ["new-tent"]
    assert out.catalog_items[0]["category"] == "c0" and out.catalog_items[0]["deleted"] is False
    assert any("missing field 'category'" in dict(m.headers)["pulse-error"].decode() for m in out.dead_letters)
    shown = {rec["item_id"] for d in out.decoded() for rec in d["recommendations"]}
    assert "new-tent" in shown


def test_model_commands_snapshot_then_roll_back(tmp_path: Path) -> None:
    engine = PersonalizationEngine()
    commands = [PAUSE(timedelta(milliseconds=500)), ModelCommand("snapshot", "before", 1),
                PAUSE(timedelta(milliseconds=500)), ModelCommand("rollback", "before", 2),
                ModelCommand("rollback", "missing", 3)]
    events = [record(event(n, kind="click")) for n in range(3)] + [PAUSE(timedelta(milliseconds=700))]
    events += [record(event(n, kind="click")) for n in range(3, 8)]
    out = run_flow(events, settings(tmp_path), commands=commands, engine=engine)

    snapshot, rollback, missing = sorted(out.model_acks, key=lambda ack: ack["seq"])
    assert snapshot["ok"] and snapshot["op"] == "snapshot" and snapshot["versions"]["recommender"]
    assert rollback["ok"] and rollback["hash"] == snapshot["hash"]
    assert not missing["ok"] and "missing" in missing["error"]
    assert engine.snapshot_hash == snapshot["hash"], "the engine's models descend from the snapshot"
    assert (tmp_path / "models").is_dir()


def test_an_aborted_run_resumes_from_its_recovery_state(tmp_path: Path) -> None:
    """ABORT mid-stream, then a new engine (a restarted process) resumes: every event is decided, the
    profile and the models continue from the last committed epoch."""
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    run_settings = settings(tmp_path)
    first_half = [record(event(n, kind="click")) for n in range(6)]
    second_half = [record(event(n, kind="click")) for n in range(6, 12)]
    events = first_half + [ABORT()] + second_half

    outputs = Outputs()
    run_flow(events, run_settings, engine=PersonalizationEngine(), recovery_dir=recovery, outputs=outputs)
    before_abort = {d["event_id"] for d in outputs.decoded()}
    assert before_abort == {f"u1-{n}" for n in range(6)}
    assert any(recovery.glob("models-p0.pkl")), "the models were checkpointed in the recovery directory"

    restarted = PersonalizationEngine()
    run_flow(events, run_settings, engine=restarted, recovery_dir=recovery, outputs=outputs)
    decided = [d["event_id"] for d in outputs.decoded()]
    assert set(decided) == {f"u1-{n}" for n in range(12)}, "nothing skipped"
    last = outputs.decoded()[-1]
    assert last["event_id"] == "u1-11"
    assert last["features"]["events_per_session"] == 12.0, "the profile continued from the recovered state"
    assert restarted.recommender.n_learned >= 12, "the models continued from the checkpoint"


def test_a_sentinel_eof_ends_the_run(tmp_path: Path) -> None:
    out = run_flow([record(event(0)), EOF(), record(event(1))], settings(tmp_path))
    assert [d["event_id"] for d in out.decoded()] == ["u1-0"]
