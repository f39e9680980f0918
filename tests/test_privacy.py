"""Privacy through the real dataflow (pseudonymization on): consent, forget_user, pseudonyms, audit records.

One engine run checks that
- without consent a user gets non-personalized decisions and no profile is built;
- `forget_user` erases the user's Redis key, their Bytewax state (the recovery partitions keep no
  snapshot of them) and their latents in the model checkpoint;
- raw user ids appear nowhere Pulse stores data (Redis, recovery partitions, model checkpoint, decision log);
- after `forget_user`, and after consent is withdrawn, a full SCAN of Redis (keys and values) finds neither
  the user's id, nor their pseudonym, nor words of their chat messages;
- every decision carries an audit record of the models and data categories it used.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from pathlib import Path

import pytest
import redis
from enginestack import Engine, TopicReader, decided_ids, decisions, produce, retarget, stack_env
from redis_scan import holding, redis_contents

from connectors.user_factor_store import UserFactorStore
from operators.privacy import pseudonymize
from pulse.localservers import LocalServer
from simulator import encode_event

pytestmark = pytest.mark.e2e
KEY = "test-pseudonymization-key"
PRIVATE, FORGOTTEN, REGULAR = "alice@example.com", "bob@example.com", "carol@example.com"
WITHDRAWN = "dave@example.com"
WORDS = {FORGOTTEN: "zebra umbrella vanished", WITHDRAWN: "walrus trombone dented"}  # only their messages have these


def _events(user: str, kinds: list[str], start_ms: int) -> list[dict]:
    events = []
    for index, kind in enumerate(kinds):
        event = {"event_id": f"{user.split('@')[0]}-{index}", "user_id": user, "type": kind, "ts": start_ms + index}
        if kind in ("page_view", "click", "add_to_cart"):
            event.update(item_id=f"item-{index % 4}", category=f"cat-{index % 2}")
        elif kind == "chat_message":
            event.update(text=f"the parcel never arrived, awful {WORDS.get(user, '')}".strip(), label="negative")
        elif kind == "consent":
            event.update(personalization=False)
        events.append(event)
    return events


def _snapshots(recovery_dir: Path) -> list[tuple[str, str, bytes | None]]:
    rows = []
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows += db.execute("SELECT step_id, state_key, ser_change FROM snaps").fetchall()
    return rows


def _latest_snapshot(recovery_dir: Path, key: str) -> object | None:
    """The user's state in the newest snapshot Bytewax wrote (None: none, or a deletion)."""
    rows = []
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows += db.execute("SELECT snap_epoch, ser_change FROM snaps WHERE state_key = ?", (key,)).fetchall()
    if not rows:
        return None
    change = max(rows)[1]
    return None if change is None else pickle.loads(pickle.loads(change))  # Bytewax pickles the pickled profile


def _checkpoint_latents(recovery_dir: Path) -> set[str]:
    """The users whose MF factors the model checkpoint holds."""
    store = UserFactorStore(recovery_dir / "models-p0.users.db")
    try:
        return {user for user, _, _ in store.rows()}
    finally:
        store.close()


def _stored_bytes(recovery_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in recovery_dir.iterdir() if path.is_file())


