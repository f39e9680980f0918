"""The shipped JSON Schemas agree with the contract validator and describe the engine's real decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from test_contracts import INVALID, VALID

from operators.engine import PersonalizationEngine

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
EVENT = Draft202012Validator(json.loads((SCHEMAS / "event.schema.json").read_text()))
DECISION = Draft202012Validator(json.loads((SCHEMAS / "decision.schema.json").read_text()))


def test_schemas_are_valid_json_schemas() -> None:
    for path in SCHEMAS.glob("*.schema.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


@pytest.mark.parametrize(("kind", "payload"), VALID)
def test_schema_accepts_what_the_validator_accepts(kind: str, payload: dict) -> None:
    assert list(EVENT.iter_errors(payload)) == []


@pytest.mark.parametrize(("kind", "payload", "reason"), [case for case in INVALID if "belongs on" not in case[2]])
def test_schema_rejects_what_the_validator_rejects(kind: str, payload: object, reason: str) -> None:
    assert list(EVENT.iter_errors(payload)), reason


def test_engine_decisions_match_the_decision_schema() -> None:
    engine = PersonalizationEngine()
    ts = 1_763_900_000_000
    events = [
        {"event_id": "e1", "user_id": "u1", "type": "page_view", "ts": ts, "item_id": "i1", "category": "c1"},
        {"event_id": "e2", "user_id": "u1", "type": "chat_message", "ts": ts + 1, "text": "great", "label": "positive"},
        {"event_id": "e3", "user_id": "u1", "type": "churn_outcome", "ts": ts + 2, "churned": False},
        {"event_id": "e4", "user_id": "u2", "type": "consent", "ts": ts + 3, "personalization": False},
        {"event_id": "e5", "user_id": "u1", "type": "forget_user", "ts": ts + 4},
    ]
    profiles: dict[str, object] = {}
    for event in events:
        profiles[event["user_id"]], decision = engine.handle(profiles.get(event["user_id"]), event, ts + 10)
        errors = [f"{list(e.path)}: {e.message}" for e in DECISION.iter_errors(json.loads(json.dumps(decision)))]
        assert errors == [], (event["type"], errors)