def _wait(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def test_consent_forget_pseudonyms_and_audit(kafka_server: LocalServer, redis_server: LocalServer,
                                             tmp_path: Path) -> None:
    # Redis keeps all of each user's decisions here (topics are not ordered: a chat message may be decided first).
    env = stack_env(kafka_server.port, redis_server.port, tmp_path, PULSE_PSEUDONYMIZE_KEY=KEY,
                    PULSE_EXPLANATIONS_PER_USER="10")
    recovery = Path(env["PULSE_RECOVERY_DIR"])
    alias = {user: pseudonymize(user, KEY) for user in (PRIVATE, FORGOTTEN, REGULAR, WITHDRAWN)}
    now = int(time.time() * 1000)
    consent_off = _events(PRIVATE, ["consent"], now)
    private = _events(PRIVATE, ["page_view", "click", "chat_message"], now + 10)
    private = [{**e, "event_id": f"alice-later-{i}"} for i, e in enumerate(private)]
    forgotten = _events(FORGOTTEN, ["session_start", "page_view", "chat_message", "click", "add_to_cart", "page_view"],
                        now)
    withdrawn = _events(WITHDRAWN, ["session_start", "page_view", "chat_message", "click"], now)
    withdraw = {"event_id": "withdraw-dave", "user_id": WITHDRAWN, "type": "consent", "personalization": False,
                "ts": now + 100}
    regular = _events(REGULAR, ["session_start", "page_view", "chat_message", "click"], now)
    forget = {"event_id": "forget-bob", "user_id": FORGOTTEN, "type": "forget_user", "ts": now + 100}
    store = redis.Redis.from_url(env["REDIS_URL"])
    prefix = env["PULSE_REDIS_PREFIX"]

    engine = Engine(env, tmp_path / "engine.log").start()
    reader = TopicReader(env["KAFKA_BOOTSTRAP"], env["PULSE_TOPIC_DECISIONS"])
    try:
        # Topics are not ordered relative to each other: the consent decision lands before the events follow.
        produce(retarget([encode_event(e) for e in consent_off], env), env)
        reader.until(lambda ms: len(ms) >= 1, 60, engine.alive)
        first = private + forgotten + regular + withdrawn
        produce(retarget([encode_event(e) for e in first], env), env)
        reader.until(lambda ms: {e["event_id"] for e in first} <= decided_ids(ms), 60, engine.alive)
        # Before the erasure the forgotten user is in the snapshots and the model checkpoint (the test can fail).
        _wait(lambda: alias[FORGOTTEN] in _checkpoint_latents(recovery)
              and any(key == alias[FORGOTTEN] and change for _, key, change in _snapshots(recovery)))
        assert store.exists(f"{prefix}:decision:{alias[FORGOTTEN]}")
        erased = {FORGOTTEN: [FORGOTTEN, alias[FORGOTTEN], *WORDS[FORGOTTEN].split()],
                  WITHDRAWN: [WITHDRAWN, alias[WITHDRAWN], *WORDS[WITHDRAWN].split()]}
        for user, needles in erased.items():  # before the erasure the search finds them (the test can fail)
            assert {alias[user], *WORDS[user].split()} <= {n for n in needles if holding(store, [n])}
        # Without consent no profile is built: the user's snapshot holds an empty profile.
        _wait(lambda: _latest_snapshot(recovery, alias[PRIVATE]) is not None)
        profile = _latest_snapshot(recovery, alias[PRIVATE])
        assert profile.personalization is False and profile.n_events == 0 and profile.category_affinity == {}

        produce(retarget([encode_event(forget), encode_event(withdraw)], env), env)
        reader.until(lambda ms: {"forget-bob", "withdraw-dave"} <= decided_ids(ms), 60, engine.alive)
        _wait(lambda: not holding(store, erased[FORGOTTEN] + erased[WITHDRAWN]))  # the sink follows the log
        assert holding(store, [alias[REGULAR]])
        _wait(lambda: not any(key == alias[FORGOTTEN] and change for _, key, change in _snapshots(recovery)))
        assert alias[FORGOTTEN] not in _checkpoint_latents(recovery)
        assert alias[REGULAR] in _checkpoint_latents(recovery)
        assert not store.exists(f"{prefix}:decision:{alias[FORGOTTEN]}")
        contents = [(k, v) for k, v in redis_contents(store) if k.startswith(prefix.encode())]
        stored = _stored_bytes(recovery) + b"".join(v for _, v in contents)
        keys = [k.decode() for k, _ in contents]
        assert engine.alive(), engine.log_tail()
    finally:
        engine.stop()
        reader.close()

    log = decisions(reader.messages)
    by_event = {d["event_id"]: d for d in log}
    # Pseudonyms everywhere: decisions, Redis keys and values, recovery partitions, model checkpoint.
    assert {d["user_id"] for d in log} == set(alias.values())
    for user in alias:
        assert user.encode() not in stored, f"{user} is stored in clear"
        assert not any(user in key for key in keys)
        assert user.encode() not in b"".join(m.value() + (m.key() or b"") for m in reader.messages)

    # No consent: non-personalized decisions, audited as using no personal data, and no profile built.
    for event in consent_off + private:
        decision = by_event[event["event_id"]]
        assert decision["personalized"] is False and decision["features"] == {} and decision["churn"] is None
        audit = decision["audit"]
        assert audit["personal_data"] is False and audit["basis"] == "no consent to personalization"

    # forget_user: an erasure decision, audited as such.
    assert by_event["forget-bob"]["forgotten"] is True
    assert by_event["forget-bob"]["audit"]["basis"] == "erasure request"

    # Personalized decisions name the models and data categories they used.
    chat = by_event["carol-2"]["audit"]
    assert chat["personal_data"] is True and "chat messages" in chat["data_categories"]
    assert set(chat["models"]) >= {"recommender", "churn", "sentiment"}
    click = by_event["carol-3"]["audit"]
    assert "sentiment" not in click["models"] and "interaction history" in click["data_categories"]
